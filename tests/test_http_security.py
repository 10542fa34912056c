"""HTTP under attack, on real sockets: cross-site pages, DNS rebinding, tokens on a shared port,
endless headers, slow and idle clients, clients that leave, and stopping with requests in flight."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import svckit as sk
from svckit.testing import holds, wait_for

# -- raw HTTP on a socket ------------------------------------------------------------------------------


class Reply:
    """One HTTP response read off a socket."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        try:
            return self.json()["error"]["type"]
        except (ValueError, KeyError, TypeError):
            return None

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.headers} {self.body[:300]!r}>"


def read_reply(sock: socket.socket) -> Reply | None:
    """The next response on ``sock``; None when the server closed it without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Reply(status, headers, body)


def read_replies(sock: socket.socket, count: int) -> list[Reply | None]:
    """The next ``count`` responses on ``sock`` (pipelined: several may come in one read); None
    for each one the server closed the connection before."""
    data = b""
    replies: list[Reply | None] = []
    while len(replies) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
            stop = end + 4 + int(headers.get("content-length", "0"))
            if len(data) >= stop:
                replies.append(Reply(int(head[0].split()[1]), headers, data[end + 4 : stop]))
                data = data[stop:]
                continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return replies + [None] * (count - len(replies))
        data += chunk
    return replies


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds`` (whatever it sent before)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


def is_open(sock: socket.socket) -> bool:
    """The server has not closed ``sock`` (nothing to read, no end of file)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return bool(data)


def request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, host: str | None = "127.0.0.1"
) -> bytes:
    """The bytes of one HTTP/1.1 request (``host=None``: no Host header)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
def conns() -> Iterator[Callable[..., socket.socket]]:
    """``conns(port)``: a connected socket, every one closed when the test ends."""
    made: list[socket.socket] = []

    def connect(port: int, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close()


@pytest.fixture
def call(conns: Callable[..., socket.socket]) -> Callable[..., Reply]:
    """``call(srv, method, path, body=b"", headers=None, host="127.0.0.1:<port>")`` on a fresh connection."""
    default = object()

    def send(srv: Any, method: str, path: str, body: bytes = b"", headers: Any = None, host: Any = default) -> Reply:
        sock = conns(srv.http_port)
        sock.sendall(request(method, path, body, headers, f"127.0.0.1:{srv.http_port}" if host is default else host))
        reply = read_reply(sock)
        assert reply is not None, "the server closed the connection without a reply"
        return reply

    return send


JSON = {"Content-Type": "application/json"}
#: The start of a JSON POST to /echo, its length or encoding to follow.
HEAD = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _echo() -> sk.Service:
    return sk.service(lambda x: x, name="echo")


@pytest.fixture(params=["httptools", "h11"])
def impl(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both of uvicorn's HTTP/1.1 implementations: httptools (svckit's choice) and h11 (without it)."""
    from svckit.transports import http

    monkeypatch.setattr(http, "_http_impl", lambda: request.param)
    return str(request.param)


# -- 1. cross-site requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_simple_cross_site_post_never_reaches_the_stage(sk_serve, call, kind):
    ran: list[int] = []
    srv = sk_serve(sk.service(lambda x: ran.append(x), name="act"))
    headers = {"Content-Type": kind} if kind else {}
    body = b'{"x": 1}'
    from_page = call(srv, "POST", "/act", body, {**headers, "Origin": "https://evil.example"})
    assert (from_page.status, from_page.error) == (403, "Forbidden"), from_page
    no_origin = call(srv, "POST", "/act", body, headers)  # a form post from a page without Origin (old browsers)
    assert (no_origin.status, no_origin.error) == (415, "UnsupportedMediaType"), no_origin
    no_host = call(srv, "POST", "/act", body, headers, host=None)  # HTTP/1.0, no browser: still JSON only
    assert (no_host.status, no_host.error) == (415, "UnsupportedMediaType"), no_host
    assert ran == []
    assert srv.status()["errors_by_type"] == {"Forbidden": 1, "UnsupportedMediaType": 2}


