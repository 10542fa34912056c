"""ZeroMQ transport: a ROUTER endpoint on the runtime loop, for one served thing.

Wire protocol (any ZMQ client can talk): a REQ socket, or a DEALER sending the same
empty delimiter frame, sends ``[action, json]`` and gets ``[status, json]`` back, where
status is ``ok`` or ``error`` and an error body is the HTTP one,
``{"error": {"type": ..., "message": ...}}``. Two optional frames may follow the JSON:
the token (when the served thing has one), then a request id; without a token the
third frame is the request id. A request that carried an id gets it back as a last
frame, ``[status, json, id]``, so two-frame clients keep working.

Every request gets an answer frame, but for one case: a frame larger than ``max_body``
(plus ``zmqnet.FRAME_SLACK``) is refused by libzmq before it is read (``ZMQ_MAXMSGSIZE``),
and the connection of the peer that sent it is dropped, so no reply can reach it (a REQ
client waits for its own timeout). At most ``limit_concurrency`` requests run at once,
holding at most ``BYTES_IN_FLIGHT`` of request bodies between them (one larger request
still runs, alone); past either the endpoint stops reading, ZMQ queues at most
``zmqnet.REQUEST_HWM`` messages per peer, and then TCP makes the senders wait. A reply that
cannot be delivered (the requester left, or its queue stayed full) is counted once, as
``disconnected``.

A connection has ``read_timeout`` to finish its ZMTP handshake (``ZMQ_HANDSHAKE_IVL``) or
libzmq drops it. libzmq cannot refuse a connection: the endpoint counts them
(``ZmqEndpoint.connections``, from a socket monitor) and logs a warning when they pass
``limit_concurrency``.

Request ids: with a token, ``[action, json, token, id]``; without one the third frame is the
id. That frame always comes back as the last reply frame, but a tokenless endpoint records it
(traffic rows, logs, error bodies) only when it passes ``ids.accepted_id`` and looks like no
secret: not a token of a thing this runtime serves, and not shaped like one
(``secrets.token_urlsafe``: 32 or more URL-safe characters mixing upper and lower case and
digits). A client that sends its token to a thing that needs none keeps it out of the records.

The socket helpers (context, binding, the batched ``Reader``) are in ``zmqnet.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import time
from functools import partial
from typing import Any, Protocol

import zmq
import zmq.asyncio

from ..codec import error_reply
from ..errors import BadRequest, BadResult, ServiceUnavailable, StateError, Unauthorized, UnknownAction
from ..ids import accepted_id
from ..limits import Limits
from ..middleware import Request
from ..request import RequestPath
from ..zmqnet import (
    BATCH,
    MORE_NOBLOCK,
    NOBLOCK,
    REQUEST_HWM,
    SEND,
    Reader,
    bind,
    close_bound,
    count_connections,
    limit_frames,
    make_socket,
    split_address,
    sweep,
    tcp_address,
)

__all__ = ["END", "ERROR", "ITEM", "OK", "STREAM_PREFIX", "ZmqEndpoint", "open_endpoint"]

logger = logging.getLogger(__name__)

OK = b"ok"
ERROR = b"error"
#: A streaming action's reply frames (asked for as ``stream:ACTION``): each message, then the end.
ITEM = b"item"
END = b"end"
STREAM_PREFIX = "stream:"
#: The most a streaming action may send in one collected reply (to a plain request): what a
#: reply holds in memory until it is sent, so bounded like a request body.
COLLECT_LIMIT = 1024 * 1024
# What ``_send`` says: sent; the requester's queue is full (retry); nobody to send it to.
_SENT, _AGAIN, _GONE = 0, 1, 2
#: Seconds a reply is retried while the requester's queue is full, before it counts as undelivered.
RETRY_WINDOW = 1.0
#: Replies (and a stream's messages) ZMQ queues per requester that does not read them. A
#: requester has at most ``zmqnet.REQUEST_HWM`` requests queued plus those in flight, so plain
#: replies never reach it; a stream does, and then waits for its reader (backpressure).
REPLY_HWM = 1000
#: Bytes of request bodies the requests in flight may hold between them before reading stops
#: (with ``limit_concurrency`` 500 and ``max_body`` 1 MiB they could hold 500 MiB, plus what
#: the body decodes to). A request is admitted while the total is under it, so the most held
#: is this plus one ``max_body``. Small requests never reach it: 64 MiB is 400,000 of 160 B.
BYTES_IN_FLIGHT = 64 << 20
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Member(Protocol):
    """What a ZMQ endpoint needs of a served thing (``served.Served``)."""

    name: str
    host: str
    path: RequestPath
    runtime: Any

    @property
    def actions(self) -> list[str]: ...


def open_endpoint(served: Member, port: int) -> ZmqEndpoint:
    """Bind a ROUTER for ``served`` on ``port`` (0: a free one), from the caller's thread.

    "Port in use" is raised right here as ``PortInUse``.
    """
    endpoint = ZmqEndpoint(served)
    served.runtime.call(endpoint.open(port), timeout=10)
    return endpoint


class ZmqEndpoint:
    """A ROUTER socket answering ``[action, json]`` requests for one served thing.

    Each request runs as its own task (at most ``limits.limit_concurrency`` at once; past it
    reading waits and ZMQ queues), so a slow request never holds up the others; malformed
    requests get an error frame at once. Frames are bounded by ``limits.max_body`` (see the
    module docstring). Stopping: ``pause()`` answers every new request ``ServiceUnavailable``
    at once while those in flight finish over the open socket (``RequestPath.expire`` answers
    the ones left 503 the same way); ``aclose()`` then frees the port.
    """

    def __init__(self, served: Member) -> None:
        self.served = served
        self.runtime = served.runtime
        self.port = 0
        self.address = ""
        self._asock: zmq.asyncio.Socket | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._io: Reader | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._limits: Limits | None = None
        self._most = 1  # requests in flight at most: limits.limit_concurrency
        self._room: asyncio.Future[None] | None = None  # set while reading waits for room
        self._accepting = True
        self._held = 0  # bytes of request bodies in flight (BYTES_IN_FLIGHT)
        self._watch: asyncio.Task[None] | None = None
        #: Connections open on the port now (a socket monitor's count).
        self.connections = 0
        self._crowded = False  # warned that connections passed limit_concurrency
        self._warned = -60.0  # when: at most one warning a minute

    def __repr__(self) -> str:
        return f"<ZmqEndpoint {self.served.name}>"

    # -- lifecycle (on the runtime loop) ---------------------------------------------
    async def open(self, port: int) -> None:
        asock, sock = make_socket(self.runtime, zmq.ROUTER, hwm=REPLY_HWM)
        sock.setsockopt(zmq.RCVHWM, REQUEST_HWM)  # per peer: bounded while reading waits for room
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished peer raises instead of a silent drop
        self._apply(self.served.path.limits, sock)  # before binding: it applies to new connections
        try:
            self.address = bind(sock, tcp_address(self.served.host, port or "*"), "ZMQ")
        except BaseException:
            asock.close(linger=0)
            raise
        parts = split_address(self.address)
        self.port = parts[1] if parts else port
        self._asock, self._sock = asock, sock
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._watch = loop.create_task(count_connections(self.runtime, sock, self._connected))

    def _connected(self, count: int) -> None:
        self.connections = count
        most = self._most
        if count > most and not self._crowded and time.monotonic() - self._warned > 60.0:
            self._crowded, self._warned = True, time.monotonic()
            logger.warning(
                "ZMQ port %s of %r: %d connections open, more than limit_concurrency (%d); libzmq "
                "cannot refuse them (one that does not handshake is dropped after read_timeout).",
                self.port,
                self.served.name,
                count,
                most,
            )
        elif count <= most // 2:
            self._crowded = False

    def _apply(self, limits: Limits, sock: zmq.Socket[bytes]) -> None:
        """Take up the served thing's limits (at open, and when a re-serve changed them)."""
        self._limits = limits
        self._most = limits.limit_concurrency
        limit_frames(sock, limits.max_body, limits.read_timeout)
        self._make_room()

    async def pause(self) -> None:
        """Stop taking requests, keeping the socket open: from now on each request read is
        answered ``ServiceUnavailable`` at once (an error frame, counted), while requests in
        flight finish and are answered (or expired with 503) over the open socket."""
        self._accepting = False
        self._make_room()

    def close(self, grace: float = 2.0) -> None:
        """Stop taking requests, give in-flight requests ``grace`` s to be answered, free the port.

        Blocking; call from the notebook's thread (``Served.stop`` does).
        """
        rt = self.runtime
        if rt.in_runtime():
            raise StateError("ZmqEndpoint.close() blocks; from the runtime thread await aclose() instead.")
        if not rt.running or self._asock is None:
            return
        rt.call(self.aclose(grace), timeout=grace + 5)

    async def aclose(self, grace: float = 2.0) -> None:
        """``close`` on the runtime loop; returns at once when nothing is in flight.

        New requests are answered ``ServiceUnavailable`` while those in flight get ``grace``
        seconds; the ones still running then are cancelled and answered 503 too, and so is
        what is left queued on the socket. Then the socket is closed and the port freed.
        """
        await self.pause()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        late = list(self._inflight)
        for task in late:
            task.cancel()  # _answer tells each requester ServiceUnavailable
        if late:
            await asyncio.wait(late, timeout=1.0)
        sock = self._sock
        if sock is not None and not sock.closed:
            for frames in sweep(sock, 16 * BATCH, 0.1):  # requests read by nobody yet: refused, not lost
                self._dispatch(frames, None)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(BaseException):
                await watch
        asock, self._asock = self._asock, None
        if asock is not None and not asock.closed:
            await close_bound(asock, self.address)

    # -- the request path ------------------------------------------------------------
    async def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        reader = self._io = Reader(sock)
        inflight = self._inflight
        try:
            async for frames in reader:
                task = self._dispatch(frames, loop)
                del frames  # not kept while reading waits: a large message would stay in memory
                if task is not None and (len(inflight) >= self._most or self._held >= BYTES_IN_FLIGHT):
                    await self._wait_room()
        finally:
            self._io = None
            reader.close()

    async def _wait_room(self) -> None:
        loop = asyncio.get_running_loop()
        while self._accepting and (len(self._inflight) >= self._most or self._held >= BYTES_IN_FLIGHT):
            room = self._room = loop.create_future()
            try:
                await room
            finally:
                self._room = None

    def _make_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def _dispatch(self, frames: list[bytes], loop: asyncio.AbstractEventLoop | None) -> asyncio.Task[None] | None:
        # The envelope is everything up to the first empty frame: the identity, plus any
        # identities that brokers in between added.
        try:
            cut = frames.index(b"", 1) + 1
        except ValueError:
            cut = 0
        envelope = frames[:cut] if cut else [frames[0]]
        body = frames[cut:] if cut else []
        served = self.served
        path = served.path
        if path.limits is not self._limits and self._sock is not None:
            self._apply(path.limits, self._sock)
        expected = path.token
        token: bytes | None = None
        rid: bytes | None = None
        most = 4 if expected is not None else 3  # [action, json, (token,) id]
        if 2 < len(body) <= most:
            if expected is not None:
                token = body[2]
                rid = body[3] if len(body) == 4 else None
            else:
                rid = body[2]
        action = body[0].decode("utf-8", "replace") if body else ""
        streamed = action.startswith(STREAM_PREFIX)
        if streamed:
            action = action[len(STREAM_PREFIX) :]
        raw = body[1] if len(body) > 1 else b""
        text = rid.decode("utf-8", "replace") if rid is not None else None
        if text is not None and expected is None and self._secret_like(text):
            text = None  # echoed to its sender below, but recorded nowhere: a made id instead
        request = Request("zmq", action, raw, token=token, request_id=text)
        echo = [rid] if rid is not None and len(body) <= most else []
        problem: Exception | None = None
        if not cut:
            problem = BadRequest(
                "A ZMQ request starts with an empty delimiter frame (a REQ socket adds it; a DEALER must "
                "send [b'', action, json])."
            )
        elif not 1 <= len(body) <= most:
            then = "then its token, then a request id" if expected is not None else "then a request id"
            problem = BadRequest(
                f"A ZMQ request is [action, json] ({then}) after an empty delimiter frame; "
                f"got {len(body)} frames after the delimiter."
            )
        elif loop is None or not self._accepting:
            problem = ServiceUnavailable(f"Service {served.name!r} is stopping.", service=served.name)
        elif action not in path.gen.nodes:
            # The token first, in constant time: a stranger learns nothing served here, not
            # even its name or actions (the same refusal as middleware.token_check's).
            if expected is not None and not hmac.compare_digest(token or b"", expected.encode()):
                problem = Unauthorized(
                    "This needs a token: send 'Authorization: Bearer <token>' over HTTP, "
                    "or the token as the frame after the JSON over ZMQ."
                )
            else:
                problem = UnknownAction(
                    f"No action {action!r} here; actions: {', '.join(served.actions)}.", service=served.name
                )
        if problem is not None:
            _, reply = path.reject(problem, request)
            if self._send([*envelope, ERROR, reply, *echo]) != _SENT:
                path.undelivered(request, len(reply))
            return None
        assert loop is not None
        node = path.gen.nodes[action]
        if node.streams:
            task = loop.create_task(self._stream(envelope, request, echo, streamed))
        else:
            task = loop.create_task(self._answer(envelope, request, echo))
        self._inflight.add(task)
        size = len(raw)
        self._held += size
        task.add_done_callback(partial(self._finished, size))
        return task

    def _secret_like(self, text: str) -> bool:
        """True when a tokenless endpoint's id frame may be a client's token (see the module
        docstring): a token this runtime serves, or 32+ URL-safe characters of mixed case and
        digits. Only frames ``accepted_id`` would take get here to be looked at."""
        if not accepted_id(text):
            return False
        shaped = len(text) >= 32 and _URLSAFE.issuperset(text)
        if shaped and any(c.isupper() for c in text) and any(c.islower() for c in text) and any(map(str.isdigit, text)):
            return True
        given = text.encode()
        for other in self.runtime.served.values():
            known = getattr(getattr(other, "path", None), "token", None)
            if known is not None and hmac.compare_digest(given, known.encode()):
                return True
        return False

    def _finished(self, size: int, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._held -= size
        if self._room is not None and len(self._inflight) < self._most and self._held < BYTES_IN_FLIGHT:
            self._make_room()
        if not task.cancelled() and task.exception() is not None:
            logger.error("ZMQ reply task of %r failed", self.served.name, exc_info=task.exception())

    async def _answer(self, envelope: list[bytes], request: Request, echo: list[bytes]) -> None:
        path = self.served.path
        try:
            status, body = await path.handle(request)
        except asyncio.CancelledError:
            # Cut short (the endpoint closing, a shutdown): the request path counted it as a
            # 503; the requester hears so too, rather than nothing.
            name = self.served.name
            gone = ServiceUnavailable(f"Service {name!r} stopped before it answered.", service=name)
            _, body = error_reply(gone, service=name, request_id=request.id)
            if self._send([*envelope, ERROR, body, *echo]) != _SENT:
                path.undelivered(request, len(body))
            raise
        frames = [*envelope, OK if status == 200 else ERROR, body, *echo]
        outcome = self._send(frames)
        if outcome == _AGAIN:
            # The requester's queue is full (ROUTER_MANDATORY turns that into EAGAIN): retry briefly.
            outcome = await self._deliver(frames)
        if outcome != _SENT:
            path.undelivered(request, len(body))

    async def _stream(self, envelope: list[bytes], request: Request, echo: list[bytes], streamed: bool) -> None:
        """A streaming action's reply. Asked for with the action frame ``stream:ACTION``: one
        ``[item, json]`` message per message as it comes, then ``[end, {"items": n}]`` (or
        ``[error, json]``). Asked for as a plain action (a REQ socket can take one reply
        only): one ``[ok, {"items": [...]}]`` reply with every message, up to
        ``COLLECT_LIMIT`` bytes (then an error naming the way to stream it)."""
        path = self.served.path
        collected: list[bytes] = []
        size = 0

        async def emit(data: bytes) -> None:
            nonlocal size
            if not streamed:
                size += len(data) + 1
                if size > COLLECT_LIMIT:
                    raise BadResult(
                        f"{request.action!r} streams more than {COLLECT_LIMIT} bytes, too much for one reply: "
                        f"send the action as 'stream:{request.action}' (ZmqClient.stream) to read it as it comes.",
                        service=self.served.name,
                    )
                collected.append(data)
                return
            frames = [*envelope, ITEM, data, *echo]
            # a reader slower than the stream holds it up; one that reads nothing for
            # read_timeout has gone: the stream stops, counted as disconnected
            if await self._deliver(frames, path.limits.read_timeout) != _SENT:
                request.gone = True
                raise asyncio.CancelledError

        request.emit = emit
        try:
            status, body = await path.handle(request)
        except asyncio.CancelledError:
            if request.gone:
                return
            name = self.served.name
            gone = ServiceUnavailable(f"Service {name!r} stopped before it answered.", service=name)
            _, body = error_reply(gone, service=name, request_id=request.id)
            self._send([*envelope, ERROR, body, *echo])
            raise
        if status != 200:
            kind = ERROR
        elif streamed:
            kind = END
        else:
            kind, body = OK, b'{"items":[' + b",".join(collected) + b"]}"
        if await self._deliver([*envelope, kind, body, *echo]) != _SENT:
            path.undelivered(request, len(body))

    async def _deliver(self, frames: list[bytes], window: float = RETRY_WINDOW) -> int:
        """``_send``, retrying for ``window`` s (backing off to 50 ms) while the requester's
        queue is full."""
        outcome = self._send(frames)
        if outcome == _AGAIN:
            deadline = time.monotonic() + window
            pause = 0.002
            while outcome == _AGAIN and time.monotonic() < deadline:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
                outcome = self._send(frames)
        return outcome

    def _send(self, frames: list[bytes]) -> int:
        """Send a reply without blocking: ``_SENT``, ``_AGAIN`` (retry) or ``_GONE``."""
        sock = self._sock
        if sock is None or sock.closed:
            return _GONE
        try:
            # send_multipart, without its per-frame checks and flag-enum arithmetic. ZMQ
            # queues a multipart message atomically: EAGAIN can only come on the first frame.
            send = SEND
            for frame in frames[:-1]:
                send(sock, frame, MORE_NOBLOCK)
            send(sock, frames[-1], NOBLOCK)
        except zmq.Again:
            return _AGAIN
        except zmq.ZMQError as exc:
            if exc.errno in (errno.EHOSTUNREACH, zmq.ENOTSOCK, zmq.ETERM):  # the requester or the socket is gone
                return _GONE
            raise
        finally:
            if self._io is not None:
                self._io.sent()  # the send may have taken the FD's edge for a new request
        return _SENT
