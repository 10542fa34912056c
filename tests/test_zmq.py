"""The ZMQ endpoint and ZmqClient, on real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import zmq

import svckit as sk


@sk.service
def parse(text: str) -> dict[str, Any]:
    return {"words": text.split()}


_REQ_SCRIPT = r"""
import json, sys, zmq
ctx = zmq.Context()
out = []
for frames in json.loads(sys.argv[2]):
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(sys.argv[1])
    sock.send_multipart([f.encode() for f in frames])
    if not sock.poll(10000):
        out.append(None)
    else:
        status, body = sock.recv_multipart()
        out.append([status.decode(), json.loads(body)])
    sock.close()
ctx.term()
print(json.dumps(out))
"""


def test_raw_req_client_in_another_process(sk_serve: Callable[..., sk.Served]) -> None:
    srv = sk_serve(parse, name="wc", zmq=0)
    requests = [
        ["wc", json.dumps({"text": "a b c"})],
        ["wc", json.dumps({"txt": "a"})],
        ["wc", "not json"],
        ["nope", "{}"],
        ["wc", "[1, 2]"],
        ["wc", "{}", "extra", "frames"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _REQ_SCRIPT, srv.zmq_url, json.dumps(requests)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b"svckit" not in proc.stderr
    replies = json.loads(proc.stdout)
    assert replies[0] == ["ok", {"text": "a b c", "words": ["a", "b", "c"]}]
    status, body = replies[1]
    assert status == "error"
    assert body["error"]["type"] == "BadMessage" and body["error"]["field"] == "text"
    assert replies[2][0] == "error" and replies[2][1]["error"]["type"] == "BadRequest"
    assert replies[3][0] == "error" and replies[3][1]["error"]["type"] == "UnknownAction"
    assert replies[4][0] == "error" and replies[4][1]["error"]["type"] == "BadMessage"
    assert replies[5][0] == "error" and replies[5][1]["error"]["type"] == "BadRequest"


def test_dealer_with_50_requests_in_flight(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    running = {"now": 0, "most": 0}

    @sk.service
    async def slow_echo(i: int) -> dict[str, Any]:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.05)
        running["now"] -= 1
        return {"echo": i}

    srv = sk_serve(slow_echo, name="echo", zmq=0)
    dealer = zsock(zmq.DEALER)
    dealer.connect(srv.zmq_url)
    for i in range(50):
        dealer.send_multipart([b"", b"echo", json.dumps({"i": i}).encode()])
    seen = set()
    for _ in range(50):
        assert dealer.poll(10_000), "a requester must never hang"
        empty, status, body = dealer.recv_multipart()
        assert (empty, status) == (b"", b"ok")
        reply = json.loads(body)
        assert reply["echo"] == reply["i"]
        seen.add(reply["i"])
    assert seen == set(range(50))
    assert running["most"] > 10, "requests in flight are answered concurrently"
    assert srv.status()["replied"] == 50


def test_malformed_requests_get_error_frames(sk_serve: Callable[..., sk.Served], zsock: Any) -> None:
    srv = sk_serve(parse, name="wc", zmq=0)
    dealer = zsock(zmq.DEALER)
    dealer.connect(srv.zmq_url)
    dealer.send_multipart([b"wc", b"{}"])  # no empty delimiter frame
    assert dealer.poll(5000)
    frames = dealer.recv_multipart()
    assert frames[-2] == b"error"
    assert json.loads(frames[-1])["error"]["type"] == "BadRequest"
    dealer.send_multipart([b""])  # nothing after the delimiter
    assert dealer.poll(5000)
    assert dealer.recv_multipart()[-2] == b"error"


def test_zmq_client_calls_and_maps_errors(sk_serve: Callable[..., sk.Served]) -> None:
    class Counter(sk.Service):
        def process(self, n: int) -> dict[str, Any]:
            return {"twice": 2 * n}

        @sk.handle("reset")
        def reset(self) -> dict[str, Any]:
            return {"reset": True}

    srv = sk_serve(Counter(), name="counter", zmq=0)
    with sk.ZmqClient(srv.zmq_url, timeout=5) as client:
        assert client.call("counter", n=2)["twice"] == 4
        assert client.counter({"n": 3})["twice"] == 6
        assert client.reset() == {"reset": True}
        with pytest.raises(sk.BadMessage) as info:
            client.counter(n="x")
        assert info.value.field == "n"
        with pytest.raises(sk.UnknownAction):
            client.missing()
    assert repr(client) == f"ZmqClient({srv.zmq_url!r})"


def test_zmq_client_timeout_does_not_mix_up_replies(sk_serve: Callable[..., sk.Served]) -> None:
    @sk.service
    async def nap(seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    srv = sk_serve(nap, zmq=0)
    client = sk.ZmqClient(srv.zmq_url, timeout=5)
    with pytest.raises(sk.ServiceTimeout):
        client.nap(seconds=0.3, timeout=0.05)
    assert client.nap(seconds=0.0)["slept"] == 0.0  # not the late 0.3 reply
    client.close()


def test_zmq_client_is_thread_safe(sk_serve: Callable[..., sk.Served]) -> None:
    srv = sk_serve(sk.service(lambda i: i, name="same"), zmq=0)
    client = sk.ZmqClient(srv.zmq_url, timeout=5)
    bad: list[Any] = []

    def work(start: int) -> None:
        for i in range(start, start + 50):
            reply = client.same(i=i)
            if reply["same"] != i:
                bad.append(reply)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    client.close()
    assert not bad


def test_fatal_and_token_over_zmq(sk_serve: Callable[..., sk.Served]) -> None:
    @sk.service
    def doom(x: int) -> dict[str, Any]:
        if x < 0:
            raise sk.Fatal("negative")
        return {"ok": True}

    srv = sk_serve(doom, zmq=0, token="s3cret")
    with pytest.raises(sk.Unauthorized):
        sk.ZmqClient(srv.zmq_url, timeout=5).doom(x=1)
    client = sk.ZmqClient(srv.zmq_url, timeout=5, token="s3cret")
    assert client.doom(x=1) == {"x": 1, "ok": True}
    with pytest.raises(sk.Fatal):
        client.doom(x=-1)
    with pytest.raises(sk.ServiceUnavailable):
        client.doom(x=1)
    srv.restart()
    assert client.doom(x=2)["ok"] is True
    client.close()


def test_http_and_zmq_share_metrics(sk_serve: Callable[..., sk.Served], client_for: Any) -> None:
    srv = sk_serve(parse, name="wc", http=0, zmq=0)
    sk.ZmqClient(srv.zmq_url, timeout=5).wc(text="a")
    client_for(srv.url).wc(text="b c")
    status = client_for(srv.url).status()["served"]["wc"]
    assert status["received"] == 2 and status["replied"] == 2
    assert status["zmq"] == srv.zmq_url
    endpoints = set(srv.traffic["endpoint"])
    assert endpoints == {"http", "zmq"}
    assert list(srv.outputs["text"]) == ["a", "b c"]


def test_port_in_use_is_raised_in_the_caller(sk_runtime: Any, zsock: Any) -> None:
    taken = zsock(zmq.ROUTER)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    with pytest.raises(sk.PortInUse) as info:
        sk.serve(parse, name="wc", zmq=port)
    assert str(port) in str(info.value)
    assert "wc" not in sk_runtime.served


def test_stop_releases_the_port_every_time(sk_runtime: Any, zsock: Any) -> None:
    srv = sk.serve(parse, name="wc", zmq=0)
    port = srv.zmq_port
    srv.stop()
    for _ in range(200):
        srv = sk.serve(parse, name="wc", zmq=port)
        assert srv.zmq_port == port
        srv.stop()
    raw = zsock(zmq.ROUTER)
    raw.bind(f"tcp://127.0.0.1:{port}")  # and anyone else can have it now
    raw.close(linger=0)


def test_replace_keeps_the_zmq_port(sk_serve: Callable[..., sk.Served]) -> None:
    srv = sk_serve(parse, name="wc", zmq=0)
    url = srv.zmq_url
    again = sk_serve(sk.service(lambda text: len(text), name="size"), name="wc", zmq=0)
    assert again is srv and srv.zmq_url == url
    assert sk.ZmqClient(url, timeout=5).wc(text="abc")["size"] == 3
