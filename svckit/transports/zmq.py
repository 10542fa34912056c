"""ZeroMQ transport: a ROUTER endpoint on the runtime loop, for one served thing.

Wire protocol (any ZMQ client can talk): a REQ socket, or a DEALER sending the same
empty delimiter frame, sends ``[action, json]`` and gets ``[status, json]`` back, where
status is ``ok`` or ``error`` and an error body is the HTTP one,
``{"error": {"type": ..., "message": ...}}``. Two optional frames may follow the JSON:
the token (when the served thing has one), then a request id; without a token the
third frame is the request id. A request that carried an id gets it back as a last
frame, ``[status, json, id]``, so two-frame clients keep working.

The socket helpers (context, binding, the batched ``Reader``) are in ``zmqnet.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from typing import Any, Protocol

import zmq
import zmq.asyncio

from ..errors import BadRequest, StateError, UnknownAction
from ..middleware import Request
from ..request import RequestPath
from ..zmqnet import MORE_NOBLOCK, NOBLOCK, SEND, Reader, bind, close_bound, make_socket, split_address, tcp_address

__all__ = ["ERROR", "OK", "ZmqEndpoint", "open_endpoint"]

logger = logging.getLogger(__name__)

#: Requests one endpoint answers at once; past this it stops reading (ZMQ queues the rest).
MAX_INFLIGHT = 1024
OK = b"ok"
ERROR = b"error"


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

    Each request runs as its own task (at most ``MAX_INFLIGHT`` at once), so a slow
    request never holds up the others; malformed requests get an error frame at once.
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
        self._room: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"<ZmqEndpoint {self.served.name}>"

    # -- lifecycle (on the runtime loop) ---------------------------------------------
    async def open(self, port: int) -> None:
        asock, sock = make_socket(self.runtime, zmq.ROUTER, hwm=10_000)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished peer raises instead of a silent drop
        try:
            self.address = bind(sock, tcp_address(self.served.host, port or "*"), "ZMQ")
        except BaseException:
            asock.close(linger=0)
            raise
        parts = split_address(self.address)
        self.port = parts[1] if parts else port
        self._asock, self._sock = asock, sock
        self._room = asyncio.Semaphore(MAX_INFLIGHT)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def close(self, grace: float = 2.0) -> None:
        """Stop reading, give in-flight requests ``grace`` s to be answered, free the port.

        Blocking; call from the notebook's thread (``Served.stop`` does).
        """
        rt = self.runtime
        if rt.in_runtime():
            raise StateError("ZmqEndpoint.close() blocks; from the runtime thread await aclose() instead.")
        if not rt.running or self._asock is None:
            return
        rt.call(self.aclose(grace), timeout=grace + 5)

    async def aclose(self, grace: float = 2.0) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace)
            for task in list(self._inflight):
                task.cancel()
        asock, self._asock = self._asock, None
        if asock is not None and not asock.closed:
            await close_bound(asock, self.address)

    # -- the request path ------------------------------------------------------------
    async def _read(self) -> None:
        sock, room = self._sock, self._room
        assert sock is not None and room is not None
        loop = asyncio.get_running_loop()
        reader = self._io = Reader(sock)
        try:
            await room.acquire()  # never suspends unless MAX_INFLIGHT requests are running
            async for frames in reader:
                if self._dispatch(frames, loop) is not None:
                    await room.acquire()
        finally:
            self._io = None
            reader.close()

    def _dispatch(self, frames: list[bytes], loop: asyncio.AbstractEventLoop) -> asyncio.Task[None] | None:
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
        token: bytes | None = None
        rid: bytes | None = None
        most = 4 if path.token is not None else 3  # [action, json, (token,) id]
        if 2 < len(body) <= most:
            if path.token is not None:
                token = body[2]
                rid = body[3] if len(body) == 4 else None
            else:
                rid = body[2]
        action = body[0].decode("utf-8", "replace") if body else ""
        raw = body[1] if len(body) > 1 else b""
        request = Request(
            "zmq", action, raw, token=token, request_id=rid.decode("utf-8", "replace") if rid is not None else None
        )
        echo = [rid] if rid is not None and len(body) <= most else []
        problem: Exception | None = None
        if not cut:
            problem = BadRequest(
                "A ZMQ request starts with an empty delimiter frame (a REQ socket adds it; a DEALER must "
                "send [b'', action, json])."
            )
        elif not 1 <= len(body) <= most:
            then = "then its token, then a request id" if path.token is not None else "then a request id"
            problem = BadRequest(
                f"A ZMQ request is [action, json] ({then}) after an empty delimiter frame; "
                f"got {len(body)} frames after the delimiter."
            )
        elif action not in path.gen.nodes:
            problem = UnknownAction(
                f"No action {action!r} here; actions: {', '.join(served.actions)}.", service=served.name
            )
        if problem is not None:
            _, reply = path.reject(problem, request)
            self._send([*envelope, ERROR, reply, *echo])
            return None
        task = loop.create_task(self._answer(envelope, request, echo))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._room is not None:
            self._room.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("ZMQ reply task of %r failed", self.served.name, exc_info=task.exception())

    async def _answer(self, envelope: list[bytes], request: Request, echo: list[bytes]) -> None:
        status, body = await self.served.path.handle(request)
        frames = [*envelope, OK if status == 200 else ERROR, body, *echo]
        action = request.action
        if not self._send(frames):
            # The requester's queue is full (ROUTER_MANDATORY turns that into EAGAIN): retry briefly.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                if self._send(frames, retry=True):
                    return
            self.served.path.metrics.drop(1, "zmq", action, len(body))

    def _send(self, frames: list[bytes], retry: bool = False) -> bool:
        """Send a reply without blocking; False when it should be retried."""
        sock = self._sock
        if sock is None or sock.closed:
            return True
        try:
            # send_multipart, without its per-frame checks and flag-enum arithmetic. ZMQ
            # queues a multipart message atomically: EAGAIN can only come on the first frame.
            send = SEND
            for frame in frames[:-1]:
                send(sock, frame, MORE_NOBLOCK)
            send(sock, frames[-1], NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:  # the requester went away: nobody to answer
                self.served.path.metrics.drop(1, "zmq", "", len(frames[-1]))
                return True
            if exc.errno in (zmq.ENOTSOCK, zmq.ETERM):
                return True
            raise
        finally:
            if self._io is not None:
                self._io.sent()  # the send may have taken the FD's edge for a new request
        return True
