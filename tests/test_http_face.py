"""The HTTP face a FastAPI user expects, on real sockets: GET actions with query fields, 405
with ``Allow``, empty bodies, CORS through Starlette's middleware, and client details."""

from __future__ import annotations

import decimal
import enum
import uuid

import pytest

import svckit as sk

JSON = {"Content-Type": "application/json"}


class Speed(enum.Enum):
    FAST = "fast"


@sk.service(methods=("GET", "POST"))
def double(x: int, tags: list[str] | None = None, scale: float = 1.0) -> dict:
    return {"y": 2 * x * scale, "tags": tags or []}


class Shop(sk.Service):
    def process(self, item: str) -> dict:
        return {"ok": item}

    @sk.handle("items", methods=("GET",))
    def items(self, limit: int = 2) -> dict:
        return {"items": ["a", "b", "c"][:limit]}

    @sk.handle("reset")
    def reset(self) -> dict:
        return {"reset": True}


# -- GET actions -------------------------------------------------------------------------------------


def test_a_get_action_reads_its_query_fields_coerced_to_their_types(sk_serve, http):
    srv = sk_serve(double)
    reply = http.get(f"{srv.url}/double", params={"x": "21"})
    assert (reply.status_code, reply.json()) == (200, {"x": 21, "y": 42.0, "tags": []}), reply.text
    many = http.get(f"{srv.url}/double?x=1&tags=a&tags=b&scale=0.5")
    assert many.json() == {"x": 1, "tags": ["a", "b"], "scale": 0.5, "y": 1.0}
    assert http.post(f"{srv.url}/double", json={"x": 2}).json()["y"] == 4.0  # POST still works


def test_a_bad_query_field_is_a_422_naming_it(sk_serve, http):
    srv = sk_serve(double)
    bad = http.get(f"{srv.url}/double?x=abc")
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert (error["type"], error["field"]) == ("BadMessage", "x")
    missing = http.get(f"{srv.url}/double")
    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "x")
    assert srv.status()["errors_by_type"] == {"BadMessage": 2}


def test_methods_are_checked_with_405_and_allow(sk_serve, http):
    post_only = sk_serve(sk.service(lambda x: x, name="echo"), name="echo")
    shop = sk_serve(Shop(), name="shop", http=post_only.http_port)
    got = http.get(f"{post_only.url}/echo?x=1")
    assert (got.status_code, got.headers["allow"]) == (405, "POST")
    assert got.json()["error"]["type"] == "UnknownAction"
    assert http.get(f"{shop.url}/items?limit=1").json() == {"items": ["a"]}
    posted = http.post(f"{shop.url}/items", json={})
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET")
    put = http.put(f"{shop.url}/shop", json={})
    assert (put.status_code, put.headers["allow"]) == (405, "POST")
    assert http.delete(f"{shop.url}/nothing-here").status_code == 405


@pytest.mark.parametrize("path", ["/health", "/status", "/openapi.json", "/", "/docs"])
def test_posting_to_a_page_is_405_with_allow(sk_serve, http, path):
    """Before: POST /health and POST /status were 404 UnknownAction."""
    srv = sk_serve(double)
    reply = http.post(f"{srv.url}{path}", json={})
    assert (reply.status_code, reply.headers["allow"]) == (405, "GET, HEAD"), reply.text
    assert reply.json()["error"]["type"] == "UnknownAction"


