"""Property-based tests of the HTTP and ZMQ wire formats, against one real served flow.

Whatever a client sends, the answer is a 200 for a valid call or a 4xx whose JSON body is
``{"error": {"type", "message"}}`` naming what was wrong (over ZMQ: an ``error`` frame with
that body); never a 5xx, never a hang (every call has a timeout), and after every example a
plain valid call still answers. Raw sockets speak malformed HTTP; raw DEALER and REQ sockets
send any frames. hypothesis runs derandomized and without a database, so every run tries
the same inputs and leaves no ``.hypothesis`` directory behind.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import svckit as sk
from svckit.testing import wait_for

TOKEN = "s3cret-T0ken"
READ_TIMEOUT = 1.0
MAX_BODY = 1 << 20
MAX_HEADER = 16 * 1024
CALL_TIMEOUT = 5.0  # every call gives up after this: a hang fails the example, never the suite

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(PROPERTY, max_examples=40)


def add(x: int, y: int = 1) -> dict[str, Any]:
    return {"total": x + y}


class Tally(sk.Service):
    """The second stage, with an extra action."""

    def process(self, total: int) -> dict[str, Any]:
        return {"double": total * 2}

    @sk.handle("scale")
    def scale(self, k: int, by: float = 2.0) -> dict[str, Any]:
        return {"scaled": k * by}


ACTIONS = ("calc", "scale")


# -- fixtures: one served flow (and one with a token) for the whole module -----------------


@pytest.fixture(scope="module", autouse=True)
def _no_runtime_left() -> Iterator[None]:
    """conftest's check, once for this module (it serves once for all its tests)."""
    yield
    sk.shutdown(timeout=10)
    wait_for(
        lambda: not any(t.name == "svckit-runtime" and t.is_alive() for t in threading.enumerate()),
        timeout=10,
        what="the svckit runtime thread to end",
    )


@dataclass
class Wire:
    calc: sk.Served
    secret: sk.Served
    ctx: zmq.Context[Any]

    @property
    def port(self) -> int:
        assert self.calc.http_port is not None
        return self.calc.http_port

    @property
    def secret_port(self) -> int:
        assert self.secret.http_port is not None
        return self.secret.http_port


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    calc = sk.serve(sk.service(add) >> Tally(), name="calc", http=0, zmq=0, read_timeout=READ_TIMEOUT)
    secret = sk.serve(sk.service(add), name="secret", http=0, zmq=0, token=TOKEN, read_timeout=READ_TIMEOUT)
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield Wire(calc, secret, ctx)
    finally:
        ctx.destroy(linger=0)
        calc.stop()
        secret.stop()


# -- raw HTTP --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_raw(port: int, data: bytes, timeout: float = CALL_TIMEOUT) -> Reply:
    """Send ``data`` as it is on a fresh connection and read one HTTP response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed (a limit): its reply is still to read
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
            body = resp.read()
        except TimeoutError:
            raise AssertionError(f"no reply within {timeout} s to {data[:200]!r}") from None
        except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
            raise AssertionError(f"the connection closed without a reply ({exc!r}) to {data[:200]!r}") from None
        finally:
            resp.close()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


def request(
    port: int,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    *,
    content_type: str | None = "application/json",
    method: str = "POST",
    host: str | None = None,
) -> bytes:
    """The bytes of a well-framed HTTP/1.1 request (``Connection: close``)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", f"Content-Length: {len(body)}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in headers or []]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post(port: int, path: str, body: bytes, headers: list[tuple[str, str]] | None = None, **kw: Any) -> Reply:
    return http_raw(port, request(port, path, body, headers, **kw))


def error_of(reply: Reply) -> dict[str, Any]:
    """The checked ``{"type", "message"}`` of an error reply."""
    assert reply.headers.get("content-type", "").startswith("application/json"), reply
    doc = reply.json()
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err.get("type"), str) and err["type"], doc
    assert isinstance(err.get("message"), str) and err["message"], doc
    return err  # type: ignore[no-any-return]


