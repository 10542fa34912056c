"""Scale-out: ``stage.on(executor)`` runs a stage's calls on a Dask cluster or a ``concurrent.futures`` executor.

``heavy.on(client, limit=8, retries=1)`` is a new stage (``heavy`` is left as it is): each
message is validated on the runtime loop as usual, then the plain function and the bound
keyword arguments go to the executor as one task, and the loop awaits it without
blocking. The task's return value merges into the message by the stage's own rules; an
exception raised in the task is the stage's error reply, its type and message kept.

Engines
-------
A ``distributed.Client`` (sync, as a notebook makes it): svckit opens an asynchronous
client of its own on the runtime loop, connected to the same scheduler, and submits there:
a sync client's futures can only be waited on from a thread (one blocked per task), and
its done-callbacks all run on one thread. Measured here (2 cores, a ``LocalCluster`` of
two worker processes, 500 tasks of ``x + 1``, 8 in flight): 4.0 ms a message through the
runtime's own asynchronous client, 7.0 ms waiting on the sync client's futures through
done-callbacks and the worker pool, 9.0 ms through its private coroutines. Each message is
its own task under a unique key (``<stage>-<uuid>``: never a cached or cancelled result of
an equal message), grouped under the stage's name on Dask's dashboard.

Any other ``concurrent.futures.Executor`` (a ``ProcessPoolExecutor``, a thread pool): the
call is ``executor.submit`` wrapped with ``asyncio.wrap_future``. A ``ProcessPoolExecutor``
gets the function pickled by value (cloudpickle), as Dask does, so a function defined in
a notebook after the pool started its processes still travels. A process pool is broken
for good once one of its processes dies: give ``on()`` a function that makes the
executor (``heavy.on(lambda: ProcessPoolExecutor(2))``) and svckit makes a fresh one when
that happens (and shuts it down at ``sk.shutdown()``).

What travels
------------
Functions defined in a notebook travel by value (cloudpickle), closures and globals they
use included. A large closure (a model, a table) is pickled again for every message: a
call whose function pickles to more than ``LARGE`` bytes is logged once, with the advice
to ``client.scatter`` the data once and close over the future instead.

Backpressure and lost workers
-----------------------------
``limit`` bounds the tasks in flight per served copy of the stage: message number
``limit + 1`` waits on the loop for a free slot, so a source slows down and HTTP callers
wait. A worker that dies is first Dask's business (it reschedules the task elsewhere, up to
``distributed.scheduler.allowed-failures`` times); when Dask gives up (``KilledWorker``) or
the task is cancelled under it, or a process pool breaks, svckit resubmits the message
``retries`` times and then answers ``WorkerLost`` naming the worker: a message is never lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from .errors import WiringError, WorkerLost
from .params import merge
from .running import Binder, aretrying
from .runtime import at_shutdown
from .service import FunctionService, Service

__all__ = ["LARGE", "OnExecutor", "on"]

logger = logging.getLogger(__name__)

#: Pickled size (bytes) of a stage's function above which one warning is logged.
LARGE = 1 << 20


def _is_dask_client(obj: Any) -> bool:
    """True for a ``distributed.Client`` (told without importing distributed)."""
    return any(c.__module__.startswith("distributed") and c.__name__ == "Client" for c in type(obj).__mro__)


class _Lost(Exception):
    """Internal: the task's worker (or process pool) died under it; ``where`` names it."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(why)
        self.where = where
        self.why = why


class _Engine:
    kind = "executor"

    @property
    def travels(self) -> bool:
        """True when its calls are pickled to another process (so their size matters)."""
        return True

    async def run(self, fn: Callable[..., Any], kw: dict[str, Any], key: str, rt: Any) -> Any:
        raise NotImplementedError

    def label(self) -> str:
        return self.kind


