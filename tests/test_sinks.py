"""Sinks: ``publish``, ``push``, ``post`` and ``table``, and ``ZmqClient.subscribe``."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

import svckit as sk
from svckit.testing import collect, wait_for


def test_pub_sub_chain_between_two_served_flows(sk_serve: Callable[..., sk.Served]) -> None:
    counter = itertools.count(1)
    pub = sk.publish(port=0, topic="ticks")
    first = sk_serve(sk.every(0.01, lambda: {"n": next(counter)}, name="tick") >> pub, name="ticker")
    assert pub.address is not None and pub.address.startswith("tcp://127.0.0.1:")
    square = sk.service(lambda n: n * n, name="square")
    rows = collect()
    second = sk_serve(sk.subscribe(pub.address, "ticks") >> square >> rows, name="squares")
    got = rows.wait(5)
    assert all(m["square"] == m["n"] ** 2 for m in got)
    ns = [m["n"] for m in got]
    assert ns == sorted(ns) and len(set(ns)) == len(ns), "in order, each once"
    wait_for(lambda: pub.subscribers == 1)
    wait_for(lambda: len(second.outputs) >= 5)
    assert first.status()["errors"] == 0


def test_publish_drops_are_counted(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    pub = sk.publish(port=0, topic="t", hwm=5)
    srv = sk_serve(pub, name="pub", zmq=0)
    sub = zsock(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 5)
    sub.setsockopt(zmq.SUBSCRIBE, b"t")
    sub.connect(pub.address)
    wait_for(lambda: pub.subscribers == 1, what="the subscription")
    client = sk.ZmqClient(srv.zmq_url, timeout=5)
    big = "x" * 100_000  # the subscriber never reads: its queues fill up quickly
    wait_for(lambda: client.pub(pad=big) and srv.status()["dropped"] > 0, what="a counted drop")
    client.close()
    assert pub.dropped == srv.status()["dropped"]
    traffic = srv.traffic
    dropped = traffic[traffic["direction"] == "dropped"]
    assert set(dropped["endpoint"]) == {"pub"} and set(dropped["action"]) == {"t"}


@pytest.mark.parametrize("drop", ["all", "slow"])
def test_a_stalled_subscriber_and_a_fast_one(sk_serve: Callable[..., sk.Served], zsock: Any, drop: str) -> None:
    """drop="all": one stalled subscriber costs everyone the message, and every drop is
    counted; drop="slow": the fast subscriber gets everything, as with plain ZMQ PUB."""
    pub = sk.publish(port=0, topic="t", hwm=50, drop=drop)
    srv = sk_serve(pub, name="pub", zmq=0)
    stalled, fast = zsock(zmq.SUB), zsock(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 5)
    fast.setsockopt(zmq.RCVHWM, 100_000)
    for sub in (stalled, fast):
        sub.setsockopt(zmq.SUBSCRIBE, b"t")
        sub.connect(pub.address)
    wait_for(lambda: pub.subscribers == 2, what="both subscriptions")
    got: list[int] = []
    done = threading.Event()

    def read() -> None:  # the fast subscriber: reads everything as it comes
        while not done.is_set():
            if fast.poll(20):
                got.append(json.loads(fast.recv_multipart()[-1])["i"])

    reader = threading.Thread(target=read)
    reader.start()
    count, pad = 1500, "x" * 20_000  # 30 MB: far more than the stalled one's socket buffers hold
    try:
        with sk.ZmqClient(srv.zmq_url, timeout=5) as client:
            for i in range(count):
                client.pub(i=i, pad=pad)
        dropped = srv.status()["dropped"]
        if drop == "all":
            assert dropped > 0
            wait_for(lambda: len(got) + dropped == count, what="every message received or counted as dropped")
        else:
            assert dropped == 0  # plain PUB: libzmq drops for the stalled peer and does not say
            wait_for(lambda: len(got) == count, what="the fast subscriber to get every message")
        assert got == sorted(set(got))  # in order, none twice
    finally:
        done.set()
        reader.join(5)


def test_publish_refuses_an_unknown_drop_mode() -> None:
    with pytest.raises(sk.WiringError, match="drop='never'"):
        sk.publish(port=0, drop="never")


def test_subscribe_iterator_with_timeout(sk_serve: Callable[..., sk.Served]) -> None:
    pub = sk.publish(port=0, topic="words")
    srv = sk_serve(sk.service(lambda text: text.split(), name="split") >> pub, name="splitter", zmq=0)
    with (
        sk.ZmqClient(pub.address) as listener,
        listener.subscribe("words", timeout=5) as sub,
        sk.ZmqClient(srv.zmq_url, timeout=5) as client,
    ):
        wait_for(lambda: pub.subscribers == 1)
        client.splitter(text="a b")
        assert next(sub) == {"text": "a b", "split": ["a", "b"]}
        with pytest.raises(sk.ServiceTimeout):
            sub.recv(timeout=0.05)


def test_publish_in_a_cell_needs_serving_and_ports_are_released(sk_runtime: Any, zsock: Any) -> None:
    pub = sk.publish(port=0, topic="t")
    flow = sk.service(lambda x: x, name="same") >> pub
    with pytest.raises(sk.StateError, match="served"):
        flow(x=1)
    srv = sk.serve(flow, name="pubber", zmq=0)
    port = pub.port
    assert port
    srv.stop()
    assert pub.address is None
    for _ in range(50):  # restarts publish on the same port, and stop frees it each time
        srv.start()
        assert pub.port == port
        srv.stop()
    raw = zsock(zmq.PUB)
    raw.bind(f"tcp://127.0.0.1:{port}")


def test_reserving_a_new_publish_on_the_same_port(sk_serve: Callable[..., sk.Served]) -> None:
    first = sk.publish(port=0, topic="t")
    sk_serve(sk.service(lambda x: x, name="one") >> first, name="pubber")
    port = first.port
    second = sk.publish(port=port, topic="t")  # a re-run cell makes a new sink on the same port
    srv = sk_serve(sk.service(lambda x: -x, name="two") >> second, name="pubber")
    assert second.port == port and srv.state is sk.State.RUNNING


def test_push_sink_to_a_raw_pull(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    out = zsock(zmq.PULL)
    port = out.bind_to_random_port("tcp://127.0.0.1")
    srv = sk_serve(sk.service(lambda i: i * 3, name="triple") >> sk.push(f"tcp://127.0.0.1:{port}"), zmq=0)
    client = sk.ZmqClient(srv.zmq_url, timeout=5)
    for i in range(10):
        client.call(srv.name, i=i)
    client.close()
    got = []
    while len(got) < 10 and out.poll(5000):
        got.append(json.loads(out.recv()))
    assert sorted(m["triple"] for m in got) == [i * 3 for i in range(10)]


def test_post_sink(sk_serve: Callable[..., sk.Served]) -> None:
    received = collect()
    target = sk_serve(received, name="ingest", http=0)
    flow = sk.service(lambda x: x + 1, name="inc") >> sk.post(f"{target.url}/ingest")
    assert flow(x=1) == {"x": 1, "inc": 2}  # works in a cell
    srv = sk_serve(flow, name="poster", zmq=0)
    with sk.ZmqClient(srv.zmq_url, timeout=5) as client:
        client.poster(x=10)
    assert [m["inc"] for m in received.wait(2)] == [2, 11]
    broken = sk.service(lambda x: x, name="same") >> sk.post(f"{target.url}/nothing-here")
    with pytest.raises(sk.RemoteError):
        broken(x=1)


class _SlowTarget(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that holds every POST until ``release`` is set."""

    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.release = threading.Event()
        self.waiting = threading.Semaphore(0)  # one count per POST that arrived and waits
        self.bodies: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ingest"


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    server: _SlowTarget

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.waiting.release()
        released = self.server.release.wait(10)
        self.server.bodies.append(body)
        self.send_response(200 if released else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass  # quiet: no lines on stderr


@pytest.fixture
def slow_target() -> Iterator[_SlowTarget]:
    server = _SlowTarget()
    thread = threading.Thread(target=server.serve_forever, name="slow-target")
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not thread.is_alive()


def test_post_to_a_slow_target_never_blocks_the_loop(
    sk_serve: Callable[..., sk.Served], client_for: Any, slow_target: _SlowTarget
) -> None:
    outstanding = 3
    poster = sk_serve(sk.service(lambda x: x + 1, name="inc") >> sk.post(slow_target.url), name="poster")

    @sk.service
    async def ping(n: int) -> int:  # runs on the runtime loop itself
        return n

    bystander = sk_serve(ping, name="ping", http=0, zmq=0)
    replies: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def send(x: int) -> None:
        try:
            with sk.Client(poster.url, timeout=20) as client:
                replies.append(client.poster(x=x))
        except BaseException as exc:
            errors.append(exc)

    senders = [threading.Thread(target=send, args=(x,)) for x in range(outstanding)]
    for t in senders:
        t.start()
    try:
        for _ in range(outstanding):  # every POST reached the target and is held there
            assert slow_target.waiting.acquire(timeout=10), "a POST did not reach the target: does post block the loop?"
        http_client = client_for(bystander.url)
        with sk.ZmqClient(bystander.zmq_url, timeout=5) as zmq_client:
            for n in range(5):
                start = time.monotonic()
                assert http_client.ping(n=n)["ping"] == n
                assert zmq_client.ping(n=n)["ping"] == n
                assert client_for(poster.url).health()  # the poster's own port answers too
                assert time.monotonic() - start < 1.0, "a served flow waited behind an outstanding post"
        assert not replies and poster.status()["replied"] == 0, "the posts are still outstanding"
    finally:
        slow_target.release.set()
        for t in senders:
            t.join(20)
    assert not errors
    assert sorted(r["inc"] for r in replies) == [1, 2, 3]
    assert sorted(b["inc"] for b in slow_target.bodies) == [1, 2, 3]
    assert poster.settle().status()["errors"] == 0


def test_table_in_a_served_flow(sk_serve: Callable[..., sk.Served], client_for: Any) -> None:
    rows = sk.table("test_sinks_served", columns=["text", "words"])
    rows.clear()
    try:
        count = sk.service(lambda text: len(text.split()), name="words")
        srv = sk_serve(count >> rows, name="counter")
        client = client_for(srv.url)
        for text in ["a", "a b", "a b c"]:
            assert client.counter(text=text)["words"] == len(text.split())
        srv.settle()
        assert rows.frame.to_dict("list") == {"text": ["a", "a b", "a b c"], "words": [1, 2, 3]}
        assert rows.added == 3
    finally:
        rows.clear()


def test_table_at_the_end_of_a_served_pipeline(sk_serve: Callable[..., sk.Served]) -> None:
    rows = sk.table("test_sinks_pipeline")
    rows.clear()
    values = iter(range(4))

    def numbers() -> dict[str, int] | None:
        i = next(values, None)
        return None if i is None else {"i": i}

    try:
        source = sk.every(0.01, numbers)
        srv = sk_serve(source >> sk.service(lambda i: i * i, name="square") >> rows, name="squares")
        wait_for(lambda: rows.added >= 4, what="four rows")
        srv.settle()
        frame = rows.frame
        assert list(frame.columns) == ["i", "square"]  # the message's keys, in order
        assert frame.values.tolist() == [[0, 0], [1, 1], [2, 4], [3, 9]]
        assert len(srv.outputs) == 4
    finally:
        rows.clear()


def test_table_collects_rows() -> None:
    rows = sk.table("test_sinks_rows", columns=["x", "y"])
    rows.clear()
    assert sk.table("test_sinks_rows") is rows and sk.tables()["test_sinks_rows"] is rows
    flow = sk.service(lambda x: {"y": x * 2, "z": 0}, name="calc") >> rows
    for x in range(3):
        flow(x=x)
    assert rows.frame.to_dict("list") == {"x": [0, 1, 2], "y": [0, 2, 4]}
    assert rows.wait(3).added == 3 and len(rows) == 3
    assert repr(rows) == "<Sink table('test_sinks_rows')>"
    with pytest.raises(TimeoutError):
        rows.wait(4, timeout=0.01)
    rows.clear()
    assert list(rows.frame.columns) == ["x", "y"] and rows.frame.empty
