"""Sinks: ``publish``, ``push``, ``post`` and ``table``, and ``ZmqClient.subscribe``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
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


def test_subscribe_iterator_with_timeout(sk_serve: Callable[..., sk.Served]) -> None:
    pub = sk.publish(port=0, topic="words")
    srv = sk_serve(sk.service(lambda text: text.split(), name="split") >> pub, name="splitter", zmq=0)
    with sk.ZmqClient(pub.address).subscribe("words", timeout=5) as sub:
        wait_for(lambda: pub.subscribers == 1)
        sk.ZmqClient(srv.zmq_url, timeout=5).splitter(text="a b")
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
    sk.ZmqClient(srv.zmq_url, timeout=5).poster(x=10)
    assert [m["inc"] for m in received.wait(2)] == [2, 11]
    broken = sk.service(lambda x: x, name="same") >> sk.post(f"{target.url}/nothing-here")
    with pytest.raises(sk.RemoteError):
        broken(x=1)


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
