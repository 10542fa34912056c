"""ZeroMQ transport: a ROUTER endpoint on the runtime loop, and the socket helpers sources and sinks share.

Wire protocol (any ZMQ client can talk): a REQ socket, or a DEALER sending the same
empty delimiter frame, sends ``[action, json]`` (plus a third frame with the token when
the served thing has one) and gets ``[status, json]`` back, where status is ``ok`` or
``error`` and an error body is the HTTP one, ``{"error": {"type": ..., "message": ...}}``.

Every socket lives on the runtime thread, in the runtime's own ``zmq.asyncio.Context``.
Reading and writing follow DESIGN §3: wait once for readiness, then move messages with
``NOBLOCK`` until the socket is empty, yielding to the loop every ``BATCH`` messages.
Readers wait on the socket's ``ZMQ_FD`` with the loop's own ``add_reader`` (``Reader``):
pyzmq's asyncio ``poll()`` cost more than half of a round trip here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from ..errors import BadRequest, PayloadTooLarge, PortInUse, StateError, Unauthorized, UnknownAction, WiringError

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..served import Served

__all__ = ["BATCH", "Reader", "SharedSocket", "ZmqEndpoint", "context", "open_endpoint"]

logger = logging.getLogger(__name__)

#: Messages moved per readiness wait before yielding to the loop.
BATCH = 256
#: Requests one endpoint answers at once; past this it stops reading (ZMQ queues the rest).
MAX_INFLIGHT = 1024
OK = b"ok"
ERROR = b"error"
# Plain ints: pyzmq's flag enums do their arithmetic in Python, per frame.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _backend_send() -> Callable[..., Any]:
    """pyzmq's compiled ``send``, without the Python wrapper that looks at ``routing_id`` and
    ``group`` on every frame (half of a small frame's send time here); the wrapper itself
    when pyzmq is built another way."""
    for klass in zmq.Socket.__mro__[1:]:
        send = vars(klass).get("send")
        if send is not None:
            return send  # type: ignore[no-any-return]
    return zmq.Socket.send


_SEND = _backend_send()


def context(rt: Runtime) -> zmq.asyncio.Context:
    """The runtime's ZMQ context, made on first use. Call on the runtime thread only."""
    if rt.zmq_context is None:
        rt.zmq_context = zmq.asyncio.Context()
    ctx: zmq.asyncio.Context = rt.zmq_context
    return ctx


def make_socket(rt: Runtime, kind: int, hwm: int | None = None) -> tuple[zmq.asyncio.Socket, zmq.Socket[bytes]]:
    """An async socket for readiness waits and its synchronous twin for ``NOBLOCK`` moves."""
    asock = context(rt).socket(kind)
    asock.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        asock.setsockopt(zmq.SNDHWM, hwm)
        asock.setsockopt(zmq.RCVHWM, hwm)
    return asock, zmq.Socket.shadow(asock.underlying)


def tcp_address(host: str, port: int | str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"tcp://{host}:{port}"


def split_address(addr: str) -> tuple[str, int] | None:
    """``tcp://host:port`` → ``(host, port)``; None for other transports."""
    if not addr.startswith("tcp://"):
        return None
    host, _, port = addr[6:].rpartition(":")
    host = host.strip("[]")
    return host, int(port) if port.isdigit() else 0


def check_address(addr: Any, what: str) -> str:
    """Refuse an address ZMQ cannot use, when the flow is composed rather than served."""
    if not isinstance(addr, str) or "://" not in addr:
        raise WiringError(f"{what}: {addr!r} is not a ZMQ address; write it like 'tcp://127.0.0.1:5556'.")
    scheme = addr.split("://", 1)[0]
    if scheme not in ("tcp", "ipc", "inproc"):
        raise WiringError(f"{what}: {addr!r} uses {scheme}://; use tcp://, ipc:// or inproc://.")
    return addr


def bind(sock: zmq.Socket[Any], addr: str, what: str) -> str:
    """Bind, turning "address in use" into ``PortInUse``; return the address actually bound."""
    parts = split_address(addr)
    if parts is not None and ":" in parts[0]:
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.bind(addr)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            port = parts[1] if parts else None
            host = parts[0] if parts else None
            raise PortInUse(
                f"{what} port {port} on {host} is already in use by another process or socket. "
                "Stop what holds it, pick another port, or pass 0 for a free one.",
                port=port,
                host=host,
            ) from exc
        raise WiringError(f"{what}: cannot bind {addr!r}: {exc}.") from exc
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


def connect(sock: zmq.Socket[Any], addr: str, what: str) -> None:
    try:
        sock.connect(addr)
    except zmq.ZMQError as exc:
        raise WiringError(f"{what}: cannot connect to {addr!r}: {exc}.") from exc


async def close_bound(asock: zmq.asyncio.Socket, bound: str | None, timeout: float = 2.0) -> None:
    """Close with linger 0 and return once the TCP port can be bound again.

    libzmq closes a listener asynchronously (on its reaper thread), so an immediate
    rebind failed about half the time here (DESIGN §3); wait until it is really gone.
    """
    asock.close(linger=0)
    parts = split_address(bound) if bound else None
    if parts is None or not parts[1]:
        return
    host, port = parts
    deadline = time.monotonic() + timeout
    while not _bindable(host, port) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class Reader:
    """Reads one socket on the running loop: ``async for frames in reader`` yields each message.

    Waits for readiness with ``loop.add_reader`` on the socket's ``ZMQ_FD``, then receives
    with ``NOBLOCK`` until the socket is empty, yielding to the loop every ``BATCH``
    messages. ``ZMQ_FD`` only signals edges, and any ``recv``, ``send`` or ``EVENTS`` read
    on the socket may consume one: so ``ZMQ_EVENTS`` is checked before every wait, and
    code that sends on the same socket calls ``sent()`` afterwards, or a message that
    arrived meanwhile would wait unseen. Iteration ends when the socket is closed.
    ``close()`` (before closing the socket) takes the FD off the loop.
    """

    __slots__ = ("_check", "_fd", "_loop", "_moved", "_waiter", "sock")

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._fd = int(sock.getsockopt(zmq.FD))
        self._waiter: asyncio.Future[None] | None = None
        self._moved = 0
        self._check: asyncio.Handle | None = None
        self._loop.add_reader(self._fd, self._signal)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(fd)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def sent(self) -> None:
        """Call after sending on the socket: the send may have consumed the FD's edge.

        One look at ``ZMQ_EVENTS`` (about 2 us here) after all the sends of a turn of the
        loop, not one per send: replies to a burst of requests go out in the same turn.
        """
        if self._waiter is not None and self._check is None:
            self._check = self._loop.call_soon(self._signal)

    def _signal(self) -> None:
        # Reading EVENTS also clears the FD, so the loop does not call this again at once.
        self._check = None
        try:
            readable = int(self.sock.get(_EVENTS)) & _POLLIN
        except zmq.ZMQError:
            readable = True  # closed: wake the reader so it finds out
        waiter = self._waiter
        if readable and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> list[bytes]:
        sock = self.sock
        if self._moved >= BATCH:
            self._moved = 0
            await asyncio.sleep(0)
        while True:
            try:
                frame = sock.recv(_NOBLOCK, copy=False)
                frames = [frame.bytes]
                while frame.more:  # the rest of a message is there at once (ZMQ is atomic)
                    frame = sock.recv(_NOBLOCK, copy=False)
                    frames.append(frame.bytes)
            except zmq.Again:
                self._moved = 0
                if self._fd < 0:
                    raise StopAsyncIteration from None
                await self._wait()
                continue
            except zmq.ZMQError:
                raise StopAsyncIteration from None  # the socket was closed under us (shutdown)
            self._moved += 1
            return frames

    async def _wait(self) -> None:
        sock = self.sock
        while self._fd >= 0:
            try:
                if int(sock.get(_EVENTS)) & _POLLIN:
                    return
            except zmq.ZMQError:
                return  # closed: the next recv ends the iteration
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None


class SharedSocket:
    """A bound socket that sinks on the same port share (refcounted), so re-serving a flow
    whose new sink binds the same port as the old one takes the socket over instead of
    failing with "port in use". Lives in ``Runtime.endpoints`` under ``(kind, host, port)``.
    """

    def __init__(self, rt: Runtime, key: tuple[str, str, int], asock: zmq.asyncio.Socket, bound: str) -> None:
        self.runtime = rt
        self.key = key
        self.asock = asock
        self.sock: zmq.Socket[bytes] = zmq.Socket.shadow(asock.underlying)
        self.address = bound
        self.users = 0
        self.tasks: list[asyncio.Task[Any]] = []
        self.state: dict[str, Any] = {}

    @classmethod
    async def acquire(
        cls,
        rt: Runtime,
        kind: int,
        label: str,
        addr: str,
        configure: Callable[[SharedSocket], None] | None = None,
        hwm: int | None = None,
    ) -> SharedSocket:
        parts = split_address(addr)
        key = (label, parts[0], parts[1]) if parts is not None and parts[1] else None
        shared = rt.endpoints.get(key) if key else None
        if shared is None:
            asock, sock = make_socket(rt, kind, hwm)
            try:
                bound = bind(sock, addr, label.upper())
            except BaseException:
                asock.close(linger=0)
                raise
            real = split_address(bound)
            key = (label, real[0], real[1]) if real is not None else (label, bound, 0)
            shared = cls(rt, key, asock, bound)
            if configure is not None:
                configure(shared)
            rt.endpoints[key] = shared
        shared.users += 1
        return shared

    async def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            await self.close()

    async def close(self) -> None:
        """Free the port at once (also called by the runtime's shutdown)."""
        if self.runtime.endpoints.get(self.key) is self:
            del self.runtime.endpoints[self.key]
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        self.tasks.clear()
        if not self.asock.closed:
            await close_bound(self.asock, self.address)


def open_endpoint(served: Served, port: int) -> ZmqEndpoint:
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

    def __init__(self, served: Served) -> None:
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
        problem: Exception | None = None
        if not cut:
            problem = BadRequest(
                "A ZMQ request starts with an empty delimiter frame (a REQ socket adds it; a DEALER must "
                "send [b'', action, json])."
            )
        elif not 1 <= len(body) <= 3:
            problem = BadRequest(
                f"A ZMQ request is [action, json] after an empty delimiter frame; got {len(body)} frames "
                "after the delimiter."
            )
        else:
            action = body[0].decode("utf-8", "replace")
            if action not in served._actions and action != served.name:
                problem = UnknownAction(
                    f"No action {action!r} here; actions: {', '.join(served.actions)}.", service=served.name
                )
            elif served.token is not None and not _token_ok(body, served.token):
                problem = Unauthorized(f"{served.name!r} needs a token: send it as a third frame.")
            elif len(body) > 1 and len(body[1]) > served.max_body:
                problem = PayloadTooLarge(f"The request is {len(body[1])} bytes; the limit is {served.max_body}.")
        if problem is not None:
            action = body[0].decode("utf-8", "replace") if body else ""
            _, reply = served.reject(problem, "zmq", action, sum(map(len, body[1:2])))
            self._send([*envelope, ERROR, reply])
            return None
        raw = body[1] if len(body) > 1 else b""
        task = loop.create_task(self._answer(envelope, action, raw))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._room is not None:
            self._room.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("ZMQ reply task of %r failed", self.served.name, exc_info=task.exception())

    async def _answer(self, envelope: list[bytes], action: str, raw: bytes) -> None:
        status, body = await self.served.handle(action, raw, "zmq")
        frames = [*envelope, OK if status == 200 else ERROR, body]
        if not self._send(frames):
            # The requester's queue is full (ROUTER_MANDATORY turns that into EAGAIN): retry briefly.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                if self._send(frames, retry=True):
                    return
            self.served.metrics.drop(1, "zmq", action, len(body))

    def _send(self, frames: list[bytes], retry: bool = False) -> bool:
        """Send a reply without blocking; False when it should be retried."""
        sock = self._sock
        if sock is None or sock.closed:
            return True
        try:
            # send_multipart, without its per-frame checks and flag-enum arithmetic. ZMQ
            # queues a multipart message atomically: EAGAIN can only come on the first frame.
            send = _SEND
            for frame in frames[:-1]:
                send(sock, frame, _MORE_NOBLOCK)
            send(sock, frames[-1], _NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:  # the requester went away: nobody to answer
                action = frames[-2].decode() if len(frames) >= 2 else ""
                self.served.metrics.drop(1, "zmq", action, len(frames[-1]))
                return True
            if exc.errno in (zmq.ENOTSOCK, zmq.ETERM):
                return True
            raise
        finally:
            if self._io is not None:
                self._io.sent()  # the send may have taken the FD's edge for a new request
        return True


def _token_ok(body: list[bytes], token: str) -> bool:
    import hmac

    return len(body) == 3 and hmac.compare_digest(body[2], token.encode())
