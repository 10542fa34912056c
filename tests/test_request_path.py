"""One request path for every transport: the same checks, counters, error bodies and request ids."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
import zmq

import svckit as sk


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


def _http(srv: sk.Served, action: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    with requests.Session() as session:
        session.trust_env = False
        reply = session.post(
            f"{srv.url}/{action}", data=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
    return reply.status_code, reply.json()


def _zmq(zsock: Callable[[int], Any], srv: sk.Served, frames: list[bytes]) -> list[bytes]:
    sock = zsock(zmq.DEALER)
    sock.connect(srv.zmq_url)
    sock.send_multipart([b"", *frames])
    assert sock.poll(10_000), "no ZMQ reply"
    return sock.recv_multipart()[1:]


STATUS = {"BadRequest": 400, "Unauthorized": 401, "UnknownAction": 404, "PayloadTooLarge": 413}


def test_the_same_bad_requests_get_the_same_answers_and_counts_over_http_and_zmq(sk_serve, zsock):
    cases = [  # (what, action, body, with the token)
        ("unknown action", "nope", b"{}", True),
        ("no token", "wc", b'{"text": "a"}', False),
        ("too large", "wc", b'{"text": "' + b"x" * 200 + b'"}', True),
        ("bad JSON", "wc", b"not json", True),
        ("not an object", "wc", b"[1, 2]", True),
        ("fine", "wc", b'{"text": "a b"}', True),
    ]
    answers: dict[str, list[tuple[int, str | None]]] = {}
    counters = {}
    for transport in ("http", "zmq"):
        ports = {"http": 0, "zmq": None} if transport == "http" else {"http": None, "zmq": 0}
        srv = sk_serve(parse, name="wc", token="s3cret", max_body=100, **ports)
        got = []
        for _, action, body, with_token in cases:
            if transport == "http":
                headers = {"Authorization": "bearer s3cret"} if with_token else {}  # the scheme in any case
                status, reply = _http(srv, action, body, headers)
                got.append((status, reply.get("error", {}).get("type")))
            else:
                frames = [action.encode(), body] + ([b"s3cret"] if with_token else [])
                status_frame, raw = _zmq(zsock, srv, frames)[:2]
                reply = json.loads(raw)
                kind = reply.get("error", {}).get("type")
                code = 200 if status_frame == b"ok" else STATUS.get(kind, 422 if kind == "BadMessage" else 500)
                got.append((code, kind))
        answers[transport] = got
        status = srv.status()
        counters[transport] = {k: status[k] for k in ("received", "replied", "errors", "errors_by_type")}
        srv.stop()
    assert (
        answers["http"]
        == answers["zmq"]
        == [
            (404, "UnknownAction"),
            (401, "Unauthorized"),
            (413, "PayloadTooLarge"),
            (400, "BadRequest"),
            (422, "BadMessage"),
            (200, None),
        ]
    )
    assert counters["http"] == counters["zmq"]
    assert counters["http"]["received"] == counters["http"]["replied"] == len(cases)
    assert counters["http"]["errors"] == len(cases) - 1


def test_a_stopped_service_is_unavailable_the_same_way_on_both(sk_serve, zsock):
    other = sk_serve(sk.service(lambda x: x, name="other"), name="other")
    srv = sk_serve(parse, name="wc", http=other.http_port, zmq=0)
    srv.stop()
    status, reply = _http(srv, "wc", b'{"text": "a"}')  # the port stays open: `other` serves on it
    assert status == 503 and reply["error"]["type"] == "ServiceUnavailable"
    health = requests.get(f"{other.url}/health", timeout=5)
    assert health.status_code == 503 and health.json()["not_running"] == ["wc"]
    srv.start()
    assert _http(srv, "wc", b'{"text": "a"}')[0] == 200
    assert requests.get(f"{other.url}/health", timeout=5).status_code == 200


def test_request_ids_are_honoured_or_made_and_travel_everywhere(sk_serve, zsock):
    srv = sk_serve(parse, name="wc", http=0, zmq=0)
    with requests.Session() as session:
        session.trust_env = False
        given = session.post(f"{srv.url}/wc", json={"text": "a"}, headers={"X-Request-ID": "abc-123"})
        made = session.post(f"{srv.url}/wc", json={"nope": 1})
    assert given.headers["X-Request-ID"] == "abc-123"
    made_id = made.headers["X-Request-ID"]
    assert made_id and made.json()["error"]["request_id"] == made_id  # in the error body too
    status, body, rid = _zmq(zsock, srv, [b"wc", b'{"text": "a"}', b"zmq-7"])
    assert status == b"ok" and rid == b"zmq-7" and json.loads(body)["words"] == ["a"]
    assert len(_zmq(zsock, srv, [b"wc", b'{"text": "a"}'])) == 2  # two-frame clients get two frames
    ids = set(srv.traffic["request_id"])
    assert {"abc-123", made_id, "zmq-7"} <= ids
    client = sk.ZmqClient(srv.zmq_url)
    try:
        client.wc(text="b")
        assert client.last_request_id in set(srv.traffic["request_id"])
    finally:
        client.close()


def test_a_zmq_client_to_an_address_nothing_listens_on_fails_fast(sk_serve):
    srv = sk_serve(parse, name="wc", http=None, zmq=0)
    client = sk.ZmqClient(srv.zmq_url, timeout=30, connect_timeout=0.5)
    try:
        assert client.wc(text="a")["words"] == ["a"]
        srv.stop()
        with pytest.raises(sk.ServiceUnavailable, match=srv.zmq_url):
            client.wc(text="a")
    finally:
        client.close()


def test_a_pipeline_message_goes_through_the_same_middleware(sk_serve):
    from svckit.testing import collect

    seen: list[str] = []

    @sk.middleware(scope="request")
    async def note(call, request):
        seen.append(request.transport)
        return await call(request)

    numbers = iter(range(1000))
    sink = collect()
    srv = sk_serve(sk.every(0.01, lambda: {"n": next(numbers)}) >> sink, name="ticks", http=0, middleware=[note])
    sink.wait(2)
    srv.stop()
    assert "every" in seen
