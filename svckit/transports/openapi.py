"""The OpenAPI 3.1 document of an HTTP endpoint, built from the services' pydantic models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import is_svckit_class

if TYPE_CHECKING:
    from ..params import Params

__all__ = ["build"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "service": {"type": "string"},
            },
            "additionalProperties": True,
        }
    },
}

_ERRORS = {
    "400": "The body is not valid JSON.",
    "404": "No such action.",
    "413": "The body is too large.",
    "422": "A field is missing or ill-typed (BadMessage).",
    "429": "Past a throttle's rate (TooManyRequests).",
    "500": "The service raised an error.",
    "503": "The service is failed or stopped.",
    "504": "The service took longer than its timeout.",
}


def _schema(params: list[Params], components: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for p in params:
        try:
            schema = p.model().model_json_schema(ref_template="#/components/schemas/{model}")
        except Exception:  # types pydantic cannot describe: accept anything for them
            schema = {"properties": {n: {} for n in p.names}, "required": sorted(p.required)}
        for name, sub in schema.get("$defs", {}).items():
            components.setdefault(name, sub)
        properties.update(schema.get("properties", {}))
        required.extend(r for r in schema.get("required", []) if r not in required)
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": True}
    if required:
        out["required"] = required
    return out


def _doc(node: object) -> str:
    """The user's docstring of a served thing: its function's, or its own class's (not svckit's)."""
    fn = getattr(node, "fn", None)
    if fn is not None:
        return (getattr(fn, "__doc__", None) or "").strip()
    cls = type(node)
    if is_svckit_class(cls):
        return ""
    return (cls.__doc__ or "").strip()


def build(routes: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """OpenAPI 3.1 for the actions in ``routes`` (action → served thing: ``name``, ``node``,
    ``params_for(action)``)."""
    from .. import version

    __version__ = version.__version__

    components: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, Any] = {}
    for action, served in routes.items():
        input_name = "".join(p.capitalize() for p in action.replace("-", "_").replace(".", "_").split("_")) + "Input"
        components[input_name] = _schema(served.params_for(action), components)
        node = served.node if action == served.name else None
        doc = _doc(node) if node is not None else ""
        responses: dict[str, Any] = {
            "200": {
                "description": "The message after the flow (or the action's result).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        }
        for code, text in _ERRORS.items():
            responses[code] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        paths[f"/{action}"] = {
            "post": {
                "operationId": action,
                "summary": f"{served.name}" if action == served.name else f"{served.name}: {action}",
                "description": doc or f"Run {action!r} on one JSON message.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{input_name}"}}},
                },
                "responses": responses,
            }
        }
    simple = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    paths["/health"] = {"get": {"operationId": "health", "summary": "Liveness", "responses": simple}}
    paths["/status"] = {"get": {"operationId": "status", "summary": "State and counters", "responses": simple}}
    title = ", ".join(dict.fromkeys(s.name for s in routes.values())) or "svckit"
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {"schemas": components},
    }