def check_http(reply: Reply) -> Any:
    """A 200 with a JSON object, or a 4xx with a JSON error body; never a 5xx."""
    assert reply.status == 200 or 400 <= reply.status < 500, (reply.status, reply.body[:500])
    if reply.status == 200:
        assert reply.headers.get("content-type", "").startswith("application/json"), reply
        doc = reply.json()
        assert isinstance(doc, dict), doc
        return doc
    return error_of(reply)


# -- raw ZMQ ---------------------------------------------------------------------------------


def zmq_call(w: Wire, addr: str, frames: list[bytes], kind: int = zmq.DEALER) -> list[bytes]:
    """Send ``frames`` from a fresh socket and return the reply's frames (fails after a timeout)."""
    sock = w.ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(addr)
        sock.send_multipart(frames)
        assert sock.poll(int(CALL_TIMEOUT * 1000)), f"no ZMQ reply within {CALL_TIMEOUT} s to {frames!r:.300}"
        return list(sock.recv_multipart())
    finally:
        sock.close(linger=0)


def check_zmq(status: bytes, body: bytes) -> Any:
    """An ``ok`` frame with a JSON object, or an ``error`` frame with a 4xx-kind error body."""
    assert status in (b"ok", b"error"), status
    doc = json.loads(body)
    assert isinstance(doc, dict), doc
    if status == b"ok":
        return doc
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err.get("type"), str) and isinstance(err.get("message"), str) and err["message"], doc
    assert err["type"] not in SERVER_FAULTS, doc
    return err


#: Error types that are the server's fault (5xx): a client's input must never cause one.
SERVER_FAULTS = {"BadResult", "ServiceTimeout", "ServiceUnavailable", "RemoteError", "RetryExhausted", "Fatal"}


def assert_alive(w: Wire) -> None:
    """A plain valid call still answers 200 over HTTP and ``ok`` over ZMQ."""
    reply = post(w.port, "/calc", b'{"x": 41}')
    assert reply.status == 200 and reply.json()["total"] == 42, reply
    assert zmq_call(w, str(w.calc.zmq_url), [b"", b"calc", b'{"x": 41}'])[:2] == [b"", b"ok"]
    assert w.calc.state is sk.State.RUNNING and w.secret.state is sk.State.RUNNING


# -- the oracle: what a body should get --------------------------------------------------------


def _json_number(value: Any) -> Any:
    """svckit checks fields by JSON's types (``Params``): no bool or string for a number."""
    if isinstance(value, (bool, str)):
        raise ValueError("not a JSON number")
    return value


_INT: pydantic.TypeAdapter[int] = pydantic.TypeAdapter(Annotated[int, pydantic.BeforeValidator(_json_number)])
_FLOAT: pydantic.TypeAdapter[float] = pydantic.TypeAdapter(Annotated[float, pydantic.BeforeValidator(_json_number)])


@dataclass
class Expect:
    status: int
    type: str | None = None
    fields: set[str] = field(default_factory=set)  # BadMessage: one of these is named
    reply: dict[str, Any] | None = None  # 200: keys the reply must have, with their values


def _refuse(name: str) -> Any:
    raise ValueError(name)


def decode(raw: bytes) -> Expect | Any:
    """The message in ``raw``, or what refusing it should look like."""
    if raw == b"":
        return {}
    try:
        msg = json.loads(raw.decode("utf-8"), parse_constant=_refuse)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Expect(400, "BadRequest")
    if not isinstance(msg, dict):
        return Expect(422, "BadMessage")
    return msg


