"""Sources: ``every``, ``subscribe``, ``pull`` and ``Service.loop()``: what stands first in a flow.

This module describes sources and how each produces messages; ``pipeline.py`` runs a
served one: the bound source produces into a bounded queue, and consumer tasks pass each
message through the request path (without encoding a reply nobody reads), so pipeline
messages are counted in the served metrics and show in ``Served.outputs``/``Served.traffic``
like requests. What each source does when that queue is full is in ``pipeline.py``.

``subscribe`` and ``pull`` bound the frames they take in by the served thing's ``max_body``
(``sk.serve(..., max_body=)``, as for requests): libzmq drops the connection of a peer that
sends a larger one, unread and uncounted (``zmqnet.limit_frames``), and of one that does not
finish its ZMQ handshake within ``read_timeout`` (libzmq's default is 30 s). Re-serving a flow whose
source reads the same socket (same address, ``bind``, ``hwm`` and topic) hands the open
socket and the messages read but not yet handled to the new flow, so nothing is lost and
the peer never sees a disconnect. Stopping counts as dropped every message read and not
handled, including what the socket had queued; what still sits in the kernel's or the
sender's buffers was never read and is not counted: a PUSH sender holds it (it blocks or
queues at its high-water mark) and, when it connected to a bound ``pull``, delivers it once
that is served again.

A request to a source pipeline's action (HTTP or ZMQ) enters the flow at the top like
an emitted message does: through the source's ``process()`` when it has one, otherwise
straight into the next stage. Its ``@sk.handle`` actions are served as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import WiringError
from .running import Binder, copies_of
from .service import Service

if TYPE_CHECKING:
    import zmq
    import zmq.asyncio

__all__ = ["Every", "Pull", "Source", "Subscribe", "every", "pull", "subscribe"]

logger = logging.getLogger(__name__)


class Pipe(Protocol):
    """What a source produces into (``pipeline.Pipeline``)."""

    runtime: Any
    queue: asyncio.Queue[bytes]
    opened: asyncio.Event

    @property
    def max_body(self) -> int: ...

    @property
    def read_timeout(self) -> float: ...

    def drop(self, count: int = 1, size: int = 0) -> None: ...
    async def tick(self, fn: Callable[[], Any], seconds: float, output: str) -> None: ...


class Source(Service):
    """Base of svckit's own sources: stands first in a flow, passes requests on unchanged."""

    role = "source"
    #: The label of its messages in ``Served.traffic``.
    via = "source"
    #: Consumer tasks: 1 keeps messages in order.
    concurrency = 1
    #: Bound of the queue between the source and the flow.
    queue_size = 1000

    def __init__(self, *, name: str | None = None, output: str | None = None) -> None:
        super().__init__(name=name, output=output)
        self.concurrent = True  # its pass-through runs on the loop: no hop to the worker pool

    def run(self, msg: dict[str, Any]) -> None:
        """A message sent to a source pipeline by request passes the source unchanged."""

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        return None

    async def produce(self, pipe: Pipe) -> None:  # pragma: no cover - overridden
        """Open what it reads from, set ``pipe.opened``, then put messages into ``pipe.queue``."""
        raise NotImplementedError

    # -- re-serving: what a source hands on to the next generation's ---------------------
    @property
    def backlog(self) -> int:
        """Messages read and held, not yet queued (a re-serve hands them on)."""
        return 0

    def fits(self, old: Source) -> bool:
        """True when this source can take over what ``old`` (the last generation's) reads from."""
        return False

    def take_over(self, old: Source) -> None:
        """Take ``old``'s open socket and backlog (after ``fits``)."""

    def hold(self, messages: list[bytes]) -> None:
        """Keep ``messages`` (read, queued, not handled) ahead of the backlog, to hand on."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class Every(Source):
    """Calls ``fn()`` every ``seconds``; see ``every``.

    Examples
    --------
    >>> import svckit as sk
    >>> ticks = iter(range(100))
    >>> source = sk.every(0.5, lambda: {"n": next(ticks)}, name="tick")
    >>> source >> sk.service(lambda n: n * 10, name="ten")
    <Flow tick >> ten>
    """

    via = "every"

    def __init__(
        self, seconds: float, fn: Callable[[], Any], *, name: str | None = None, output: str | None = None
    ) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise WiringError(f"every({seconds!r}, ...): give the interval as a positive number of seconds.")
        if not callable(fn):
            raise WiringError(f"every(): {fn!r} is not callable; pass a function that takes no arguments.")
        default = getattr(fn, "__name__", "every")
        super().__init__(name=name or ("every" if default == "<lambda>" else default), output=output)
        self.seconds = float(seconds)
        self.fn = fn

    def describe(self) -> str:
        return f"every({self.seconds:g}, {self.name})"

    def __repr__(self) -> str:
        return f"<Source {self.describe()}>"

    async def produce(self, pipe: Pipe) -> None:
        pipe.opened.set()
        await pipe.tick(self.fn, self.seconds, self.output)


class _ZmqSource(Source):
    kind_name = "SUB"
    #: True: a full queue drops (counted); False: reading waits for room.
    drops = False

    def __init__(self, addr: str, *, bind: bool, hwm: int, queue: int, concurrency: int, name: str | None) -> None:
        from .zmqnet import check_address

        super().__init__(name=name)
        self.addr = check_address(addr, f"sk.{self.via}()")
        self.bind = bind
        self.hwm = hwm
        self.queue_size = max(1, queue)
        self.concurrency = max(1, concurrency)
        self._address: str | None = None
        self._asock: zmq.asyncio.Socket | None = None
        self._sock: zmq.Socket[bytes] | None = None
        # Read from the socket but not queued (the queue was full when the flow stopped):
        # handed on with the socket, else counted dropped when it closes.
        self._held: deque[bytes] = deque()
        self._metrics: Any = None
        self._owner = ""

    def _bound(self, binder: Binder) -> None:
        self._address = None
        self._asock = None
        self._sock = None
        self._held = deque()
        self._metrics = binder.metrics
        self._owner = binder.owner

    @property
    def address(self) -> str | None:
        """The address bound or connected to while served; on the object you composed, that of
        the copy served last (serving runs a copy of it), else None."""
        if self._origin is None:
            for copy in reversed(copies_of(self)):
                if copy._address is not None:
                    return copy._address  # type: ignore[no-any-return]
        return self._address

    def __repr__(self) -> str:
        return f"<Source {self.describe()}>"

    def _configure(self, sock: zmq.Socket[Any]) -> None:
        """Socket options before binding or connecting."""

    async def _open_socket(self, rt: Any, max_body: int, handshake: float | None = None) -> zmq.Socket[bytes]:
        from .zmqnet import bind, connect, limit_frames, make_socket

        asock, sock = make_socket(rt, self.kind, self.hwm)
        try:
            self._configure(sock)
            limit_frames(sock, max_body, handshake)
            if self.bind:
                self._address = bind(sock, self.addr, self.kind_name)
            else:
                connect(sock, self.addr, f"sk.{self.via}()")
                self._address = self.addr
        except BaseException:
            asock.close(linger=0)
            raise
        self._asock, self._sock = asock, sock
        return sock

    def _key(self) -> tuple[Any, ...]:
        """What must be the same for a re-serve to keep the socket."""
        return type(self), self.addr, self.bind, self.hwm

    @property
    def backlog(self) -> int:
        return len(self._held)

    def fits(self, old: Source) -> bool:
        return isinstance(old, _ZmqSource) and old._asock is not None and (old is self or old._key() == self._key())

    def take_over(self, old: Source) -> None:
        if old is self or not isinstance(old, _ZmqSource):
            return
        self._asock, self._sock, self._address = old._asock, old._sock, old._address
        old._asock = old._sock = old._address = None
        old._held.extend(self._held)
        self._held, old._held = old._held, deque()

    def hold(self, messages: list[bytes]) -> None:
        self._held.extendleft(reversed(messages))

    async def close(self) -> None:
        """Close the socket, counting as dropped what it and the backlog still held."""
        from .zmqnet import close_bound, sweep

        asock, self._asock = self._asock, None
        sock, self._sock = self._sock, None
        address, self._address = self._address, None
        lost = list(self._held)
        self._held.clear()
        if asock is not None and not asock.closed:
            if sock is not None:  # read and counted rather than freed unseen with the socket
                lost += [frames[-1] for frames in sweep(sock, self.hwm or 100_000)]
            await close_bound(asock, address if self.bind else None)
        if lost:
            if self._metrics is not None:
                self._metrics.drop(len(lost), self.via, self._owner, sum(map(len, lost)))
            logger.info("%s closed with %d messages read and not handled (counted dropped)", self.describe(), len(lost))

    def _gave_up(self) -> None:
        """libzmq dropped the connection for good (a frame over ``max_body``) and it was made again."""
        if self._metrics is not None:
            self._metrics.drop(1, self.via, self._owner)
        logger.warning(
            "%s: the peer sent a frame over max_body (or broke the ZMQ protocol); libzmq dropped the "
            "connection without reading it, and it was connected again (counted as one dropped message).",
            self.describe(),
        )

    @property
    def kind(self) -> int:
        raise NotImplementedError

    async def produce(self, pipe: Pipe) -> None:
        from .zmqnet import Reader, keep_connected, limit_frames

        sock = self._sock
        if sock is None or self._asock is None or self._asock.closed:
            sock = await self._open_socket(pipe.runtime, pipe.max_body, pipe.read_timeout)
        else:  # taken over from the last generation, whose limits may have been others
            limit_frames(sock, pipe.max_body, pipe.read_timeout)
        reader = Reader(sock)
        watch = None  # a connecting socket is made again when libzmq gives up on it
        if not self.bind:
            watch = asyncio.get_running_loop().create_task(keep_connected(pipe.runtime, sock, self.addr, self._gave_up))
        pipe.opened.set()
        queue, drop, held = pipe.queue, self.drops, self._held
        try:
            while held:  # read by the last generation and not handled: first, in order
                if not queue.full():
                    queue.put_nowait(held.popleft())
                elif drop:
                    pipe.drop(1, len(held.popleft()))
                else:
                    await queue.put(held[0])  # cancelled here, it stays held
                    held.popleft()
            async for frames in reader:
                raw = frames[-1]
                if not queue.full():
                    queue.put_nowait(raw)
                elif drop:
                    pipe.drop(1, len(raw))
                else:
                    # backpressure: stop reading until the flow catches up; the message is
                    # held meanwhile, so a stop or a re-serve does not lose it
                    held.append(raw)
                    await queue.put(raw)
                    held.pop()
        finally:
            reader.close()  # before close() closes the socket
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(BaseException):
                    await watch


class Subscribe(_ZmqSource):
    """A ZMQ SUB socket: messages published under ``topic`` enter the flow (``sk.subscribe``).

    A source reading a ZMQ PUB: frames ``[topic, json]`` (the last frame is the message).

    ``topic`` is a prefix (``""``: everything). Connects to ``addr`` (``bind=True`` binds
    it instead; ``tcp://127.0.0.1:0`` then picks a free port, read back from
    ``.address`` once served). When the flow cannot keep up, messages past the ``queue``
    bound are dropped and counted in ``Served.status()["dropped"]`` and ``Served.traffic``.

    Examples
    --------
    >>> import svckit as sk
    >>> sk.subscribe("tcp://127.0.0.1:5556", "prices")
    <Source subscribe('tcp://127.0.0.1:5556', 'prices')>
    """

    via = "sub"
    kind_name = "SUB"
    drops = True

    def __init__(
        self,
        addr: str,
        topic: str = "",
        *,
        bind: bool = False,
        hwm: int = 1000,
        queue: int = 1000,
        concurrency: int = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(addr, bind=bind, hwm=hwm, queue=queue, concurrency=concurrency, name=name or "subscribe")
        if not isinstance(topic, str | bytes):
            raise WiringError(f"subscribe(): the topic is a str (a prefix; '' is every topic), not {topic!r}.")
        self.topic = topic.encode() if isinstance(topic, str) else topic

    @property
    def kind(self) -> int:
        import zmq

        return zmq.SUB

    def _configure(self, sock: zmq.Socket[Any]) -> None:
        import zmq

        sock.setsockopt(zmq.SUBSCRIBE, self.topic)

    def _key(self) -> tuple[Any, ...]:
        return (*super()._key(), self.topic)

    def describe(self) -> str:
        return f"subscribe({self.addr!r}, {self.topic.decode(errors='replace')!r})"


class Pull(_ZmqSource):
    """A ZMQ PULL socket: every message pushed to it enters the flow (``sk.pull``).

    A source reading a ZMQ PULL socket: each message (its last frame, JSON) enters the flow.

    Connects to ``addr`` (``bind=True`` binds it). ``concurrency`` messages go through
    the flow at once (so their order is not kept, as with any PUSH/PULL fan-out); when
    the ``queue`` is full, reading stops and ZMQ's high-water mark (``hwm``) makes the
    sender wait: a slow stage slows the sender down, and nothing is dropped.

    Examples
    --------
    >>> import svckit as sk
    >>> sk.pull("tcp://127.0.0.1:5557")
    <Source pull('tcp://127.0.0.1:5557')>
    """

    via = "pull"
    kind_name = "PULL"

    def __init__(
        self,
        addr: str,
        *,
        bind: bool = False,
        hwm: int = 1000,
        queue: int = 1000,
        concurrency: int = 32,
        name: str | None = None,
    ) -> None:
        super().__init__(addr, bind=bind, hwm=hwm, queue=queue, concurrency=concurrency, name=name or "pull")

    @property
    def kind(self) -> int:
        import zmq

        return zmq.PULL

    def describe(self) -> str:
        return f"pull({self.addr!r})"


def every(seconds: float, fn: Callable[[], Any], *, name: str | None = None, output: str | None = None) -> Every:
    """A source that calls ``fn()`` every ``seconds`` once served (the first call at once).

    ``fn`` takes no arguments; a sync ``fn`` runs in the worker pool, an ``async`` one on
    the runtime loop, so neither blocks a cell. A returned ``dict`` enters the flow as a
    message, ``None`` emits nothing, any other value goes under ``output`` (default: the
    function's name). An exception is counted and shown, and the ticks go on, unless it
    is ``sk.Fatal``. A tick waits while the flow is still busy with earlier ones.

    Examples
    --------
    >>> import itertools
    >>> import svckit as sk
    >>> from svckit.testing import wait_for
    >>> counter = itertools.count(1)
    >>> def tick():
    ...     return {"n": next(counter)}
    >>> flow = sk.every(0.05, tick) >> sk.service(lambda n: n * n, name="square")
    >>> srv = sk.serve(flow, name="squares")
    >>> _ = wait_for(lambda: len(srv.outputs) >= 3)
    >>> srv.outputs[["n", "square"]].head(3).values.tolist()
    [[1, 1], [2, 4], [3, 9]]
    >>> srv.stop()
    """
    return Every(seconds, fn, name=name, output=output)


#: ``sk.subscribe(addr, topic)`` and ``sk.pull(addr)`` make the source classes themselves.
subscribe = Subscribe
pull = Pull
