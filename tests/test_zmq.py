"""The ZMQ endpoint and ZmqClient, on real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

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
    with sk.ZmqClient(srv.zmq_url, timeout=5) as stranger, pytest.raises(sk.Unauthorized):
        stranger.doom(x=1)
    with sk.ZmqClient(srv.zmq_url, timeout=5, token="s3cret") as client:
        assert client.doom(x=1) == {"x": 1, "ok": True}
        with pytest.raises(sk.Fatal):
            client.doom(x=-1)
        with pytest.raises(sk.ServiceUnavailable):
            client.doom(x=1)
        srv.restart()
        assert client.doom(x=2)["ok"] is True


def test_http_and_zmq_share_metrics(sk_serve: Callable[..., sk.Served], client_for: Any) -> None:
    srv = sk_serve(parse, name="wc", http=0, zmq=0)
    with sk.ZmqClient(srv.zmq_url, timeout=5) as zclient:
        zclient.wc(text="a")
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


def _idle() -> None:
    return None


def _port_of(address: str | None) -> int:
    assert address is not None, "not bound"
    return int(address.rsplit(":", 1)[1])


def _served_router(port: int) -> tuple[Any, dict[str, Any], Callable[[sk.Served], int | None]]:
    return parse, {"zmq": port}, lambda srv: srv.zmq_port


def _served_pub(port: int) -> tuple[Any, dict[str, Any], Callable[[sk.Served], int | None]]:
    sink = sk.publish(port=port, topic="t")
    return sk.every(3600, _idle) >> sink, {}, lambda srv: sink.port


def _served_push(port: int) -> tuple[Any, dict[str, Any], Callable[[sk.Served], int | None]]:
    sink = sk.push(f"tcp://127.0.0.1:{port}", bind=True)
    return sk.every(3600, _idle) >> sink, {}, lambda srv: sink.port


def _served_pull(port: int) -> tuple[Any, dict[str, Any], Callable[[sk.Served], int | None]]:
    source = sk.pull(f"tcp://127.0.0.1:{port}", bind=True)
    return source >> parse, {}, lambda srv: _port_of(source.address)


def _served_sub(port: int) -> tuple[Any, dict[str, Any], Callable[[sk.Served], int | None]]:
    source = sk.subscribe(f"tcp://127.0.0.1:{port}", "t", bind=True)
    return source >> parse, {}, lambda srv: _port_of(source.address)


def _plain_bind(port: int) -> None:
    """Bind and listen on ``port`` with a plain TCP socket (SO_REUSEADDR, as any server does)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    finally:
        sock.close()


# Every socket svckit binds: (how to serve it on a port, the socket kind, its peer's kind).
BOUND_KINDS = {
    "router": (_served_router, zmq.ROUTER, zmq.DEALER),
    "pub": (_served_pub, zmq.PUB, zmq.SUB),
    "push": (_served_push, zmq.PUSH, zmq.PULL),
    "pull": (_served_pull, zmq.PULL, zmq.PUSH),
    "sub": (_served_sub, zmq.SUB, zmq.PUB),
}


@pytest.mark.parametrize("kind", list(BOUND_KINDS))
def test_stop_releases_the_port_every_time(kind: str, sk_runtime: Any, zsock: Any) -> None:
    """Serve, stop, rebind with a plain socket: 200 times out of 200, with a peer connected each time."""
    make, sock_kind, peer_kind = BOUND_KINDS[kind]
    flow, ports, bound = make(0)
    srv = sk.serve(flow, name="bound", **ports)
    port = bound(srv)
    assert port
    srv.stop()
    peer = zsock(peer_kind)
    peer.setsockopt(zmq.RECONNECT_IVL, 1)  # back within a millisecond of each re-serve
    peer.setsockopt(zmq.RECONNECT_IVL_MAX, 1)
    monitor = peer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        peer.connect(f"tcp://127.0.0.1:{port}")
        for i in range(200):
            flow, ports, bound = make(port)
            srv = sk.serve(flow, name="bound", **ports)
            assert bound(srv) == port
            # the peer is really connected, so stop has a live connection to close as well
            assert monitor.poll(5000), f"the {kind} peer did not connect (round {i})"
            recv_monitor_message(monitor)
            srv.stop()
            _plain_bind(port)  # raises "address in use" if stop left the port bound
    finally:
        peer.disable_monitor()
        monitor.close(linger=0)
    raw = zsock(sock_kind)
    raw.bind(f"tcp://127.0.0.1:{port}")  # and anyone else's ZMQ socket can have it now
    raw.close(linger=0)


def test_replace_keeps_the_zmq_port(sk_serve: Callable[..., sk.Served]) -> None:
    srv = sk_serve(parse, name="wc", zmq=0)
    url = srv.zmq_url
    again = sk_serve(sk.service(lambda text: len(text), name="size"), name="wc", zmq=0)
    assert again is srv and srv.zmq_url == url
    with sk.ZmqClient(url, timeout=5) as client:
        assert client.wc(text="abc")["size"] == 3