class _DaskEngine(_Engine):
    """Tasks on the scheduler of a ``distributed.Client``, through an asynchronous client
    that svckit keeps on the runtime loop (one per runtime and scheduler)."""

    kind = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def label(self) -> str:
        return "dask"

    async def _peer(self, rt: Any) -> Any:
        address = self.client.scheduler.address
        peers: dict[str, Any] = rt.local("svckit.scale.dask", dict, _close_peers)
        entry = peers.get(address)
        if entry is None or (entry.done() and _broken_peer(entry)):
            entry = peers[address] = asyncio.ensure_future(self._connect(address))
        return await asyncio.shield(entry)

    async def _connect(self, address: str) -> Any:
        from distributed import Client

        return await Client(
            address, asynchronous=True, set_as_default=False, security=self.client.security, name="svckit"
        )

    async def run(self, fn: Callable[..., Any], kw: dict[str, Any], key: str, rt: Any) -> Any:
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            peer = await self._peer(rt)
        except OSError as exc:
            raise _Lost(f"the scheduler at {self.client.scheduler.address}", f"it cannot be reached ({exc})")
        task = partial(fn, **kw)  # the function's own keywords never meet submit()'s (key=, workers=, ...)
        try:
            future = peer.submit(task, key=key, pure=False)
        except Exception as exc:  # a closed client: the scheduler went away
            raise _Lost(f"the scheduler at {self.client.scheduler.address}", f"submitting failed ({exc})")
        try:
            return await future
        except KilledWorker as exc:
            worker = getattr(getattr(exc, "last_worker", None), "address", None) or "a worker"
            raise _Lost(f"worker {worker}", "Dask gave up on the task after its workers died") from None
        except FutureCancelledError as exc:
            raise _Lost("a worker", f"the task was cancelled under it ({exc})") from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                future.release()  # our caller went (a served timeout): the cluster forgets the task
            raise
        except OSError as exc:  # CommClosedError: the scheduler connection broke
            raise _Lost(f"the scheduler at {self.client.scheduler.address}", f"its connection broke ({exc})")


def _broken_peer(entry: asyncio.Future[Any]) -> bool:
    if entry.cancelled() or entry.exception() is not None:
        return True
    return str(getattr(entry.result(), "status", "running")) not in ("running", "connecting")


async def _close_peers(peers: dict[str, Any]) -> None:
    for entry in list(peers.values()):
        if entry.done() and not entry.cancelled() and entry.exception() is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.result().close(), 5)
        else:
            entry.cancel()
    peers.clear()


class _PoolEngine(_Engine):
    """Calls on a ``concurrent.futures.Executor``, or on executors a factory makes (remade
    when a process pool breaks)."""

    def __init__(self, executor: concurrent.futures.Executor | None, factory: Callable[[], Any] | None) -> None:
        self.factory = factory
        self.executor = executor
        self._lock = threading.Lock()
        self._pickled: tuple[Callable[..., Any], bytes] | None = None

    def label(self) -> str:
        ex = self.executor
        return type(ex).__name__ if ex is not None else "executor"

    @property
    def travels(self) -> bool:
        return isinstance(self.executor, concurrent.futures.ProcessPoolExecutor)

    def _current(self) -> concurrent.futures.Executor:
        with self._lock:
            if self.executor is None:
                assert self.factory is not None
                made = self.factory()
                if not isinstance(made, concurrent.futures.Executor):
                    raise WiringError(
                        f"The factory given to .on() returned a {type(made).__name__}, not a "
                        "concurrent.futures.Executor: return one, such as ProcessPoolExecutor(2)."
                    )
                self.executor = made
                _owned.add(made)
                at_shutdown(_shutdown_owned)
            return self.executor

    def _renew(self, broken: concurrent.futures.Executor) -> bool:
        """Drop ``broken`` (made by the factory) so the next call makes a new one."""
        if self.factory is None:
            return False
        with self._lock:
            if self.executor is broken:
                self.executor = None
                _owned.discard(broken)
                broken.shutdown(wait=False, cancel_futures=True)
        return True

    def _payload(self, fn: Callable[..., Any]) -> bytes | None:
        found = self._pickled
        if found is not None and found[0] is fn:
            return found[1]
        try:
            import cloudpickle
        except ImportError:  # pickled by reference, as the executor does it
            return None
        data = cloudpickle.dumps(fn)
        self._pickled = (fn, data)
        return data

    async def run(self, fn: Callable[..., Any], kw: dict[str, Any], key: str, rt: Any) -> Any:
        ex = self._current()
        try:
            if isinstance(ex, concurrent.futures.ProcessPoolExecutor):
                payload = self._payload(fn)
                cf = ex.submit(_call_pickled, payload, kw) if payload is not None else ex.submit(fn, **kw)
            else:
                cf = ex.submit(fn, **kw)
            return await asyncio.wrap_future(cf)
        except concurrent.futures.BrokenExecutor as exc:
            what = f"a worker process of its {type(ex).__name__}"
            if self._renew(ex):
                raise _Lost(what, f"the pool broke ({exc}); a new one is made") from None
            hint = (
                "; it is broken for good: pass .on() a function that makes one, such as "
                f".on(lambda: {type(ex).__name__}(2)), and svckit makes a new one when this happens"
            )
            raise _Lost(what, f"the pool broke ({exc}){hint}") from None
        except RuntimeError as exc:
            if "shutdown" in str(exc):
                raise WiringError(
                    f"The {type(ex).__name__} given to .on() was shut down; give the stage a running one."
                ) from None
            raise


