"""Sources: ``every``, ``Service.loop()``, ``subscribe`` and ``pull``, served as pipelines."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq

import svckit as sk
from svckit.served import pending
from svckit.testing import collect, holds, wait_for

logger = logging.getLogger(__name__)


class Ticker(sk.Service):
    """A loop service: counts up; ``reset`` starts again."""

    step: int = 1

    def setup(self) -> None:
        self.n = 0

    def loop(self) -> dict[str, Any]:
        self.n += self.step
        return {"n": self.n}

    @sk.handle("reset")
    def reset(self) -> dict[str, Any]:
        self.n = 0
        return {"reset": True}


def test_a_loop_service_is_a_source() -> None:
    assert Ticker.role == "source"
    assert Ticker(interval=0.5).interval == 0.5
    with pytest.raises(sk.WiringError):
        sk.service(lambda x: x, name="first") >> Ticker()


def test_loop_ticks_and_outputs_appear(sk_serve: Callable[..., sk.Served], client_for: Any) -> None:
    double = sk.service(lambda n: 2 * n, name="double")
    srv = sk_serve(Ticker(interval=0.02, step=1) >> double, name="ticker")
    wait_for(lambda: len(srv.outputs) >= 3, what="three ticks")
    frame = srv.outputs
    assert list(frame["n"][:3]) == [1, 2, 3]
    assert list(frame["double"][:3]) == [2, 4, 6]
    status = srv.status()
    assert status["iterations"] >= 3 and status["errors"] == 0
    assert set(srv.traffic["endpoint"]) == {"loop"}
    # its @handle actions are served too, and a request enters the flow at the top
    client = client_for(srv.url)
    assert client.reset() == {"reset": True}
    assert client.ticker(n=21)["double"] == 42


def test_a_loop_that_raises_keeps_running_until_fatal(sk_serve: Callable[..., sk.Served]) -> None:
    calls = itertools.count(1)

    class Flaky(sk.Service):
        def loop(self) -> dict[str, Any]:
            n = next(calls)
            if n == 2:
                raise ValueError("two is bad")
            if n == 5:
                raise sk.Fatal("five is the end")
            return {"n": n}

    srv = sk_serve(Flaky(interval=0.01), name="flaky")
    wait_for(lambda: srv.state is sk.State.FAILED, what="the Fatal loop")
    assert list(srv.outputs["n"]) == [1, 3, 4]
    status = srv.status()
    assert status["errors_by_type"] == {"ValueError": 1, "Fatal": 1}
    assert status["last_error"]["service"] == "flaky"
    iterations = status["iterations"]
    holds(lambda: srv.status()["iterations"] == iterations, 0.05, what="a failed loop staying quiet")


def test_emit_from_a_sync_and_an_async_loop(sk_serve: Callable[..., sk.Served]) -> None:
    class Burst(sk.Service):
        def loop(self) -> None:
            for i in range(3):
                self.emit(i=i)

    class AsyncBurst(sk.Service):
        async def loop(self) -> dict[str, Any]:
            self.emit({"i": -1})
            return {"i": -2}

    with pytest.raises(sk.StateError):
        Burst().loop()
    rows = collect()
    srv = sk_serve(Burst(interval=5) >> rows, name="burst")
    assert [m["i"] for m in rows.wait(3)] == [0, 1, 2]
    rows2 = collect()
    srv2 = sk_serve(AsyncBurst(interval=5) >> rows2, name="aburst")
    assert [m["i"] for m in rows2.wait(2)] == [-1, -2]
    srv.stop()
    srv2.stop()


#: The bound of the queue between a ``Service.loop()`` and its flow (``sources.Pipeline``).
LOOP_QUEUE = 100


def test_async_emit_on_a_full_queue_drops_and_counts(sk_serve: Callable[..., sk.Served]) -> None:
    gate = threading.Event()
    flooding = threading.Event()
    flooding.set()
    emitted = itertools.count()

    class Firehose(sk.Service):
        async def loop(self) -> None:  # on the runtime loop: emit never waits
            if flooding.is_set():
                for _ in range(50):
                    self.emit(i=next(emitted))

    @sk.service
    def slow(i: int) -> None:
        gate.wait(10)

    srv = sk_serve(Firehose(interval=0.005) >> slow, name="firehose", keep=200)
    most = 0

    def flooded() -> bool:
        nonlocal most
        most = max(most, pending(srv))
        return srv.status()["dropped"] >= 2000

    try:
        wait_for(flooded, timeout=20, what="2000 counted drops")
        holds(lambda: pending(srv) <= LOOP_QUEUE + 1, 0.1, what="the queue staying bounded")
        assert most <= LOOP_QUEUE + 1, f"{most} messages held for a queue of {LOOP_QUEUE} and one in flight"
        assert srv.status()["received"] <= 1, "the blocked stage took in one message at most"
        traffic = srv.traffic
        assert len(traffic) <= 200, "the traffic log is a bounded ring"
        dropped = traffic[traffic["direction"] == "dropped"]
        assert len(dropped) > 100
        assert set(dropped["endpoint"]) == {"loop"} and set(dropped["action"]) == {"firehose"}
    finally:
        flooding.clear()
        gate.set()
    srv.settle()
    status = srv.status()
    total = next(emitted)
    assert status["received"] + status["dropped"] == total, "every emitted message was handled or counted"
    assert status["received"] == status["replied"] and status["errors"] == 0
    assert status["received"] >= LOOP_QUEUE, "what was queued went through once the stage was free"


def test_sync_emit_and_return_wait_for_room(sk_serve: Callable[..., sk.Served]) -> None:
    gate = threading.Event()
    producing = threading.Event()
    producing.set()
    made = itertools.count(1)
    last = [0]

    def fresh() -> dict[str, int]:
        last[0] = next(made)
        return {"i": last[0]}

    class Steady(sk.Service):
        def loop(self) -> dict[str, Any] | None:  # in the worker pool: emit waits while the queue is full
            if not producing.is_set():
                return None
            for _ in range(10):
                self.emit(fresh())
            return fresh()  # a returned message waits for room as well

    @sk.service
    def slow(i: int) -> None:
        gate.wait(10)

    srv = sk_serve(Steady(interval=0.005) >> slow, name="steady")
    try:
        wait_for(lambda: pending(srv) == LOOP_QUEUE + 1, what="a full queue and one message in flight")
        iterations = srv.status()["iterations"]
        holds(
            lambda: (
                srv.status()["dropped"] == 0
                and pending(srv) == LOOP_QUEUE + 1
                and last[0] <= LOOP_QUEUE + 2  # the one more the loop is holding, waiting for room
                and srv.status()["iterations"] == iterations
            ),
            0.1,
            what="a full queue holding the loop back, without drops",
        )
    finally:
        gate.set()
    wait_for(lambda: srv.status()["received"] >= 3 * LOOP_QUEUE, what="the loop going on once there is room")
    producing.clear()
    status = srv.settle().status()
    assert status["received"] == status["replied"] == last[0], "each message made went through once"
    assert status["dropped"] == 0 and status["errors"] == 0


def test_every_return_values(sk_serve: Callable[..., sk.Served]) -> None:
    values = iter([{"a": 1}, None, 7])
    done = threading.Event()

    def source() -> Any:
        try:
            return next(values)
        except StopIteration:
            done.set()
            return None

    rows = collect()
    srv = sk_serve(sk.every(0.01, source, output="value") >> rows, name="values")
    assert done.wait(5)
    assert rows.wait(2) == [{"a": 1}, {"value": 7}]
    assert srv.status()["iterations"] >= 4
    assert repr(sk.every(2, source)) == "<Source every(2, source)>"
    with pytest.raises(sk.WiringError):
        sk.every(0, source)


def test_pull_a_b_push_moves_100k_messages(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    total = 100_000
    feed = zsock(zmq.PUSH)
    feed.setsockopt(zmq.SNDHWM, 0)
    feed_port = feed.bind_to_random_port("tcp://127.0.0.1")
    out = zsock(zmq.PULL)
    out.setsockopt(zmq.RCVHWM, 0)
    out_port = out.bind_to_random_port("tcp://127.0.0.1")

    a = sk.service(lambda i: i + 1, name="a")
    b = sk.service(lambda a: a * 2, name="b")
    flow = sk.pull(f"tcp://127.0.0.1:{feed_port}") >> a >> b >> sk.push(f"tcp://127.0.0.1:{out_port}")
    srv = sk_serve(flow, name="pipeline")

    raw: list[bytes] = []

    def drain() -> None:  # keep the receiving end cheap: decode after the clock stops
        while len(raw) < total and out.poll(10_000):
            try:
                while True:
                    raw.append(out.recv(zmq.NOBLOCK))
            except zmq.Again:
                pass

    reader = threading.Thread(target=drain)
    start = time.perf_counter()
    reader.start()
    for i in range(total):
        feed.send(b'{"i":%d}' % i)
    reader.join(60)
    elapsed = time.perf_counter() - start
    logger.warning("pull >> a >> b >> push: %d messages in %.2f s (%.0f msg/s)", len(raw), elapsed, total / elapsed)
    messages = [json.loads(r) for r in raw]
    assert all(m["b"] == (m["i"] + 1) * 2 for m in messages)
    assert len(raw) == total, f"sent {total}, received {len(raw)}"
    assert {m["i"] for m in messages} == set(range(total)), "each message exactly once"
    status = srv.status()
    assert status["received"] == total and status["replied"] == total
    assert status["errors"] == 0 and status["dropped"] == 0


def test_pull_backpressure_slows_the_sender(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    feed = zsock(zmq.PUSH)
    feed.setsockopt(zmq.SNDHWM, 10)
    port = feed.bind_to_random_port("tcp://127.0.0.1")
    gate = threading.Event()

    @sk.service
    def slow(i: int) -> None:
        gate.wait(10)

    rows = collect()
    srv = sk_serve(sk.pull(f"tcp://127.0.0.1:{port}", hwm=10, queue=5, concurrency=1) >> slow >> rows, name="slow")
    pad = b"x" * 20_000  # big enough that the kernel's socket buffers hold few of them
    sent = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            feed.send(b'{"i":%d,"pad":"%s"}' % (sent, pad), zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            if sent > 0 and not feed.poll(200, zmq.POLLOUT):
                break  # the sender is held back: nothing grows without bound
    assert sent < 2000, "a slow stage must slow the sender down"
    gate.set()
    rows.wait(sent, timeout=20)
    assert srv.status()["dropped"] == 0


def test_subscribe_drops_when_full_are_counted(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    pub = zsock(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    gate = threading.Event()

    @sk.service
    def stuck(i: int) -> None:
        gate.wait(10)

    srv = sk_serve(sk.subscribe(f"tcp://127.0.0.1:{port}", "t", queue=2) >> stuck, name="stuck")

    def flood() -> bool:
        for i in range(200):
            pub.send_multipart([b"t", b'{"i":%d}' % i])
        return srv.status()["dropped"] > 0

    wait_for(flood, timeout=10, what="drops to be counted")
    gate.set()
    traffic = srv.traffic
    assert (traffic["direction"] == "dropped").any()
    assert set(traffic.loc[traffic["direction"] == "dropped", "endpoint"]) == {"sub"}


def test_a_source_stands_first_and_needs_serving() -> None:
    double = sk.service(lambda n: 2 * n, name="double")
    with pytest.raises(sk.WiringError):
        double >> sk.pull("tcp://127.0.0.1:5999")
    with pytest.raises(sk.WiringError):
        sk.pull("localhost:5999")
    flow = sk.every(1, lambda: None) >> double
    assert flow(n=2) == {"n": 2, "double": 4}  # a message passes the source unchanged


def test_restart_and_stop_end_the_loop(sk_serve: Callable[..., sk.Served]) -> None:
    srv = sk_serve(Ticker(interval=0.01), name="ticker")
    wait_for(lambda: srv.status()["iterations"] >= 2)
    srv.restart()
    wait_for(lambda: srv.state is sk.State.RUNNING and srv.status()["iterations"] >= 4)
    srv.stop()
    stopped = srv.status()["iterations"]
    holds(lambda: srv.status()["iterations"] == stopped, 0.05, what="a stopped loop staying quiet")