@pytest.mark.parametrize("kind", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_a_json_post_is_served(sk_serve, call, kind):
    srv = sk_serve(_echo())
    reply = call(srv, "POST", "/echo", b'{"x": 1}', {"Content-Type": kind})
    assert (reply.status, reply.json()) == (200, {"x": 1, "echo": 1})


def test_the_servers_own_origin_and_allowed_origins_pass(sk_serve, call):
    srv = sk_serve(_echo(), allow_origins=["https://app.example"])
    own = call(srv, "POST", "/echo", b'{"x": 1}', {**JSON, "Origin": f"http://127.0.0.1:{srv.http_port}"})
    assert own.status == 200 and "access-control-allow-origin" not in own.headers
    other_port = call(srv, "POST", "/echo", b'{"x": 1}', {**JSON, "Origin": "http://127.0.0.1:1"})
    assert (other_port.status, other_port.error) == (403, "Forbidden")
    allowed = call(srv, "POST", "/echo", b'{"x": 1}', {**JSON, "Origin": "https://app.example"})
    assert allowed.status == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    # what the browser asks first, for a JSON POST across sites (CORS)
    preflight = call(
        srv,
        "OPTIONS",
        "/echo",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 200  # Starlette's CORS middleware answers it
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    refused = call(srv, "OPTIONS", "/echo", headers={"Origin": "https://evil.example"})
    assert (refused.status, refused.error) == (403, "Forbidden")


def test_any_origin_with_a_star(sk_serve, call):
    srv = sk_serve(_echo(), allow_origins=["*"])
    assert call(srv, "POST", "/echo", b'{"x": 1}', {**JSON, "Origin": "https://anyone.example"}).status == 200


# -- 2. DNS rebinding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/echo"), ("GET", "/status"), ("GET", "/"), ("GET", "/openapi.json"), ("GET", "/health"),
     ("POST", "/nope"), ("PUT", "/echo")],
)  # fmt: skip
def test_a_foreign_host_is_refused_on_every_route(sk_serve, call, method, path):
    srv = sk_serve(_echo())
    body = b'{"x": 1}' if method != "GET" else b""
    reply = call(srv, method, path, body, JSON, host=f"attacker.example:{srv.http_port}")
    assert (reply.status, reply.error) == (403, "Forbidden"), reply
    assert "attacker.example" in reply.json()["error"]["message"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "app.localhost", "[::1]", "LOCALHOST", None])
def test_loopback_names_pass(sk_serve, call, host):
    srv = sk_serve(_echo())
    value = None if host is None else f"{host}:{srv.http_port}"
    assert call(srv, "POST", "/echo", b'{"x": 1}', JSON, host=value).status == 200
    assert call(srv, "GET", "/status", host=value).status == 200


def test_allow_hosts(sk_serve, call):
    srv = sk_serve(_echo(), allow_hosts=["myhost.lan"])
    assert call(srv, "POST", "/echo", b'{"x": 1}', JSON, host=f"myhost.lan:{srv.http_port}").status == 200
    assert call(srv, "GET", "/status", host="MyHost.lan").status == 200
    assert call(srv, "GET", "/status", host="other.lan").status == 403
    anyone = sk_serve(sk.service(lambda x: x, name="any"), allow_hosts=["*"])
    assert call(anyone, "POST", "/any", b'{"x": 1}', JSON, host="whatever.example").status == 200


def test_bound_to_every_interface_host_is_checked_only_with_allow_hosts(sk_serve, call):
    open_srv = sk_serve(_echo(), host="0.0.0.0", token="t")
    auth = {**JSON, "Authorization": "Bearer t"}
    assert call(open_srv, "POST", "/echo", b'{"x": 1}', auth, host="whatever.example").status == 200
    named = sk_serve(sk.service(lambda x: x, name="named"), host="0.0.0.0", token="t", allow_hosts=["myhost.lan"])
    assert call(named, "POST", "/named", b'{"x": 1}', auth, host="whatever.example").status == 403
    assert call(named, "POST", "/named", b'{"x": 1}', auth, host="myhost.lan").status == 200
    assert call(named, "POST", "/named", b'{"x": 1}', auth, host="localhost").status == 200


