"""Sinks: ``publish`` (ZMQ PUB), ``push`` (ZMQ PUSH), ``post`` (HTTP) and ``table`` (a DataFrame).

A sink is a stage that sends the message somewhere and returns ``None``, so the message
passes on unchanged: ``parse >> sk.publish(port=0, topic="words") >> count`` works.

- ``publish`` and ``push`` open their socket when the flow is served and close it when it
  stops; they send from the runtime loop without ever blocking it. The socket belongs to
  the bound copy serving runs, so one ``publish`` object in two served flows gives each
  its own socket; ``.address``, ``.port``, ``.subscribers`` and ``.dropped`` of the object
  you composed tell those of the copy served last (``.dropped``: of all its copies).
  Calling a flow that holds one right in a cell raises ``StateError``: serve it first.
- ``post`` runs in the worker pool (never on the loop) and works in a cell too.
- ``table`` works everywhere: rows go into a named, bounded table read as a DataFrame.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .codec import encode
from .errors import RemoteError, ServiceUnavailable, StateError, WiringError
from .params import check_name
from .running import Binder, copies_of
from .service import Service

if TYPE_CHECKING:
    import requests
    import zmq
    import zmq.asyncio

    from .zmqnet import SharedSocket

__all__ = ["Post", "Publish", "Push", "Table", "post", "publish", "push", "table", "tables"]


class _ZmqSink(Service):
    """A stage that sends each message on a ZMQ socket living on the runtime."""

    label = "zmq"

    def __init__(self, *, hwm: int, name: str) -> None:
        super().__init__(name=name)
        self.hwm = hwm
        self._dropped = 0
        self._metrics: Any = None
        self._shared: SharedSocket | None = None
        self._own: zmq.asyncio.Socket | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._address: str | None = None

    async def process(self, **message: Any) -> None:
        """Send ``message`` (only while served; see the class docstring)."""
        await self.arun(message, None)

    # -- serving: the bound copy opens and closes its socket on the runtime loop ---------------
    def _bound(self, binder: Binder) -> None:
        self._dropped = 0
        self._metrics = binder.metrics
        self._shared = self._own = self._sock = None
        self._address = None

    async def open(self, binder: Binder, rt: Any) -> None:
        if self._sock is None:
            await self._open(rt, binder.owner)

    async def _open(self, rt: Any, owner: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        own, self._own = self._own, None
        self._sock = None
        if shared is not None:
            await shared.release()
        if own is not None and not own.closed:
            own.close()

    # -- facts -------------------------------------------------------------------------
    def _served_copy(self) -> _ZmqSink:
        """This, when it is a bound copy; else the copy of it served last (or this)."""
        if self._origin is None:
            for copy in reversed(copies_of(self)):
                if copy._sock is not None:
                    return copy  # type: ignore[return-value]
        return self

    @property
    def address(self) -> str | None:
        """The address bound or connected to while served (``tcp://127.0.0.1:PORT``), else None."""
        served = self._served_copy()
        return served._address if served._sock is not None else None

    @property
    def port(self) -> int | None:
        """The TCP port of ``address``, or None."""
        from .zmqnet import split_address

        parts = split_address(self.address) if self.address else None
        return parts[1] if parts else None

    @property
    def dropped(self) -> int:
        """Messages dropped because a peer was behind (of every served copy, on the object you composed)."""
        if self._origin is None:
            return self._dropped + sum(c._dropped for c in copies_of(self))  # type: ignore[attr-defined]
        return self._dropped

    def _not_served(self) -> StateError:
        return StateError(
            f"{self.describe()} sends only from a served flow: serve it with sk.serve(flow) "
            "(in a cell, sinks like sk.table work without serving)."
        )

    def _drop(self, action: str, size: int) -> None:
        self._dropped += 1
        if self._metrics is not None:
            self._metrics.drop(1, self.label, action, size)


class Publish(_ZmqSink):
    """Publish each message on a ZMQ PUB socket as frames ``[topic, json]``; see ``publish``.

    Examples
    --------
    >>> import svckit as sk
    >>> pub = sk.publish(port=0, topic="words")
    >>> pub
    <Sink publish('words')>
    >>> srv = sk.serve(sk.service(lambda text: text.split(), name="split") >> pub, name="splitter", zmq=0)
    >>> pub.address.startswith("tcp://127.0.0.1:")
    True
    >>> srv.stop(); pub.address is None
    True
    """

    label = "pub"

    def __init__(
        self,
        port: int = 0,
        topic: str = "",
        *,
        host: str = "127.0.0.1",
        hwm: int = 1000,
        drop: str = "all",
        name: str | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise WiringError(f"publish(port={port!r}): give a port number from 0 to 65535 (0 picks a free one).")
        if not isinstance(topic, str):
            raise WiringError(f"publish(topic={topic!r}): the topic is a str.")
        if drop not in ("all", "slow"):
            raise WiringError(
                f"publish(drop={drop!r}): 'all' drops a message for every subscriber when one is behind "
                "(counted), 'slow' only for the subscriber behind (not counted)."
            )
        super().__init__(hwm=hwm, name=name or "publish")
        self.drop = drop
        self.host = host
        self.topic = topic
        self._topic = topic.encode()
        self._want = port

    @property
    def subscribers(self) -> int:
        """Subscriptions the PUB socket has seen (and not seen withdrawn); 0 when not served."""
        shared = self._served_copy()._shared
        return int(shared.state.get("subscribers", 0)) if shared is not None else 0

    async def _open(self, rt: Any, owner: str) -> None:
        import zmq

        from .zmqnet import SharedSocket, tcp_address

        counted = self.drop == "all"
        self._shared = await SharedSocket.acquire(
            rt,
            zmq.XPUB,
            "pub",
            tcp_address(self.host, self._want or "*"),
            lambda shared: _watch_subscriptions(shared, counted),
            self.hwm,
            owner=owner,
        )
        self._sock = self._shared.sock
        self._address = self._shared.address
        if not self._want:  # keep the port it got, so a restart publishes on the same address
            self._want = self.port or 0

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        import zmq

        sock = self._sock
        if sock is None:
            raise self._not_served()
        body = encode(msg)
        try:
            sock.send_multipart([self._topic, body], zmq.NOBLOCK)
        except zmq.Again:  # drop="all" (XPUB_NODROP): a subscriber's queue is full, so nobody gets it
            self._drop(self.topic, len(body))

    def describe(self) -> str:
        return f"publish({self.topic!r})"

    def __repr__(self) -> str:
        return f"<Sink {self.describe()}>"


def zmq_pollout() -> int:
    import zmq

    return int(zmq.POLLOUT)


def _watch_subscriptions(shared: SharedSocket, counted: bool) -> None:
    import zmq

    sock = shared.sock
    if counted:  # a full subscriber raises EAGAIN, so drops can be counted
        sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription is passed up, so they can be counted
    shared.state["subscribers"] = 0
    shared.tasks.append(asyncio.get_running_loop().create_task(_count_subscriptions(shared)))


async def _count_subscriptions(shared: SharedSocket) -> None:
    import zmq

    asock, sock, state = shared.asock, shared.sock, shared.state
    while True:
        await asock.poll()  # POLLIN
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                return
            if frame[:1] == b"\x01":
                state["subscribers"] += 1
            elif frame[:1] == b"\x00":
                state["subscribers"] = max(0, state["subscribers"] - 1)


class Push(_ZmqSink):
    """Push each message (one JSON frame) on a ZMQ PUSH socket; see ``push``.

    Examples
    --------
    >>> import svckit as sk
    >>> sk.push("tcp://127.0.0.1:5558")
    <Sink push('tcp://127.0.0.1:5558')>
    """

    label = "push"

    def __init__(self, addr: str, *, bind: bool = False, hwm: int = 1000, name: str | None = None) -> None:
        from .zmqnet import check_address

        super().__init__(hwm=hwm, name=name or "push")
        self.addr = check_address(addr, "sk.push()")
        self.bind = bind
        self._want = addr
        self._wait: zmq.asyncio.Socket | None = None
        self._outbox: deque[bytes] = deque()
        self._flushing = False
        self._room = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None

    def _bound(self, binder: Binder) -> None:
        super()._bound(binder)
        self._wait = None
        self._outbox = deque()
        self._flushing = False
        self._room = asyncio.Event()
        self._waiter = None

    async def _open(self, rt: Any, owner: str) -> None:
        import zmq

        from .zmqnet import SharedSocket, connect, make_socket

        if self.bind:
            self._shared = await SharedSocket.acquire(rt, zmq.PUSH, "push", self._want, None, self.hwm, owner=owner)
            self._sock, self._wait, self._address = self._shared.sock, self._shared.asock, self._shared.address
            self._want = self._address  # keep the port it got across restarts
        else:
            own, sock = make_socket(rt, zmq.PUSH, self.hwm)
            # Connected out (no port to free): give queued messages a second to leave on stop.
            own.setsockopt(zmq.LINGER, 1000)
            try:
                connect(sock, self.addr, "sk.push()")
            except BaseException:
                own.close(linger=0)
                raise
            self._own, self._sock, self._wait, self._address = own, sock, own, self.addr
        self._room = asyncio.Event()
        self._room.set()
        self._outbox.clear()
        self._flushing = False

    async def close(self) -> None:
        if self._outbox and self._sock is not None:
            self._flush()  # what is still queued goes out before the socket closes (best effort)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.cancel()
        self._room.set()
        await super().close()

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        if self._sock is None:
            raise self._not_served()
        # Sends made in one turn of the loop go out together: one NOBLOCK send at a time cost
        # ~100 us here (a wake-up of ZMQ's I/O thread each), a burst a few us each (DESIGN §3).
        outbox = self._outbox
        outbox.append(encode(msg))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)
        if len(outbox) >= self.hwm:  # the peer is behind: hold this message's flow back
            self._room.clear()
            await self._room.wait()

    def _flush(self) -> None:
        import zmq

        sock, outbox = self._sock, self._outbox
        if sock is None:
            self._flushing = False
            return
        try:
            while outbox:
                sock.send(outbox[0], zmq.NOBLOCK)
                outbox.popleft()
        except zmq.Again:
            # The peer's high-water mark is reached: wait for room, then go on.
            self._waiter = asyncio.get_running_loop().create_task(self._flush_later())
            return
        self._flushing = False
        self._room.set()

    async def _flush_later(self) -> None:
        assert self._wait is not None
        while self._sock is not None and not self._wait.closed:
            ready = await self._wait.poll(100, zmq_pollout())  # type: ignore[call-arg]
            if ready:
                break
        self._flush()

    def describe(self) -> str:
        return f"push({self.addr!r})"

    def __repr__(self) -> str:
        return f"<Sink {self.describe()}>"


class Post(Service):
    """POST each message as JSON to a URL; see ``post``.

    Examples
    --------
    >>> import svckit as sk
    >>> sk.post("http://127.0.0.1:8000/ingest")
    <Sink post('http://127.0.0.1:8000/ingest')>
    """

    def __init__(
        self, url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None, name: str | None = None
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise WiringError(f"post() needs an http:// or https:// URL, got {url!r}.")
        super().__init__(name=name or "post")
        self.url = url
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._local = threading.local()

    def _bound(self, binder: Binder) -> None:
        self._local = threading.local()  # its own sessions

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.trust_env = False  # proxy look-ups on every call halve the throughput (DESIGN §3)
            self._local.session = session
        return session

    def process(self, **message: Any) -> None:
        """POST ``message``; a failed POST raises, so it is counted like any stage error."""
        import requests

        try:
            r = self._session().post(self.url, data=encode(message), headers=self.headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"{self.describe()}: cannot reach {self.url} ({type(exc).__name__}).") from exc
        if r.status_code >= 400:
            raise RemoteError(
                f"{self.describe()}: {self.url} answered {r.status_code}: {r.text[:200]}", type="HTTPError"
            )

    def describe(self) -> str:
        return f"post({self.url!r})"

    def __repr__(self) -> str:
        return f"<Sink {self.describe()}>"


class _Rows:
    """A table's rows and its count, behind one condition."""

    def __init__(self, keep: int) -> None:
        self.rows: deque[dict[str, Any]] = deque(maxlen=keep)
        self.added = 0
        self.cond = threading.Condition()


_tables: dict[str, Table] = {}
_tables_lock = threading.Lock()


class Table(Service):
    """Rows collected from a flow, read as a pandas DataFrame; see ``table``.

    Thread-safe; keeps the last ``keep`` rows.

    Examples
    --------
    >>> import svckit as sk
    >>> rows = sk.table("doctest_squares")
    >>> flow = sk.service(lambda x: x * x, name="square") >> rows
    >>> _ = flow(x=2); _ = flow(x=3)
    >>> rows.frame
       x  square
    0  2       4
    1  3       9
    >>> rows.clear()
    """

    def __init__(self, name: str, *, keep: int = 10_000, columns: list[str] | None = None) -> None:
        super().__init__(name=check_name(name, "table name"))
        self.keep = keep
        self.columns = list(columns) if columns is not None else None
        self._store = _Rows(keep)  # shared by the copies serving runs: one table, wherever it is used

    def process(self, **message: Any) -> None:
        """Add ``message`` as a row (only ``columns`` when given)."""
        if self.columns is not None:
            message = {k: message.get(k) for k in self.columns}
        store = self._store
        with store.cond:
            store.rows.append(message)
            store.added += 1
            store.cond.notify_all()

    @property
    def frame(self) -> Any:
        """The rows as a pandas DataFrame, oldest first."""
        import pandas as pd

        rows = self.rows
        if not rows:
            return pd.DataFrame(columns=self.columns or [])
        return pd.DataFrame.from_records(rows, columns=self.columns)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """A copy of the rows, oldest first."""
        with self._store.cond:
            return list(self._store.rows)

    @property
    def added(self) -> int:
        """Rows added since the table was made or cleared (older ones may have left ``rows``)."""
        return self._store.added

    def wait(self, count: int, timeout: float = 10.0) -> Table:
        """Wait until ``count`` rows were added; ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        store = self._store
        with store.cond:
            while store.added < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"table {self.name!r} got {store.added} of {count} rows in {timeout} s")
                store.cond.wait(left)
        return self

    def clear(self) -> None:
        """Forget every row."""
        store = self._store
        with store.cond:
            store.rows.clear()
            store.added = 0

    def __len__(self) -> int:
        return len(self._store.rows)

    def describe(self) -> str:
        return f"table({self.name!r})"

    def __repr__(self) -> str:
        return f"<Sink {self.describe()}>"

    def _repr_html_(self) -> str:
        return str(self.frame._repr_html_())


def publish(port: int = 0, topic: str = "", *, host: str = "127.0.0.1", hwm: int = 1000, drop: str = "all") -> Publish:
    """A sink publishing each message on a ZMQ PUB socket, as frames ``[topic, json]``.

    The socket binds ``host:port`` when the flow is served (``port=0`` picks a free one:
    read ``.address`` after serving) and closes when it stops. It never blocks. When a
    subscriber is more than ``hwm`` messages behind:

    - ``drop="all"`` (the default): the message is dropped for every subscriber, and
      counted in ``Served.status()["dropped"]``, in ``Served.traffic`` and in ``.dropped``.
      Nothing is lost without being counted, but one stalled subscriber costs the others
      messages too.
    - ``drop="slow"``: as a plain ZMQ PUB, only the subscriber that is behind misses it;
      ZMQ does not tell, so those drops are not counted.

    ``.subscribers`` tells how many subscriptions have arrived, so a notebook can wait
    for its subscriber before publishing (ZMQ drops what is published before that).
    """
    return Publish(port, topic, host=host, hwm=hwm, drop=drop)


def push(addr: str, *, bind: bool = False, hwm: int = 1000) -> Push:
    """A sink pushing each message (one JSON frame) to a ZMQ PULL peer at ``addr``.

    Connects to ``addr`` when served (``bind=True`` binds it). When the peer is ``hwm``
    messages behind, the flow waits for it (backpressure); nothing is dropped.
    """
    return Push(addr, bind=bind, hwm=hwm)


def post(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> Post:
    """A sink POSTing each message as JSON to ``url`` (from the worker pool, never the loop).

    A connection error or a 4xx/5xx answer raises, so it is counted and shown like any
    stage's error. Works in a cell too.
    """
    return Post(url, timeout=timeout, headers=headers)


def table(name: str, *, keep: int = 10_000, columns: list[str] | None = None) -> Table:
    """The output table called ``name`` (made on first use): a sink collecting rows.

    ``sk.table("prices")`` returns the same table each time, so a cell can read
    ``sk.table("prices").frame`` while a served flow fills it. ``keep`` and ``columns``
    apply when the table is made. ``sk.tables()`` lists them all.
    """
    with _tables_lock:
        found = _tables.get(name)
        if found is None:
            found = _tables[name] = Table(name, keep=keep, columns=columns)
        return found


def tables() -> dict[str, Table]:
    """Every output table made with ``sk.table``, by name."""
    with _tables_lock:
        return dict(_tables)
