"""Pipelines: a served source running. The bound source produces into a bounded queue;
consumer tasks pass each message through the request path, as a request without a reply.

What happens when the queue is full (a stage slower than the source):

- ``pull``: the source stops reading, ZMQ's high-water mark fills and the sender waits;
  nothing is lost.
- ``every`` and ``loop()``: the next tick waits (a sync ``loop()``'s ``emit`` waits too);
  an ``async`` loop's ``emit`` drops the message, counted.
- ``subscribe``: the message is dropped and counted (PUB/SUB keeps the freshest data).

Re-serving a flow whose ``pull`` or ``subscribe`` reads the same socket stops the old
pipeline without closing that socket: the messages it had queued go back to the source
and the new pipeline takes both over (``Pipeline.stop(successor=...)``, ``open_pipeline
(previous=...)``), so the peer stays connected and nothing is lost. Stopping counts every
message read and not handled as dropped (see ``sources.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .callables import is_async_callable
from .codec import encode
from .errors import BadResult, Fatal, WiringError
from .middleware import Request
from .pool import resolve
from .request import RequestPath
from .runtime import Runtime, batcher
from .service import Service
from .sources import Source
from .state import State

__all__ = ["Batcher", "Pipeline", "open_pipeline", "source_of"]

logger = logging.getLogger(__name__)

#: The longest a pipeline's consumer goes on taking queued messages without letting the loop turn (s).
TURN = 0.005


class Pipeline:
    """One served source: its producer task, a bounded queue, and consumer tasks."""

    def __init__(self, path: RequestPath, source: Service, rt: Runtime) -> None:
        self.path = path
        self.source = source
        self.runtime = rt
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
        self._turn = 0.0  # when this turn's budget for taking queued messages began (loop time)
        self._turn_next = False

    def drop(self, count: int = 1, size: int = 0) -> None:
        """Count messages the source could not queue (a full queue), with a traffic row."""
        self.path.metrics.drop(count, self.via, self.path.name, size)

    @property
    def max_body(self) -> int:
        """The largest message the source takes in (the served thing's ``max_body``)."""
        return self.path.limits.max_body

    @property
    def read_timeout(self) -> float:
        """Seconds a connection to a bound source has to finish its ZMQ handshake."""
        return self.path.limits.read_timeout

    def pending(self) -> int:
        """Messages taken in but not finished: held by the source, queued or being handled."""
        backlog = self.source.backlog if isinstance(self.source, Source) else 0
        return self.queue.qsize() + len(self._busy) + backlog

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
            raise RuntimeError(f"the source of {self.path.name!r} ended at once")
        self._consumers = [loop.create_task(self._consume(i)) for i in range(self.concurrency)]

    async def stop(self, drain: bool, timeout: float, successor: Service | None = None) -> bool:
        """Stop producing and let the messages in flight finish (at most ``timeout`` s).

        With ``successor``, the node served next (a re-serve), whose source can take over
        this one's socket (``Source.fits``): the socket stays open, the queued messages go
        back to the source ahead of what it held, and True is returned; ``open_pipeline``
        then hands all of it on. Otherwise the socket is released first, the queue is
        handled (``drain``, at most ``timeout`` s), and every message read but not handled
        (queued, held, or left on the socket) is counted as dropped. Idempotent.
        """
        source = self.source
        after = source_of(successor) if successor is not None else None
        keep = isinstance(after, Source) and isinstance(source, Source) and after.fits(source)
        if keep or not drain:
            self.stopping = True  # consumers finish the message in hand and take no more
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.cancel()
            with contextlib.suppress(BaseException):
                await producer
        if not isinstance(source, Source):
            source.__dict__.pop("_emit_hook", None)
        elif not keep:
            await source.close()
        if drain and not keep:
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
        left: list[bytes] = []
        queue = self.queue
        while not queue.empty():
            left.append(queue.get_nowait())
            queue.task_done()
        if keep:
            assert isinstance(source, Source)
            source.hold(left)
            return True
        if left:
            self.drop(len(left), sum(map(len, left)))
            logger.info("%r stopped with %d queued messages not processed", self.path.name, len(left))
        return False

    # -- consuming -----------------------------------------------------------------
    async def _started(self) -> None:
        # Serving sets RUNNING just after the pipeline starts: hold messages until then.
        while self.path.state is State.STARTING:
            await asyncio.sleep(0.001)

    async def _consume(self, index: int) -> None:
        path, queue, via = self.path, self.queue, self.via
        if self.concurrency > 1:
            batcher.set(self.batcher)  # this task's context only
        await self._started()
        counted = isinstance(self.source, Source) or getattr(self.source, "_params", None) is None
        while not self.stopping:
            if queue.empty():
                raw = await queue.get()
            elif self._spent():
                # a backlog of messages whose stages all run on the loop (async def, or def
                # stages proven quick) never waits: let everything else the runtime serves run
                await asyncio.sleep(0)
                continue
            else:
                raw = queue.get_nowait()
            if counted:  # what the source emitted, drawn on its box in flow pictures
                self.source.calls += 1
            self._busy.add(index)
            try:
                await path.handle(Request(via, path.name, raw), reply=False)
            finally:
                self._busy.discard(index)
                queue.task_done()

    def _spent(self) -> bool:
        """True once this pipeline's consumers, all together, have taken queued messages for
        ``TURN`` s of this turn of the loop; the next turn starts a new budget (a callback
        scheduled now runs before the consumers woken in it)."""
        loop = self.runtime.loop
        if loop.time() - self._turn <= TURN:
            return False
        if not self._turn_next:
            self._turn_next = True
            loop.call_soon(self._new_turn)
        return True

    def _new_turn(self) -> None:
        self._turn = self.runtime.loop.time()
        self._turn_next = False

    # -- producing: every() and Service.loop() ---------------------------------------
    async def tick(self, fn: Callable[[], Any], seconds: float, output: str) -> None:
        """Call ``fn`` every ``seconds`` (fixed rate, missed ticks skipped); queue what it returns."""
        rt, metrics, path = self.runtime, self.path.metrics, self.path
        is_async = is_async_callable(fn)
        await self._started()
        start = time.monotonic()
        while True:
            if path.state is State.RUNNING:
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
        name = getattr(self.source, "name", self.path.name)
        self.path.metrics.error(type(exc).__name__, str(getattr(exc, "message", None) or exc), name, time.time())
        if isinstance(exc, Fatal):
            self.path.fail(exc)
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
            self._loop_error(BadResult(f"{self.source.name!r} emitted a message that is not JSON: {exc}."))
            return None

    def _emit(self, msg: dict[str, Any]) -> None:
        """``Service.emit`` while served: from a worker thread it waits for room in the queue."""
        rt = self.runtime
        if self.stopping or self._producer is None:
            self.drop(1)
            return
        if rt.in_runtime():
            raw = self._encode(msg)
            if raw is None:
                return
            try:
                self.queue.put_nowait(raw)
            except asyncio.QueueFull:
                self.drop(1, len(raw))
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
        self.drop(1, len(raw))


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
        for fn, args, future in batch:
            if future.done():  # its caller has gone (a served timeout): not run, as the pool does
                results.append((False, asyncio.CancelledError()))
                continue
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


def _messages(result: Any, output: str) -> list[dict[str, Any]]:
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [dict(result)]
    return [{output: result}]


def source_of(node: Service) -> Service:
    """The source a flow starts with (its first stage, through nested flows)."""
    while True:
        kind, parts = node.children()
        if kind != "sequence":
            return node
        node = parts[0][1]


async def open_pipeline(path: RequestPath, node: Service, rt: Runtime, previous: Pipeline | None = None) -> Pipeline:
    """Start the pipeline of the bound source node ``node`` (on the runtime loop).

    ``previous`` is the last generation's pipeline, stopped with ``successor=node``: its
    source's socket and backlog go to ``node``'s source when it fits, else it is closed.
    """
    source = source_of(node)
    if previous is not None:
        old = previous.source
        if isinstance(source, Source) and isinstance(old, Source) and source.fits(old):
            source.take_over(old)
        else:
            await previous.stop(drain=False, timeout=1.0)
    if not isinstance(source, Source) and not callable(getattr(source, "loop", None)):
        raise WiringError(f"{path.name!r} is a source but {source.name!r} has no loop(); nothing can run it.")
    pipe = Pipeline(path, source, rt)
    try:
        await pipe.start()
    except BaseException:
        await pipe.stop(drain=False, timeout=1.0)
        raise
    return pipe
