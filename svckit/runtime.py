"""The kernel's one background runtime: a daemon thread running its own asyncio loop.

Sockets, servers and tasks live on the runtime thread. The notebook's thread crosses
over only through ``Runtime.call``/``Runtime.submit``, which refuse to be called from
the runtime thread itself (that would deadlock).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import StateError

if TYPE_CHECKING:
    from .served import Served

__all__ = ["Runtime", "WorkerPool", "runtime", "shutdown"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_lock = threading.Lock()
_current: Runtime | None = None

#: Set by a source pipeline's consumer tasks: their blocking calls go through it (sources.Batcher).
batcher: contextvars.ContextVar[Any] = contextvars.ContextVar("svckit_batcher", default=None)


def _new_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("SVCKIT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
        except ImportError:  # uvloop is optional (uvicorn[standard] brings it on Linux and macOS)
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Set ``future``'s result (``ok``) or exception, unless it is already done (cancelled)."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class WorkerPool(concurrent.futures.Executor):
    """Daemon threads that run blocking stages, handing each result straight to the loop.

    ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` builds a ``concurrent.futures``
    future (with its own ``Condition``), chains it to an asyncio future and locks the
    executor on every call: about a tenth of a served request's time here. ``run``
    queues ``(fn, args)`` and the worker sets the asyncio future through
    ``call_soon_threadsafe``.

    Jobs queued from the loop wake a worker only when none is awake: an awake worker
    takes the next job as soon as it is done with one. Sixteen requests that arrive in
    one turn of the loop then cost one thread wake-up, not sixteen threads contending
    for the GIL (each wait for it is up to the 5 ms switch interval while a cell keeps
    the kernel's main thread busy). So that a stage that blocks never holds up the jobs
    queued behind it, the loop looks again after ``STALL`` seconds and wakes one more
    worker for every job that has waited that long. Threads start on demand, up to
    ``workers``, and are daemons, so a stage that never returns cannot hold up the
    interpreter's exit.

    A call that outlives its served timeout still holds its thread (Python cannot stop
    one). So that stages stuck like this cannot starve everything else the runtime
    serves, a job that has waited ``STUCK`` seconds with every worker busy gets a thread
    of its own beyond ``workers``, up to ``limit``; such extra threads end as soon as
    they find the queue empty.
    """

    #: How long a job may wait in the queue before another worker is woken for it.
    STALL = 0.002
    #: How long a job may wait, every worker busy, before a thread beyond ``workers`` starts for it.
    STUCK = 0.1

    def __init__(self, workers: int, name: str = "svckit-worker", limit: int | None = None) -> None:
        self.workers = workers
        self.limit = max(workers, limit if limit is not None else workers)
        self.name = name
        self._started = 0  # threads started so far, for their names
        self._jobs: collections.deque[tuple[Any, ...]] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._awake = 0  # workers running a job or about to look for one
        self._sleeping = 0  # workers waiting on _wake
        self._watching = False  # a stall check is scheduled on a loop
        self._closed = False

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on a worker; the returned future is resolved on ``loop``."""
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._check_open()
            self._jobs.append((fn, args, loop, future, time.monotonic()))
            if not self._awake:
                self._start_one()
            elif not self._watching:
                self._watching = True
                loop.call_later(self.STALL, self._watch, loop)
        return future

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """The ``Executor`` interface (``loop.run_in_executor`` and plain threads use it).

        Called from any thread, with no loop to look again later: it always wakes a worker.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self._check_open()
            self._jobs.append((functools.partial(fn, *args, **kwargs), (), None, future, time.monotonic()))
            self._start_one()
        return future

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("The svckit worker pool is shut down; call sk.runtime() to start a new one.")

    def _start_one(self, stuck: bool = False) -> bool:
        """Wake a sleeping worker, or start a thread while there are fewer than ``workers``
        (``limit`` for a ``stuck`` job); the lock is held. False when none could be had."""
        if self._sleeping:
            self._sleeping -= 1
            self._awake += 1
            self._wake.notify()
            return True
        if len(self._threads) < (self.limit if stuck else self.workers):
            thread = threading.Thread(target=self._work, name=f"{self.name}_{self._started}", daemon=True)
            self._started += 1
            self._threads.append(thread)
            self._awake += 1
            thread.start()
            return True
        return False

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: wake a worker for every job queued longer than ``STALL`` (its workers
        are busy with slow jobs), and look again while jobs wait."""
        with self._lock:
            jobs = self._jobs
            if not jobs or self._closed:
                self._watching = False
                return
            now = time.monotonic()
            late, stuck = now - self.STALL, now - self.STUCK
            for job in jobs:
                if job[4] > late or not self._start_one(stuck=job[4] <= stuck):
                    break
            with contextlib.suppress(RuntimeError):  # the loop is closing: the pool is shut down with it
                loop.call_later(self.STALL, self._watch, loop)
                return
            self._watching = False

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                while not jobs:
                    self._awake -= 1
                    if self._closed or len(self._threads) > self.workers:  # closed, or an extra thread
                        self._threads.remove(threading.current_thread())
                        return
                    self._sleeping += 1
                    self._wake.wait()
                fn, args, loop, future, _ = jobs.popleft()
            if loop is None:  # submit(): a concurrent.futures.Future
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            else:
                try:
                    ok, value = True, fn(*args)
                except BaseException as exc:  # handed to the awaiting coroutine, as run_in_executor does
                    ok, value = False, exc
                with contextlib.suppress(RuntimeError):  # the loop closed while the job ran
                    loop.call_soon_threadsafe(resolve, future, ok, value)
                del value
            del fn, args, future  # hold no message while idle

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs and end the threads once the queue is done (dropped, with ``cancel_futures``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
            dropped = list(self._jobs) if cancel_futures else []
            if cancel_futures:
                self._jobs.clear()
            self._awake += self._sleeping  # each one wakes, finds the pool closed and ends
            self._sleeping = 0
            self._wake.notify_all()
        for _, _, loop, future, _ in dropped:
            if loop is None:
                future.cancel()
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(future.cancel)
        if wait:
            for thread in threads:
                thread.join()


class Runtime:
    """A daemon thread with its own asyncio loop and a worker pool for blocking code.

    Get the process's runtime with ``sk.runtime()``; it starts on first use and stops
    with ``sk.shutdown()`` or at interpreter exit.

    Examples
    --------
    >>> import svckit as sk
    >>> async def add(a, b):
    ...     return a + b
    >>> sk.runtime().call(add(1, 2))
    3
    """

    def __init__(self, workers: int = 32) -> None:
        self.loop = _new_loop()
        self.pool = WorkerPool(workers, limit=8 * workers)
        self.served: dict[str, Served] = {}
        self.endpoints: dict[tuple[str, str, int], Any] = {}
        self.zmq_context: Any = None
        self._closed = False
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="svckit-runtime", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    # -- crossing over -------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the loop thread is alive and accepting work."""
        return not self._closed and self.thread.is_alive()

    def in_runtime(self) -> bool:
        """True when called from the runtime's own thread."""
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the runtime loop; return a ``concurrent.futures.Future``."""
        if not self.running:
            coro.close()
            raise StateError("The svckit runtime is shut down; call sk.runtime() to start a new one.")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T] | Callable[[], T], timeout: float | None = None) -> T:
        """Run a coroutine (or a plain function) on the runtime loop and wait for its result.

        Refuses to run on the runtime thread itself, where waiting would deadlock.
        """
        if self.in_runtime():
            if asyncio.iscoroutine(coro):
                coro.close()
            raise StateError(
                "Runtime.call() was called from the runtime's own thread, where waiting would "
                "deadlock; await the coroutine there instead."
            )
        if not asyncio.iscoroutine(coro):
            fn = coro

            async def wrapper() -> Any:
                return fn()  # type: ignore[operator]

            coro = wrapper()
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def blocking(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run blocking ``fn(*args)`` in the worker pool; await the result on the loop."""
        coalesce = batcher.get()
        if coalesce is not None:
            return coalesce.submit(fn, *args)  # type: ignore[no-any-return]
        return self.pool.run(self.loop, fn, *args)

    # -- ending ------------------------------------------------------------
    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every served thing, release every port, stop the loop and join the thread."""
        if self._closed:
            return
        if self.in_runtime():
            raise StateError("sk.shutdown() cannot run on the runtime's own thread.")
        for served in list(self.served.values()):
            with contextlib.suppress(Exception):
                served.stop(timeout=timeout)
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._close_all(), timeout=timeout)
        self._closed = True
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _close_all(self) -> None:
        for endpoint in list(self.endpoints.values()):
            with contextlib.suppress(Exception):
                await endpoint.close()
        self.endpoints.clear()
        if self.zmq_context is not None:
            self.zmq_context.destroy(linger=0)
            self.zmq_context = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Runtime {state}, {len(self.served)} served>"


def runtime() -> Runtime:
    """The process's background runtime, started on first use."""
    global _current
    rt = _current
    if rt is not None and rt.running:
        return rt
    with _lock:
        if _current is None or not _current.running:
            from .metrics import log_buffer

            log_buffer()  # from now on svckit's log lines are kept for dashboards, not printed
            _current = Runtime()
            if not _atexit_registered.is_set():
                atexit.register(_at_exit)
                _atexit_registered.set()
        return _current


_atexit_registered = threading.Event()


def current() -> Runtime | None:
    """The running runtime, or None (never starts one)."""
    rt = _current
    return rt if rt is not None and rt.running else None


def shutdown(timeout: float = 5.0) -> None:
    """Stop everything served, release every port and stop the runtime thread.

    Safe to call more than once; the next ``sk.serve`` or ``sk.runtime()`` starts afresh.
    """
    global _current
    with _lock:
        rt, _current = _current, None
    if rt is not None:
        rt.shutdown(timeout)


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        shutdown(timeout=2.0)