def test_a_hub_proxys_public_host_passes_with_its_context_header(sk_serve, call, monkeypatch):
    """Inside JupyterHub jupyter-server-proxy forwards the hub's Host; a rebinding page cannot
    send the same, because its browser names this port in Host."""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    srv = sk_serve(_echo())
    port = srv.http_port
    proxied = {
        **JSON,
        "X-Forwarded-Context": f"/user/ada/proxy/{port}",
        "X-ProxyContextPath": f"/user/ada/proxy/{port}",
    }
    assert call(srv, "POST", "/echo", b'{"x": 1}', proxied, host="hub.example").status == 200
    page = {**proxied, "Origin": "https://hub.example"}  # a page the hub served
    assert call(srv, "POST", "/echo", b'{"x": 1}', page, host="hub.example").status == 200
    assert call(srv, "GET", "/status", headers=proxied, host="hub.example").status == 200
    # what a DNS-rebinding page can forge: every header but the port its browser writes in Host
    assert call(srv, "POST", "/echo", b'{"x": 1}', proxied, host=f"hub.example:{port}").status == 403
    assert call(srv, "GET", "/status", headers=proxied, host=f"evil.example:{port}").status == 403
    other = {**JSON, "X-Forwarded-Context": f"/user/ada/proxy/{port + 1}"}
    assert call(srv, "POST", "/echo", b'{"x": 1}', other, host="hub.example").status == 403
    assert call(srv, "POST", "/echo", b'{"x": 1}', JSON, host="hub.example").status == 403
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    outside = sk_serve(sk.service(lambda x: x, name="outside"))
    context = {**JSON, "X-Forwarded-Context": f"/user/ada/proxy/{outside.http_port}"}
    assert call(outside, "POST", "/outside", b'{"x": 1}', context, host="hub.example").status == 403


# -- 4. tokens on a shared port ------------------------------------------------------------------------


@pytest.fixture
def shared(sk_serve):
    """Three served things on one port: ``alpha`` (token ta), ``beta`` (token tb), and ``gamma`` (none)."""

    class Alpha(sk.Service):
        def process(self, x: int) -> dict:
            return {"alpha": x}

        @sk.handle("alpha_reset")
        def reset(self) -> dict:
            return {}

    alpha = sk_serve(Alpha(), name="alpha", token="ta")
    beta = sk_serve(sk.service(lambda x: x, name="beta"), name="beta", token="tb", http=alpha.http_port)
    return alpha, beta, sk_serve


def test_an_unknown_action_is_answered_after_the_token_and_lists_what_it_opens(shared, call):
    alpha, _, _ = shared
    anonymous = call(alpha, "POST", "/nope", b"{}", JSON)
    assert (anonymous.status, anonymous.error) == (401, "Unauthorized"), anonymous
    assert b"alpha" not in anonymous.body and b"beta" not in anonymous.body
    wrong = call(alpha, "POST", "/nope", b"{}", {**JSON, "Authorization": "Bearer nope"})
    assert (wrong.status, wrong.error) == (401, "Unauthorized")
    with_a = call(alpha, "POST", "/nope", b"{}", {**JSON, "Authorization": "Bearer ta"})
    assert (with_a.status, with_a.error) == (404, "UnknownAction")
    message = with_a.json()["error"]["message"]
    assert "alpha_reset" in message and "beta" not in message


