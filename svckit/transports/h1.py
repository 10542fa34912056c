"""HTTP/1.1 connections with bounds: uvicorn's protocols, each connection held to its port's limits.

``protocol_class(bounds)`` subclasses uvicorn's ``HttpToolsProtocol`` (``H11Protocol`` when
httptools is missing) for one port. What it adds to every connection:

- ``max_header``: the request line and headers may take that many bytes; past it 431 and
  the connection is closed (httptools has no cap of its own: a header that never ends
  was buffered without limit).
- ``limit_concurrency``: a connection past that many open on the port is answered 503 at
  once and closed, before it sends anything, so idle connections cannot take every file
  descriptor of the process (and with them ZMQ).
- ``read_timeout``: a client has that long for its request line and headers, and then as
  long again for its body; past it 408 when a request had begun (a connection that sent
  nothing is just closed). Idle keep-alive connections between requests are uvicorn's
  ``timeout_keep_alive`` instead. The deadlines are kept by one timer per port
  (``Bounds``), not one per request: a connection sets a number when it starts reading
  and clears it when done, and the timer sweeps past ones every ``read_timeout / 4``.
- A client that goes away while its request is being handled: the svckit ``Request``
  (``scope["svckit.request"]``) is marked ``gone`` and its task (``scope["svckit.task"]``)
  cancelled, so the stage stops and the request is counted once, as disconnected.

The settings are read from ``Bounds`` when used, so a served thing attached later to the
port changes them for the connections that follow (the latest one attached sets them).
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

from ..codec import error_reply
from ..errors import BadRequest, HeadersTooLarge, RequestTimeout, ServiceUnavailable
from ..limits import Limits

__all__ = ["SCOPE_REQUEST", "SCOPE_TASK", "SCOPE_TIMED_OUT", "Bounds", "protocol_class"]

logger = logging.getLogger(__name__)

#: Scope keys the ASGI app sets for a request it hands to the request path.
SCOPE_REQUEST = "svckit.request"
SCOPE_TASK = "svckit.task"
#: Set by a connection whose body did not arrive within ``read_timeout`` (the read then says so).
SCOPE_TIMED_OUT = "svckit.timed_out"


def raw_reply(exc: BaseException) -> bytes:
    """A whole HTTP/1.1 response for ``exc`` (its JSON error body) that closes the connection."""
    status, body = error_reply(exc)
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class Bounds:
    """What the connections of one port may take, and the one timer that keeps their read
    deadlines (on the runtime loop)."""

    __slots__ = (
        "_loop",
        "_timer",
        "connections",
        "interval",
        "limit_concurrency",
        "max_header",
        "now",
        "port",
        "read_timeout",
        "refused",
        "span",
    )

    def __init__(self, limits: Limits, port: int) -> None:
        self.port = port
        self.connections: set[Any] = set()  # the server's, once it runs (uvicorn's ServerState)
        self.now = 0.0  # the loop's time at the last sweep: deadlines are counted from it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.refused = 0  # connections refused over limit_concurrency since the last sweep
        self.configure(limits)

    def configure(self, limits: Limits) -> None:
        """Take the bounds of ``limits`` (of the served thing attached last)."""
        self.max_header = limits.max_header
        self.limit_concurrency = limits.limit_concurrency
        self.read_timeout = limits.read_timeout
        self.interval = min(1.0, max(0.02, limits.read_timeout / 4))
        # ``now`` lags the clock by up to one interval: a deadline never comes early.
        self.span = limits.read_timeout + self.interval

    def start(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self._loop = loop
        self.connections = connections
        self.now = loop.time()
        self._timer = loop.call_later(self.interval, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def _sweep(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = self.now = loop.time()
        if self.refused:  # logged once a sweep, not once a connection: a flood would flood the log
            logger.warning(
                "HTTP port %s refused %d connections over its limit of %d open (limit_concurrency).",
                self.port,
                self.refused,
                self.limit_concurrency,
            )
            self.refused = 0
        for conn in [c for c in self.connections if c.deadline is not None and c.deadline <= now]:
            try:
                conn.expire()
            except Exception:  # one broken connection must not stop the timer for the others
                logger.exception("closing a slow HTTP connection on port %s failed", self.port)
        self._timer = loop.call_later(self.interval, self._sweep)


def _refuse(proto: Any, exc: BaseException) -> None:
    """Answer ``exc`` on a connection outside any request, and close it."""
    proto.refused = True
    transport = proto.transport
    if transport is not None and not transport.is_closing():
        transport.write(raw_reply(exc))
        transport.close()


def _expire(proto: Any, bounds: Bounds, reading_head: bool, begun: bool) -> None:
    """A connection past its read deadline: 408 when a request had begun, then closed."""
    proto.deadline = None
    transport = proto.transport
    if transport.is_closing():
        return
    cycle = proto.cycle
    busy = cycle is not None and not cycle.response_complete
    wait = f"{bounds.read_timeout:g} s (read_timeout)"
    if reading_head:
        if busy:
            return  # a pipelined request behind one still being answered: its turn comes later
        if begun:
            transport.write(raw_reply(RequestTimeout(f"The request line and headers did not arrive within {wait}.")))
    elif cycle is not None and not cycle.response_started and not getattr(proto, "pipeline", None):
        # The app may be waiting for the body: tell its read (then counted as a 408) and
        # stop anything it would send after this answer.
        proto.timed_out = True
        cycle.scope[SCOPE_TIMED_OUT] = True
        transport.write(raw_reply(RequestTimeout(f"The request body did not arrive within {wait}.")))
        cycle.disconnected = True
        cycle.message_event.set()
    transport.close()


def _lost(proto: Any) -> None:
    """The connection closed: a request still being handled is cancelled, counted as gone."""
    cycle = proto.cycle
    if cycle is None or cycle.response_started or proto.timed_out:
        return
    scope = cycle.scope
    request = scope.get(SCOPE_REQUEST)
    if request is not None and not request.gone:
        request.gone = True
        task = scope.get(SCOPE_TASK)
        if task is not None and not task.done():
            task.cancel()


def _over_capacity(proto: Any, bounds: Bounds) -> bool:
    if len(proto.connections) < bounds.limit_concurrency:
        return False
    bounds.refused += 1
    return True


def _full(bounds: Bounds) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"HTTP port {bounds.port} has {bounds.limit_concurrency} connections open, its limit "
        "(limit_concurrency); try again shortly."
    )


def _too_large(bounds: Bounds) -> HeadersTooLarge:
    return HeadersTooLarge(
        f"The request line and headers are over the limit of {bounds.max_header} bytes (max_header)."
    )


def protocol_class(bounds: Bounds, impl: str = "httptools") -> type[asyncio.Protocol]:
    """uvicorn's protocol for ``impl`` (``"httptools"`` or ``"h11"``) bound by ``bounds``."""
    if impl == "h11":
        return _h11_class(bounds)
    return _httptools_class(bounds)


