"""HTTP serving on real sockets, seen from outside: curl in a subprocess, other processes, threads."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from openapi_spec_validator import validate

import svckit as sk
from svckit.testing import wait_for


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}


WORDCOUNT = parse >> count


@pytest.fixture
def bystander(sk_serve, client_for):
    """Another flow served on its own port: ``check()`` asserts it still answers."""
    srv = sk_serve(sk.service(lambda x: x + 1, name="inc"), name="inc")
    client = client_for(srv.url, timeout=5)

    def check() -> None:
        assert client.inc(x=41)["inc"] == 42

    check()
    return check


# -- the happy path, from another process --------------------------------------------


def test_curl_calls_a_served_flow(sk_serve, curl):
    srv = sk_serve(WORDCOUNT, name="wordcount")
    assert srv.url == f"http://127.0.0.1:{srv.http_port}"
    status, body = curl("POST", f"{srv.url}/wordcount", '{"text": "a b c"}')
    assert status == 200
    assert body == {"text": "a b c", "words": ["a", "b", "c"], "n": 3}


def test_port_zero_picks_a_free_port_and_explicit_ports_work(sk_serve, curl):
    srv = sk_serve(WORDCOUNT, name="wc")
    assert srv.http_port > 0
    port = srv.http_port
    srv.stop()
    srv2 = sk_serve(WORDCOUNT, name="wc", http=port)
    assert srv2.http_port == port
    assert curl("POST", f"{srv2.url}/wc", '{"text": "x"}')[0] == 200


def test_health_status_and_index(sk_serve, curl):
    srv = sk_serve(WORDCOUNT, name="wc")
    assert curl("GET", f"{srv.url}/health") == (200, {"status": "ok", "not_running": []})
    curl("POST", f"{srv.url}/wc", '{"text": "a b"}')
    curl("POST", f"{srv.url}/wc", '{"text": "c"}')
    curl("POST", f"{srv.url}/wc", '{"txt": "oops"}')
    status, body = curl("GET", f"{srv.url}/status")
    assert status == 200 and body["port"] == srv.http_port
    wc = body["served"]["wc"]
    assert wc["state"] == "running" and wc["actions"] == ["wc"]
    assert (wc["received"], wc["replied"], wc["errors"]) == (3, 3, 1)
    assert wc["by_action"] == {"wc": 3}
    assert wc["errors_by_type"] == {"BadMessage": 1}
    assert wc["last_error"]["type"] == "BadMessage"
    status, index = curl("GET", f"{srv.url}/")
    assert status == 200 and index["actions"] == {"wc": "/wc"}


def test_openapi_is_valid_openapi_3_1(sk_serve, curl):
    class Tagger(sk.Service):
        def process(self, text: str, limit: int = 3) -> dict:
            return {}

        @sk.handle("reset")
        def reset(self, hard: bool = False) -> None:
            return None

    srv = sk_serve(Tagger(), name="tagger")
    sk_serve(WORDCOUNT, name="wc", http=srv.http_port)  # two served things on one port
    status, spec = curl("GET", f"{srv.url}/openapi.json")
    assert status == 200
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) >= {"/tagger", "/reset", "/wc", "/health", "/status"}
    schemas = spec["components"]["schemas"]
    assert schemas["TaggerInput"]["required"] == ["text"]
    assert schemas["TaggerInput"]["properties"]["limit"]["type"] == "integer"
    assert schemas["WcInput"]["required"] == ["text"]
    assert "hard" in schemas["ResetInput"]["properties"]


# -- bad requests: a JSON error body and a 4xx, never a 500 or a dropped connection ----------


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "kind"),
    [
        ("POST", "wc", "not json", {}, 400, "BadRequest"),
        ("POST", "wc", '{"text": "a", "x": NaN}', {}, 400, "BadRequest"),
        ("POST", "wc", '{"text": "a", "x": -Infinity}', {}, 400, "BadRequest"),
        ("POST", "wc", b'{"text": "\xff\xfe"}', {}, 400, "BadRequest"),
        ("POST", "wc", "null", {}, 422, "BadMessage"),
        ("POST", "wc", "[1, 2]", {}, 422, "BadMessage"),
        ("POST", "wc", '"text"', {}, 422, "BadMessage"),
        ("POST", "wc", "{}", {}, 422, "BadMessage"),
        ("POST", "wc", '{"text": 5}', {}, 422, "BadMessage"),
        ("POST", "wc", json.dumps({"text": "x" * 5000}), {}, 413, "PayloadTooLarge"),
        ("POST", "wc", json.dumps({"text": "x" * 5000}), {"Transfer-Encoding": "chunked"}, 413, "PayloadTooLarge"),
        ("POST", "nope", "{}", {}, 404, "UnknownAction"),
        ("GET", "wc", None, {}, 405, "UnknownAction"),
        ("GET", "nothing/here", None, {}, 404, "UnknownAction"),
        ("PUT", "wc", "{}", {}, 405, "UnknownAction"),
    ],
)
def test_bad_requests_get_json_errors(sk_serve, curl, method, path, body, headers, status, kind):
    srv = sk_serve(WORDCOUNT, name="wc", max_body=1000)
    got, reply = curl(method, f"{srv.url}/{path}", body, headers)
    assert (got, reply["error"]["type"]) == (status, kind), reply
    assert reply["error"]["message"]
    assert curl("POST", f"{srv.url}/wc", '{"text": "still fine"}')[0] == 200


def test_bad_message_names_field_and_service(sk_serve, curl):
    srv = sk_serve(WORDCOUNT, name="wc")
    status, reply = curl("POST", f"{srv.url}/wc", '{"text": ["a"]}')
    assert status == 422
    assert reply["error"]["field"] == "text" and reply["error"]["service"] == "parse"
    status, reply = curl("POST", f"{srv.url}/wc", '{"text": "a", "words": "no list"}')
    assert status == 200  # parse overwrites words before count reads it


def test_coercion_over_http(sk_serve, curl):
    srv = sk_serve(sk.service(lambda n: n * 2, name="double"), name="double")
    typed = sk.service(name="square")(_square)
    srv2 = sk_serve(typed, name="square", http=srv.http_port)
    assert curl("POST", f"{srv.url}/double", '{"n": "3"}') == (200, {"n": "3", "double": "33"})
    assert curl("POST", f"{srv2.url}/square", '{"n": 3.0}')[1]["square"] == 9  # an integer for the call
    status, reply = curl("POST", f"{srv2.url}/square", '{"n": "3"}')  # a string is no number
    assert (status, reply["error"]["field"]) == (422, "n")


def _square(n: int) -> int:
    return n * n


def test_a_large_body_over_the_limit_is_answered_not_dropped(sk_serve):
    srv = sk_serve(WORDCOUNT, name="wc", max_body=1000)
    body = json.dumps({"text": "x" * (4 << 20)}).encode()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(b"POST /wc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        s.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            s.sendall(body)
        except OSError:  # the server may answer and close before reading it all
            pass
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


# -- ports ----------------------------------------------------------------------------------------

_HOLDER = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_a_port_held_by_another_process_raises_port_in_use(sk_runtime, sk_serve):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        with pytest.raises(sk.PortInUse) as info:
            sk.serve(WORDCOUNT, name="wc", http=port)
        assert str(port) in str(info.value)
        assert info.value.port == port
        assert isinstance(info.value, OSError)
        assert "wc" not in sk_runtime.served
        srv = sk_serve(WORDCOUNT, name="wc")  # the name is free to use
        assert srv.http_port != port
    finally:
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def test_stop_frees_the_port_at_once(sk_serve, curl, client_for):
    srv = sk_serve(WORDCOUNT, name="wc")
    port = srv.http_port
    client = client_for(srv.url)  # a keep-alive connection stays open across the stop
    assert client.wc(text="a")["n"] == 1
    assert curl("POST", f"{srv.url}/wc", '{"text": "a"}')[0] == 200
    srv.stop()
    assert srv.state is sk.State.STOPPED
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        plain.bind(("127.0.0.1", port))
        plain.listen()
    again = sk_serve(WORDCOUNT, name="wc", http=port)
    assert again.http_port == port
    assert curl("POST", f"{again.url}/wc", '{"text": "a b"}') == (200, {"text": "a b", "words": ["a", "b"], "n": 2})


def test_stop_frees_the_port_for_a_bare_socket(sk_serve, curl):
    srv = sk_serve(WORDCOUNT, name="wc")
    port = srv.http_port
    with sk.Client(srv.url) as client:
        assert client.wc(text="a")["n"] == 1
    assert curl("POST", f"{srv.url}/wc", '{"text": "a"}')[0] == 200
    srv.stop()
    # No SO_REUSEADDR: the clients closed first, so the server holds no TIME_WAIT on the port.
    # (With a keep-alive client still connected, the server closes that connection and the
    # port needs SO_REUSEADDR, as every server sets it; see test_stop_frees_the_port_at_once.)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        plain.bind(("127.0.0.1", port))
        plain.listen()


def test_stop_then_connection_is_refused(sk_serve):
    srv = sk_serve(WORDCOUNT, name="wc")
    port = srv.http_port
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# -- replace in place under load ------------------------------------------------------------------------


def _version(v: int) -> sk.Service:
    @sk.service(name="echo")
    def echo(x: int) -> dict:
        return {"v": v, "y": x}

    return echo


def test_reserving_20_times_under_load_drops_nothing(sk_serve, client_for):
    srv = sk_serve(_version(0), name="live")
    port = srv.http_port
    announced, done = [0], [0]  # versions being served / fully served
    stop = threading.Event()
    failures: list[BaseException] = []
    replies: list[tuple[int, int, int]] = []  # (lowest possible, got, highest possible)

    def send(client: sk.Client) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            low = done[0]
            try:
                reply = client.live(x=i)
            except BaseException as exc:
                failures.append(exc)
                continue
            if reply["y"] != i:
                failures.append(AssertionError(f"sent {i}, got {reply}"))
            replies.append((low, reply["v"], announced[0]))

    threads = [threading.Thread(target=send, args=(client_for(srv.url, timeout=10),)) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for v in range(1, 21):
            seen = len(replies)
            wait_for(lambda n=seen: len(replies) >= n + 5, timeout=10, what="replies between re-serves")
            announced[0] = v
            again = sk.serve(_version(v), name="live", http=0)
            done[0] = v
            assert again is srv and srv.http_port == port
        seen = len(replies)
        wait_for(lambda: len(replies) >= seen + 5, timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert all(low <= got <= high for low, got, high in replies), [r for r in replies if not r[0] <= r[1] <= r[2]]
    assert {got for _, got, _ in replies} >= {0, 20}
    assert len(replies) >= 100
    counters = srv.status()
    assert counters["errors"] == 0 and counters["received"] == counters["replied"] == len(replies)


# -- user code that misbehaves: the right reply, and other flows keep answering ----------------------


def test_a_service_that_raises_is_a_500_with_type_and_message(sk_serve, curl, bystander):
    @sk.service
    def picky(x: int) -> dict:
        if x < 0:
            raise ValueError(f"x must not be negative, got {x}")
        return {"ok": True}

    srv = sk_serve(parse >> picky, name="checker")
    status, reply = curl("POST", f"{srv.url}/checker", '{"text": "a", "x": -1}')
    assert status == 500
    assert reply["error"]["type"] == "ValueError"
    assert reply["error"]["message"] == "x must not be negative, got -1"
    assert reply["error"]["service"] == "picky"  # the stage that raised, not the served name
    assert srv.status()["errors_by_type"] == {"ValueError": 1}
    bystander()
    assert curl("POST", f"{srv.url}/checker", '{"text": "a", "x": 1}')[0] == 200


def test_json_nested_too_deeply_is_a_400_and_a_reply_nested_too_deeply_a_500(sk_serve, curl, bystander):
    @sk.service
    def deep(depth: int) -> dict:
        value: list[object] = []
        for _ in range(depth):
            value = [value]
        return {"value": value}

    srv = sk_serve(deep, name="deep", http=0, zmq=0)
    nested = '{"depth": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    status, reply = curl("POST", f"{srv.url}/deep", nested)
    assert (status, reply["error"]["type"]) == (400, "BadRequest")
    assert "nested too deeply" in reply["error"]["message"]
    status, reply = curl("POST", f"{srv.url}/deep", '{"depth": 100000}')
    assert (status, reply["error"]["type"]) == (500, "BadResult")
    # an answer over ZMQ too, never a hang
    with sk.ZmqClient(srv.zmq_url, timeout=5) as client, pytest.raises(sk.BadResult, match="nested too deeply"):
        client.deep(depth=100_000)
    srv.settle(timeout=5)  # every request was answered and counted
    assert srv.status()["errors_by_type"] == {"BadRequest": 1, "BadResult": 2}
    assert len(srv.outputs) == 0  # a reply that could not be sent is no output
    bystander()
    assert curl("POST", f"{srv.url}/deep", '{"depth": 2}') == (200, {"depth": 2, "value": [[[]]]})


@pytest.mark.parametrize("via", ["http", "zmq", "pipeline"])
def test_sys_exit_or_keyboard_interrupt_in_a_stage_never_ends_the_runtime(sk_serve, bystander, via):
    @sk.service
    def bye(n: int) -> dict:
        if n == 2:
            raise KeyboardInterrupt
        if n == 3:
            sys.exit(3)
        return {}

    if via == "pipeline":
        ticks = iter(range(1, 1000))
        srv = sk_serve(sk.every(0.01, lambda: {"n": next(ticks)}) >> bye, name="ticker")
        wait_for(lambda: srv.status()["errors"] >= 2 and srv.status()["replied"] >= 4, timeout=10)
        assert {"KeyboardInterrupt", "SystemExit"} <= set(srv.status()["errors_by_type"])
    else:
        srv = sk_serve(bye, name="bye", http=0 if via == "http" else None, zmq=0 if via == "zmq" else None)
        client = sk.Client(srv.url, timeout=5) if via == "http" else sk.ZmqClient(srv.zmq_url, timeout=5)
        with client:
            for n, kind in ((2, "KeyboardInterrupt"), (3, "SystemExit")):
                with pytest.raises(sk.RemoteError) as caught:
                    client.bye(n=n)
                assert caught.value.type == kind
            assert client.bye(n=1) == {"n": 1}
    assert sk.runtime().thread.is_alive()
    bystander()


def test_stages_stuck_past_their_timeout_do_not_starve_other_flows(sk_serve, bystander):
    """More calls stuck than the pool has workers: others still get a thread."""
    release = threading.Event()
    workers = sk.runtime().pool.workers

    @sk.service
    def stuck(x: int) -> dict:
        release.wait(20)
        return {}

    srv = sk_serve(stuck, name="stuck", timeout=0.5)
    callers = []
    try:
        with sk.Client(srv.url, timeout=10) as client:
            for _ in range(workers + 8):
                callers.append(threading.Thread(target=_expect_timeout, args=(client,)))
                callers[-1].start()
            wait_for(lambda: srv.status()["errors_by_type"].get("ServiceTimeout", 0) >= workers + 8, timeout=15)
            bystander()  # its plain def stage needs a worker too; timeout 5 s, the stuck ones 20 s
    finally:
        release.set()
        for caller in callers:
            caller.join(10)


def _expect_timeout(client: sk.Client) -> None:
    with pytest.raises(sk.ServiceTimeout):
        client.stuck(x=1)


def test_a_blocking_service_times_out_while_others_answer(sk_serve, curl, bystander):
    entered, release = threading.Event(), threading.Event()

    @sk.service
    def stuck(x: int) -> dict:
        entered.set()
        release.wait(5)  # blocks for 5 s unless the test ends first
        return {"late": True}

    srv = sk_serve(stuck, name="stuck", timeout=1)
    result: dict[str, object] = {}

    def call() -> None:
        t0 = time.monotonic()
        result["reply"] = curl("POST", f"{srv.url}/stuck", '{"x": 1}')
        result["seconds"] = time.monotonic() - t0

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert entered.wait(5)
        bystander()  # answers while the stuck one blocks
        assert "reply" not in result
        caller.join(5)
        status, reply = result["reply"]
        assert status == 504
        assert reply["error"]["type"] == "ServiceTimeout" and "1" in reply["error"]["message"]
        assert result["seconds"] < 1.5 + 0.5  # ~1 s plus the curl process start
        bystander()
    finally:
        release.set()
        caller.join(5)


@pytest.mark.parametrize(
    ("value", "why", "code"),
    [
        ({"obj": object()}, "not JSON serializable", 500),
        ({1, 2}, "set", 500),
        # the values sent made it overflow: the caller's to change (a 500 before)
        ({"nan": math.nan}, "JSON cannot carry (infinity or NaN)", 422),
        ({"big": 1e308 * 10}, "JSON cannot carry (infinity or NaN)", 422),
    ],
)
def test_a_non_json_result_is_a_bad_result(sk_serve, curl, bystander, value, why, code):
    srv = sk_serve(sk.service(lambda x: value, name="odd"), name="odd")
    status, reply = curl("POST", f"{srv.url}/odd", '{"x": 1}')
    assert status == code
    assert reply["error"]["type"] == "BadResult"
    assert why in reply["error"]["message"]
    bystander()


# -- token auth ------------------------------------------------------------------------------------------


def test_token_auth(sk_serve, curl, client_for):
    srv = sk_serve(WORDCOUNT, name="wc", token="s3cret")
    url = f"{srv.url}/wc"
    status, reply = curl("POST", url, '{"text": "a"}')
    assert status == 401 and reply["error"]["type"] == "Unauthorized"
    assert curl("POST", url, '{"text": "a"}', {"Authorization": "Bearer wrong"})[0] == 401
    assert curl("POST", url, '{"text": "a"}', {"Authorization": "Bearer s3cret"})[0] == 200
    assert curl("POST", url, '{"text": "a"}', {"X-Svckit-Token": "s3cret"})[0] == 200
    with pytest.raises(sk.Unauthorized):
        client_for(srv.url).wc(text="a")
    assert client_for(srv.url, token="s3cret").wc(text="a")["n"] == 1


def test_token_also_guards_status_and_schema_but_not_health(sk_serve):
    srv = sk_serve(sk.service(lambda x: x, name="echo"), token="s3cret")
    for path in ("status", "openapi.json", ""):
        r = requests.get(f"{srv.url}/{path}", timeout=10)
        assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized"
        ok = requests.get(f"{srv.url}/{path}", headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert ok.status_code == 200
    assert requests.get(f"{srv.url}/health", timeout=10).status_code == 200


def test_refused_requests_are_counted(sk_serve):
    srv = sk_serve(sk.service(lambda x: x, name="echo"), token="s3cret", max_body=100)
    assert requests.post(f"{srv.url}/echo", json={"x": 1}, timeout=10).status_code == 401
    big = requests.post(
        f"{srv.url}/echo", json={"x": "y" * 200}, headers={"Authorization": "Bearer s3cret"}, timeout=10
    )
    assert big.status_code == 413
    counters = srv.status()
    assert counters["received"] == 2 and counters["errors"] == 2
    assert counters["errors_by_type"] == {"Unauthorized": 1, "PayloadTooLarge": 1}
