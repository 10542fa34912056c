"""The OpenAPI 3.1 document of an HTTP endpoint: every action's request and reply, typed.

A flow's request body holds every field some stage reads that no earlier stage is sure to
produce (``fields.request_fields``); a branch on a request field makes it "one of" a
variant per route. Its reply is the message after the flow: the request's fields and
every key the stages produce, typed from their return annotations. Types become JSON
Schema through pydantic, in one pass, so two models of one name get two names.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from .. import fields as flow_fields
from ..codec import encode
from ..config import is_svckit_class
from ..params import MISSING
from ..state import State

__all__ = ["build"]

logger = logging.getLogger(__name__)

_REF = "#/components/schemas/{model}"
_JSON = "application/json"
_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"

_ERROR = {
    "type": "object",
    "description": 'What went wrong: `{"error": {"type": ..., "message": ...}}`.',
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "description": "The error's class, e.g. BadMessage."},
                "message": {"type": "string", "description": "A sentence saying what is wrong and what to do."},
                "field": {"type": "string", "description": "The message field at fault."},
                "service": {"type": "string", "description": "The service (stage) at fault."},
                "request_id": {"type": "string", "description": "The request's X-Request-ID."},
                "retry_after": {"type": "number", "description": "Seconds to wait before trying again (429)."},
            },
        }
    },
}

#: Error replies every action may give, with what they mean here (POST and GET).
_ERRORS = {
    "400": "The request cannot be read: the body is not UTF-8 JSON, or the client closed it half-sent.",
    "403": "Refused: a foreign Origin or a Host that does not name this server (a cross-site request).",
    "404": "No such action on this port (it is no longer served here).",
    "408": "The request did not arrive within the read timeout.",
    "413": "The body is over the size limit (`max_body`).",
    "415": "A POST body must be sent with `Content-Type: application/json`.",
    "422": "A field is missing or ill-typed, or the body is not a JSON object (BadMessage names the field).",
    "429": "Past a throttle's rate (TooManyRequests): try again after `retry_after` seconds.",
    "431": "The request line and headers are over the limit (`max_header`).",
    "500": "A stage raised an error: its type and message.",
    "503": "The service is failed, stopped or stopping; a failed one answers 503 until restarted.",
    "504": "The service took longer than its timeout.",
}
_BODY_ONLY = ("413", "415")
_DEFAULT = "Another error: an exception class with a `status` attribute chooses its own code."
_UNAUTHORIZED = "This needs the token: send `Authorization: Bearer <token>`."


class _Schemas:
    """Types to turn into JSON Schema, all at once (pydantic names shared models once)."""

    def __init__(self) -> None:
        self._items: list[tuple[dict[str, Any], Any, str, dict[str, Any]]] = []

    def of(self, ann: Any, mode: str = "validation", **extra: Any) -> dict[str, Any]:
        """A schema for ``ann``, filled in by ``resolve``; ``extra`` keys are added where the
        type's own schema does not set them (a description, a default)."""
        slot: dict[str, Any] = {}
        self._items.append((slot, ann, mode, extra))
        return slot

    def resolve(self, components: dict[str, Any]) -> None:
        from pydantic import TypeAdapter

        batch = []
        for i, (_, ann, mode, _extra) in enumerate(self._items):
            try:
                adapter = TypeAdapter(ann)
                adapter.json_schema(mode=mode)  # type: ignore[arg-type]
            except Exception:  # a type pydantic cannot describe: any value, as far as the schema says
                continue
            batch.append((i, mode, adapter))
        found: dict[Any, Any] = {}
        if batch:
            found, defs = TypeAdapter.json_schemas(batch, ref_template=_REF)  # type: ignore[arg-type]
            for name, schema in defs.get("$defs", {}).items():
                components.setdefault(name, schema)
        for i, (slot, _, mode, extra) in enumerate(self._items):
            slot.update(found.get((i, mode), {}))
            for key, value in extra.items():
                slot.setdefault(key, value)


def _jsonable(value: Any) -> bool:
    try:
        encode(value)
    except Exception:
        return False
    return True


