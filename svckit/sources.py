"""Sources: ``every``, ``subscribe``, ``pull`` and ``Service.loop()``, run as pipelines once served.

A source stands first in a flow. Served, it becomes a running pipeline: the source
produces messages into a bounded queue, and consumer tasks pass each one through
``Served.feed`` (the path a request takes, without encoding a reply nobody reads), so
pipeline messages are counted in the served metrics and show in
``Served.outputs``/``Served.traffic`` like requests.

What happens when the queue is full (a stage slower than the source):

- ``pull``: the source stops reading, ZMQ's high-water mark fills and the sender waits;
  nothing is lost.
- ``every`` and ``loop()``: the next tick waits (a sync ``loop()``'s ``emit`` waits too);
  an ``async`` loop's ``emit`` drops the message, counted.
- ``subscribe``: the message is dropped and counted (PUB/SUB keeps the freshest data).

A request to a source pipeline's action (HTTP or ZMQ) enters the flow at the top like
an emitted message does: through the source's ``process()`` when it has one, otherwise
straight into the next stage. Its ``@sk.handle`` actions are served as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import Fatal, WiringError
from .runtime import batcher, resolve
from .served import State, encode
from .service import Service

if TYPE_CHECKING:
    import zmq
    import zmq.asyncio

    from .runtime import Runtime
    from .served import Served

__all__ = ["Every", "Pull", "Source", "Subscribe", "every", "pull", "start_pipeline", "stop_pipeline", "subscribe"]

logger = logging.getLogger(__name__)

_pipelines: weakref.WeakKeyDictionary[Served, Pipeline] = weakref.WeakKeyDictionary()


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

    async def produce(self, pipe: Pipeline) -> None:  # pragma: no cover - overridden
        """Open what it reads from, set ``pipe.opened``, then put messages into ``pipe.queue``."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what ``produce`` opened (on the runtime loop)."""

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

    async def produce(self, pipe: Pipeline) -> None:
        pipe.opened.set()
        await pipe.tick(self.fn, self.seconds, self.output)


class _ZmqSource(Source):
    kind_name = "SUB"
    #: True: a full queue drops (counted); False: reading waits for room.
    drops = False

    def __init__(self, addr: str, *, bind: bool, hwm: int, queue: int, concurrency: int, name: str | None) -> None:
        from .transports.zmq import check_address

        super().__init__(name=name)
        self.addr = check_address(addr, f"sk.{self.via}()")
        self.bind = bind
        self.hwm = hwm
        self.queue_size = max(1, queue)
        self.concurrency = max(1, concurrency)
        self.address: str | None = None
        self._asock: zmq.asyncio.Socket | None = None

    def __repr__(self) -> str:
        return f"<Source {self.describe()}>"

    def _configure(self, sock: zmq.Socket[Any]) -> None:
        """Socket options before binding or connecting."""

    async def open(self, rt: Runtime) -> tuple[zmq.asyncio.Socket, zmq.Socket[bytes]]:
        from .transports.zmq import bind, connect, make_socket

        asock, sock = make_socket(rt, self.kind, self.hwm)
        try:
            self._configure(sock)
            if self.bind:
                self.address = bind(sock, self.addr, self.kind_name)
            else:
                connect(sock, self.addr, f"sk.{self.via}()")
                self.address = self.addr
        except BaseException:
            asock.close(linger=0)
            raise
        self._asock = asock
        return asock, sock

    async def close(self) -> None:
        from .transports.zmq import close_bound

        asock, self._asock = self._asock, None
        if asock is not None and not asock.closed:
            await close_bound(asock, self.address if self.bind else None)

    @property
    def kind(self) -> int:
        raise NotImplementedError

    async def produce(self, pipe: Pipeline) -> None:
        from .transports.zmq import Reader

        _, sock = await self.open(pipe.runtime)
        reader = Reader(sock)
        pipe.opened.set()
        queue, drop = pipe.queue, self.drops
        try:
            async for frames in reader:
                raw = frames[-1]
                if not queue.full():
                    queue.put_nowait(raw)
                elif drop:
                    pipe.served.metrics.drop(1, self.via, pipe.served.name, len(raw))
                else:
                    await queue.put(raw)  # backpressure: stop reading until the flow catches up
        finally:
            reader.close()  # before close() closes the socket


