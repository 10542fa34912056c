"""The runtime: one daemon thread per process, the deadlock guard, the worker pool, shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import svckit as sk
from svckit.testing import wait_for


def test_one_runtime_per_process(sk_runtime):
    assert sk.runtime() is sk.runtime() is sk_runtime
    assert sk_runtime.thread.daemon
    assert sk_runtime.thread.name == "svckit-runtime"
    assert sk_runtime.thread is not threading.current_thread()
    assert sk_runtime.running
    assert repr(sk_runtime) == "<Runtime running, 0 served>"


def test_runtime_is_shared_across_threads(sk_runtime):
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(sk.runtime())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert seen == [sk_runtime] * 4


def test_call_runs_coroutines_and_functions_on_the_loop(sk_runtime):
    async def where() -> threading.Thread:
        await asyncio.sleep(0)
        return threading.current_thread()

    assert sk_runtime.call(where()) is sk_runtime.thread
    assert sk_runtime.call(threading.current_thread) is sk_runtime.thread

    async def boom() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        sk_runtime.call(boom())


def test_call_refuses_from_the_runtime_thread(sk_runtime):
    async def inner() -> int:
        return 1

    async def outer() -> None:
        sk_runtime.call(inner())  # would wait on its own loop forever

    with pytest.raises(sk.StateError, match="deadlock"):
        sk_runtime.call(outer(), timeout=5)
    assert sk_runtime.call(inner(), timeout=5) == 1  # the loop is still fine


def test_call_timeout(sk_runtime):
    with pytest.raises(TimeoutError):
        sk_runtime.call(asyncio.sleep(5), timeout=0.05)
    assert sk_runtime.call(asyncio.sleep(0, result="ok"), timeout=5) == "ok"


def test_serve_refuses_from_the_runtime_thread(sk_runtime):
    async def serve_inside() -> None:
        sk.serve(sk.service(lambda x: x), name="inside", http=0)

    with pytest.raises(sk.StateError):
        sk_runtime.call(serve_inside(), timeout=5)


def test_slow_sync_stage_does_not_stall_others(sk_serve, client_for):
    started, release = threading.Event(), threading.Event()

    @sk.service
    def slow(x: int) -> dict:
        started.set()
        release.wait(10)  # simulates blocking user code
        return {"slow": x}

    @sk.service
    def fast(x: int) -> dict:
        return {"fast": x}

    slow_srv = sk_serve(slow, name="slow")
    fast_srv = sk_serve(fast, name="fast")
    replies = []
    slow_client = client_for(slow_srv.url)
    caller = threading.Thread(target=lambda: replies.append(slow_client.slow(x=1)))
    caller.start()
    try:
        assert started.wait(5)
        t0 = time.monotonic()
        with client_for(fast_srv.url, timeout=5) as client:
            for i in range(20):
                assert client.fast(x=i)["fast"] == i
            # the same flow takes more requests too
            assert client_for(slow_srv.url).status()["served"]["slow"]["received"] == 1
        assert time.monotonic() - t0 < 2
        assert sk.runtime().call(asyncio.sleep(0, result=True), timeout=1)
    finally:
        release.set()
        caller.join(10)
    assert replies == [{"x": 1, "slow": 1}]


def test_shutdown_releases_every_port_and_ends_the_thread():
    rt = sk.runtime()
    a = sk.serve(sk.service(lambda x: x, name="a"), http=0)
    b = sk.serve(sk.service(lambda x: x, name="b"), http=0)
    ports = [a.http_port, b.http_port]
    assert rt.served.keys() == {"a", "b"}
    sk.shutdown()
    assert not rt.thread.is_alive()
    assert not rt.running
    assert a.state is sk.State.STOPPED and b.state is sk.State.STOPPED
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    sk.shutdown()  # idempotent


def test_a_new_runtime_starts_after_shutdown(client_for):
    old = sk.runtime()
    sk.shutdown()
    wait_for(lambda: not old.thread.is_alive(), timeout=5)
    with pytest.raises(sk.StateError, match="shut down"):
        old.submit(asyncio.sleep(0))
    new = sk.runtime()
    assert new is not old and new.running
    srv = sk.serve(sk.service(lambda x: x + 1, name="inc"), http=0)
    assert client_for(srv.url).inc(x=1)["inc"] == 2
    assert sk.runtime() is new
    sk.shutdown()
    assert not new.thread.is_alive()