def _valid(adapter: pydantic.TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError:
        return _INVALID


_INVALID = object()


def expect_for(action: str, raw: bytes) -> Expect:
    msg = decode(raw)
    if isinstance(msg, Expect):
        return msg
    spec: tuple[tuple[str, pydantic.TypeAdapter[Any], bool], ...]
    if action in ("calc", "secret"):
        spec = (("x", _INT, True), ("y", _INT, False))
    else:
        spec = (("k", _INT, True), ("by", _FLOAT, False))
    values: dict[str, Any] = {}
    for name, adapter, required in spec:
        if name not in msg:
            if required:
                return Expect(422, "BadMessage", {name})
            continue
        values[name] = _valid(adapter, msg[name])
    bad = {name for name, value in values.items() if value is _INVALID}
    if bad:
        return Expect(422, "BadMessage", bad)
    if action == "calc":
        total = values["x"] + values.get("y", 1)
        return Expect(200, reply={"total": total, "double": 2 * total})
    if action == "secret":  # add alone
        return Expect(200, reply={"total": values["x"] + values.get("y", 1)})
    return Expect(200, reply={"scaled": values["k"] * values.get("by", 2.0)})


def check_expected(got: Any, expect: Expect, status: int) -> None:
    assert status == expect.status, (status, got, expect)
    if expect.status == 200:
        for key, value in (expect.reply or {}).items():
            assert got[key] == value, (key, got, expect)
        return
    assert got["type"] == expect.type, (got, expect)
    if expect.fields:
        assert got.get("field") in expect.fields, (got, expect)


# -- strategies --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(min_value=-1e100, max_value=1e100, allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["1", " 2 ", "-3", "0x10", "1_000", "1.0", "1e3", "", "NaN"])
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=10,
)
calc_messages = st.fixed_dictionaries(
    {}, optional={"x": json_values, "y": json_values, "z": json_values, "total": json_values}
) | st.fixed_dictionaries({"x": st.integers(-(10**6), 10**6)}, optional={"y": st.integers(-(10**6), 10**6)})
scale_messages = st.fixed_dictionaries(
    {}, optional={"k": json_values, "by": json_values | st.floats(-1e6, 1e6, allow_nan=False)}
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | calc_messages.map(lambda v: json.dumps(v).encode())
    | st.sampled_from(
        [
            b"",
            b" ",
            b"{",
            b"}",
            b"null",
            b"[]",
            b"{}",
            b'{"x": NaN}',
            b'{"x": Infinity}',
            b'{"x": 1}x',
            b"\xef\xbb\xbf{}",
        ]
    )
)
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_names = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=24).map(lambda s: "X-P-" + s)
header_values = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)] + [" ", "\t"], max_size=120).map(str.strip)
PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]
request_ids = st.text(alphabet=PRINTABLE, max_size=140).map(str.strip) | st.sampled_from(
    ["abc-1", "a" * 128, "a" * 129]
)


def accepted_id(value: str | None) -> bool:
    """The README's rule: a client's id is kept when short, printable ASCII, without spaces."""
    return bool(value) and len(value or "") <= 128 and all(0x21 <= ord(c) < 0x7F for c in value or "")


# -- HTTP properties ---------------------------------------------------------------------------


@PROPERTY
@given(body=bodies, action=st.sampled_from(ACTIONS))
@example(body=b"\xff\xfe\x00", action="calc")
@example(body=b'{"x": "abc"}', action="calc")
@example(body=b'{"k": 3, "by": 0.5}', action="scale")
def test_http_any_body_gets_a_json_reply(wire: Wire, body: bytes, action: str) -> None:
    reply = post(wire.port, f"/{action}", body)
    check_expected(check_http(reply), expect_for(action, body), reply.status)
    assert_alive(wire)


@PROPERTY
@given(msg=calc_messages)
def test_http_wrong_json_types_name_the_field(wire: Wire, msg: dict[str, Any]) -> None:
    body = json.dumps(msg).encode()
    reply = post(wire.port, "/calc", body)
    check_expected(check_http(reply), expect_for("calc", body), reply.status)
    assert_alive(wire)