class Subscribe(_ZmqSource):
    """A ZMQ SUB socket: messages published under ``topic`` enter the flow; see ``subscribe``.

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

    def describe(self) -> str:
        return f"subscribe({self.addr!r}, {self.topic.decode(errors='replace')!r})"


class Pull(_ZmqSource):
    """A ZMQ PULL socket: every message pushed to it enters the flow; see ``pull``.

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


def subscribe(
    addr: str,
    topic: str = "",
    *,
    bind: bool = False,
    hwm: int = 1000,
    queue: int = 1000,
    concurrency: int = 1,
    name: str | None = None,
) -> Subscribe:
    """A source reading a ZMQ PUB: frames ``[topic, json]`` (the last frame is the message).

    ``topic`` is a prefix (``""``: everything). Connects to ``addr`` (``bind=True`` binds
    it instead; ``tcp://127.0.0.1:0`` then picks a free port, read back from
    ``.address`` once served). When the flow cannot keep up, messages past the ``queue``
    bound are dropped and counted in ``Served.status()["dropped"]`` and ``Served.traffic``.
    """
    return Subscribe(addr, topic, bind=bind, hwm=hwm, queue=queue, concurrency=concurrency, name=name)


def pull(
    addr: str,
    *,
    bind: bool = False,
    hwm: int = 1000,
    queue: int = 1000,
    concurrency: int = 32,
    name: str | None = None,
) -> Pull:
    """A source reading a ZMQ PULL socket: each message (its last frame, JSON) enters the flow.

    Connects to ``addr`` (``bind=True`` binds it). ``concurrency`` messages go through
    the flow at once (so their order is not kept, as with any PUSH/PULL fan-out); when
    the ``queue`` is full, reading stops and ZMQ's high-water mark (``hwm``) makes the
    sender wait: a slow stage slows the sender down, and nothing is dropped.
    """
    return Pull(addr, bind=bind, hwm=hwm, queue=queue, concurrency=concurrency, name=name)


# -- the running pipeline ------------------------------------------------------------


