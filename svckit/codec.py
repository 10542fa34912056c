"""The JSON codec of the wire: strict UTF-8 JSON in, compact JSON out, and error replies.

Every transport and pipeline encodes and decodes through here, so HTTP, ZMQ and pipelines
agree on what a valid body is and what an error reply looks like.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BadRequest, error_body, status_of

__all__ = ["JSON_TYPES", "decode", "encode", "error_reply"]


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()  # numpy scalars
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()  # numpy arrays
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":"))


def encode(obj: Any) -> bytes:
    """Strict JSON (no NaN), with numpy, datetime and pydantic values converted."""
    return _ENCODER.encode(obj).encode()  # one encoder for all: json.dumps builds one per call


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259); send null or a string instead")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)

#: JSON's names for the types a request body may be, for "must be an object" errors.
JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def decode(raw: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: no NaN or Infinity. Raises ``BadRequest`` naming what is wrong."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The request body is not UTF-8 text: {exc}.") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise BadRequest("The request body is JSON nested too deeply to read.") from None


def error_reply(exc: BaseException, **extra: Any) -> tuple[int, bytes]:
    """The status and the encoded ``{"error": {...}}`` body for ``exc``."""
    return status_of(exc), encode({"error": error_body(exc, **extra)})
