"""Serving binds copies: the user's objects are never changed, each served thing counts and
holds sockets of its own; and the lifecycle facts new users tripped over."""

from __future__ import annotations

import threading
import traceback

import pytest
import requests
import zmq

import svckit as sk
from svckit.display import svg
from svckit.testing import wait_for


def _post(srv: sk.Served, action: str, body: dict, headers: dict | None = None) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.post(f"{srv.url}/{action}", json=body, headers=headers or {})


def test_one_stage_in_two_served_flows_counts_separately(sk_serve):
    check = sk.service(lambda x: x, name="check")
    first = sk_serve(check, name="first")
    second = sk_serve(sk.service(lambda x: x, name="pre") >> check, name="second")
    for _ in range(3):
        _post(first, "first", {"x": 1})
    _post(second, "second", {"x": 1})
    assert ">3 msg<" in svg(first.bound) and ">1 msg<" in svg(second.bound)
    assert check.calls == 0 and "msg" not in svg(check)  # the user's object is left as it was
    assert not hasattr(check, "_emit_hook")


def test_one_publish_in_two_served_flows_has_a_socket_each(sk_serve, zsock):
    pub = sk.publish(port=0, topic="t")
    one = sk_serve(sk.service(lambda x: x, name="a") >> pub, name="one")
    port_one = pub.port
    two = sk_serve(sk.service(lambda x: x, name="b") >> pub, name="two")
    port_two = pub.port
    assert port_one and port_two and port_one != port_two
    one.stop()
    sub = zsock(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"t")
    sub.connect(f"tcp://127.0.0.1:{port_two}")
    received: list[bytes] = []

    def publish_until_heard() -> bool:
        _post(two, "two", {"x": 1})
        if sub.poll(50):
            received.append(sub.recv_multipart()[1])
        return bool(received)

    wait_for(publish_until_heard, what="a message from the flow still served")
    assert b'"x":1' in received[0]


def test_two_served_things_cannot_share_a_fixed_publish_port(sk_serve):
    first = sk.publish(port=0, topic="t")
    sk_serve(sk.service(lambda x: x, name="a") >> first, name="one")
    fixed = sk.publish(port=first.port, topic="t")
    with pytest.raises(sk.WiringError, match="already bound by 'one'"):
        sk.serve(sk.service(lambda x: x, name="b") >> fixed, name="two", http=0)


def test_serving_again_applies_new_limits_and_token_and_warns_when_the_token_goes(sk_serve, caplog):
    srv = sk_serve(sk.service(lambda text: len(text), name="size"), name="size", token="t1", max_body=1000)
    big = {"text": "x" * 200}
    assert _post(srv, "size", big, {"Authorization": "Bearer t1"}).status_code == 200
    sk_serve(sk.service(lambda text: len(text), name="size"), name="size", token="t2", max_body=100, keep=5)
    assert _post(srv, "size", {"text": "a"}, {"Authorization": "Bearer t1"}).status_code == 401
    assert _post(srv, "size", big, {"Authorization": "Bearer t2"}).status_code == 413
    for _ in range(10):
        _post(srv, "size", {"text": "a"}, {"Authorization": "Bearer t2"})
    assert len(srv.traffic) == 5
    with caplog.at_level("WARNING", logger="svckit"):
        logger = __import__("logging").getLogger("svckit")
        logger.addHandler(caplog.handler)
        try:
            sk_serve(sk.service(lambda text: len(text), name="size"), name="size")
        finally:
            logger.removeHandler(caplog.handler)
    assert any("without token=" in r.getMessage() for r in caplog.records)
    assert _post(srv, "size", {"text": "a"}).status_code == 200  # as the warning says


def test_reserving_returns_at_once_and_the_old_generation_drains_in_the_background(sk_serve):
    release = threading.Event()
    started = threading.Event()
    torn: list[str] = []

    class Slow(sk.Service):
        def teardown(self) -> None:
            torn.append("slow")

        def process(self, x: int) -> dict:
            started.set()
            release.wait(10)
            return {"who": "slow"}

    srv = sk_serve(Slow(), name="m")
    results: list[dict] = []
    caller = threading.Thread(target=lambda: results.append(_post(srv, "m", {"x": 1}).json()))
    caller.start()
    try:
        assert started.wait(10)
        sk_serve(sk.service(lambda x: {"who": "fast"}, name="fast"), name="m")  # returns though one is in flight
        assert torn == []  # the old stage is still busy
        assert _post(srv, "m", {"x": 1}).json()["who"] == "fast"
    finally:
        release.set()
        caller.join(10)
    assert results == [{"x": 1, "who": "slow"}]
    wait_for(lambda: torn == ["slow"], what="the old generation's teardown")


def test_a_class_service_called_in_a_cell_is_set_up_once_and_torn_down_at_shutdown(sk_runtime):
    events: list[str] = []

    class Seen(sk.Service):
        def setup(self) -> None:
            self.seen: set[int] = set()
            events.append("setup")

        def teardown(self) -> None:
            events.append("teardown")

        def process(self, x: int) -> dict:
            self.seen.add(x)
            return {"n": len(self.seen)}

    svc = Seen()
    assert svc(x=1)["n"] == 1 and svc(x=2)["n"] == 2
    flow = sk.service(lambda x: x, name="pre") >> svc
    assert flow(x=3)["n"] == 3
    assert events == ["setup"]
    sk.shutdown()
    assert events == ["setup", "teardown"]


def test_an_error_in_a_cell_shows_the_users_frames():
    def explode(x: int) -> dict:
        raise ValueError("bad x")

    flow = sk.service(lambda x: x, name="pre") >> sk.service(explode, name="explode")
    with pytest.raises(ValueError, match="bad x") as info:
        flow(x=1)
    frames = traceback.extract_tb(info.value.__traceback__)
    svckit_frames = [f for f in frames if "/svckit/" in f.filename]
    assert frames[-1].name == "explode"
    assert len(svckit_frames) <= 1, [f"{f.filename}:{f.name}" for f in frames]


def test_shutdown_runs_async_teardowns_without_starting_a_new_runtime():
    from svckit.runtime import current

    events: list[str] = []

    class Async(sk.Service):
        async def setup(self) -> None:
            events.append("setup")

        async def teardown(self) -> None:
            events.append("teardown")

        def process(self, x: int) -> dict:
            return {"x": x}

    try:
        Async()(x=1)
        sk.shutdown()
        assert events == ["setup", "teardown"]
        assert current() is None  # nothing started again by the teardown
    finally:
        sk.shutdown()


def test_a_request_cut_short_by_stop_is_counted_once(sk_serve):
    import asyncio

    started = threading.Event()

    @sk.service
    async def stuck(x: int) -> dict:
        started.set()
        await asyncio.sleep(60)
        return {}

    srv = sk_serve(stuck, name="stuck", http=None, zmq=0, timeout=None)
    client = sk.ZmqClient(srv.zmq_url, timeout=30, connect_timeout=0.5)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.stuck(x=1)
        except sk.SvckitError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert started.wait(10)
        srv.stop(timeout=0.2)
        status = srv.status()
        assert status["received"] == status["replied"] == 1
        assert status["errors_by_type"] == {"ServiceUnavailable": 1}
    finally:
        caller.join(15)
        client.close()
    assert errors and isinstance(errors[0], sk.ServiceUnavailable)