def _field_schema(
    f: flow_fields.Field, schemas: _Schemas, when: Any = MISSING, *, describe: bool = True
) -> dict[str, Any]:
    """The schema of one request field (in a variant where a branch pins it to ``when``)."""
    extra: dict[str, Any] = {}
    if describe and f.service:
        extra["description"] = f"Read by {f.service!r}."
    if not f.required and f.default is not MISSING and _jsonable(f.default):
        extra["default"] = f.default
    if isinstance(when, flow_fields.Other):  # the default route: none of the others' values
        return {"allOf": [schemas.of(f.annotation), {"not": {"enum": list(when.values)}}], **extra}
    if when is not MISSING:
        return {"const": when, **extra}
    if f.choices is not None:
        return {"enum": list(f.choices), **extra}
    return schemas.of(f.annotation, **extra)


def _object(
    fields: Mapping[str, flow_fields.Field], schemas: _Schemas, when: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    when = when or {}
    out: dict[str, Any] = {
        "type": "object",
        "properties": {name: _field_schema(f, schemas, when.get(name, MISSING)) for name, f in fields.items()},
    }  # other keys are welcome (JSON Schema's default): they pass through the flow into the reply
    required = [name for name, f in fields.items() if f.required]
    if required:
        out["required"] = required
    return out


def _request(node: Any, params: list[Any], schemas: _Schemas) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The body schema of a request, its merged fields, and whether any field is required."""
    if node is None:
        merged = flow_fields.request_fields(params)
        return _object(merged, schemas), merged, any(f.required for f in merged.values())
    ways = flow_fields.variants(node)
    merged = flow_fields.request_fields(node)
    needed = any(f.required for f in merged.values())
    if len(ways) == 1:
        return _object(ways[0].fields, schemas), merged, needed
    return {"oneOf": [_object(w.fields, schemas, w.when) for w in ways]}, merged, needed


def _typed(anns: list[Any], schemas: _Schemas) -> dict[str, Any]:
    anns = [a for a in anns if a is not Any] if len(anns) > 1 else anns
    if any(a is Any for a in anns) or not anns:
        return {}
    if len(anns) == 1:
        return schemas.of(anns[0], "serialization")
    return {"anyOf": [schemas.of(a, "serialization") for a in anns]}


def _flow_reply(node: Any, schemas: _Schemas) -> dict[str, Any]:
    keys, sure, _ = flow_fields.reply_keys(node)
    out: dict[str, Any] = {
        "type": "object",
        "description": "The message after the flow: the request's fields and what the stages added.",
        "properties": {name: _typed(anns, schemas) for name, anns in keys.items()},
    }
    required = [name for name in keys if name in sure]
    if required:
        out["required"] = required
    return out


def _action_reply(fn: Callable[..., Any] | None, action: str, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": f"What {action!r} returns."}
    if fn is None:
        return out
    made = flow_fields.action_reply(fn, action)
    props = {name: _typed(anns, schemas) for name, anns in (*made.sure.items(), *made.maybe.items())}
    if props:
        out["properties"] = props
    return out


def _doc(obj: object) -> str:
    """The user's docstring of a served thing or action: its function's, or its own class's;
    for a flow, its stages and the first line of each one's."""
    if obj is None:
        return ""
    fn = getattr(obj, "fn", None)
    if fn is not None:
        return inspect.cleandoc(getattr(fn, "__doc__", None) or "")
    if inspect.isroutine(obj):
        return inspect.cleandoc(getattr(obj, "__doc__", None) or "")
    cls = type(obj)
    if not is_svckit_class(cls):
        return inspect.cleandoc(cls.__doc__ or "")
    leaves = getattr(obj, "leaves", None)
    if not callable(leaves) or not getattr(obj, "_composite", False):
        return ""
    lines = [f"`{obj.describe()}`" if callable(getattr(obj, "describe", None)) else ""]  # type: ignore[attr-defined]
    for leaf in leaves():
        first = _summary(_doc(leaf), "")
        if first:
            lines.append(f"- `{leaf.name}`: {first}")
    return "\n".join(lines) if len(lines) > 1 else ""


def _summary(doc: str, fallback: str) -> str:
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    return first or fallback


def _error_responses(error_ref: str, *, body: bool, token: bool, unavailable: bool = True) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": error_ref}}}
    out: dict[str, Any] = {}
    for code, text in _ERRORS.items():
        if not body and code in _BODY_ONLY:
            continue
        if not body and code == "400":
            text = "The request cannot be read (a malformed request line or query string)."
        out[code] = {"description": text, "content": content}
    if token:
        out["401"] = {"description": _UNAUTHORIZED, "content": content}
    out["default"] = {"description": _DEFAULT, "content": content}
    return dict(sorted(out.items(), key=lambda kv: kv[0]))


def _ok(schema: dict[str, Any], streams: bool, error_ref: str) -> dict[str, Any]:
    if not streams:
        return {"description": "The reply.", "content": {"application/json": {"schema": schema}}}
    item = {"anyOf": [schema, {"$ref": error_ref}]}
    return {
        "description": (
            "The messages the flow yields, as they come. NDJSON: one JSON message per line; the last "
            'line may be an error, `{"error": {...}}`. With `Accept: text/event-stream`: one `data:` event '
            'per message, ended by `event: end` (`{"items": n}`) or `event: error` (the error body). An '
            "error before the first message is a plain JSON error reply with its status code."
        ),
        "content": {_NDJSON: {"schema": item}, _SSE: {"schema": item}},
    }


def _parameters(fields: Mapping[str, flow_fields.Field], schemas: _Schemas) -> list[dict[str, Any]]:
    out = []
    for name, f in fields.items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": f.required}
        schema = _field_schema(f, schemas, describe=False)
        if f.service:
            param["description"] = f"Read by {f.service!r}."
        if flow_fields.is_structured(f.annotation):
            param["content"] = {"application/json": {"schema": schema}}  # an object: its JSON
        else:
            param["schema"] = schema
            param["style"], param["explode"] = "form", True
        out.append(param)
    return out


def _operation_id(method: str, action: str) -> str:
    return f"{method}_{re.sub(r'[^A-Za-z0-9_]', '_', action)}"


def _health(error_ref: str) -> dict[str, Any]:
    body = {
        "type": "object",
        "required": ["status", "not_running"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "not_running": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The served things shown to this request that are not running.",
            },
        },
    }
    content = {"application/json": {"schema": body}}
    return {
        "get": {
            "operationId": "get_health",
            "tags": ["svckit"],
            "summary": "Liveness: ok while everything served here runs",
            "responses": {
                "200": {"description": "Everything served here is running.", "content": content},
                "403": {
                    "description": _ERRORS["403"],
                    "content": {"application/json": {"schema": {"$ref": error_ref}}},
                },
                "503": {"description": "Something served here is not running.", "content": content},
            },
        }
    }