@PROPERTY
@given(msg=scale_messages)
def test_http_action_wrong_types_name_the_field(wire: Wire, msg: dict[str, Any]) -> None:
    body = json.dumps(msg).encode()
    reply = post(wire.port, "/scale", body)
    check_expected(check_http(reply), expect_for("scale", body), reply.status)
    assert_alive(wire)


def nested(depth: int, shape: str, closed: bool) -> bytes:
    opener, closer = (b"[", b"]") if shape == "list" else (b'{"a":', b"}")
    return opener * depth + (b"0" + closer * depth if closed else b"")


depths = st.integers(1, 300) | st.integers(300, 3000) | st.integers(3000, 100_000) | st.just(100_000)


@FEW
@given(
    depth=depths,
    shape=st.sampled_from(["list", "object"]),
    where=st.sampled_from(["top", "x", "z"]),
    closed=st.booleans(),
)
@example(depth=100_000, shape="list", where="top", closed=False)
@example(depth=100_000, shape="object", where="z", closed=True)
def test_http_deep_nesting_is_refused_not_crashed(wire: Wire, depth: int, shape: str, where: str, closed: bool) -> None:
    inner = nested(depth, shape, closed)
    body = inner if where == "top" else b'{"x": 1, "' + where.encode() + b'": ' + inner + (b"}" if closed else b"")
    reply = post(wire.port, "/calc", body)
    got = check_http(reply)
    if not closed or depth >= 2000:
        assert (reply.status, got["type"]) == (400, "BadRequest"), got
    elif depth <= 200:  # far from the recursion limit: decoded, then judged as any message
        check_expected(got, expect_for("calc", body), reply.status)
    else:  # near the recursion limit, which depends on the thread: either outcome, both 4xx or 200
        assert reply.status == 400 or reply.status == expect_for("calc", body).status, got
    assert_alive(wire)


@PROPERTY
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=100).filter(
        lambda hs: sum(len(k) + len(v) + 4 for k, v in hs) < MAX_HEADER - 1024
    ),
    rid=st.none() | request_ids,
)
def test_http_many_headers_within_the_limit_are_served(
    wire: Wire, headers: list[tuple[str, str]], rid: str | None
) -> None:
    extra = headers + ([("X-Request-ID", rid)] if rid is not None else [])
    reply = post(wire.port, "/calc", b'{"x": 2}', extra)
    got = check_http(reply)
    assert reply.status == 200 and got["total"] == 3, got
    echoed = reply.headers.get("x-request-id")
    assert echoed, reply.headers
    if rid is not None and accepted_id(rid):
        assert echoed == rid
    elif rid is not None:
        assert echoed != rid
    assert_alive(wire)


