"""ZeroMQ socket helpers: the runtime's context, binding and connecting, a batched reader,
and bound sockets shared across re-serves. The ROUTER endpoint is in ``transports/zmq.py``.

Every socket lives on the runtime thread, in the runtime's own ``zmq.asyncio.Context``.
Reading and writing follow DESIGN §3: wait once for readiness, then move messages with
``NOBLOCK`` until the socket is empty, yielding to the loop every ``BATCH`` messages.
Readers wait on the socket's ``ZMQ_FD`` with the loop's own ``add_reader`` (``Reader``):
pyzmq's asyncio ``poll()`` cost more than half of a round trip here.

Every receiving socket is bounded with ``limit_frames``: libzmq refuses a frame over
``ZMQ_MAXMSGSIZE`` as soon as it has read its size, before allocating it, and drops the
connection of the peer that sent it. That peer gets no reply (there is nobody left to
send it to). On a bound socket the drop is not counted: libzmq tells a monitor only
"disconnected", as for any peer that leaves, and the peer connects again by itself. A
connecting socket does not reconnect after such a protocol error: ``keep_connected``
notices it, connects again and counts it. A frame a little over the limit (up to
``FRAME_SLACK``) is still read, so its sender hears ``PayloadTooLarge`` (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from .errors import PortInUse, WiringError
from .net import bindable, ports

__all__ = [
    "BATCH",
    "FRAME_SLACK",
    "MORE_NOBLOCK",
    "NOBLOCK",
    "Reader",
    "SEND",
    "SharedSocket",
    "bind",
    "check_address",
    "close_bound",
    "connect",
    "context",
    "count_connections",
    "keep_connected",
    "limit_frames",
    "make_socket",
    "split_address",
    "sweep",
    "tcp_address",
]

#: Messages moved per readiness wait before yielding to the loop.
BATCH = 256
#: ``ZMQ_RCVHWM`` of a request-reading socket: messages libzmq queues *per peer* (each up to
#: ``max_body`` + ``FRAME_SLACK``) while nobody reads; past it libzmq stops reading that peer's
#: connection and TCP pushes back. libzmq's default, 1,000, let two DEALERs park gigabytes.
REQUEST_HWM = 32
#: Bytes a frame may exceed ``max_body`` by and still be read (and answered 413): past it,
#: libzmq drops the sender's connection without reading the frame.
FRAME_SLACK = 64 * 1024
#: Connections the kernel may hold for a bound socket before libzmq accepts them (as HTTP ports).
BACKLOG = 2048
# Plain ints: pyzmq's flag enums do their arithmetic in Python, per frame.
NOBLOCK = _NOBLOCK = int(zmq.NOBLOCK)
MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
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


SEND = _backend_send()


def context(rt: Any) -> zmq.asyncio.Context:
    """The runtime's ZMQ context, made on first use and destroyed at its shutdown.

    Call on the runtime thread only.
    """
    ctx: zmq.asyncio.Context = rt.local("zmq.context", zmq.asyncio.Context, _destroy, order=1)
    return ctx


async def _destroy(ctx: zmq.asyncio.Context) -> None:
    ctx.destroy(linger=0)


def make_socket(rt: Any, kind: int, hwm: int | None = None) -> tuple[zmq.asyncio.Socket, zmq.Socket[bytes]]:
    """An async socket for readiness waits and its synchronous twin for ``NOBLOCK`` moves."""
    asock = context(rt).socket(kind)
    asock.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        asock.setsockopt(zmq.SNDHWM, hwm)
        asock.setsockopt(zmq.RCVHWM, hwm)
    return asock, zmq.Socket.shadow(asock.underlying)


def limit_frames(sock: zmq.Socket[Any], max_body: int, handshake: float | None = None) -> None:
    """Bound the frames ``sock`` takes in to ``max_body`` plus ``FRAME_SLACK`` (``ZMQ_MAXMSGSIZE``),
    and, given ``handshake`` (seconds: the served thing's ``read_timeout``), the time a new
    connection has to finish its ZMTP handshake (``ZMQ_HANDSHAKE_IVL``; libzmq's default is
    30 s, so idle TCP connects used up file descriptors faster than they were dropped).

    Both apply to connections made from now on (set them before ``bind``/``connect``); a
    peer that sends a larger frame, or does not handshake in time, is disconnected.
    """
    sock.setsockopt(zmq.MAXMSGSIZE, max_body + FRAME_SLACK)
    if handshake is not None:
        sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(handshake * 1000)))


def sweep(sock: zmq.Socket[bytes], most: int, seconds: float = 0.5) -> list[list[bytes]]:
    """What ``sock`` holds right now: at most ``most`` messages, read for at most ``seconds``
    without blocking (libzmq refills its queue from the network while we read)."""
    out: list[list[bytes]] = []
    deadline = time.monotonic() + seconds
    recv = sock.recv
    try:
        while len(out) < most:
            frame = recv(_NOBLOCK, copy=False)
            frames = [frame.bytes]
            while frame.more:
                frame = recv(_NOBLOCK, copy=False)
                frames.append(frame.bytes)
            out.append(frames)
            if not len(out) % BATCH and time.monotonic() > deadline:
                break
    except zmq.ZMQError:  # zmq.Again: empty; or closed
        pass
    return out


_monitors = itertools.count()
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_AGAIN_EVENTS = int(zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECTED)
#: Seconds after a disconnect without libzmq arming its reconnect before connecting again ourselves.
GAVE_UP = 1.0


async def keep_connected(rt: Any, sock: zmq.Socket[bytes], addr: str, lost: Callable[[], None]) -> None:
    """Connect ``sock`` to ``addr`` again whenever libzmq gives up on that connection, calling
    ``lost()`` each time; runs (as a task) until cancelled.

    libzmq reconnects by itself after a connection error, but a protocol error, such as a
    frame over ``ZMQ_MAXMSGSIZE``, ends a connecting session for good. A monitor hears
    "disconnected" for both; only after a connection error does "connect retried" follow,
    at once (the reconnect timer is armed in the same step), so a disconnect that no sign of
    reconnecting follows within ``GAVE_UP`` seconds is taken as given up. It costs one
    monitor socket, read only when connections come and go.
    """
    where = f"inproc://svckit-monitor-{id(sock)}-{next(_monitors)}"
    sock.monitor(where, _DISCONNECTED | _AGAIN_EVENTS)
    amon, mon = make_socket(rt, zmq.PAIR)
    reader: Reader | None = None
    try:
        mon.connect(where)
        reader = Reader(mon)
        async for frames in reader:
            if _event(frames) != _DISCONNECTED:
                continue
            await asyncio.sleep(GAVE_UP)
            if not any(_event(later) & _AGAIN_EVENTS for later in sweep(mon, 1000)):
                with contextlib.suppress(zmq.ZMQError):  # the dead endpoint first, or a SUB stays deaf
                    sock.disconnect(addr)
                with contextlib.suppress(zmq.ZMQError):
                    sock.connect(addr)
                lost()
    finally:
        if reader is not None:
            reader.close()
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        amon.close(linger=0)


_ACCEPTED = int(zmq.EVENT_ACCEPTED)


async def count_connections(rt: Any, sock: zmq.Socket[bytes], changed: Callable[[int], None]) -> None:
    """Follow how many connections a bound ``sock`` has, calling ``changed(count)`` on each
    change; runs (as a task) until cancelled.

    libzmq cannot refuse a connection, so this only tells: a monitor socket hears
    "accepted" (+1) and "disconnected" (-1, also for a connection dropped for a bad or late
    handshake or an oversized frame). It is read only when connections come and go. A
    socket has one monitor: another one set later (a test's) silences this one.
    """
    where = f"inproc://svckit-connections-{id(sock)}-{next(_monitors)}"
    sock.monitor(where, _ACCEPTED | _DISCONNECTED)
    amon, mon = make_socket(rt, zmq.PAIR)
    reader: Reader | None = None
    count = 0
    try:
        mon.connect(where)
        reader = Reader(mon)
        async for frames in reader:
            event = _event(frames)
            if event == _ACCEPTED:
                count += 1
            elif event == _DISCONNECTED:
                count = max(0, count - 1)
            else:
                continue
            changed(count)
    finally:
        if reader is not None:
            reader.close()
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        amon.close(linger=0)


def _event(frames: list[bytes]) -> int:
    """The event id of a monitor message (``zmq.utils.monitor.parse_monitor_message``)."""
    return int(struct.unpack_from("=h", frames[0])[0]) if frames and len(frames[0]) >= 2 else 0


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
    # libzmq's default backlog is 100: a burst of clients connecting at once overflowed it,
    # and those past it waited a TCP retransmission (about 1 s) to be accepted (HTTP: 2048)
    sock.setsockopt(zmq.BACKLOG, BACKLOG)
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
    while not bindable(host, port) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


class Reader:
    """Reads one socket on the running loop: ``async for frames in reader`` yields each message.

    Waits for readiness with ``loop.add_reader`` on the socket's ``ZMQ_FD``, then receives
    with ``NOBLOCK`` until the socket is empty, yielding to the loop every ``BATCH``
    messages. Each frame is received as a ``zmq.Frame`` (``copy=False``: cheaper here than
    pyzmq's copying ``recv`` and an ``RCVMORE`` look-up per frame) and copied once into
    ``bytes``; the frame is freed as soon as the message is returned, and ``limit_frames``
    bounds both. ``ZMQ_FD`` only signals edges, and any ``recv``, ``send`` or ``EVENTS`` read
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
    failing with "port in use". Lives in ``net.ports(rt)`` under ``(kind, host, port)``.
    """

    def __init__(self, rt: Any, key: tuple[str, str, int], asock: zmq.asyncio.Socket, bound: str) -> None:
        self.runtime = rt
        self.key = key
        self.asock = asock
        self.sock: zmq.Socket[bytes] = zmq.Socket.shadow(asock.underlying)
        self.address = bound
        self.users = 0
        self.tasks: list[asyncio.Task[Any]] = []
        self.state: dict[str, Any] = {}
        self.owner: str | None = None

    @classmethod
    async def acquire(
        cls,
        rt: Any,
        kind: int,
        label: str,
        addr: str,
        configure: Callable[[SharedSocket], None] | None = None,
        hwm: int | None = None,
        owner: str | None = None,
    ) -> SharedSocket:
        """The socket bound at ``addr``: a new one, or the one ``owner`` already holds there.

        A re-serve of the same served thing (same ``owner``) takes the socket over; another
        served thing asking for the same fixed port gets a ``WiringError``.
        """
        parts = split_address(addr)
        key = (label, parts[0], parts[1]) if parts is not None and parts[1] else None
        shared = ports(rt).get(key) if key else None
        if shared is not None and owner is not None and shared.owner not in (None, owner):
            raise WiringError(
                f"{label.upper()} port {parts[1] if parts else addr} is already bound by {shared.owner!r}: "
                "two served things cannot publish on one fixed port. Give this one another port, or port=0."
            )
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
            shared.owner = owner
            if configure is not None:
                configure(shared)
            ports(rt)[key] = shared
        shared.users += 1
        return shared

    async def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            await self.close()

    async def close(self) -> None:
        """Free the port at once (also called by the runtime's shutdown)."""
        table = ports(self.runtime)
        if table.get(self.key) is self:
            del table[self.key]
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        self.tasks.clear()
        if not self.asock.closed:
            await close_bound(self.asock, self.address)