def _status(error_ref: str, token: bool) -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    one = {
        "type": "object",
        "required": ["name", "state", "actions"],
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in State]},
            "actions": {"type": "array", "items": {"type": "string"}},
            "http": nullable_str,
            "proxy": nullable_str,
            "zmq": nullable_str,
            "uptime": {"type": "number", "description": "Seconds since it was first served."},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "zmq_connections": {"type": "integer"},
            "received": {"type": "integer"},
            "replied": {"type": "integer"},
            "errors": {"type": "integer"},
            "stopped": {"type": "integer"},
            "dropped": {"type": "integer"},
            "disconnected": {"type": "integer"},
            "iterations": {"type": "integer"},
            "by_action": {"type": "object", "additionalProperties": {"type": "integer"}},
            "errors_by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
            "rate": {"type": "number", "description": "Messages a second, lately."},
            "last_error": {"type": ["object", "null"]},
            "pool": {"type": "object", "additionalProperties": {"type": "integer"}},
            "stalls": {"type": "object"},
        },
    }
    body = {
        "type": "object",
        "required": ["port", "served"],
        "properties": {
            "port": {"type": "integer"},
            "served": {"type": "object", "additionalProperties": one, "description": "By name."},
        },
    }
    error = {"application/json": {"schema": {"$ref": error_ref}}}
    responses: dict[str, Any] = {
        "200": {"description": "State and counters of each served thing shown.", "content": {_JSON: {"schema": body}}},
        "403": {"description": _ERRORS["403"], "content": error},
    }
    if token:
        responses["401"] = {"description": _UNAUTHORIZED, "content": error}
    return {
        "get": {
            "operationId": "get_status",
            "tags": ["svckit"],
            "summary": "State and counters",
            "responses": responses,
        }
    }


