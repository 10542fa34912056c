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
  A pipelined request that stalls behind one still being answered waits for that answer:
  it is answered 408 in its turn, never by cutting the reply before it.
- ``read_timeout`` for readers too: a connection whose reply has sat in the write buffer
  without going down for that long (a client that never reads) is aborted by the same
  sweep, which looks at each connection's buffer size once a sweep, not once a request.
- Pipelining (httptools; h11 reads one request at a time): at most ``PIPELINE`` requests
  wait behind the one being answered; the next is answered 503 in its turn, nothing after
  it is parsed, and the connection is closed. uvicorn would queue every request of what
  it read (a 1 MB burst of tiny GETs is 40,000 queued requests).
- A client that goes away while its request is being handled: the svckit ``Request``
  (``scope["svckit.request"]``) of the request running (not one pipelined behind it) is
  marked ``gone`` and its task (``scope["svckit.task"]``) cancelled, so the stage stops
  and the request is counted once, as disconnected.

The settings are read from ``Bounds`` when used: the port's ``HttpEndpoint`` sets them to
the strictest of its served things' (the smallest ``max_header``, ``limit_concurrency`` and
``read_timeout``) on every attach and detach.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

from ..codec import error_reply
from ..errors import BadRequest, HeadersTooLarge, RequestTimeout, ServiceUnavailable
from ..limits import Limits

__all__ = ["PIPELINE", "SCOPE_REQUEST", "SCOPE_TASK", "SCOPE_TIMED_OUT", "Bounds", "protocol_class"]

logger = logging.getLogger(__name__)

#: Scope keys the ASGI app sets for a request it hands to the request path.
SCOPE_REQUEST = "svckit.request"
SCOPE_TASK = "svckit.task"
#: Set by a connection whose body did not arrive within ``read_timeout`` (the read then says so).
SCOPE_TIMED_OUT = "svckit.timed_out"
#: Requests a connection may have waiting behind the one being answered (HTTP pipelining).
PIPELINE = 16


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
        "aborted",
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
        self.aborted = 0  # connections closed since the last sweep: their client did not read
        self.configure(limits)

    def configure(self, limits: Limits) -> None:
        """Take the bounds of ``limits`` (the strictest of the port's served things')."""
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
        late, unread = [], []
        for conn in self.connections:
            unsent = conn.transport.get_write_buffer_size()
            if not unsent:
                conn.unsent = 0
            elif not conn.unsent or unsent < conn.unsent:  # a reply waiting, or the client read some
                conn.unsent, conn.unsent_since = unsent, now
            elif now - conn.unsent_since > self.read_timeout:
                unread.append(conn)  # a client that does not read its reply holds it: let go of it
                continue
            if conn.deadline is not None and conn.deadline <= now:
                late.append(conn)
        for conn in unread:
            conn.unsent = 0
            self.aborted += 1
            conn.transport.abort()
        for conn in late:
            try:
                conn.expire()
            except Exception:  # one broken connection must not stop the timer for the others
                logger.exception("closing a slow HTTP connection on port %s failed", self.port)
        if self.aborted:
            logger.warning(
                "HTTP port %s closed %d connections whose client did not read its reply for %g s (read_timeout).",
                self.port,
                self.aborted,
                self.read_timeout,
            )
            self.aborted = 0
        self._timer = loop.call_later(self.interval, self._sweep)


def _refuse(proto: Any, exc: BaseException) -> None:
    """Answer ``exc`` on a connection outside any request, and close it."""
    proto.refused = True
    transport = proto.transport
    if transport is not None and not transport.is_closing():
        transport.write(raw_reply(exc))
        transport.close()