_unpickled: dict[bytes, Callable[..., Any]] = {}


def _call_pickled(payload: bytes, kw: dict[str, Any]) -> Any:
    """In a worker process: the function pickled by value (kept for the next call), called."""
    fn = _unpickled.get(payload)
    if fn is None:
        import cloudpickle

        fn = cloudpickle.loads(payload)
        if len(_unpickled) > 16:
            _unpickled.clear()
        _unpickled[payload] = fn
    return fn(**kw)


_owned: weakref.WeakSet[concurrent.futures.Executor] = weakref.WeakSet()


def _shutdown_owned() -> None:
    for ex in list(_owned):
        _owned.discard(ex)
        ex.shutdown(wait=False, cancel_futures=True)


class _Call:
    __slots__ = ("attempt", "key", "started")

    def __init__(self, key: str, started: float) -> None:
        self.key = key
        self.started = started
        self.attempt = 1


class OnExecutor(Service):
    """A stage whose calls run on an executor or a Dask cluster; made by ``stage.on(...)``.

    Examples
    --------
    >>> import concurrent.futures, svckit as sk
    >>> @sk.service
    ... def square(x: int) -> dict:
    ...     return {"y": x * x}
    >>> pool = concurrent.futures.ThreadPoolExecutor(2)
    >>> remote_square = square.on(pool, limit=4)
    >>> remote_square
    <Service square(x: int) on ThreadPoolExecutor, limit=4>
    >>> remote_square(x=7)
    {'x': 7, 'y': 49}
    >>> remote_square.status_extra()["done"]
    1
    >>> pool.shutdown()
    """

    def __init__(self, stage: Any, executor: Any, *, limit: int | None = None, retries: int = 1) -> None:
        if not isinstance(stage, FunctionService):
            what = type(stage).__name__
            raise WiringError(
                f"{getattr(stage, 'name', what)!r} is a {what}: .on() ships one plain function to its executor; "
                "write the work as an @sk.service function and call .on() on it (each stage of a flow on its own)."
            )
        if stage.is_async or stage.streams:
            kind = "a generator" if stage.streams else "async def"
            raise WiringError(
                f"Service {stage.name!r} is {kind}: .on() runs a plain def function on an executor; "
                "make it a plain function (an async one already runs on the loop)."
            )
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise WiringError(f"{stage.name}.on(limit={limit!r}): give how many tasks may be in flight (1 or more).")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise WiringError(f"{stage.name}.on(retries={retries!r}): give how many times to resubmit (0 or more).")
        if _is_dask_client(executor):
            self._engine: _Engine = _DaskEngine(executor)
        elif isinstance(executor, concurrent.futures.Executor):
            self._engine = _PoolEngine(executor, None)
        elif callable(executor) and not isinstance(executor, type | Service):
            self._engine = _PoolEngine(None, executor)
        else:
            raise WiringError(
                f"{stage.name}.on() takes a distributed.Client, a concurrent.futures.Executor (such as "
                f"ProcessPoolExecutor(2)) or a function that makes one, not a {type(executor).__name__}."
            )
        self.stage = stage
        self.fn = stage.fn
        self.executor = executor
        self.limit = limit
        self.retries = retries
        self.name = stage.name
        self.output = stage.output
        self.config = {}
        self._params = stage._params
        self._actions = {}
        self.methods = stage.methods
        self.return_annotation = stage.return_annotation
        self.is_async = True
        self.concurrent = True
        self._reset()

    def _reset(self) -> None:
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: Any = None
        self._slots_limit = 0
        self._calls: dict[str, _Call] = {}
        self._warned = False
        self.done = 0
        self.retried = 0
        self.lost = 0
        self.waiting = 0
        self.peak = 0

    def _bound(self, binder: Binder) -> None:
        self._reset()  # a served copy has its own slots and counts

    def _target(self) -> Callable[..., Any]:
        return self.fn

    # -- facts ---------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Tasks submitted and not yet answered."""
        return len(self._calls)

    def describe(self) -> str:
        limit = f", limit={self.limit}" if self.limit is not None else ""
        return f"{self.stage.describe()} on {self._engine.label()}{limit}"

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"

    def status_extra(self) -> dict[str, Any]:
        """What ``Served.status()`` (and the dashboard) shows of it: its tasks in flight, the
        messages waiting for a slot, and how many were done, failed, resubmitted and lost."""
        loop_time = _now()
        return {
            "kind": "executor",
            "executor": self._engine.label(),
            "limit": self.limit if self.limit is not None else self._slots_limit or None,
            "in_flight": self.in_flight,
            "peak": self.peak,
            "waiting": self.waiting,
            "done": self.done,
            "failed": self.failures,
            "retried": self.retried,
            "lost": self.lost,
            "running": [
                {
                    "call": c.key,
                    "seconds": round(loop_time - c.started, 2),
                    "percent": None,
                    "line": f"attempt {c.attempt} of {self.retries + 1}" if c.attempt > 1 else "submitted",
                }
                for c in list(self._calls.values())
            ],
        }

    # -- running ---------------------------------------------------------------
    def run(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        from .runtime import run_here

        run_here(lambda rt: self.arun(msg, rt))

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        self.calls += 1
        try:
            await aretrying(self, lambda m: self._astep_rt(m, rt), msg)  # an sk.Retry raised in the task
        except Exception as exc:
            self._failed(exc)
            raise
        self.done += 1

    async def _astep_rt(self, msg: dict[str, Any], rt: Any) -> None:
        assert self._params is not None
        kw = self._params.bind(msg)  # validated here, on the loop: a bad message never travels
        merge(msg, await self._submit(kw, rt), self.output)

    async def _slots(self, rt: Any) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            limit = self.limit or await self._default_limit(rt)
            self._sem, self._sem_loop, self._slots_limit = asyncio.Semaphore(limit), loop, limit
        return self._sem

    async def _default_limit(self, rt: Any) -> int:
        """Twice the threads of the cluster (or the executor's workers), at least 2."""
        engine = self._engine
        threads = 0
        with contextlib.suppress(Exception):
            if isinstance(engine, _DaskEngine):
                threads = sum((await (await engine._peer(rt)).nthreads()).values())
            elif isinstance(engine, _PoolEngine):
                threads = int(getattr(engine._current(), "_max_workers", 0) or 0)
        return max(2, 2 * threads)

    async def _submit(self, kw: dict[str, Any], rt: Any) -> Any:
        sem = await self._slots(rt)
        self.waiting += 1
        try:
            await sem.acquire()
        finally:
            self.waiting -= 1
        key = f"{self.name}-{uuid.uuid4().hex}"
        call = self._calls[key] = _Call(key, _now())
        self.peak = max(self.peak, len(self._calls))
        try:
            if not self._warned and self._engine.travels:
                self._warned = True
                await self._check_size(rt)
            while True:
                try:
                    return await self._engine.run(self.fn, kw, f"{key}-{call.attempt}", rt)
                except _Lost as lost:
                    if call.attempt > self.retries:
                        self.lost += 1
                        tries = call.attempt
                        raise WorkerLost(
                            f"Service {self.name!r} lost its task to {lost.where}: {lost.why}. It was submitted "
                            f"{tries} time{'s' if tries > 1 else ''}; give it more with .on(..., retries=N), or "
                            "look at why the worker died (memory, a crash in native code).",
                            service=self.name,
                            worker=lost.where,
                            attempts=tries,
                        ) from None
                    call.attempt += 1
                    self.retried += 1
                    logger.warning("%s: task lost to %s (%s); resubmitting", self.name, lost.where, lost.why)
        finally:
            del self._calls[key]
            sem.release()

    async def _check_size(self, rt: Any) -> None:
        """Log once when the function pickles large (it travels with every message)."""
        try:
            import cloudpickle
        except ImportError:
            return
        try:
            size = len(await rt.blocking(cloudpickle.dumps, self.fn))
        except Exception:  # it will fail to travel: the task says why
            return
        if size > LARGE:
            logger.warning(
                "Service %r pickles to %.1f MB and travels with every message: scatter the large data once "
                "(data = client.scatter(data, broadcast=True)) and use that future in the function instead.",
                self.name,
                size / 1e6,
            )


def _now() -> float:
    return time.monotonic()


def on(stage: Service, executor: Any, *, limit: int | None = None, retries: int = 1) -> OnExecutor:
    """``stage`` with its calls run on ``executor``: what ``Service.on`` returns."""
    return OnExecutor(stage, executor, limit=limit, retries=retries)


Service._on = on