def _actions_of(served: Any) -> dict[str, Any]:
    try:
        return dict(served.node.actions())
    except Exception:  # what serving accepted, it could list: be safe all the same
        return {}


def build(routes: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """OpenAPI 3.1 for the actions in ``routes`` (action → served thing: ``name``, ``node``,
    ``params_for(action)``, ``methods_for(action)``, ``path.token``).

    Examples
    --------
    >>> import svckit as sk
    >>> class Served:
    ...     name = "double"
    ...     node = sk.service(lambda x: 2 * x, name="double")
    ...     def params_for(self, action): return self.node.input_params()
    ...     def methods_for(self, action): return ("POST",)
    >>> spec = build({"double": Served()})
    >>> spec["paths"]["/double"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    {'$ref': '#/components/schemas/DoubleInput'}
    >>> spec["components"]["schemas"]["DoubleInput"]["required"]
    ['x']
    """
    from .. import version

    schemas = _Schemas()
    components: dict[str, Any] = {}
    own: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    tokened = False
    for action, served in routes.items():
        main = action == served.name
        token = getattr(getattr(served, "path", None), "token", None) is not None
        tokened = tokened or token
        method_fn = None if main else _actions_of(served).get(action, (None, None))[0]
        node = served.node if main else None
        params = served.params_for(action)
        body, merged, needed = _request(node, params, schemas)
        name = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", action) if p) or "Action"
        own[f"{name}Input"] = body
        reply = _flow_reply(node, schemas) if main else _action_reply(method_fn, action, schemas)
        own[f"{name}Output"] = reply
        streams = bool(getattr(node, "streams", False)) if main else False
        doc = _doc(node if main else method_fn)
        summary = (
            served.name
            if main and getattr(node, "_composite", False)
            else _summary(doc, served.name if main else f"{served.name}: {action}")
        )
        methods = getattr(served, "methods_for", lambda a: ("POST",))(action)
        item: dict[str, Any] = {}
        common: dict[str, Any] = {"tags": [served.name], "summary": summary}
        if doc:
            common["description"] = doc
        if token:
            common["security"] = [{"bearer": []}]
        ok = _ok({"$ref": f"#/components/schemas/{name}Output"}, streams, "ERROR")
        if "POST" in methods:
            item["post"] = {
                "operationId": _operation_id("post", action),
                **common,
                "requestBody": {
                    "required": needed,
                    "description": "A JSON object; an empty body is taken as `{}`.",
                    "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{name}Input"}}},
                },
                "responses": {"200": ok, **_error_responses("ERROR", body=True, token=token)},
            }
        if "GET" in methods:
            item["get"] = {
                "operationId": _operation_id("get", action),
                **common,
                "parameters": _parameters(merged, schemas),
                "responses": {"200": ok, **_error_responses("ERROR", body=False, token=token)},
            }
        paths[f"/{action}"] = item
    schemas.resolve(components)
    error_name = "Error" if "Error" not in components else "SvckitError"
    error_ref = f"#/components/schemas/{error_name}"
    for name, schema in own.items():
        components.setdefault(name, schema)
    components[error_name] = _ERROR
    _point(paths, error_ref)
    paths["/health"] = _health(error_ref)
    paths["/status"] = _status(error_ref, tokened)
    title = ", ".join(dict.fromkeys(s.name for s in routes.values())) or "svckit"
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version.__version__,
            "description": "Served by svckit. The interactive page is at `docs`.",
        },
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {"schemas": components},
    }
    if tokened:
        spec["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The token given to sk.serve(token=...)."}
        }
    return spec


def _point(tree: Any, error_ref: str) -> None:
    """Put the error schema's reference where ``build`` left the placeholder ``"ERROR"``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "$ref" and value == "ERROR":
                tree[key] = error_ref
            else:
                _point(value, error_ref)
    elif isinstance(tree, list):
        for value in tree:
            _point(value, error_ref)
