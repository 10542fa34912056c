"""The JSON codec of the wire: strict UTF-8 JSON in, compact JSON out, and error replies.

Every transport and pipeline encodes and decodes through here, so HTTP, ZMQ and pipelines
agree on what a valid body is and what an error reply looks like.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from .errors import BadRequest, error_body, status_of

__all__ = ["JSON_TYPES", "decode", "encode", "error_reply", "redact_paths"]


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


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large for a float (it would be infinite)")
    return value


_FINITE_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
# a float that may overflow to infinity: a three-digit exponent, or 309 digits in a row
_HUGE = re.compile(rb"\d[eE][+-]?\d{3}|\d{309}")


def decode(raw: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: no NaN or Infinity, nor numbers too large for a float
    (``1e400``). Raises ``BadRequest`` naming what is wrong."""
    try:
        if _HUGE.search(raw) is not None:  # rare: only then is every float checked
            return _FINITE_DECODER.decode(raw.decode("utf-8"))
        return _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The request body is not UTF-8 text: {exc}.") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise BadRequest("The request body is JSON nested too deeply to read.") from None


# An absolute path of two parts or more (``/home/me/data.csv``, ``C:\\Users\\me\\x``,
# ``C:/Users/me/x``, ``file:///home/me/x``), not the path part of a URL (``host:8000/a/b``)
# nor a route such as ``/status``.
_PATH = re.compile(
    r"(?:file://|(?<![\w.:/\\~-]))(?:/|[A-Za-z]:[\\/])(?:[^\s'\"()<>,;:*?|/\\]+[/\\])+[^\s'\"()<>,;:*?|/\\]*"
)


def redact_paths(text: str, keep_under: str | None = None) -> str:
    """``text`` with absolute file paths outside ``keep_under`` (default: the working
    directory, the notebook's own) cut to ``…/`` and their last part.

    >>> redact_paths("[Errno 2] No such file or directory: '/home/ann/secret/plan.csv'", "/srv")
    "[Errno 2] No such file or directory: '…/plan.csv'"
    >>> redact_paths("see /srv/data/x.csv and POST /status", "/srv")
    'see /srv/data/x.csv and POST /status'
    """
    if "/" not in text and "\\" not in text:
        return text
    root = os.path.abspath(keep_under if keep_under is not None else os.getcwd())

    def cut(match: re.Match[str]) -> str:
        path = match.group(0)
        bare = path.removeprefix("file://")
        here = bare[1:2] != ":" or os.name == "nt"  # a drive letter names no path here elsewhere
        if here and os.path.abspath(bare).startswith(root + os.sep):
            return path
        last = re.split(r"[/\\]", path.rstrip("/\\"))[-1]
        return f"…/{last}" if last else "…/"

    return _PATH.sub(cut, text)


def error_reply(exc: BaseException, *, redact: bool = False, **extra: Any) -> tuple[int, bytes]:
    """The status and the encoded ``{"error": {...}}`` body for ``exc``; with ``redact``,
    file paths outside the working directory in its message are cut (``redact_paths``)."""
    body = error_body(exc, **extra)
    if redact and isinstance(body.get("message"), str):
        body["message"] = redact_paths(body["message"])
    return status_of(exc), encode({"error": body})
