"""What a client can make a served thing hold, bounded: the limits and access rules ``sk.serve`` takes.

``Limits`` bounds memory, connections and time per served thing (and per HTTP port);
``Access`` says who may call it from a browser (``Origin``, ``Host``) and how much an
error reply tells. Both are checked when ``sk.serve`` is called, so a bad value is a
``WiringError`` naming the argument, and read by the transports and the request path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import WiringError

__all__ = ["DEFAULTS", "Access", "Limits"]


def _count(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WiringError(f"{name}={value!r}: give {what} as a positive whole number.")
    return value


def _seconds(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise WiringError(f"{name}={value!r}: give {what} as a positive number of seconds.")
    return float(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one served thing (``sk.serve``'s arguments of the same names).

    ``max_body``: bytes in a request body (HTTP) or frame (ZMQ); past it 413
    ``PayloadTooLarge`` and, over HTTP, the connection is closed. ``max_header``: bytes of
    an HTTP request line and headers; past it 431 and the connection is closed.
    ``limit_concurrency``: HTTP connections open at once on a port, and requests in flight
    on a ZMQ endpoint; past it 503 ``ServiceUnavailable`` (HTTP) or reading waits (ZMQ).
    ``read_timeout``: seconds a client has to send the headers, then the body; past it the
    connection is closed (408 when a request had begun). ``drain_timeout``: seconds
    ``stop()`` and re-serving give requests in flight; past it they are answered 503.
    """

    max_body: int = 1 << 20
    max_header: int = 16 * 1024
    limit_concurrency: int = 500
    read_timeout: float = 10.0
    drain_timeout: float = 5.0

    def __post_init__(self) -> None:
        _count("max_body", self.max_body, "the largest request body in bytes")
        _count("max_header", self.max_header, "the largest request line and headers in bytes")
        _count("limit_concurrency", self.limit_concurrency, "how many connections (or ZMQ requests) at once")
        _seconds("read_timeout", self.read_timeout, "how long a client may take to send a request")
        _seconds("drain_timeout", self.drain_timeout, "how long requests in flight get when stopping")


#: The limits ``sk.serve`` applies when none are given.
DEFAULTS = Limits()


def _names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    try:
        items = tuple(value)
    except TypeError:
        raise WiringError(f"{name}={value!r}: give a list of strings.") from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise WiringError(f"{name}=[...]: {item!r} is not a non-empty string.")
    return items


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a served thing over HTTP from a browser, and what errors tell.

    ``allow_origins``: web origins (``"https://app.example:8443"``, or ``"*"``) whose pages
    may call it; a request with another ``Origin`` than the server's own gets 403.
    ``allow_hosts``: host names (``"myhost.lan"``, or ``"*"``) a request's ``Host`` may name
    besides this machine's loopback names and the bound address; another gets 403 (DNS
    rebinding). ``expose_errors``: error replies carry exception messages verbatim; by default
    paths outside the working directory are shortened to their last part.
    """

    allow_origins: tuple[str, ...] = field(default=())
    allow_hosts: tuple[str, ...] = field(default=())
    expose_errors: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allow_origins", tuple(o.rstrip("/") for o in _names("allow_origins", self.allow_origins))
        )
        object.__setattr__(self, "allow_hosts", tuple(h.lower() for h in _names("allow_hosts", self.allow_hosts)))
        if not isinstance(self.expose_errors, bool):
            raise WiringError(f"expose_errors={self.expose_errors!r}: give True or False.")