@FEW
@given(size=st.integers(MAX_HEADER + 1, 40 * 1024), count=st.integers(1, 50))
@example(size=MAX_HEADER + 1, count=1)
@example(size=40 * 1024, count=50)
def test_http_headers_over_max_header_get_431(wire: Wire, size: int, count: int) -> None:
    each = max(1, size // count)
    headers = [(f"X-Big-{i}", "a" * each) for i in range(count)]
    reply = post(wire.port, "/calc", b'{"x": 1}', headers)
    assert reply.status == 431, (reply.status, reply.body[:300])
    error_of(reply)
    assert_alive(wire)


quoted_paths = st.text(alphabet=st.characters(codec="utf-8"), max_size=30).map(
    lambda s: urllib.parse.quote(s, safe="/")
) | st.binary(max_size=20).map(urllib.parse.quote_from_bytes)


@PROPERTY
@given(path=quoted_paths)
@example(path="health")
@example(path="%ff%fe")
@example(path="calc/extra")
@example(path="%2Fcalc/")
def test_http_unknown_actions_get_404(wire: Wire, path: str) -> None:
    action = urllib.parse.unquote(path).strip("/")  # what the server routes on
    reply = post(wire.port, "/" + path, b'{"x": 1, "k": 1}')
    got = check_http(reply)
    if action in ACTIONS:
        assert reply.status == 200
    elif _page(action):  # what the port answers itself takes GET: 405 naming that
        assert (reply.status, got["type"], reply.headers["allow"]) == (405, "UnknownAction", "GET, HEAD"), got
    else:
        assert (reply.status, got["type"]) == (404, "UnknownAction"), got
        assert repr(action) in got["message"], "the reply names the action it does not know"
    assert_alive(wire)


def _page(action: str) -> bool:
    return action in ("", "health", "status", "openapi.json", "docs") or action.startswith("docs/")


JSON_TYPES = [
    "application/json",
    "Application/JSON",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
]
OTHER_TYPES = [
    None,
    "",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "text/html",
    "application/xml",
    "*/*",
]


@PROPERTY
@given(
    content_type=st.sampled_from(JSON_TYPES + OTHER_TYPES)
    | st.text(alphabet=TOKEN_CHARS + "/;= ", max_size=40).map(str.strip).filter(lambda t: "json" not in t.lower())
)
def test_http_post_needs_a_json_content_type(wire: Wire, content_type: str | None) -> None:
    reply = post(wire.port, "/calc", b'{"x": 1}', content_type=content_type)
    got = check_http(reply)
    if content_type in JSON_TYPES:
        assert reply.status == 200, got
    else:
        assert reply.status == 415, (content_type, reply.status, got)
        assert "json" in got["message"].lower(), got
    assert_alive(wire)


@PROPERTY
@given(
    token=st.none()
    | st.just(TOKEN)
    | st.text(alphabet=TOKEN_CHARS, max_size=30)
    | st.sampled_from([TOKEN[:-1], TOKEN + "x", TOKEN.upper()]),
    form=st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "x-svckit-token"]),
    action=st.sampled_from(["secret", "nope", "calc", ""]),
)
def test_http_token_is_checked_before_the_action(wire: Wire, token: str | None, form: str, action: str) -> None:
    headers: list[tuple[str, str]] = []
    if token is not None:
        headers = [("X-Svckit-Token", token)] if form == "x-svckit-token" else [("Authorization", f"{form} {token}")]
    reply = post(wire.secret_port, f"/{action}", b'{"x": 1}', headers)
    got = check_http(reply)
    right = token == TOKEN and form != "Basic"
    if right and action == "secret":
        assert reply.status == 200 and got["total"] == 2, got
    elif _page(action):  # a page: public, and POST is not what it takes, token or none
        assert (reply.status, got["type"]) == (405, "UnknownAction"), got
    elif right:
        assert (reply.status, got["type"]) == (404, "UnknownAction"), got
    else:
        assert (reply.status, got["type"]) == (401, "Unauthorized"), (action, got)
        assert "actions here" not in got["message"], "a refused caller is not told the actions"
    assert_alive(wire)


foreign_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,8}){1,2}", fullmatch=True).filter(
    lambda h: "localhost" not in h
) | st.sampled_from(["evil.example", "10.0.0.1", "192.168.1.1", "127.0.0.1.evil.example", "localhost.evil.example"])


@PROPERTY
@given(name=foreign_names, port=st.none() | st.integers(1, 65535))
def test_http_foreign_host_gets_403(wire: Wire, name: str, port: int | None) -> None:
    host = name if port is None else f"{name}:{port}"
    reply = post(wire.port, "/calc", b'{"x": 1}', host=host)
    got = check_http(reply)
    assert (reply.status, got["type"]) == (403, "Forbidden"), (host, got)
    assert_alive(wire)


