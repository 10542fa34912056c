"""An exception chooses its HTTP status (``status`` / ``status_code``), and ``sk.HTTPError`` (issue 13)."""

from __future__ import annotations

import http
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

import svckit as sk
from svckit.errors import error_body, from_body, status_of


class NotFound(Exception):
    status = 404


class Teapot(Exception):  # Starlette's and FastAPI's HTTPException spell it status_code
    status_code = 418


class Enumerated(Exception):
    status = http.HTTPStatus.CONFLICT


class NoPhrase(Exception):
    status = 499


class NotAnError(Exception):
    status = 200


class TooHigh(Exception):
    status = 600


class AString(Exception):
    status = "404"


class ABool(Exception):
    status = True


class Both(Exception):  # an unusable status leaves status_code to decide
    status = "gone"
    status_code = 410


class Raising(Exception):
    @property
    def status(self) -> int:
        raise RuntimeError("no status here")


RAISED: dict[str, tuple[type[Exception], int]] = {
    "not_found": (NotFound, 404),
    "teapot": (Teapot, 418),
    "enumerated": (Enumerated, 409),
    "no_phrase": (NoPhrase, 499),
    "not_an_error": (NotAnError, 500),
    "too_high": (TooHigh, 500),
    "a_string": (AString, 500),
    "a_bool": (ABool, 500),
    "both": (Both, 410),
    "raising": (Raising, 500),
    "plain": (ValueError, 500),
}


@sk.service
def order(kind: str) -> dict[str, Any]:
    if kind == "http":
        raise sk.HTTPError(409, "Order 7 is taken: pick another.", order=7)
    if kind == "bare":
        raise sk.HTTPError(404)
    if kind in RAISED:
        raise RAISED[kind][0](f"raised {kind}")
    return {"ok": True}


@pytest.fixture
def served(sk_serve: Any) -> Iterator[Any]:
    yield sk_serve(order, name="order", http=0, zmq=0)


@pytest.fixture
def zmq_client(served: Any) -> Iterator[sk.ZmqClient]:
    client = sk.ZmqClient(served.zmq_url)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize("kind", sorted(RAISED))
def test_a_user_exception_chooses_its_status_over_http(served: Any, kind: str) -> None:
    cls, status = RAISED[kind]
    r = requests.post(f"{served.url}/order", json={"kind": kind}, timeout=10)
    assert r.status_code == status
    body = r.json()["error"]
    assert body["type"] == cls.__name__
    assert body["message"] == f"raised {kind}"
    assert body["service"] == "order"
    assert body.get("status") == (status if status != 500 else None)  # only a chosen one is sent


def test_a_user_exception_s_status_reaches_both_clients(served: Any, client_for: Any, zmq_client: Any) -> None:
    for client in (client_for(served.url), zmq_client):
        with pytest.raises(sk.RemoteError) as info:
            client.call("order", kind="not_found")
        assert info.value.type == "NotFound"
        assert info.value.status == 404
        assert info.value.message == "raised not_found"
        with pytest.raises(sk.RemoteError) as info:
            client.call("order", kind="teapot")
        assert (info.value.type, info.value.status) == ("Teapot", 418)
        with pytest.raises(sk.RemoteError) as info:
            client.call("order", kind="plain")
        assert (info.value.type, info.value.status) == ("ValueError", 500)


def test_a_zmq_reply_carries_the_status_in_its_body(served: Any, zsock: Any) -> None:
    import json

    import zmq

    req = zsock(zmq.REQ)
    req.connect(served.zmq_url)
    req.send_multipart([b"order", json.dumps({"kind": "not_found"}).encode()])
    assert req.poll(10_000), "no reply over ZMQ"
    status, body = req.recv_multipart()
    assert status == b"error"
    assert json.loads(body)["error"]["status"] == 404


def test_http_error_round_trips_over_http_and_zmq(served: Any, client_for: Any, zmq_client: Any) -> None:
    r = requests.post(f"{served.url}/order", json={"kind": "http"}, timeout=10)
    assert r.status_code == 409
    body = r.json()["error"]
    assert body["type"] == "HTTPError"
    assert body["status"] == 409
    assert body["order"] == 7
    assert body["service"] == "order"
    for client in (client_for(served.url), zmq_client):
        with pytest.raises(sk.HTTPError) as info:
            client.call("order", kind="http")
        exc = info.value
        assert exc.status == 409
        assert exc.message == "Order 7 is taken: pick another."
        assert exc.details["order"] == 7
        with pytest.raises(sk.HTTPError) as info:
            client.call("order", kind="bare")
        assert (info.value.status, info.value.message) == (404, "Not Found")


def test_http_error_is_an_svckit_error_with_its_status() -> None:
    exc = sk.HTTPError(http.HTTPStatus.GONE, "Order 7 was cancelled.", order=7)
    assert isinstance(exc, sk.SvckitError)
    assert exc.status == 410 and type(exc.status) is int
    assert status_of(exc) == 410
    assert error_body(exc, service="order") == {
        "type": "HTTPError",
        "message": "Order 7 was cancelled.",
        "status": 410,
        "order": 7,
        "service": "order",
    }
    again = pickle.loads(pickle.dumps(exc))
    assert (type(again), again.status, again.message, again.details) == (sk.HTTPError, 410, exc.message, exc.details)
    assert sk.HTTPError(499).message == "HTTP 499"
    assert sk.HTTPError(503).message == "Service Unavailable"


@pytest.mark.parametrize("status", [200, 302, 399, 600, 0, -404, "404", 404.0, True, None])
def test_http_error_refuses_a_status_that_is_not_an_error_s(status: Any) -> None:
    with pytest.raises(ValueError, match="the status must be an integer from 400 to 599"):
        sk.HTTPError(status)


def test_http_error_refuses_a_type_detail() -> None:
    with pytest.raises(ValueError, match="'type' names the error"):
        sk.HTTPError(400, "x", type="other")


def test_from_body_rebuilds_http_errors_and_keeps_statuses() -> None:
    exc = from_body({"type": "HTTPError", "message": "gone", "status": 410, "k": 1})
    assert isinstance(exc, sk.HTTPError) and exc.status == 410 and exc.details["k"] == 1
    exc = from_body({"type": "HTTPError", "message": "gone"}, 410)  # the HTTP status when the body has none
    assert isinstance(exc, sk.HTTPError) and exc.status == 410
    exc = from_body({"type": "HTTPError", "message": "200 from somewhere"})  # no status at all
    assert isinstance(exc, sk.RemoteError) and exc.type == "HTTPError"
    exc = from_body({"type": "NotFound", "message": "no", "status": 404}, 404)
    assert isinstance(exc, sk.RemoteError) and exc.status == 404
    exc = from_body({"type": "Mystery", "message": "no"}, 502)
    assert isinstance(exc, sk.RemoteError) and exc.status == 502
    exc = from_body({"type": "BadMessage", "message": "no", "field": "x", "status": 422})
    assert isinstance(exc, sk.BadMessage) and exc.field == "x" and "status" not in exc.details


@given(st.integers(-1000, 2000) | st.booleans() | st.text(max_size=3) | st.none() | st.floats(allow_nan=False))
def test_only_an_integer_from_400_to_599_chooses_the_status(value: Any) -> None:
    exc = Exception("x")
    exc.status = value  # type: ignore[attr-defined]
    chosen = isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599
    assert status_of(exc) == (value if chosen else 500)
    assert error_body(exc).get("status") == (value if chosen else None)
