"""The kernel's one background runtime: a daemon thread running its own asyncio loop.

Sockets, servers and tasks live on the runtime thread. The notebook's thread crosses
over only through ``Runtime.call``/``Runtime.submit``, which refuse to be called from
the runtime thread itself (that would deadlock).

The runtime knows nothing of what is served on it: higher layers keep their per-runtime
state in ``Runtime.local`` (the table of bound ports, the ZMQ context, the served things),
with the hooks that close it when the runtime shuts down.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import StateError
from .logs import log_buffer
from .net import raise_fd_limit
from .placement import crossed, mark_loop_thread, waits_here
from .pool import WorkerPool
from .watchdog import Watchdog, threshold_from_env

__all__ = ["Runtime", "WorkerPool", "at_shutdown", "current", "runtime", "run_here", "shutdown"]

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


class Runtime:
    """A daemon thread with its own asyncio loop and a worker pool for blocking code.

    Get the process's runtime with ``sk.runtime()``; it starts on first use and stops
    with ``sk.shutdown()`` or at interpreter exit.

    ``pool`` runs blocking stages: ``workers`` threads (32, or ``SVCKIT_WORKERS``), and up
    to eight times as many while blocking calls are stuck (see ``WorkerPool``).
    ``watchdog`` notices when the loop stops turning (an ``async def`` stage computing
    without awaiting) and logs which stage holds it: its ``threshold`` is 0.5 s, or
    ``SVCKIT_STALL_MS`` (0 turns it off).

    Examples
    --------
    >>> import svckit as sk
    >>> async def add(a, b):
    ...     return a + b
    >>> sk.runtime().call(add(1, 2))
    3
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is None:
            workers = _workers_from_env()
        raise_fd_limit()  # connections are capped per port; the process's 1,024 would come first
        self.loop = _new_loop()
        self.pool = WorkerPool(workers, limit=8 * workers)
        self._locals: dict[str, tuple[Any, Any, Any, int]] = {}
        self._locals_lock = threading.Lock()
        self._closed = False
        self.stop_timeout: float | None = None  # set by shutdown() for what it stops
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="svckit-runtime", daemon=True)
        self.thread.start()
        self._ready.wait()
        self.watchdog = Watchdog(self.loop, self.thread, threshold_from_env())
        if self.watchdog.threshold > 0:
            self.watchdog.start()

    def _main(self) -> None:
        mark_loop_thread()
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

    # -- per-runtime state of higher layers -------------------------------------
    def local(
        self,
        key: str,
        make: Callable[[], T],
        aclose: Callable[[T], Awaitable[None]] | None = None,
        order: int = 0,
        stop: Callable[[T], None] | None = None,
    ) -> T:
        """The value kept under ``key`` for this runtime, made by ``make()`` on first use.

        At shutdown, ``stop(value)`` runs first on the caller's thread (highest ``order``
        first), then ``aclose(value)`` on the loop (lowest ``order`` first).
        """
        entry = self._locals.get(key)
        if entry is None:
            with self._locals_lock:
                entry = self._locals.get(key)
                if entry is None:
                    entry = self._locals[key] = (make(), aclose, stop, order)
        value: T = entry[0]
        return value

    @property
    def served(self) -> dict[str, Any]:
        """A read-only look at what serving keeps here: the served things by name."""
        entry = self._locals.get("served")
        return dict(entry[0]) if entry is not None else {}

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
            # a def stage svckit moved to the loop, calling an async service: from its next call on
            # it runs in the pool again, where this works
            waits_here("it called Runtime.call or run_here (an async service) from the loop")
            raise StateError(
                "Runtime.call() was called from the runtime's own thread, where waiting would "
                "deadlock; await the coroutine there instead (a def stage svckit had moved to the loop "
                "runs in the worker pool again from its next call)."
            )
        crossed()
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
        """Stop what higher layers keep here (every served thing), release every port, stop
        the loop and join the thread."""
        if self._closed:
            return
        if self.in_runtime():
            raise StateError("sk.shutdown() cannot run on the runtime's own thread.")
        self.stop_timeout = timeout  # what stop hooks may take (serving drains in half of it)
        entries = sorted(self._locals.values(), key=lambda entry: -entry[3])
        for value, _, stop, _ in entries:
            if stop is not None:
                try:
                    stop(value)
                except Exception:
                    logger.exception("stopping %r at shutdown failed", value)
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._close_all(), timeout=timeout)
        self._closed = True
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _close_all(self) -> None:
        for value, aclose, _, _ in sorted(self._locals.values(), key=lambda entry: entry[3]):
            if aclose is not None:
                try:
                    await aclose(value)
                except Exception:
                    logger.exception("closing %r at shutdown failed", value)
        self._locals.clear()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Runtime {state}, {len(self.served)} served>"


def _workers_from_env() -> int:
    """``SVCKIT_WORKERS`` (a positive number), else 32."""
    raw = os.environ.get("SVCKIT_WORKERS", "").strip()
    if raw:
        try:
            if int(raw) > 0:
                return int(raw)
        except ValueError:
            pass
        logger.warning("SVCKIT_WORKERS=%r is not a positive number of threads; using 32.", raw)
    return 32


def runtime() -> Runtime:
    """The process's background runtime, started on first use."""
    global _current
    rt = _current
    if rt is not None and rt.running:
        return rt
    with _lock:
        if _current is None or not _current.running:
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
    """Stop everything served, release every port, stop the runtime thread, and run the
    ``teardown()`` of services that were set up by calling them in a cell.

    Safe to call more than once; the next ``sk.serve`` or ``sk.runtime()`` starts afresh.
    """
    global _current
    for hook in list(_hooks):  # while the runtime still runs: an async teardown needs it
        try:
            hook()
        except Exception:
            logger.exception("a shutdown hook failed")
    with _lock:
        rt, _current = _current, None
    if rt is not None:
        rt.shutdown(timeout)


_hooks: list[Callable[[], None]] = []


def at_shutdown(hook: Callable[[], None]) -> None:
    """Run ``hook()`` at every ``sk.shutdown()`` (and at exit), before the runtime stops."""
    if hook not in _hooks:
        _hooks.append(hook)


def run_here(make: Callable[[Runtime], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make(rt)`` on the runtime and wait for it: how an ``async`` stage
    or flow runs when it is called right in a cell (or from a worker thread)."""
    rt = runtime()
    return rt.call(make(rt))


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        shutdown(timeout=2.0)
