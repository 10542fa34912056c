"""Security defaults of serving: what error replies tell, tokens made for you, and a warning
for a service exposed beyond this machine without one."""

from __future__ import annotations

import logging

import pytest
import requests

import svckit as sk

SECRET = "/nonexistent-svckit-test/home/ann/secret/plan.csv"


@sk.service(name="reader")
def reader(x: int) -> dict:
    with open(SECRET) as f:  # fails: the path is in the message of the error
        return {"text": f.read()}


def test_an_error_reply_keeps_its_type_but_not_paths_outside_the_working_directory(sk_serve):
    srv = sk_serve(reader, http=0)
    reply = requests.post(f"{srv.url}/reader", json={"x": 1}, timeout=10)
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["type"] == "FileNotFoundError"
    assert "plan.csv" in error["message"] and "/home/ann" not in error["message"], error
    last = requests.get(f"{srv.url}/status", timeout=10).json()["served"]["reader"]["last_error"]
    assert last["type"] == "FileNotFoundError" and "/home/ann" not in last["message"], last


def test_expose_errors_sends_the_message_verbatim(sk_serve):
    srv = sk_serve(reader, http=0, expose_errors=True)
    reply = requests.post(f"{srv.url}/reader", json={"x": 1}, timeout=10)
    assert SECRET in reply.json()["error"]["message"]


def test_paths_under_the_working_directory_and_routes_are_kept(tmp_path, monkeypatch):
    from svckit.codec import redact_paths

    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "data" / "x.csv")
    assert redact_paths(f"cannot read {inside}") == f"cannot read {inside}"
    assert redact_paths("use POST /{action} or GET /status") == "use POST /{action} or GET /status"
    assert redact_paths("see http://127.0.0.1:8000/a/b") == "see http://127.0.0.1:8000/a/b"
    assert redact_paths("'/etc/ssl/private/key.pem'") == "'…/key.pem'"
    assert redact_paths("file:///etc/ssl/private/key.pem") == "…/key.pem"
    assert redact_paths("C:/Users/ann/secret/plan.csv") == "…/plan.csv"
    assert redact_paths("C:\\Users\\ann\\plan.csv") == "…/plan.csv"
    assert redact_paths(f"file://{inside}") == f"file://{inside}"


def test_token_true_makes_a_token_that_requests_must_carry(sk_serve, client_for):
    srv = sk_serve(sk.service(lambda x: x + 1, name="inc"), http=0, token=True)
    assert isinstance(srv.token, str) and len(srv.token) >= 24
    assert requests.post(f"{srv.url}/inc", json={"x": 1}, timeout=10).status_code == 401
    assert client_for(srv.url, token=srv.token).inc(x=1)["inc"] == 2
    other = sk_serve(sk.service(lambda x: x, name="same"), http=0, token=True)
    assert other.token != srv.token


@pytest.mark.parametrize("bad", ["", "  padded  ", 42])
def test_a_token_that_is_not_a_usable_string_is_refused(sk_serve, bad):
    with pytest.raises(sk.WiringError, match="token="):
        sk_serve(sk.service(lambda x: x, name="t"), http=0, token=bad)


def test_another_host_without_a_token_is_logged_and_shown_in_status(sk_serve, caplog):
    with caplog.at_level(logging.WARNING, logger="svckit.served"):
        srv = sk_serve(sk.service(lambda x: x, name="wide"), http=0, host="0.0.0.0")
    warnings = srv.status()["warnings"]
    assert warnings and "without a token" in warnings[0] and "token=True" in warnings[0]
    assert any("without a token" in r.getMessage() for r in caplog.records)
    safe = sk_serve(sk.service(lambda x: x, name="wide2"), http=0, host="0.0.0.0", token=True)
    assert safe.status()["warnings"] == []
    local = sk_serve(sk.service(lambda x: x, name="near"), http=0)
    assert local.status()["warnings"] == []


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_header": 0}, "max_header="),
        ({"limit_concurrency": -1}, "limit_concurrency="),
        ({"read_timeout": float("inf")}, "read_timeout="),
        ({"drain_timeout": "5"}, "drain_timeout="),
        ({"allow_origins": [""]}, "allow_origins="),
        ({"allow_hosts": 3}, "allow_hosts="),
        ({"max_body": True}, "max_body="),
    ],
)
def test_bad_limits_are_refused_naming_the_argument(sk_serve, kw, match):
    with pytest.raises(sk.WiringError, match=match):
        sk_serve(sk.service(lambda x: x, name="lim"), http=0, **kw)


def test_the_runtime_raises_the_soft_limit_of_open_files(tmp_path):
    import subprocess
    import sys

    resource = pytest.importorskip("resource")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    script = (
        "import resource, svckit as sk\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))\n"
        "sk.runtime()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "sk.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout.split()[-1]) > 1024, out