def test_status_index_and_schema_show_only_what_the_token_opens(shared, call):
    alpha, beta, sk_serve = shared
    port = alpha.http_port

    def seen(path: str, token: str | None) -> Reply:
        return call(alpha, "GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})

    assert set(seen("/status", "ta").json()["served"]) == {"alpha"}
    assert set(seen("/status", "tb").json()["served"]) == {"beta"}
    assert seen("/status", None).status == 401
    assert seen("/status", "wrong").status == 401
    assert set(seen("/", "tb").json()["actions"]) == {"beta"}
    paths = set(seen("/openapi.json", "ta").json()["paths"])
    assert {"/alpha", "/alpha_reset"} <= paths and "/beta" not in paths
    sk_serve(sk.service(lambda x: x, name="gamma"), name="gamma", http=port)  # public: no token
    assert set(seen("/status", None).json()["served"]) == {"gamma"}
    assert set(seen("/status", "ta").json()["served"]) == {"alpha", "gamma"}
    assert set(seen("/", None).json()["actions"]) == {"gamma"}
    listed = call(alpha, "POST", "/nope", b"{}", JSON).json()["error"]["message"]
    assert "gamma" in listed and "alpha" not in listed and "beta" not in listed
    assert beta.status()["state"] == "running"


def test_the_bearer_scheme_in_any_case(shared, call):
    alpha, _, _ = shared
    for scheme in ("bearer", "BEARER", "Bearer"):
        reply = call(alpha, "POST", "/alpha", b'{"x": 2}', {**JSON, "Authorization": f"{scheme} ta"})
        assert (reply.status, reply.json()["alpha"]) == (200, 2)


# -- 5. the request line and headers are bounded -------------------------------------------------------


def test_headers_over_max_header_are_431_and_the_connection_closed(sk_serve, conns, impl):
    srv = sk_serve(_echo(), max_header=2048)
    fine = conns(srv.http_port)
    fine.sendall(request("POST", "/echo", b'{"x": 1}', {**JSON, "X-Pad": "a" * 1500}))
    reply = read_reply(fine)
    assert reply is not None and reply.status == 200
    for pad in (3000, 64 * 1024):  # complete, in one piece; and still coming
        big = conns(srv.http_port)
        try:
            big.sendall(request("POST", "/echo", b'{"x": 1}', {**JSON, "X-Pad": "a" * pad}))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(big)
        assert reply is not None and (reply.status, reply.error) == (431, "HeadersTooLarge"), reply
        assert reply.headers["connection"] == "close"
        assert closed_within(big, 2)
    assert srv.status()["received"] == 1


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_endless_headers_do_not_take_memory(sk_serve, conns):
    """20 connections each sending 4 MiB of a header that never ends (httptools alone keeps it all)."""
    srv = sk_serve(_echo())
    pad = b"a" * (4 << 20)
    before = _rss_mb()
    socks = [conns(srv.http_port, timeout=5) for _ in range(20)]
    for sock in socks:
        try:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + pad)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it all went out
    statuses = []
    deadline = time.monotonic() + 3  # the answers, or as long for the server to take it all in
    for sock in socks:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            reply = read_reply(sock)
        except TimeoutError:
            reply = None
        statuses.append(reply.status if reply else None)
    grown = _rss_mb() - before  # the connections are still open: what they hold is still held
    print(f"RSS grew {grown:.1f} MB for 20 x 4 MiB of unfinished headers")
    assert grown < 25, f"RSS grew {grown:.1f} MB"
    assert statuses.count(431) >= 15, statuses  # a few may be cut off by the reset before they read it


# -- 6. slow clients, idle connections and the connection cap -------------------------------------------


def test_a_client_that_sends_nothing_is_closed_after_read_timeout(sk_serve, conns, impl):
    srv = sk_serve(_echo(), read_timeout=0.5)
    silent = conns(srv.http_port)
    start = time.monotonic()
    assert closed_within(silent, 3)
    assert 0.45 < time.monotonic() - start < 2.5


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_request_that_stops_half_way_is_408_and_closed(sk_serve, conns, impl, where):
    srv = sk_serve(_echo(), read_timeout=0.5)
    slow = conns(srv.http_port)
    if where == "headers":
        slow.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
    else:
        slow.sendall(HEAD + b'Content-Length: 100\r\n\r\n{"x": ')
    start = time.monotonic()
    reply = read_reply(slow)
    assert reply is not None and (reply.status, reply.error) == (408, "RequestTimeout"), reply
    assert 0.45 < time.monotonic() - start < 2.5
    assert closed_within(slow, 2)
    if where == "body":  # it reached the request path: counted once, as a 408
        wait_for(lambda: srv.status()["replied"] == 1, timeout=5)
        assert srv.status()["errors_by_type"] == {"RequestTimeout": 1}


def test_an_idle_keep_alive_connection_outlives_read_timeout(sk_serve, conns, impl):
    srv = sk_serve(_echo(), read_timeout=0.3)
    sock = conns(srv.http_port)
    for x in (1, 2):
        sock.sendall(request("POST", "/echo", json.dumps({"x": x}).encode(), JSON))
        reply = read_reply(sock)
        assert reply is not None and reply.json()["echo"] == x
        if x == 1:
            holds(lambda: is_open(sock), 1.0, what="the idle keep-alive connection")


