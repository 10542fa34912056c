"""The request schema of whole flows (``svckit.fields``) and the OpenAPI document built from it."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, Literal, TypedDict

import pydantic
import pytest
import requests
from api_examples import PUBLIC, TOKEN, serve_public, serve_secret
from openapi_spec_validator import validate

import svckit as sk
from svckit.fields import Other, query_message, reply_keys, request_fields, variants
from svckit.params import MISSING
from svckit.transports import docs
from svckit.transports.openapi import build


def _summary(node: Any) -> list[tuple[str, Any, bool, str]]:
    return [(f.name, f.annotation, f.required, f.service) for f in request_fields(node).values()]


# -- request_fields ---------------------------------------------------------------------------


class Clean(TypedDict, total=False):
    clean: typing.Required[str]
    note: str


class Out(pydantic.BaseModel):
    y: int
    label: str = "x"


class Error(pydantic.BaseModel):
    """A user's model that happens to share the name of svckit's error body."""

    code: int


@sk.service(output="clean")
def normalize(text: str) -> str:
    return text.strip().lower()


@sk.service
def translate(clean: str, lang: str, formal: bool = False) -> dict:
    return {"translated": clean}


@sk.service(name="filter")
def keep(translated: str, min_len: int = 3) -> dict:
    return {"kept": len(translated) >= min_len}


def test_the_issue_example_reads_what_no_earlier_stage_produces():
    fields = request_fields(normalize >> translate >> keep)
    assert _summary(normalize >> translate >> keep) == [
        ("text", str, True, "normalize"),
        ("lang", str, True, "translate"),
        ("formal", bool, False, "translate"),
        ("min_len", int, False, "filter"),
    ]
    assert fields["formal"].default is False and fields["min_len"].default == 3
    assert fields["text"].default is MISSING


def test_a_typeddict_return_says_what_is_surely_produced():
    @sk.service
    def tidy(text: str) -> Clean:
        return {"clean": text}

    @sk.service
    def use(clean: str, note: str) -> None:
        return None

    assert _summary(tidy >> use) == [("text", str, True, "tidy"), ("note", str, False, "use")]


def test_a_pydantic_return_model_produces_its_fields():
    @sk.service
    def first(x: int) -> Out:
        return Out(y=x)

    @sk.service
    def second(y: int, label: str, z: float = 0.5) -> dict:
        return {}

    assert _summary(first >> second) == [("x", int, True, "first"), ("z", float, False, "second")]
    keys, sure, _ = reply_keys(first >> second)
    assert keys["y"] == [int] and keys["label"] == [str]
    assert sure == {"x"}  # what stages add is never sure: one may raise StopFlow


def test_a_dict_of_unknown_keys_leaves_later_fields_optional():
    @sk.service
    def anything(x: int) -> dict[str, int]:
        return {f"k{i}": i for i in range(x)}

    @sk.service
    def later(k0: int, other: str) -> None:
        return None

    assert _summary(anything >> later) == [
        ("x", int, True, "anything"),
        ("k0", int, False, "later"),
        ("other", str, False, "later"),
    ]
    _, _, unknown = reply_keys(anything >> later)
    assert unknown


def test_return_literals_are_read_from_the_source():
    @sk.service
    def maybe(x: int):
        if x:
            return {"a": 1, "b": "two"}
        return {"a": 0}

    @sk.service
    def use(a: int, b: str) -> None:
        return None

    assert _summary(maybe >> use) == [("x", int, True, "maybe"), ("b", str, False, "use")]
    keys, _, unknown = reply_keys(maybe >> use)
    assert keys["a"] == [int] and not unknown


def test_a_function_that_may_fall_through_is_sure_of_nothing():
    @sk.service
    def sometimes(x: int) -> dict:
        if x > 0:
            return {"a": x}

    @sk.service
    def use(a: int) -> None:
        return None

    assert _summary(sometimes >> use) == [("x", int, True, "sometimes"), ("a", int, False, "use")]


def test_a_value_stage_produces_its_output_key_and_lambdas_are_read():
    flow = sk.service(lambda text: {"words": text.split()}, name="split") >> sk.service(
        lambda words: len(words), name="n"
    )
    assert _summary(flow) == [("text", Any, True, "split")]


def test_a_whole_message_reader_adds_no_field():
    @sk.service
    def log(**message: Any) -> None:
        return None

    @sk.service
    def use(a: int) -> None:
        return None

    assert _summary(log >> use) == [("a", int, True, "use")]


def test_a_branch_key_is_an_enum_and_each_route_a_variant():
    @sk.service
    def image(data: str, width: int = 10) -> dict:
        return {"out": data}

    @sk.service
    def text(body: str) -> dict:
        return {"out": body}

    @sk.service
    def after(out: str, tail: int = 0) -> None:
        return None

    flow = sk.branch("kind", {"img": image, "txt": text}) >> after
    fields = request_fields(flow)
    assert fields["kind"].required and fields["kind"].choices == ("img", "txt")
    assert not fields["data"].required and not fields["body"].required  # each only on its route
    assert "out" not in fields  # every route makes it
    ways = variants(flow)
    assert [w.when for w in ways] == [{"kind": "img"}, {"kind": "txt"}]
    assert [name for name, f in ways[0].fields.items() if f.required] == ["kind", "data"]

    with_default = sk.branch("kind", {"img": image}, default=text)
    fields = request_fields(with_default)
    assert not fields["kind"].required and fields["kind"].choices is None
    assert [w.when for w in variants(with_default)] == [{"kind": "img"}, {"kind": Other(("img",))}]


def test_parallel_branches_read_the_message_as_it_came_in():
    @sk.service
    def left(a: int) -> dict:
        return {"l": a}

    @sk.service
    def right(b: int, l: int = 0) -> dict:  # noqa: E741 - the name a user would pick
        return {"r": b + l}

    @sk.service
    def join(l: int, r: int, c: str) -> None:  # noqa: E741
        return None

    flow = sk.parallel(left, right) >> join
    assert _summary(flow) == [("a", int, True, "left"), ("b", int, True, "right"), ("l", int, False, "right"),
                              ("c", str, True, "join")]  # fmt: skip


def test_middleware_and_nested_flows_and_class_services():
    @sk.middleware
    def timed(call, msg):
        return {**call(msg), "ms": 1.0}

    class Tagger(sk.Service):
        def process(self, text: str, limit: int = 3) -> dict:
            return {"tags": text.split()[:limit]}

    @sk.service
    def count(tags: list[str], words: list[str]) -> dict:
        return {"n": len(tags)}

    inner = (Tagger() >> count).named_as("inner")
    flow = timed >> inner
    assert _summary(flow) == [("text", str, True, "tagger"), ("limit", int, False, "tagger"),
                              ("words", list[str], True, "count")]  # fmt: skip
    keys, _, _ = reply_keys(flow)
    assert "ms" in keys and "n" in keys


def test_action_fields_are_its_method_params():
    class Counter(sk.Service):
        def process(self) -> dict:
            return {}

        @sk.handle("reset")
        def reset(self, hard: bool = False) -> dict:
            return {}

    _, params = Counter().actions()["reset"]
    assert [(f.name, f.required) for f in request_fields([params]).values()] == [("hard", False)]


# -- query_message ----------------------------------------------------------------------------


def test_query_values_are_coerced_by_their_readers_types():
    @sk.service
    def first(n: int, ratio: float = 1.0, tags: list[int] = [], mode: Literal["a", "b"] = "a") -> dict:  # noqa: B006
        return {}

    @sk.service
    def second(flag: bool = False) -> None:
        return None

    flow = first >> second
    items = [("n", "3"), ("ratio", "0.5"), ("tags", "1"), ("tags", "2"), ("flag", "true"), ("mode", "b"), ("x", "y")]
    assert query_message(flow, items) == {"n": 3, "ratio": 0.5, "tags": [1, 2], "flag": True, "mode": "b", "x": "y"}
    assert query_message(flow, [("tags", "7")]) == {"tags": [7]}
    assert query_message(flow, [("x", "1"), ("x", "2")]) == {"x": ["1", "2"]}


@pytest.mark.parametrize(
    ("items", "field", "words"),
    [
        ([("n", "three")], "n", "is 'three', which is not a valid integer"),
        ([("n", "1"), ("n", "2")], "n", "is given 2 times"),
        ([("ratio", "nan")], "ratio", "which is not a valid number"),
        ([("flag", "maybe")], "flag", "not a valid boolean"),
        ([("tags", "1"), ("tags", "x")], "tags", "which is not"),
    ],
)
def test_a_bad_query_value_is_a_bad_message_naming_field_and_service(items, field, words):
    @sk.service
    def first(n: int = 0, ratio: float = 1.0, tags: list[int] = [], flag: bool = False) -> dict:  # noqa: B006
        return {}

    with pytest.raises(sk.BadMessage) as caught:
        query_message(first, items)
    assert caught.value.field == field and caught.value.service == "first"
    assert words in str(caught.value) and str(caught.value).endswith(".")


def test_a_branch_key_in_the_query_is_one_of_its_routes():
    routed = sk.branch("n", {1: sk.service(lambda: None, name="one"), 2: sk.service(lambda: None, name="two")})
    assert query_message(routed, [("n", "2")]) == {"n": 2}
    with pytest.raises(sk.BadMessage, match="one of 1, 2"):
        query_message(routed, [("n", "3")])


# -- the OpenAPI document -----------------------------------------------------------------------


def _spec(url: str, **headers: str) -> dict[str, Any]:
    reply = requests.get(f"{url}/openapi.json", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    spec: dict[str, Any] = reply.json()
    validate(spec)
    return spec


def _schema(spec: dict[str, Any], ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    ref = ref_or_schema.get("$ref")
    if ref is None:
        return ref_or_schema
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _body(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return _schema(spec, spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])


def _reply(spec: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    return _schema(spec, spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"])


def test_every_served_example_has_a_valid_document(sk_serve):
    srv = serve_public(sk_serve)
    spec = _spec(srv.url)
    assert set(spec["paths"]) == {f"/{name}" for name in PUBLIC} | {"/reset", "/peek", "/health", "/status"}
    if getattr(PUBLIC["words"], "streams", False):
        assert set(spec["paths"]["/words"]["post"]["responses"]["200"]["content"]) == {
            "application/x-ndjson",
            "text/event-stream",
        }
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert spec["paths"]["/wordcount"]["post"]["tags"] == ["wordcount"]
    assert spec["paths"]["/reset"]["post"]["tags"] == ["counter"]
    assert spec["paths"]["/wordcount"]["post"]["summary"] == "wordcount"
    assert spec["paths"]["/wordcount"]["post"]["description"] == (
        "`parse >> count`\n- `parse`: Split text into words.\n- `count`: Count the words."
    )
    assert spec["paths"]["/measure"]["post"]["summary"] == "How far the point is from the origin, and its quadrant."
    assert spec["paths"]["/peek"]["post"]["summary"] == "The total so far, times ``scale``."
    # the same document again: stable
    assert _spec(srv.url) == spec


def test_the_flow_request_body_and_reply(sk_serve):
    srv = serve_public(sk_serve)
    spec = _spec(srv.url)
    body = _body(spec, "/translate")
    assert body["required"] == ["text", "lang"]
    assert list(body["properties"]) == ["text", "lang", "formal", "min_len"]
    assert body["properties"]["formal"] == {"type": "boolean", "default": False, "description": "Read by 'translate'."}
    assert spec["paths"]["/translate"]["post"]["requestBody"]["required"] is True
    reply = _reply(spec, "/translate")
    assert reply["required"] == ["text", "lang"]
    assert reply["properties"]["clean"] == {"type": "string"}
    assert reply["properties"]["translated"] == {"type": "string"}
    assert reply["properties"]["kept"] == {"type": "boolean"}
    words = _reply(spec, "/wordcount")["properties"]
    assert set(words) == {"text", "words", "n"}


def test_models_in_and_out(sk_serve):
    srv = serve_public(sk_serve)
    spec = _spec(srv.url)
    schemas = spec["components"]["schemas"]
    body = _body(spec, "/measure")
    assert body["properties"]["p"]["$ref"] == "#/components/schemas/Point"
    assert schemas["Point"]["properties"]["x"]["maximum"] == 1e6
    reply = _reply(spec, "/measure")["properties"]
    assert reply["distance"]["description"] == "From the origin."
    assert reply["quadrant"]["type"] == "integer"


def test_a_branch_body_is_one_of_its_routes(sk_serve):
    srv = serve_public(sk_serve)
    body = _body(_spec(srv.url), "/routed")
    kinds = [variant["properties"]["kind"]["const"] for variant in body["oneOf"]]
    assert kinds == ["shout", "whisper"]
    assert [v["required"] for v in body["oneOf"]] == [["kind", "text"], ["kind", "text"]]


def test_actions_no_params_and_a_value_reply(sk_serve):
    srv = serve_public(sk_serve)
    spec = _spec(srv.url)
    reset = spec["paths"]["/reset"]["post"]
    assert reset["requestBody"]["required"] is False
    assert _body(spec, "/reset")["properties"] == {}
    assert _reply(spec, "/reset")["properties"] == {"total": {"type": "integer"}}
    assert _reply(spec, "/peek")["properties"] == {"peek": {"type": "number"}}
    assert _body(spec, "/peek")["properties"]["scale"]["minimum"] == -1e6


def test_get_operations_read_query_parameters(sk_serve):
    srv = serve_public(sk_serve)
    spec = _spec(srv.url)
    add = spec["paths"]["/add"]
    assert set(add) == {"get", "post"}
    params = {p["name"]: p for p in add["get"]["parameters"]}
    assert params["a"]["required"] is True and params["a"]["schema"]["type"] == "integer"
    assert params["b"]["required"] is False and params["b"]["schema"]["default"] == 0
    assert "413" not in add["get"]["responses"] and "415" not in add["get"]["responses"]
    assert "415" in add["post"]["responses"]
    assert set(spec["paths"]["/wordcount"]) == {"post"}
    assert _reply(spec, "/add", "get")["properties"]["add"] == {"type": "integer"}


def test_errors_are_documented_with_the_error_body(sk_serve):
    srv = serve_public(sk_serve)
    spec = _spec(srv.url)
    responses = spec["paths"]["/wordcount"]["post"]["responses"]
    for code in ("400", "403", "404", "408", "413", "415", "422", "429", "500", "503", "504"):
        assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "401" not in responses and "securitySchemes" not in spec["components"]
    health = spec["paths"]["/health"]["get"]["responses"]
    assert health["200"]["content"]["application/json"]["schema"]["properties"]["status"]["enum"] == [
        "ok",
        "unavailable",
    ]
    status = spec["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert status["required"] == ["port", "served"]


def test_a_token_adds_a_bearer_scheme_and_401(sk_serve):
    srv = serve_secret(sk_serve)
    assert requests.get(f"{srv.url}/openapi.json", timeout=10).status_code == 401
    spec = _spec(srv.url, Authorization=f"Bearer {TOKEN}")
    assert spec["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "The token given to sk.serve(token=...)."}
    }
    op = spec["paths"]["/secret"]["post"]
    assert op["security"] == [{"bearer": []}]
    assert "401" in op["responses"]


def test_a_streaming_stage_answers_ndjson_and_server_sent_events():
    @sk.service
    def words(text: str) -> Iterator[dict[str, str]]:
        for word in text.split():
            yield {"word": word}

    class Routes:
        name = "words"
        node = words

        def params_for(self, action: str) -> list[Any]:
            return self.node.input_params()

        def methods_for(self, action: str) -> tuple[str, ...]:
            return ("POST",)

    if not getattr(words, "streams", False):
        pytest.skip("generator stages do not stream in this build")
    spec = build({"words": Routes()})
    validate(spec)
    content = spec["paths"]["/words"]["post"]["responses"]["200"]["content"]
    assert set(content) == {"application/x-ndjson", "text/event-stream"}
    item = content["application/x-ndjson"]["schema"]["anyOf"]
    assert _schema(spec, item[0])["properties"]["word"] == {"type": "string"}
    assert item[1] == {"$ref": "#/components/schemas/Error"}


def test_a_user_model_named_error_keeps_the_error_body_apart():
    @sk.service
    def fails(e: Error) -> None:
        return None

    class Routes:
        name = "fails"
        node = fails

        def params_for(self, action: str) -> list[Any]:
            return self.node.input_params()

        def methods_for(self, action: str) -> tuple[str, ...]:
            return ("POST",)

    spec = build({"fails": Routes()})
    validate(spec)
    schemas = spec["components"]["schemas"]
    assert schemas["Error"]["properties"] == {"code": {"title": "Code", "type": "integer"}}
    ref = spec["paths"]["/fails"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/SvckitError"


# -- GET /docs ------------------------------------------------------------------------------------


def test_docs_page_and_assets(sk_serve):
    srv = serve_public(sk_serve)
    for path in ("/docs", "/docs/"):
        page = requests.get(f"{srv.url}{path}", timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="docs/swagger-ui-bundle.js?v=' in page.text
        assert "//" not in page.text.split("<body>")[1].replace("://", "")  # nothing absolute
    for path, kind in (("swagger-ui.css", "text/css"), ("swagger-ui-bundle.js", "text/javascript"),
                       ("favicon-32x32.png", "image/png"), ("svckit-docs.js", "text/javascript")):  # fmt: skip
        for under in ("/docs/", "/docs/docs/"):  # what the page at /docs and at /docs/ asks for
            reply = requests.get(f"{srv.url}{under}{path}", timeout=10)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(kind)
            assert "max-age=31536000" in reply.headers["cache-control"]
    assert docs.swagger_ui_version().startswith("5.")


@pytest.mark.parametrize("path", ["/docs/nope.js", "/docs/%2e%2e/pyproject.toml", "/docs/..%2f..%2fpyproject.toml",
                                  "/docs/index.j2", "/docs/swagger-ui.js"])  # fmt: skip
def test_docs_serves_nothing_else(sk_serve, path):
    srv = serve_public(sk_serve)
    reply = requests.get(f"{srv.url}{path}", timeout=10)
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "UnknownAction"
