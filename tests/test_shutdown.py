"""Stopping and shutting down with requests in flight: every requester gets an answer
(JSON 503 over HTTP, an error frame over ZMQ), within the drain timeout."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import zmq

import svckit as sk
from svckit.testing import wait_for


def _stuck_stage(release: threading.Event) -> sk.Service:
    @sk.service(name="stuck")
    def stuck(x: int) -> dict:
        release.wait(30)  # a stage that does not come back by itself
        return {"y": x}

    return stuck


def _post_in_thread(url: str, out: list[Any]) -> threading.Thread:
    def go() -> None:
        try:
            reply = requests.post(f"{url}/stuck", json={"x": 1}, timeout=20)
            out.append((reply.status_code, reply.headers.get("content-type"), reply.text))
        except Exception as exc:  # recorded: the test says what went wrong
            out.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _zmq_request(zsock: Callable[[int], Any], addr: str) -> Any:
    sock = zsock(zmq.DEALER)
    sock.connect(addr)
    sock.send_multipart([b"", b"stuck", b'{"x": 2}'])
    return sock


def _answered_503(http: list[Any], sock: Any) -> None:
    assert len(http) == 1, http
    status, ctype, text = http[0]
    assert status == 503 and ctype == "application/json", (status, ctype, text)
    assert json.loads(text)["error"]["type"] == "ServiceUnavailable"
    assert sock.poll(5_000), "the ZMQ requester got nothing"
    frames = sock.recv_multipart()
    assert frames[1] == b"error", frames
    assert json.loads(frames[2])["error"]["type"] == "ServiceUnavailable"


def test_shutdown_with_a_stuck_stage_answers_everyone_within_its_timeout(zsock):
    release = threading.Event()
    srv = sk.serve(_stuck_stage(release), http=0, zmq=0)
    http: list[Any] = []
    thread = _post_in_thread(srv.url, http)
    sock = _zmq_request(zsock, srv.zmq_url)
    wait_for(lambda: srv.metrics.received == 2, timeout=10, what="both requests in flight")
    try:
        start = time.monotonic()
        sk.shutdown(timeout=2.0)  # what atexit gives
        took = time.monotonic() - start
        thread.join(10)
        _answered_503(http, sock)
        assert took < 2.5, f"shutdown took {took:.1f} s; atexit allows 2 s"
        assert srv.state is sk.State.STOPPED
    finally:
        release.set()


def test_stop_drains_then_answers_what_is_left_503(sk_serve, zsock):
    release = threading.Event()
    srv = sk_serve(_stuck_stage(release), http=0, zmq=0, drain_timeout=0.5)
    http: list[Any] = []
    thread = _post_in_thread(srv.url, http)
    sock = _zmq_request(zsock, srv.zmq_url)
    wait_for(lambda: srv.metrics.received == 2, timeout=10, what="both requests in flight")
    try:
        start = time.monotonic()
        srv.stop()
        took = time.monotonic() - start
        thread.join(10)
        _answered_503(http, sock)
        assert 0.5 <= took < 2.0, f"stop took {took:.2f} s with drain_timeout=0.5"
        counts = srv.status()
        assert counts["received"] == counts["replied"] == 2 and counts["errors"] == 2, counts
    finally:
        release.set()


def test_stop_lets_a_request_that_finishes_within_the_drain_timeout_answer(sk_serve):
    @sk.service(name="slowish")
    async def slowish(x: int) -> dict:
        import asyncio

        await asyncio.sleep(0.3)
        return {"y": x + 1}

    srv = sk_serve(slowish, http=0, drain_timeout=5)
    out: list[Any] = []

    def go() -> None:
        out.append(requests.post(f"{srv.url}/slowish", json={"x": 1}, timeout=20))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    wait_for(lambda: srv.metrics.received == 1, timeout=10, what="the request in flight")
    srv.stop()
    thread.join(10)
    assert out and out[0].status_code == 200 and out[0].json()["y"] == 2


def test_stop_right_after_a_reserve_waits_for_the_old_flow_and_its_teardown(sk_serve):
    import asyncio

    torn: list[str] = []
    started = threading.Event()

    class Old(sk.Service):
        async def process(self, x: int) -> dict:
            started.set()
            await asyncio.sleep(0.6)
            return {"who": "old"}

        def teardown(self) -> None:
            torn.append("old")

    class New(sk.Service):
        async def process(self, x: int) -> dict:
            return {"who": "new"}

    srv = sk_serve(Old(name="gen"), name="gen", http=0)
    out: list[Any] = []

    def go() -> None:
        out.append(requests.post(f"{srv.url}/gen", json={"x": 1}, timeout=20))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    assert started.wait(10)
    sk_serve(New(name="gen"), name="gen", http=srv.http_port)  # the old flow drains in the background
    start = time.monotonic()
    srv.stop()  # waits on the old generation too: both waiters are woken when it drains
    took = time.monotonic() - start
    thread.join(10)
    assert out and out[0].status_code == 200 and out[0].json()["who"] == "old"
    assert torn == ["old"], "the old flow's teardown must have run when stop() returns"
    assert took < 1.5, f"stop took {took:.2f} s for a request 0.6 s long"
