"""The HTTP client: calls, attribute calls, timeouts and remote errors re-raised by name."""

from __future__ import annotations

import socket
import threading

import pytest

import svckit as sk


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}


@pytest.fixture
def wordcount(sk_serve):
    return sk_serve(parse >> count, name="wordcount")


def test_call_and_attribute_call(wordcount, client_for):
    client = client_for(wordcount.url)
    expected = {"text": "a b", "words": ["a", "b"], "n": 2}
    assert client.call("wordcount", text="a b") == expected
    assert client.call("wordcount", {"text": "a b"}) == expected
    assert client.wordcount(text="a b") == expected
    assert client.wordcount({"text": "x"}, text="a b") == expected
    assert client.wordcount.__name__ == "wordcount"


def test_health_status_and_openapi_helpers(wordcount, client_for):
    client = client_for(wordcount.url + "/")  # a trailing slash is fine
    assert client.health()["status"] == "ok"
    client.wordcount(text="a")
    assert client.status()["served"]["wordcount"]["received"] == 1
    assert "/wordcount" in client.openapi()["paths"]


def test_client_timeout_is_service_timeout(sk_serve, client_for):
    release = threading.Event()

    @sk.service
    def slow(x: int) -> dict:
        release.wait(5)
        return {}

    srv = sk_serve(slow, name="slow")
    try:
        with pytest.raises(sk.ServiceTimeout, match=r"within 0\.2 s"):
            client_for(srv.url, timeout=0.2).slow(x=1)
        with pytest.raises(sk.ServiceTimeout):
            client_for(srv.url).call("slow", x=1, timeout=0.2)
    finally:
        release.set()


def test_served_timeout_is_service_timeout(sk_serve, client_for):
    release = threading.Event()

    @sk.service
    def slow(x: int) -> dict:
        release.wait(5)
        return {}

    srv = sk_serve(slow, name="slow", timeout=0.2)
    try:
        with pytest.raises(sk.ServiceTimeout) as info:
            client_for(srv.url).slow(x=1)
        assert info.value.service == "slow"
    finally:
        release.set()


def test_remote_bad_message_stays_bad_message(wordcount, client_for):
    with pytest.raises(sk.BadMessage) as info:
        client_for(wordcount.url).wordcount(txt="a")
    assert info.value.field == "text"
    assert info.value.service == "parse"
    assert "'text'" in str(info.value)


def test_known_remote_errors_keep_their_class(wordcount, client_for):
    client = client_for(wordcount.url)
    with pytest.raises(sk.UnknownAction, match="'nope'"):
        client.nope(x=1)


def test_unknown_remote_error_is_remote_error(sk_serve, client_for):
    @sk.service
    def fails(x: int) -> dict:
        raise LookupError(f"no record {x}")

    srv = sk_serve(fails, name="fails")
    with pytest.raises(sk.RemoteError) as info:
        client_for(srv.url).fails(x=7)
    err = info.value
    assert err.type == "LookupError"
    assert err.message == "no record 7"
    assert str(err) == "LookupError: no record 7"
    assert isinstance(err, sk.SvckitError)


def test_connection_refused_is_a_clear_error(client_for):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(sk.ServiceUnavailable) as info:
        client.anything(x=1)
    assert f"http://127.0.0.1:{port}/anything" in str(info.value)
    assert "Cannot reach" in str(info.value)


def test_client_checks_its_url():
    with pytest.raises(ValueError, match="http://"):
        sk.Client("127.0.0.1:8000")


def test_client_repr_is_deterministic():
    with sk.Client("http://127.0.0.1:8000/", token="secret") as client:
        assert repr(client) == "Client('http://127.0.0.1:8000')"
        assert "secret" not in repr(client)


def test_private_attributes_are_not_actions():
    with sk.Client("http://127.0.0.1:8000") as client, pytest.raises(AttributeError):
        client._private  # noqa: B018
