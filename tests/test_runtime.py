"""The runtime: one daemon thread per process, the deadlock guard, the worker pool, shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import svckit as sk
from svckit.runtime import WorkerPool
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


# -- the worker pool ---------------------------------------------------------------
def _pool_threads(pool: WorkerPool) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(pool.name)]


def test_pool_hands_results_and_exceptions_to_the_loop():
    pool = WorkerPool(2, name="svckit-test-pool")
    loop = asyncio.new_event_loop()
    try:

        def fail() -> None:
            raise KeyError("boom")

        async def main() -> tuple[object, BaseException | None, object]:
            ran_on = await pool.run(loop, lambda: threading.current_thread().name)
            try:
                await pool.run(loop, fail)
            except KeyError as exc:
                caught: BaseException | None = exc
            else:
                caught = None
            executor = await loop.run_in_executor(pool, sum, [1, 2, 3])  # the Executor interface
            return ran_on, caught, executor

        ran_on, caught, executor = loop.run_until_complete(main())
        assert str(ran_on).startswith("svckit-test-pool_")
        assert isinstance(caught, KeyError) and caught.args == ("boom",)
        assert executor == 6
        assert pool.submit(pow, 2, 10).result(5) == 1024
    finally:
        pool.shutdown(wait=True)
        loop.close()
    assert not _pool_threads(pool)


def test_pool_starts_threads_on_demand_up_to_its_size():
    pool = WorkerPool(3, name="svckit-test-pool")
    release = threading.Event()
    try:
        assert not _pool_threads(pool)  # nothing started before the first job
        for _ in range(10):
            pool.submit(lambda: 1).result(5)  # one at a time: one thread does them all
        assert len(_pool_threads(pool)) == 1
        blocked = [pool.submit(release.wait, 10) for _ in range(2)]
        assert pool.submit(lambda: "free").result(5) == "free"  # a third thread was free
        assert len(_pool_threads(pool)) == 3
        blocked.append(pool.submit(release.wait, 10))
        queued = pool.submit(lambda: "later")  # every thread is busy: it waits its turn
        assert not holds_done(queued)
        release.set()
        assert queued.result(5) == "later"
        assert all(f.result(5) is True for f in blocked)
        assert len(_pool_threads(pool)) == 3
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert not _pool_threads(pool)


def test_pool_runs_a_burst_from_the_loop_on_one_awake_worker():
    """Jobs queued in one turn of the loop wake one worker, not one thread each."""
    pool = WorkerPool(16, name="svckit-test-pool")
    loop = asyncio.new_event_loop()
    try:

        async def burst() -> list[str]:
            jobs = [pool.run(loop, lambda: threading.current_thread().name) for _ in range(64)]
            return await asyncio.gather(*jobs)

        names = loop.run_until_complete(burst())
        assert len(names) == 64
        # One worker takes them one after another; the stall check may add one or two
        # more on a loaded machine, never one thread per job.
        assert len(set(names)) <= 3, set(names)
    finally:
        pool.shutdown(wait=True)
        loop.close()
    assert not _pool_threads(pool)


def test_pool_wakes_another_worker_for_jobs_stuck_behind_a_blocking_one():
    pool = WorkerPool(4, name="svckit-test-pool")
    loop = asyncio.new_event_loop()
    release = threading.Event()
    started: asyncio.Future[None] = loop.create_future()

    def block() -> str:
        loop.call_soon_threadsafe(started.set_result, None)
        release.wait(10)
        return "blocked"

    try:

        async def main() -> tuple[str, bool]:
            slow = pool.run(loop, block)
            await asyncio.wait_for(started, 5)
            quick = await asyncio.wait_for(pool.run(loop, lambda: "quick"), 5)  # not after the 10 s
            still_blocked = not slow.done()
            release.set()
            assert await slow == "blocked"
            return quick, still_blocked

        quick, still_blocked = loop.run_until_complete(main())
        assert quick == "quick" and still_blocked
    finally:
        release.set()
        pool.shutdown(wait=True)
        loop.close()
    assert not _pool_threads(pool)


def holds_done(future: object) -> bool:
    """True if ``future`` finishes within 0.3 s (it should not)."""
    try:
        future.result(0.3)  # type: ignore[attr-defined]
    except TimeoutError:
        return False
    return True


def test_pool_shutdown_cancels_what_waits_and_refuses_more():
    pool = WorkerPool(1, name="svckit-test-pool")
    release, started = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return release.wait(10)

    running = pool.submit(block)
    assert started.wait(5)
    waiting = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert waiting.cancelled()
    with pytest.raises(sk.StateError, match="shut down"):
        pool.submit(lambda: 1)
    release.set()
    assert running.result(5) is True  # the job already running finishes
    wait_for(lambda: not _pool_threads(pool), timeout=5, what="the pool's threads to end")


def test_a_worker_left_blocked_does_not_hold_up_shutdown():
    rt = sk.runtime()
    release = threading.Event()

    @sk.service
    def stuck(x: int) -> dict:
        release.wait(30)
        return {"y": x}

    srv = sk.serve(stuck, http=0)
    caller = threading.Thread(target=lambda: _swallow(sk.Client(srv.url, timeout=30).stuck, x=1))
    caller.start()
    wait_for(lambda: srv.metrics.received >= 1, timeout=5, what="the request to arrive")
    started = time.monotonic()
    sk.shutdown(timeout=2)
    assert time.monotonic() - started < 15  # the stage would hold it for 30 s
    assert not rt.thread.is_alive()
    assert all(t.daemon for t in _pool_threads(rt.pool))  # it cannot block the interpreter's exit
    release.set()
    caller.join(10)
    wait_for(lambda: not _pool_threads(rt.pool), timeout=5, what="the pool's threads to end")


def _swallow(fn: object, **kw: object) -> None:
    try:
        fn(**kw)  # type: ignore[operator]
    except sk.SvckitError:
        pass


def test_serving_installs_no_signal_handler(sk_serve, client_for):
    """The kernel (or a script) keeps its own Ctrl-C and SIGTERM handling."""
    import signal

    kinds = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD]
    before = {s: signal.getsignal(s) for s in kinds}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    srv = sk_serve(sk.service(lambda x: x + 1, name="inc"), name="inc", http=0, zmq=0)
    assert client_for(srv.url).inc(x=1)["inc"] == 2
    srv.stop()
    assert {s: signal.getsignal(s) for s in kinds} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup  # nobody took over the wakeup fd either
