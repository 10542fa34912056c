"""Middleware: in a flow, around every call of a served thing, at request scope, and sk.throttle."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
import requests

import svckit as sk
from svckit.callables import is_async_callable


@sk.service
def inc(x: int) -> dict:
    return {"x": x + 1}


@sk.service
def double(x: int) -> dict:
    return {"x": x * 2}


def _post(srv: sk.Served, action: str, body: dict, headers: dict | None = None) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.post(f"{srv.url}/{action}", json=body, headers=headers or {})


def test_in_a_flow_it_wraps_every_stage_after_it_also_when_the_flow_grows():
    order: list[str] = []

    @sk.middleware
    def around(call, msg):
        order.append("before")
        out = call(msg)
        order.append(f"after x={out['x']}")
        return {"wrapped": True}

    flow = inc >> around >> double
    longer = flow >> inc  # chaining again keeps wrapping every stage after the middleware
    assert longer(x=1) == {"x": 5, "wrapped": True}
    assert order == ["before", "after x=5"]
    assert "wrapped" not in (inc >> double)(x=1)


def test_async_middleware_in_a_cell_and_served(sk_serve):
    @sk.middleware
    async def timed(call, msg):
        start = time.perf_counter()
        out = await call(msg)
        return {**out, "ms": (time.perf_counter() - start) * 1e3}

    flow = timed >> inc
    assert flow(x=1)["x"] == 2 and "ms" in flow(x=1)
    srv = sk_serve(flow, name="f")
    reply = _post(srv, "f", {"x": 1}).json()
    assert reply["x"] == 2 and reply["ms"] >= 0


def test_serve_middleware_wraps_every_call_in_order_sync_and_async(sk_serve):
    seen: list[str] = []

    def outer(call, msg):  # a plain function is middleware too
        seen.append("outer")
        return call(msg)

    @sk.middleware
    async def inner(call, msg):
        seen.append("inner")
        return await call({**msg, "x": msg["x"] * 10} if "x" in msg else msg)

    class Counter(sk.Service):
        def process(self, x: int) -> dict:
            return {"x": x}

        @sk.handle("reset")
        def reset(self) -> dict:
            return {"reset": True}

    srv = sk_serve(Counter(), name="c", http=0, zmq=0, middleware=[outer, inner])
    assert _post(srv, "c", {"x": 1}).json()["x"] == 10
    client = sk.ZmqClient(srv.zmq_url)
    try:
        assert client.c(x=2)["x"] == 20
        assert client.reset()["reset"] is True  # @handle actions are wrapped too
    finally:
        client.close()
    assert seen == ["outer", "inner"] * 3


def test_a_raising_middleware_is_a_counted_error_and_never_a_dead_endpoint(sk_serve):
    @sk.middleware
    def broken(call, msg):
        if msg.get("boom"):
            raise RuntimeError("middleware broke")
        return call(msg)

    @sk.middleware(scope="request")
    async def refuse(call, request):
        if request.headers.get("x-deny"):
            raise sk.Unauthorized("denied by refuse")
        return await call(request)

    srv = sk_serve(inc, name="i", middleware=[refuse, broken])
    bad = _post(srv, "i", {"x": 1, "boom": True})
    assert bad.status_code == 500
    assert bad.json()["error"] == {
        "type": "RuntimeError",
        "message": "middleware broke",
        "service": "broken",
        "request_id": bad.headers["X-Request-ID"],
    }
    denied = _post(srv, "i", {"x": 1}, {"X-Deny": "1"})
    assert denied.status_code == 401 and denied.json()["error"]["message"] == "denied by refuse"
    assert _post(srv, "i", {"x": 1}).json()["x"] == 2  # still answering
    status = srv.status()
    assert status["errors_by_type"] == {"RuntimeError": 1, "Unauthorized": 1}
    assert status["received"] == status["replied"] == 3


def test_request_scope_middleware_sees_the_request_before_decoding(sk_serve):
    seen = []

    @sk.middleware(scope="request")
    async def look(call, request):
        seen.append((request.transport, request.action, request.size, request.headers.get("x-extra"), request.id))
        return await call(request)

    srv = sk_serve(inc, name="i", middleware=[look])
    reply = _post(srv, "i", {"x": 1}, {"X-Extra": "yes", "X-Request-ID": "r-1"})
    assert reply.json()["x"] == 2
    assert seen == [("http", "i", len(b'{"x": 1}'), "yes", "r-1")]
    with pytest.raises(sk.WiringError, match="request-scope middleware"):
        _ = look >> inc


def test_throttle_answers_429_past_its_rate(sk_serve):
    srv = sk_serve(inc, name="i", http=0, zmq=0, middleware=[sk.throttle(1, burst=3)])
    codes = [_post(srv, "i", {"x": 1}).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    body = _post(srv, "i", {"x": 1}).json()["error"]
    assert body["type"] == "TooManyRequests" and body["retry_after"] > 0
    client = sk.ZmqClient(srv.zmq_url)
    try:
        with pytest.raises(sk.TooManyRequests):
            client.i(x=1)
    finally:
        client.close()
    assert srv.status()["errors_by_type"]["TooManyRequests"] >= 3
    with pytest.raises(sk.WiringError, match="positive"):
        sk.throttle(0)


def test_middleware_needs_call_and_message():
    with pytest.raises(sk.WiringError, match=r"takes \(call, msg\)"):
        sk.middleware(lambda msg: msg)


async def _async_double(x: int, factor: int) -> dict:
    return {"y": x * factor}


def test_is_async_callable_unwraps_partials(sk_serve):
    part = functools.partial(_async_double, factor=3)
    assert is_async_callable(part) and not is_async_callable(functools.partial(len))
    svc = sk.service(part, name="triple")
    assert svc.is_async and svc(x=2)["y"] == 6
    ticks: list[int] = []

    async def tick(into: list[int]) -> dict:
        into.append(1)
        await asyncio.sleep(0)
        return {"n": len(into)}

    from svckit.testing import collect

    sink = collect()
    srv = sk_serve(sk.every(0.01, functools.partial(tick, ticks)) >> sink, name="ticks", http=None)
    sink.wait(2)
    srv.stop()
    assert all(isinstance(item["n"], int) for item in sink.items)  # awaited, not a coroutine object


def test_the_request_log_names_each_request_when_its_logger_logs_debug(sk_serve):
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("svckit.requests")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        srv = sk_serve(inc, name="i")
        reply = _post(srv, "i", {"x": 1}, {"X-Request-ID": "logged-1"})
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert reply.json()["x"] == 2
    lines = [r.getMessage() for r in records]
    assert any("logged-1" in line and "'i'" in line and line.startswith("i ") for line in lines), lines


def test_a_middleware_is_not_blamed_for_what_it_only_let_through(sk_serve):
    @sk.middleware(scope="request")
    async def audit(call, request):
        return await call(request)

    @sk.middleware
    async def around(call, msg):
        return await call(msg)

    srv = sk_serve(inc, name="i", middleware=[audit, around])
    with requests.Session() as session:
        session.trust_env = False
        bad = session.post(f"{srv.url}/i", data=b"not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["service"] == "i"
    assert _post(srv, "i", {"y": 1}).json()["error"]["service"] == "inc"  # the stage that refused it
    assert [m.failures for m in srv.middleware] == [0, 0]
    assert [c.failures for c in (srv.bound,)] == [1]


class _AsyncCallable:
    async def __call__(self, x: int) -> dict:
        return {"y": x}


class _Inherited(_AsyncCallable):
    pass


def test_an_inherited_async_call_is_async():
    assert is_async_callable(_Inherited())
    assert sk.service(_Inherited(), name="inherited")(x=3)["y"] == 3