@PROPERTY
@given(
    origin=st.sampled_from(["own", "null"])
    | foreign_names.map(lambda h: f"http://{h}")
    | st.builds(lambda h, p: f"https://{h}:{p}", foreign_names, st.integers(1, 65535))
)
def test_http_foreign_origin_gets_403(wire: Wire, origin: str) -> None:
    given = f"http://127.0.0.1:{wire.port}" if origin == "own" else origin
    reply = post(wire.port, "/calc", b'{"x": 1}', [("Origin", given)])
    got = check_http(reply)
    if origin == "own":
        assert reply.status == 200, got
    else:
        assert (reply.status, got["type"]) == (403, "Forbidden"), (given, got)
    assert_alive(wire)


garbage_requests = st.binary(min_size=1, max_size=200).map(
    lambda b: b.replace(b"\r\n\r\n", b"") + b"\r\n\r\n"
) | st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"BREW", b"P\x00ST", b"", b"get"]),
    st.binary(max_size=30).map(lambda b: b"/" + b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"", b"HTTP/9"]),
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=5),
).map(lambda t: t[0] + b" " + t[1] + b" " + t[2] + b"\r\n" + b"".join(h + b"\r\n" for h in t[3]) + b"\r\n")


@PROPERTY
@given(data=garbage_requests)
@example(data=b"\x00\x01\x02 garbage\r\n\r\n")
@example(data=b"POST /calc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: a\x7f\r\nContent-Length: 0\r\n\r\n")
@example(data=b"POST /calc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}")
def test_http_malformed_framing_gets_a_json_4xx(wire: Wire, data: bytes) -> None:
    check_http(http_raw(wire.port, data))
    assert_alive(wire)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"BREW /calc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /calc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ],
    ids=["garbage", "bad-method", "length-and-chunked"],
)
def test_http_parse_errors_are_json(wire: Wire, data: bytes) -> None:
    reply = http_raw(wire.port, data)
    assert 400 <= reply.status < 500
    error_of(reply)


@pytest.mark.parametrize("sent", [0, 5], ids=["no-body", "part-of-it"])
def test_http_truncated_body_is_answered_408_after_read_timeout(wire: Wire, sent: int) -> None:
    head = request(wire.port, "/calc", b"x" * 10)  # declares 10 bytes of body
    data = head[:-10] + b'{"x": 1}  '[:sent]
    started = time.monotonic()
    reply = http_raw(wire.port, data, timeout=READ_TIMEOUT + 3)
    assert time.monotonic() - started < READ_TIMEOUT + 3
    assert reply.status == 408, (reply.status, reply.body[:300])
    error_of(reply)
    assert_alive(wire)


def test_http_truncated_headers_are_closed_after_read_timeout(wire: Wire) -> None:
    partial = request(wire.port, "/calc", b'{"x": 1}')[:40]  # inside the headers
    with socket.create_connection(("127.0.0.1", wire.port), timeout=READ_TIMEOUT + 3) as sock:
        sock.sendall(partial)
        try:
            got = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection was still open {READ_TIMEOUT + 3} s after {partial!r}") from None
    assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:300]
    assert_alive(wire)


def test_http_body_over_max_body_gets_413(wire: Wire) -> None:
    big = b'{"x": 1, "p": "' + b"a" * MAX_BODY + b'"}'
    reply = post(wire.port, "/calc", big)
    assert (reply.status, error_of(reply)["type"]) == (413, "PayloadTooLarge")
    assert_alive(wire)


@pytest.mark.parametrize("body", [b'{"x": 1, "z": 1e400}', b'{"x": 1, "z": -1e400}'], ids=["inf", "-inf"])
def test_http_overflowing_number_is_a_bad_request(wire: Wire, body: bytes) -> None:
    reply = post(wire.port, "/calc", body)
    assert (reply.status, error_of(reply)["type"]) == (400, "BadRequest"), reply.body


# -- ZMQ properties ----------------------------------------------------------------------------

frames = (
    st.just(b"")
    | st.sampled_from([b"calc", b"scale", b"nope", b"\xff\xfe", b"calc\x00"])
    | bodies
    | st.binary(max_size=40)
    | request_ids.map(str.encode)
)