def test_connections_past_limit_concurrency_are_refused_at_once(sk_serve, conns, zsock, impl):
    import zmq

    srv = sk_serve(_echo(), zmq=0, http=0, limit_concurrency=5, read_timeout=5)
    held = [conns(srv.http_port) for _ in range(5)]
    wait_for(lambda: all(is_open(s) for s in held), timeout=5)
    refused = []
    for _ in range(20):
        extra = conns(srv.http_port, timeout=3)
        reply = read_reply(extra)  # sent nothing: the answer comes anyway
        refused.append(reply and (reply.status, reply.error))
    assert refused == [(503, "ServiceUnavailable")] * 20
    assert all(is_open(s) for s in held)
    client = zsock(zmq.REQ)  # ZMQ serves on
    client.connect(srv.zmq_url)
    client.send_multipart([b"echo", b'{"x": 3}'])
    assert client.poll(5000), "ZMQ did not answer"
    assert json.loads(client.recv_multipart()[1])["echo"] == 3
    for sock in held:
        sock.close()

    def serves() -> bool:
        sock = conns(srv.http_port, timeout=3)
        sock.sendall(request("POST", "/echo", b'{"x": 4}', JSON))
        reply = read_reply(sock)
        return reply is not None and reply.status == 200

    wait_for(serves, timeout=5, what="HTTP to answer again")


def test_256_connections_at_once_are_served_by_default(sk_serve, conns):
    srv = sk_serve(_echo())
    socks = [conns(srv.http_port) for _ in range(256)]
    for i, sock in enumerate(socks):
        sock.sendall(request("POST", "/echo", json.dumps({"x": i}).encode(), JSON))
    replies = [read_reply(sock) for sock in socks]
    assert [r.json()["echo"] if r and r.status == 200 else r for r in replies] == list(range(256))


def test_the_strictest_limits_of_the_served_things_on_a_port_hold(sk_serve, call, conns):
    """A served thing attached later with looser limits does not loosen the port's (before:
    the latest attached set them, so max_header=8192 let a 2000-byte header through)."""
    first = sk_serve(_echo(), max_header=1024, read_timeout=0.5)
    pad = {**JSON, "X-Pad": "a" * 2000}
    assert call(first, "POST", "/echo", b'{"x": 1}', pad).status == 431
    second = sk_serve(sk.service(lambda y: y, name="second"), max_header=8192, read_timeout=30, http=first.http_port)
    assert call(first, "POST", "/echo", b'{"x": 1}', pad).status == 431
    assert call(second, "POST", "/second", b'{"y": 1}', pad).status == 431
    silent = conns(first.http_port)
    start = time.monotonic()
    assert closed_within(silent, 3), "read_timeout=30 of the second loosened the port's 0.5 s"
    assert time.monotonic() - start < 2.5
    first.stop()  # what is left on the port sets the limits again
    assert call(second, "POST", "/second", b'{"y": 1}', pad).status == 200


# -- 7. a body over max_body closes the connection ------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_max_body_is_413_and_the_connection_closed(sk_serve, conns, impl, chunked):
    srv = sk_serve(_echo(), max_body=1000)
    sock = conns(srv.http_port)
    if chunked:
        head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head + b"%x\r\n" % 2000 + b"a" * 2000 + b"\r\n")
    else:
        sock.sendall(HEAD + b"Content-Length: 10000000\r\n\r\n")
    reply = read_reply(sock)
    assert reply is not None and (reply.status, reply.error) == (413, "PayloadTooLarge"), reply
    assert reply.headers["connection"] == "close"
    assert closed_within(sock, 2), "the connection stayed open to read the rest of the body"


# -- 8. a client that goes away ------------------------------------------------------------------------