def _expire(proto: Any, bounds: Bounds, reading_head: bool, begun: bool) -> None:
    """A connection past its read deadline: 408 when a request had begun, then closed.

    While the request running (``proto.running``) has not finished its reply, and what is late
    is not its own body, nothing is cut: the deadline stays, and the next sweep after that
    reply answers the late one (a pipelined request then runs and reads its body)."""
    transport = proto.transport
    if transport.is_closing():
        proto.deadline = None
        return
    running = proto.running
    busy = running is not None and not running.response_complete
    if busy and (reading_head or running is not proto.cycle or running.response_started):
        return  # its turn comes after the reply being written: checked again at the next sweep
    proto.deadline = None
    wait = f"{bounds.read_timeout:g} s (read_timeout)"
    if reading_head:
        if begun:
            transport.write(raw_reply(RequestTimeout(f"The request line and headers did not arrive within {wait}.")))
    elif busy:
        # The app is waiting for the body: tell its read (then counted as a 408) and
        # stop anything it would send after this answer.
        proto.timed_out = True
        running.scope[SCOPE_TIMED_OUT] = True
        transport.write(raw_reply(RequestTimeout(f"The request body did not arrive within {wait}.")))
        running.disconnected = True
        running.message_event.set()
    transport.close()  # else a body nobody reads any more (its request was answered)


def _lost(proto: Any) -> None:
    """The connection closed: the request being handled (not one pipelined behind it, which
    never started) is cancelled, counted as gone; a streaming reply too, midway (uvicorn
    would drop what it sends, and the stream would run on for nobody)."""
    cycle = proto.running
    if cycle is None or proto.timed_out:
        return
    scope = cycle.scope
    request = scope.get(SCOPE_REQUEST)
    if cycle.response_started and (cycle.response_complete or request is None or request.emit is None):
        return
    if not cycle.response_complete:  # uvicorn marks only the last request it parsed
        cycle.disconnected = True
        cycle.message_event.set()
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


def _too_many_app() -> Any:
    """The ASGI app that answers a request pipelined past ``PIPELINE`` (503, then closed)."""
    status, body = error_reply(
        ServiceUnavailable(
            f"More than {PIPELINE} pipelined requests wait on this connection; send the rest "
            "after their answers, or on another connection."
        )
    )
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ],
    }
    reply = {"type": "http.response.body", "body": body, "more_body": False}

    async def too_many(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(reply)

    return too_many


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
    response_complete = HttpToolsProtocol.on_response_complete
    too_many = _too_many_app()

    class BoundedHttpTools(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.deadline: float | None = None
            self.refused = False
            self.timed_out = False
            self.head = True  # reading a request line and headers
            self.head_bytes = 0  # bytes received while reading them
            self.running: Any = None  # the request being handled (``cycle`` is the last one parsed)
            self.unsent = 0  # bytes of reply waiting to be sent, at the last sweep
            self.unsent_since = 0.0

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
            pipeline = self.pipeline
            if not pipeline:
                self.running = self.cycle  # started at once: the usual case
            elif pipeline[0][0] is self.cycle:
                self._queued()

        def _queued(self) -> None:
            """The request just parsed waits behind another (pipelining)."""
            pipeline = self.pipeline
            for cycle in (self.running, pipeline[0][0]):
                if cycle is not None:
                    cycle.on_response = self._pipelined_done
            if len(pipeline) > PIPELINE:
                # answered 503 in its turn; nothing after it is read
                self.cycle.keep_alive = False
                pipeline[0] = (self.cycle, too_many)
                self.refused = True
                self.deadline = None
                raise _Refused

        def _pipelined_done(self) -> None:
            """A reply is complete on a connection with pipelined requests: uvicorn starts the
            next; it is the one running now."""
            pipeline = self.pipeline
            following = pipeline[-1][0] if pipeline else None
            response_complete(self)
            if following is not None and (not pipeline or pipeline[-1][0] is not following):
                self.running = following

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
            self.unsent = 0  # bytes of reply waiting to be sent, at the last sweep
            self.unsent_since = 0.0

        @property
        def running(self) -> Any:
            return self.cycle  # h11 starts a request only after the one before it is answered

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

        def handle_events(self) -> None:
            # also after a reply, when uvicorn goes on to a pipelined request it had read
            super().handle_events()
            conn = self.conn
            state = conn.their_state
            if state is not self.phase:
                self.phase = state
                if state is h11.SEND_BODY or (state is h11.IDLE and conn.trailing_data[0]):
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