def expect_zmq(sent: list[bytes], token: str | None = None) -> tuple[list[bytes], Expect, bytes | None]:
    """What the server should answer to ``sent`` from a DEALER: (envelope, outcome, echoed id)."""
    try:
        cut = sent.index(b"") + 1
    except ValueError:
        return [], Expect(400, "BadRequest"), None
    envelope, body = sent[:cut], sent[cut:]
    most = 4 if token is not None else 3
    rid: bytes | None = None  # [action, json, (token,) id]
    if 2 < len(body) <= most and (token is None or len(body) == 4):
        rid = body[-1]
    if not 1 <= len(body) <= most:
        return envelope, Expect(400, "BadRequest"), rid
    action = body[0].decode("utf-8", "replace")
    if token is not None and (len(body) < 3 or body[2] != token.encode()):
        return envelope, Expect(401, "Unauthorized"), rid
    actions = ACTIONS if token is None else ("secret",)
    if action not in actions:
        return envelope, Expect(404, "UnknownAction"), rid
    return envelope, expect_for(action, body[1] if len(body) > 1 else b""), rid


def check_zmq_reply(reply: list[bytes], sent: list[bytes], token: str | None = None) -> None:
    envelope, expect, rid = expect_zmq(sent, token)
    tail = [rid] if rid is not None else []
    assert reply[: len(envelope)] == envelope, (reply, sent)
    rest = reply[len(envelope) :]
    assert len(rest) == 2 + len(tail) and rest[2:] == tail, (reply, sent)
    status, body = rest[0], rest[1]
    got = check_zmq(status, body)
    assert status == (b"ok" if expect.status == 200 else b"error"), (got, expect, sent)
    check_expected(got, expect, expect.status)
    if status == b"error" and rid is not None:
        text = rid.decode("utf-8", "replace")
        assert (got.get("request_id") == text) == accepted_id(text), (got, rid)


@PROPERTY
@given(sent=st.lists(frames, min_size=1, max_size=7))
@example(sent=[b"calc", b'{"x": 1}'])  # no delimiter
@example(sent=[b""])  # nothing after it
@example(sent=[b"", b"calc"])  # the action alone: an empty message
@example(sent=[b"", b"calc", b"{}", b"id", b"extra"])  # one frame too many
@example(sent=[b"", b"", b"calc", b"{}"])  # two delimiters
@example(sent=[b"hop", b"", b"calc", b'{"x": 1}', b"id-1"])  # an envelope of its own
def test_zmq_any_frames_from_a_dealer_get_one_reply(wire: Wire, sent: list[bytes]) -> None:
    reply = zmq_call(wire, str(wire.calc.zmq_url), sent)
    check_zmq_reply(reply, sent)
    assert_alive(wire)


@PROPERTY
@given(sent=st.lists(frames, min_size=1, max_size=5))
def test_zmq_any_frames_from_a_req_socket_get_one_reply(wire: Wire, sent: list[bytes]) -> None:
    reply = zmq_call(wire, str(wire.calc.zmq_url), sent, zmq.REQ)
    check_zmq_reply([b"", *reply], [b"", *sent])  # REQ adds the delimiter and strips it back
    assert_alive(wire)


@PROPERTY
@given(
    action=st.binary(max_size=30),
    body=calc_messages.map(lambda m: json.dumps(m).encode()),
    rid=st.none() | st.binary(max_size=40) | request_ids.map(str.encode),
)
@example(action=b"\xff\xfe", body=b"{}", rid=None)
@example(action=b"calc", body=b'{"x": 1}', rid=b"\xff\x00 bad")
def test_zmq_non_utf8_actions_and_request_ids(wire: Wire, action: bytes, body: bytes, rid: bytes | None) -> None:
    sent = [b"", action, body, *([rid] if rid is not None else [])]
    reply = zmq_call(wire, str(wire.calc.zmq_url), sent)
    check_zmq_reply(reply, sent)
    assert_alive(wire)