def test_a_client_that_goes_away_cancels_its_request(sk_serve, conns, impl):
    events: list[str] = []

    @sk.service
    async def slow(x: int) -> dict:
        events.append("started")
        try:
            await asyncio.sleep(3)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("finished")
        return {"y": x}

    srv = sk_serve(slow)
    sock = conns(srv.http_port)
    sock.sendall(request("POST", "/slow", b'{"x": 1}', JSON))
    wait_for(lambda: events == ["started"], timeout=5)
    sock.close()
    wait_for(lambda: "cancelled" in events, timeout=2.5, what="the stage to be cancelled")
    wait_for(lambda: srv.status()["disconnected"] == 1, timeout=5)
    status = srv.status()
    assert (status["received"], status["replied"], status["disconnected"]) == (1, 0, 1)
    assert status["errors"] == 0
    traffic = srv.traffic
    assert list(traffic["direction"]) == ["in", "gone"]
    assert events == ["started", "cancelled"]


# -- 9. stopping ---------------------------------------------------------------------------------------


def test_stop_with_idle_keep_alive_connections_is_quick(sk_serve, conns, impl):
    srv = sk_serve(_echo())
    socks = [conns(srv.http_port) for _ in range(3)]
    for sock in socks:
        sock.sendall(request("POST", "/echo", b'{"x": 1}', JSON))
        assert read_reply(sock).status == 200
    start = time.monotonic()
    srv.stop()
    took = time.monotonic() - start
    assert all(closed_within(s, 2) for s in socks)
    assert took < 0.5, f"stop() took {took:.2f} s"


@pytest.mark.parametrize("stuck", ["stage", "body"])
def test_stop_answers_a_request_in_flight_with_json_503_after_drain_timeout(sk_serve, conns, impl, stuck):
    started = threading.Event()

    @sk.service
    async def slow(x: int) -> dict:
        started.set()
        await asyncio.sleep(30)
        return {"y": x}

    srv = sk_serve(slow, drain_timeout=0.3, read_timeout=30)
    sock = conns(srv.http_port)
    if stuck == "stage":
        sock.sendall(request("POST", "/slow", b'{"x": 1}', JSON))
        assert started.wait(5)
    else:
        sock.sendall(HEAD.replace(b"/echo", b"/slow") + b"Content-Length: 100\r\n\r\n{")
        wait_for(lambda: srv.status()["received"] == 1, timeout=5)
    start = time.monotonic()
    srv.stop()
    took = time.monotonic() - start
    reply = read_reply(sock)
    assert reply is not None and reply.headers["content-type"] == "application/json", reply
    assert (reply.status, reply.error) == (503, "ServiceUnavailable"), reply
    assert took < 2.0, f"stop() took {took:.2f} s"


# -- 10. pipelining, shared ports, open binds, readers that never read ---------------------------------


def _holding() -> tuple[sk.Service, threading.Event]:
    """A stage that holds every request until the event is set (at most 20 s)."""
    release = threading.Event()

    @sk.service
    async def hold(x: int = 0) -> dict:
        deadline = time.monotonic() + 20
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return {"x": x}

    return hold, release


def test_pipelined_requests_are_capped_per_connection(sk_serve, conns):
    """Before: every request of a pipelined burst behind a slow one was queued (20 connections x
    20,000 GETs took RSS up by ~100s of MB); now past 16 queued the next is answered 503, the
    connection closed and nothing more parsed."""
    hold, release = _holding()
    srv = sk_serve(hold, read_timeout=30)
    port = srv.http_port
    first = request("POST", "/hold", b'{"x": 1}', JSON, f"127.0.0.1:{port}")
    tiny = request("GET", "/health", host=f"127.0.0.1:{port}")
    burst = first + tiny * 20_000
    before = _rss_mb()
    for _ in range(20):
        sock = conns(port)
        sock.setblocking(False)
        try:
            sock.send(burst)  # what fits: the server stops reading once it has enough
        except BlockingIOError:
            pass
    try:
        holds(lambda: _rss_mb() - before < 25, 1.5, what="RSS under +25 MB")
    finally:
        print(f"RSS grew {_rss_mb() - before:.1f} MB for 20 x 20,000 pipelined GETs behind a held POST")
    sock = conns(port)
    sock.sendall(first + tiny * 20)
    wait_for(lambda: srv.status()["received"] == 21, timeout=5, what="the held POSTs")
    release.set()
    replies = read_replies(sock, 18)
    assert replies[0] is not None and replies[0].status == 200, replies[0]
    assert [r.status if r else None for r in replies[1:17]] == [200] * 16, replies[:3]
    refused = replies[17]
    assert refused is not None and (refused.status, refused.error) == (503, "ServiceUnavailable"), refused
    assert "pipelined" in refused.json()["error"]["message"]
    assert refused.headers["connection"] == "close"
    assert closed_within(sock, 3)