def _httptools_class(bounds: Bounds) -> type[asyncio.Protocol]:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _Refused(Exception):
        pass

    # the base methods called directly, not through super(): once per request each
    headers_complete = HttpToolsProtocol.on_headers_complete
    message_complete = HttpToolsProtocol.on_message_complete

    class BoundedHttpTools(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.deadline: float | None = None
            self.refused = False
            self.timed_out = False
            self.head = True  # reading a request line and headers
            self.head_bytes = 0  # bytes received while reading them

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if _over_capacity(self, bounds):
                self.transport = transport
                _refuse(self, _full(bounds))
                return
            super().connection_made(transport)
            self.deadline = bounds.now + bounds.span

        def connection_lost(self, exc: Exception | None) -> None:
            _lost(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # uvicorn's, with the header cap and read deadlines, and JSON for a bad request
            if self.refused:
                return
            self._unset_keepalive_if_required()
            if self.head:
                if self.deadline is None:
                    self.deadline = bounds.now + bounds.span
                self.head_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                if not self.refused:
                    _refuse(self, BadRequest("The request is not valid HTTP/1.1."))
                return
            if self.head and self.head_bytes > bounds.max_header:
                _refuse(self, _too_large(bounds))  # headers still coming and already over

        def on_headers_complete(self) -> None:
            # What arrived may hold body bytes too: count the headers exactly only then.
            if self.head_bytes > bounds.max_header and self._head_size() > bounds.max_header:
                _refuse(self, _too_large(bounds))
                raise _Refused  # stops the parser: no request is started
            self.head = False
            self.head_bytes = 0
            self.deadline = bounds.now + bounds.span  # now the body
            headers_complete(self)

        def on_message_complete(self) -> None:
            self.head = True
            self.head_bytes = 0
            self.deadline = None
            message_complete(self)

        def _head_size(self) -> int:
            return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 16

        def expire(self) -> None:
            _expire(self, bounds, self.head, self.head_bytes > 0)

    return BoundedHttpTools


def _h11_class(bounds: Bounds) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=bounds.max_header)
            self.deadline: float | None = None
            self.refused = False
            self.timed_out = False
            self.phase: Any = h11.IDLE
            self.head_bytes = 0  # of a request line and headers not complete yet
            self.tail = b""  # their last bytes: the blank line that ends them may be split

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if _over_capacity(self, bounds):
                self.transport = transport
                _refuse(self, _full(bounds))
                return
            super().connection_made(transport)
            self.deadline = bounds.now + bounds.span

        def connection_lost(self, exc: Exception | None) -> None:
            _lost(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            conn = self.conn
            if conn.their_state is h11.IDLE:
                if self.deadline is None:
                    self.deadline = bounds.now + bounds.span  # a request begins
                # h11 caps only a head still incomplete: count a complete one too
                seen = self.tail + data
                end = seen.find(b"\r\n\r\n")
                size = self.head_bytes + (len(data) if end < 0 else end + 4 - len(self.tail))
                if size > bounds.max_header:
                    _refuse(self, _too_large(bounds))
                    return
                self.head_bytes, self.tail = (size, seen[-3:]) if end < 0 else (0, b"")
            super().data_received(data)
            state = conn.their_state
            if state is not self.phase:
                self.phase = state
                if state is h11.SEND_BODY:
                    self.deadline = bounds.now + bounds.span
                elif state is not h11.IDLE:
                    self.deadline = None

        def send_400_response(self, msg: str) -> None:
            # h11 refuses an event over max_incomplete_event_size as a bad request: it is 431
            buffered = len(self.conn.trailing_data[0])
            _refuse(self, _too_large(bounds) if buffered > bounds.max_header else BadRequest(f"{msg.rstrip('.')}."))

        def expire(self) -> None:
            idle = self.conn.their_state is h11.IDLE
            _expire(self, bounds, idle, idle and bool(self.conn.trailing_data[0]))

    return BoundedH11