@PROPERTY
@given(
    action=st.sampled_from([b"secret", b"nope", b"calc", b"\xff"]),
    token=st.none() | st.just(TOKEN.encode()) | st.binary(max_size=20) | st.sampled_from([TOKEN[:-1].encode(), b""]),
    rid=st.none() | request_ids.map(str.encode),
)
def test_zmq_token_is_checked_before_the_action(
    wire: Wire, action: bytes, token: bytes | None, rid: bytes | None
) -> None:
    sent = [b"", action, b'{"x": 1}']
    if token is not None:
        sent.append(token)
        if rid is not None:
            sent.append(rid)
    reply = zmq_call(wire, str(wire.secret.zmq_url), sent)
    check_zmq_reply(reply, sent, TOKEN)
    if reply[1] == b"error" and json.loads(reply[2])["error"]["type"] == "Unauthorized":
        assert b"actions:" not in reply[2], "a refused caller is not told the actions"
    assert_alive(wire)


@PROPERTY
@given(
    action=st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20).filter(lambda a: "secret" not in a),
    transport=st.sampled_from(["http", "zmq"]),
)
def test_a_refused_caller_learns_no_served_name(wire: Wire, action: str, transport: str) -> None:
    """Without the token, a call of an action not served there tells nothing of what is."""
    if transport == "http":
        reply = post(wire.secret_port, "/" + urllib.parse.quote(action), b'{"x": 1}')
        got, body = check_http(reply), reply.body
        assert (reply.status, got["type"]) == (401, "Unauthorized"), got
    else:
        frames = zmq_call(wire, str(wire.secret.zmq_url), [b"", action.encode(), b'{"x": 1}'])
        got, body = check_zmq(frames[1], frames[2]), frames[2]
        assert got["type"] == "Unauthorized", got
    assert b"secret" not in body, f"the 401 for {action!r} names the served thing: {body!r}"
    assert_alive(wire)


def test_zmq_frame_over_max_body_gets_413(wire: Wire) -> None:
    big = b'{"x": 1, "p": "' + b"a" * MAX_BODY + b'"}'
    reply = zmq_call(wire, str(wire.calc.zmq_url), [b"", b"calc", big])
    assert reply[:2] == [b"", b"error"], reply[:2]
    assert check_zmq(reply[1], reply[2])["type"] == "PayloadTooLarge"
    assert_alive(wire)


def test_zmq_frame_far_over_max_body_drops_only_its_sender(wire: Wire) -> None:
    """libzmq refuses a frame past max_body plus a slack before reading it (ZMQ_MAXMSGSIZE) and
    drops that peer: it hears nothing, and the endpoint answers everyone else."""
    huge = b"a" * (2 * MAX_BODY)
    sock = wire.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(str(wire.calc.zmq_url))
        sock.send_multipart([b"", b"calc", huge])
        if sock.poll(500):  # a reply is allowed too, as long as it is the 413
            frames = sock.recv_multipart()
            assert check_zmq(frames[1], frames[2])["type"] == "PayloadTooLarge", frames[:2]
    finally:
        sock.close(linger=0)
    assert_alive(wire)


def test_every_request_was_counted_once(wire: Wire) -> None:
    """After all of the above, each served thing answered exactly what it received (run alone,
    it sends its own requests first, so it never compares nothing with nothing)."""
    for served in (wire.calc, wire.secret):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", served.http_port), timeout=5) as conn:
                conn.sendall(b"POST /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\n{")
                assert conn.recv(65536).startswith(b"HTTP/1.1 4")
        counts = served.settle(timeout=10).status()
        assert counts["received"] >= 3, counts
        assert counts["received"] == counts["replied"] + counts["disconnected"], counts
        assert counts["dropped"] == 0, counts