def test_a_port_page_shows_only_the_served_things_whose_rules_admit_it(sk_serve, call):
    """One served thing's allow_hosts/allow_origins open no other's pages (before: GET /status
    from a rebinding page of evil.example showed the default-rules served thing, with ACAO)."""

    @sk.service
    def secret(x: int = 0) -> dict:
        return {"x": x}

    @sk.service
    def public(x: int = 0) -> dict:
        return {"x": x}

    sec = sk_serve(secret, name="secret")
    port = sec.http_port
    sk_serve(public, name="public", http=port, allow_origins=["*"], allow_hosts=["*"])
    evil = {"Origin": "https://evil.example"}
    foreign = f"evil.example:{port}"
    status = call(sec, "GET", "/status", headers=evil, host=foreign)
    assert status.status == 200 and set(status.json()["served"]) == {"public"}, status
    assert status.headers["access-control-allow-origin"] == "*"  # allow_origins=["*"], without credentials
    local_evil = call(sec, "GET", "/status", headers=evil)
    assert set(local_evil.json()["served"]) == {"public"}
    plain = call(sec, "GET", "/status")
    assert set(plain.json()["served"]) == {"secret", "public"}
    assert "access-control-allow-origin" not in plain.headers
    own = call(sec, "GET", "/status", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert set(own.json()["served"]) == {"secret", "public"}
    assert "access-control-allow-origin" not in own.headers  # not every one shown allows it
    assert set(call(sec, "GET", "/", headers=evil, host=foreign).json()["actions"]) == {"public"}
    paths = set(call(sec, "GET", "/openapi.json", headers=evil, host=foreign).json()["paths"])
    assert "/public" in paths and "/secret" not in paths
    nope = call(sec, "POST", "/nope", b"{}", {**JSON, **evil}, host=foreign)
    assert (nope.status, nope.error) == (404, "UnknownAction"), nope
    assert "public" in nope.json()["error"]["message"] and "secret" not in nope.json()["error"]["message"]
    post = call(sec, "POST", "/secret", b"{}", {**JSON, **evil}, host=foreign)
    assert post.status == 403 and "access-control-allow-origin" not in post.headers, post
    preflight = {**evil, "Access-Control-Request-Method": "POST"}
    refused = call(sec, "OPTIONS", "/secret", headers=preflight)
    assert refused.status in (403, 405) and "access-control-allow-origin" not in refused.headers, refused
    assert call(sec, "OPTIONS", "/public", headers=preflight).status == 200
    assert sec.status()["errors_by_type"] == {"Forbidden": 1}  # its own check refused its POST


def test_a_port_page_needs_one_served_thing_that_admits_it(sk_serve, call):
    sec = sk_serve(sk.service(lambda x: x, name="secret"), name="secret")
    port = sec.http_port
    sk_serve(sk.service(lambda x: x, name="app"), name="app", http=port, allow_origins=["https://app.example"])
    page = {"Origin": "https://app.example"}
    status = call(sec, "GET", "/status", headers=page)
    assert set(status.json()["served"]) == {"app"}
    assert status.headers["access-control-allow-origin"] == "https://app.example"
    for path in ("/status", "/", "/health", "/openapi.json"):
        reply = call(sec, "GET", path, headers={"Origin": "https://evil.example"})
        assert (reply.status, reply.error) == (403, "Forbidden"), (path, reply)
    assert call(sec, "OPTIONS", "/nope", headers={**page, "Access-Control-Request-Method": "POST"}).status == 200
    evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    assert call(sec, "OPTIONS", "/nope", headers=evil).status == 403


def _post(x: float, port: int) -> bytes:
    return request("POST", "/slow", json.dumps({"x": x}).encode(), JSON, f"127.0.0.1:{port}")


def test_a_stalled_pipelined_body_waits_for_the_reply_before_it(sk_serve, conns, impl):
    """Before: the read deadline of the pipelined request closed the connection, cutting off the
    reply of the one still running (then counted replied though nothing was delivered)."""

    @sk.service
    async def slow(x: float) -> dict:
        await asyncio.sleep(x)
        return {"x": x}

    srv = sk_serve(slow, read_timeout=0.3)
    port = srv.http_port
    sock = conns(port)
    second = _post(0, port)
    sock.sendall(_post(1.0, port) + second[:-3])  # the second's body stops 3 bytes short
    running, stalled = read_replies(sock, 2)
    assert running is not None and (running.status, running.json()) == (200, {"x": 1.0}), running
    assert stalled is not None and (stalled.status, stalled.error) == (408, "RequestTimeout"), stalled
    assert closed_within(sock, 3)
    wait_for(lambda: srv.status()["replied"] == 2, timeout=5)
    status = srv.status()
    assert (status["received"], status["disconnected"], status["errors_by_type"]) == (2, 0, {"RequestTimeout": 1})


def test_a_client_that_leaves_during_a_pipelined_request_cancels_the_running_one(sk_serve, conns, impl):
    events: list[str] = []

    @sk.service
    async def slow(x: float) -> dict:
        events.append("started")
        try:
            await asyncio.sleep(x)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("finished")
        return {"x": x}

    srv = sk_serve(slow)
    sock = conns(srv.http_port)
    sock.sendall(_post(3, srv.http_port) + _post(0, srv.http_port))
    wait_for(lambda: events == ["started"], timeout=5)
    sock.close()
    wait_for(lambda: "cancelled" in events, timeout=2.5, what="the running stage to be cancelled")
    wait_for(lambda: srv.status()["disconnected"] == 1, timeout=5)
    status = srv.status()
    assert (status["received"], status["replied"], status["disconnected"]) == (1, 0, 1)
    assert events == ["started", "cancelled"]


def test_bound_to_every_interface_without_a_token_host_is_still_checked(sk_serve, call):
    """Before: on 0.0.0.0 without a token a DNS-rebinding page (Host and Origin its own name)
    passed every check. IP literals and this machine's names pass; other names need allow_hosts."""
    srv = sk_serve(_echo(), host="0.0.0.0")
    port = srv.http_port
    body = b'{"x": 1}'
    rebinding = {**JSON, "Origin": f"http://evil.example:{port}"}
    reply = call(srv, "POST", "/echo", body, rebinding, host=f"evil.example:{port}")
    assert (reply.status, reply.error) == (403, "Forbidden"), reply
    assert call(srv, "GET", "/status", host=f"evil.example:{port}").status == 403
    names = ["127.0.0.1", "10.1.2.3", "[fe80::1]", "[::ffff:10.0.0.1]", "localhost", socket.gethostname()]
    for name in [*names, socket.getfqdn()]:
        assert call(srv, "POST", "/echo", body, JSON, host=f"{name}:{port}").status == 200, name
        assert call(srv, "GET", "/status", host=name).status == 200, name
    named = sk_serve(sk.service(lambda x: x, name="named"), host="0.0.0.0", allow_hosts=["myhost.lan"])
    assert call(named, "POST", "/named", body, JSON, host="myhost.lan").status == 200
    assert call(named, "POST", "/named", body, JSON, host="other.lan").status == 403


def test_a_client_that_never_reads_its_reply_is_closed_after_read_timeout(sk_serve):
    """Before: a client that never read held its whole reply in the server's write buffer forever."""
    blob = "a" * (16 << 20)
    srv = sk_serve(sk.service(lambda x: {"blob": blob}, name="big"), read_timeout=0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", srv.http_port))
        sock.sendall(request("POST", "/big", b'{"x": 1}', JSON, f"127.0.0.1:{srv.http_port}"))
        connections = srv._http.bounds.connections  # the server's side of the connection
        wait_for(lambda: srv.status()["replied"] == 1, timeout=10)
        start = time.monotonic()
        wait_for(lambda: not connections, timeout=5, what="the server to close a connection nobody reads")
        assert time.monotonic() - start < 4
        got = 0
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        assert got < len(blob), "the whole reply was kept for a client that did not read it"
    finally:
        sock.close()