def test_an_empty_post_is_an_empty_message(sk_serve, http):
    srv = sk_serve(Shop(), name="shop")
    reset = http.post(f"{srv.url}/reset")  # no body, no Content-Type: {}
    assert (reset.status_code, reset.json()) == (200, {"reset": True}), reset.text
    needs = http.post(f"{srv.url}/shop")
    assert (needs.status_code, needs.json()["error"]["field"]) == (422, "item")
    text = http.post(f"{srv.url}/reset", data="x=1", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415  # a body still has to be JSON


def test_get_actions_pass_the_token_and_browser_checks(sk_serve, http):
    srv = sk_serve(double, token="s3cret")
    assert http.get(f"{srv.url}/double?x=1").status_code == 401
    ok = http.get(f"{srv.url}/double?x=1", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    foreign = http.get(
        f"{srv.url}/double?x=1", headers={"Authorization": "Bearer s3cret", "Origin": "https://evil.example"}
    )
    assert (foreign.status_code, foreign.json()["error"]["type"]) == (403, "Forbidden")


def test_methods_must_be_get_or_post():
    with pytest.raises(sk.WiringError, match="GET, POST or both"):
        sk.service(methods=("PUT",))(lambda x: x)
    with pytest.raises(sk.WiringError, match="GET, POST or both"):
        sk.handle("x", methods=())
    assert (sk.service(lambda x: x, name="a") >> double).methods == ("POST",)
    assert (double >> sk.service(lambda y: y, name="b")).methods == ("GET", "POST")


# -- CORS ----------------------------------------------------------------------------------------------


APP = "https://app.example"


def test_cors_preflight_and_replies_come_from_starlettes_middleware(sk_serve, http):
    srv = sk_serve(double, allow_origins=[APP])
    preflight = http.options(
        f"{srv.url}/double",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, x-request-id",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers  # credentials off
    # a public page calling 127.0.0.1 (Chrome's private network access) is answered too
    private = http.options(
        f"{srv.url}/double",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert private.headers["access-control-allow-private-network"] == "true"
    for reply in (
        http.post(f"{srv.url}/double", json={"x": 1}, headers={"Origin": APP}),
        http.get(f"{srv.url}/double?x=1", headers={"Origin": APP}),
        http.get(f"{srv.url}/status", headers={"Origin": APP}),
    ):
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in reply.headers["access-control-expose-headers"].lower()
        assert "Origin" in reply.headers["vary"]
    bad_method = http.options(f"{srv.url}/double", headers={"Origin": APP, "Access-Control-Request-Method": "PUT"})
    assert bad_method.status_code == 400 and "method" in bad_method.text


def test_cors_refuses_what_allow_origins_does_not_list(sk_serve, http):
    srv = sk_serve(double, allow_origins=[APP])
    evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    refused = http.options(f"{srv.url}/double", headers=evil)
    assert (refused.status_code, refused.json()["error"]["type"]) == (403, "Forbidden")
    assert "access-control-allow-origin" not in refused.headers
    plain = http.options(f"{srv.url}/double")  # not a preflight
    assert (plain.status_code, plain.headers["allow"]) == (405, "GET, POST")
    no_cors = sk_serve(sk.service(lambda x: x, name="echo"), name="echo")
    page = http.options(f"{no_cors.url}/echo", headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
    assert page.status_code == 403  # without allow_origins a foreign page is not let in at all


def test_any_origin_is_a_star_without_credentials(sk_serve, http):
    srv = sk_serve(double, allow_origins=["*"])
    reply = http.post(f"{srv.url}/double", json={"x": 1}, headers={"Origin": "https://anyone.example"})
    assert reply.headers["access-control-allow-origin"] == "*"


# -- client details ---------------------------------------------------------------------------------------


def test_actions_named_like_client_methods_are_reachable_by_item(sk_serve):
    @sk.service
    def call(x: int) -> int:
        return x + 1

    @sk.service
    def status(x: int) -> int:
        return x * 10

    srv = sk_serve(call, name="call", zmq=0, http=0)
    sk_serve(status, name="status", http=srv.http_port)
    with sk.Client(srv.url) as client, sk.ZmqClient(srv.zmq_url) as zmq:
        assert client["call"](x=1)["call"] == 2
        assert client["status"](x=2)["status"] == 20
        assert "served" in client.status()  # the method: GET /status
        assert zmq["call"](x=5)["call"] == 6
        assert client.call("call", x=3)["call"] == 4


def test_with_serve_stops_on_exit(sk_runtime):
    with sk.serve(double, http=0) as srv:
        assert srv.state is sk.State.RUNNING
        port = srv.http_port
    assert srv.state is sk.State.STOPPED
    with pytest.raises(ValueError), sk.serve(double, http=port) as again:
        assert again.http_port == port  # the port came back at once
        raise ValueError("the block fails")
    assert again.state is sk.State.STOPPED


# -- what a review found (each failed before its fix) ----------------------------------------------


def test_get_values_of_every_type_a_post_takes(sk_serve, http):
    """Before: a set, UUID, Decimal or Enum query value was a 500 (not JSON once coerced)."""

    @sk.service(methods=("GET", "POST"))
    def kinds(
        s: set[int] | None = None,
        u: uuid.UUID | None = None,
        m: decimal.Decimal | None = None,
        k: Speed | None = None,
        f: dict[str, int] | None = None,
    ) -> dict:
        return {"n": len(s or ())}

    srv = sk_serve(kinds)
    for query, key, value in [
        ("s=1&s=2", "s", [1, 2]),
        ("u=12345678-1234-5678-1234-567812345678", "u", "12345678-1234-5678-1234-567812345678"),
        ("m=1.5", "m", "1.5"),
        ("k=fast", "k", "fast"),
        ('f={"x":1}', "f", {"x": 1}),
    ]:
        reply = http.get(f"{srv.url}/kinds?{query}")
        assert (reply.status_code, reply.json()[key]) == (200, value), (query, reply.text)
    strict = http.get(f'{srv.url}/kinds?f={{"x":true}}')  # a JSON value is checked as a body's is
    assert (strict.status_code, strict.json()["error"]["field"]) == (422, "f.x"), strict.text
    assert srv.status()["errors_by_type"] == {"BadMessage": 1}


def test_a_caller_without_the_token_learns_nothing_from_methods(sk_serve, http):
    """Before: 405 replies answered before the token named a protected thing's actions and methods."""

    class Vault(sk.Service):
        def process(self, x: int = 0) -> dict:
            return {}

        @sk.handle("export", methods=("GET",))
        def export(self) -> dict:
            return {}

    srv = sk_serve(Vault(), name="vault", token="s3cret")
    for method, path in [("PUT", "/vault"), ("DELETE", "/export"), ("POST", "/export"), ("OPTIONS", "/vault")]:
        known = http.request(method, f"{srv.url}{path}")
        unknown = http.request(method, f"{srv.url}/nothing-here")
        assert known.status_code == unknown.status_code, (method, path, known.text, unknown.text)
        assert known.headers.get("allow") == unknown.headers.get("allow")
        said, other = known.json()["error"], unknown.json()["error"]
        said.pop("request_id", None), other.pop("request_id", None)
        assert said["message"].replace(path, "/P") == other["message"].replace("/nothing-here", "/P")
        assert said.keys() == other.keys()
    with_token = http.post(f"{srv.url}/export", headers={"Authorization": "Bearer s3cret"})
    assert (with_token.status_code, with_token.headers["allow"]) == (405, "GET")