class Pipeline:
    """One served source: its producer task, a bounded queue, and consumer tasks."""

    def __init__(self, served: Served, source: Service) -> None:
        self.served = served
        self.source = source
        self.runtime = served.runtime
        if isinstance(source, Source):
            self.via = source.via
            size, self.concurrency = source.queue_size, source.concurrency
        else:
            self.via, size, self.concurrency = "loop", 100, 1
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.opened = asyncio.Event()
        self.stopping = False
        self._producer: asyncio.Task[None] | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._busy: set[int] = set()
        self.batcher = Batcher(self.runtime)

    # -- lifecycle (on the runtime loop) ---------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        source = self.source
        if isinstance(source, Source):
            self._producer = loop.create_task(source.produce(self))
        else:
            source._emit_hook = self._emit  # type: ignore[attr-defined]
            self._producer = loop.create_task(self._loop_service(source))
            self.opened.set()
        waiter = loop.create_task(self.opened.wait())
        await asyncio.wait([waiter, self._producer], return_when=asyncio.FIRST_COMPLETED)
        if self._producer.done():  # it failed to open its socket
            waiter.cancel()
            self._producer.result()
            raise RuntimeError(f"the source of {self.served.name!r} ended at once")
        self._consumers = [loop.create_task(self._consume(i)) for i in range(self.concurrency)]

    async def stop(self, drain: bool, timeout: float) -> None:
        """Stop producing, release the source's socket, then finish the queue (``drain``)
        or just the messages in flight; what is left is counted as dropped."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.cancel()
            with contextlib.suppress(BaseException):
                await producer
        if isinstance(self.source, Source):
            await self.source.close()
        else:
            self.source.__dict__.pop("_emit_hook", None)
        if drain:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), timeout)
        self.stopping = True
        idle = [t for i, t in enumerate(self._consumers) if i not in self._busy]
        for task in idle:
            task.cancel()
        if self._consumers:
            _, pending = await asyncio.wait(self._consumers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._consumers, return_exceptions=True)
        self._consumers = []
        left = self.queue.qsize()
        if left:
            self.served.metrics.drop(left, self.via, self.served.name)
            logger.info("%r stopped with %d queued messages not processed", self.served.name, left)

    # -- consuming -----------------------------------------------------------------
    async def _started(self) -> None:
        # Served sets RUNNING just after the pipeline starts: hold messages until then.
        while self.served.state is State.STARTING:
            await asyncio.sleep(0.001)

    async def _consume(self, index: int) -> None:
        served, queue, via = self.served, self.queue, self.via
        if self.concurrency > 1:
            batcher.set(self.batcher)  # this task's context only
        await self._started()
        counted = isinstance(self.source, Source) or getattr(self.source, "_params", None) is None
        while not self.stopping:
            raw = await queue.get()
            if counted:  # what the source emitted, drawn on its box in flow pictures
                self.source.calls += 1
            self._busy.add(index)
            try:
                await served.feed(raw, via)
            finally:
                self._busy.discard(index)
                queue.task_done()

    # -- producing: every() and Service.loop() ---------------------------------------
    async def tick(self, fn: Callable[[], Any], seconds: float, output: str) -> None:
        """Call ``fn`` every ``seconds`` (fixed rate, missed ticks skipped); queue what it returns."""
        rt, metrics, served = self.runtime, self.served.metrics, self.served
        is_async = inspect.iscoroutinefunction(fn)
        await self._started()
        start = time.monotonic()
        while True:
            if served.state is State.RUNNING:
                metrics.iterations += 1
                try:
                    result = await fn() if is_async else await rt.blocking(fn)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # SystemExit or KeyboardInterrupt too: the ticks go on
                    self._loop_error(exc)
                else:
                    for msg in _messages(result, output):
                        await self._put(msg)
            now = time.monotonic()
            missed = int((now - start) / seconds) + 1
            start += missed * seconds
            await asyncio.sleep(max(0.0, start - now))

    async def _loop_service(self, svc: Service) -> None:
        loop_fn = svc.loop  # type: ignore[attr-defined]
        await self.tick(loop_fn, float(getattr(svc, "interval", 1.0)), svc.output)

    def _loop_error(self, exc: BaseException) -> None:
        name = getattr(self.source, "name", self.served.name)
        self.served.metrics.error(type(exc).__name__, str(getattr(exc, "message", None) or exc), name, time.time())
        if isinstance(exc, Fatal):
            self.served._fail(exc)
        else:
            logger.info("the loop of %r raised %s: %s", name, type(exc).__name__, exc)

    async def _put(self, msg: dict[str, Any]) -> None:
        raw = self._encode(msg)
        if raw is not None:
            await self.queue.put(raw)

    def _encode(self, msg: dict[str, Any]) -> bytes | None:
        try:
            return encode(msg)
        except (TypeError, ValueError) as exc:
            from .errors import BadResult

            self._loop_error(BadResult(f"{self.source.name!r} emitted a message that is not JSON: {exc}."))
            return None

    def _emit(self, msg: dict[str, Any]) -> None:
        """``Service.emit`` while served: from a worker thread it waits for room in the queue."""
        rt = self.runtime
        if self.stopping or self._producer is None:
            self.served.metrics.drop(1, self.via, self.served.name)
            return
        if rt.in_runtime():
            raw = self._encode(msg)
            if raw is None:
                return
            try:
                self.queue.put_nowait(raw)
            except asyncio.QueueFull:
                self.served.metrics.drop(1, self.via, self.served.name, len(raw))
            return
        future = asyncio.run_coroutine_threadsafe(self._put_while_running(msg), rt.loop)
        future.result()

    async def _put_while_running(self, msg: dict[str, Any]) -> None:
        raw = self._encode(msg)
        if raw is None:
            return
        while not self.stopping and self._producer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.put(raw), 0.25)
                return
        self.served.metrics.drop(1, self.via, self.served.name, len(raw))


class Batcher:
    """Coalesces the worker-pool calls a pipeline's consumers make in one turn of the loop.

    A hop to the worker pool cost ~100 us here (two thread wake-ups), far more than a
    small sync stage: pipeline messages ran at 5-10 k/s with one hop each. Calls made
    in the same turn of the loop run one after another in a single pool job instead.
    While calls are slow (over ``SLOW`` s on average) they go to the pool one by one
    again, so a slow stage still runs side by side with itself.
    """

    SLOW = 0.002

    def __init__(self, rt: Runtime) -> None:
        self.loop = rt.loop
        self.pool = rt.pool
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self.average = 0.0

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self.average > self.SLOW:
            return self.pool.run(self.loop, self._timed, fn, args)
        future: asyncio.Future[Any] = self.loop.create_future()
        if not self.pending:
            self.loop.call_soon(self._dispatch)
        self.pending.append((fn, args, future))
        return future

    def _timed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.average = 0.8 * self.average + 0.2 * (time.perf_counter() - start)

    def _dispatch(self) -> None:
        batch, self.pending = self.pending, []
        job = self.pool.run(self.loop, self._run, batch)
        job.add_done_callback(lambda done: self._resolve(batch, done))

    def _run(self, batch: list[Any]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        start = time.perf_counter()
        for fn, args, _ in batch:
            try:
                results.append((True, fn(*args)))
            except BaseException as exc:  # handed to the awaiting coroutine, as run_in_executor does
                results.append((False, exc))
        self.average = 0.8 * self.average + 0.2 * (time.perf_counter() - start) / len(batch)
        return results

    @staticmethod
    def _resolve(batch: list[Any], done: asyncio.Future[list[tuple[bool, Any]]]) -> None:
        if done.cancelled() or done.exception() is not None:
            exc = asyncio.CancelledError() if done.cancelled() else done.exception()
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)  # type: ignore[arg-type]
            return
        for (_, _, future), (ok, value) in zip(batch, done.result(), strict=True):
            resolve(future, ok, value)


def pending(served: Served) -> int:
    """Messages a served pipeline has taken in but not finished: queued or being handled."""
    pipe = _pipelines.get(served)
    return 0 if pipe is None else pipe.queue.qsize() + len(pipe._busy)


def _messages(result: Any, output: str) -> list[dict[str, Any]]:
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [dict(result)]
    return [{output: result}]


def _source_of(node: Service) -> Service:
    from .flow import Flow

    while isinstance(node, Flow):
        node = node.stages[0]
    return node


def start_pipeline(served: Served) -> None:
    """Start the source of ``served`` (called by ``Served`` from the caller's thread)."""
    source = _source_of(served.node)
    if not isinstance(source, Source) and not callable(getattr(source, "loop", None)):
        raise WiringError(f"{served.name!r} is a source but {source.name!r} has no loop(); nothing can run it.")
    pipe = served.runtime.call(_make(served, source), timeout=10)
    _pipelines[served] = pipe


async def _make(served: Served, source: Service) -> Pipeline:
    pipe = Pipeline(served, source)
    try:
        await pipe.start()
    except BaseException:
        await pipe.stop(drain=False, timeout=1.0)
        raise
    return pipe


def stop_pipeline(served: Served, timeout: float = 5.0) -> None:
    """Stop the source of ``served``; drain its queue when it is being replaced, not stopped."""
    pipe = _pipelines.pop(served, None)
    if pipe is None or not served.runtime.running:
        return
    drain = served.state is State.RUNNING
    served.runtime.call(pipe.stop(drain, timeout), timeout=2 * timeout + 5)
