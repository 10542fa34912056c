"""The worker pool: daemon threads that run blocking stages and hand results straight to the loop."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import StateError

__all__ = ["WorkerPool", "resolve"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
    they find the queue empty. The runtime's pool has 32 workers and a limit of 256
    threads (``SVCKIT_WORKERS`` sets the workers; the limit is eight times that). Once
    ``limit`` threads are stuck, every blocking call of everything the runtime serves
    waits in the queue, and its requests time out: ``stats()`` and ``GET /status``
    (``"pool"``) show it, and it is logged once each time the pool fills up.

    A job whose caller has gone before a worker took it (its future was cancelled: the
    served timeout answered 504, or the client went away) is dropped unrun and counted
    in ``dropped``; that costs one look at the future as the job is taken. A job that is
    already running cannot be stopped: it runs to its end and its result is thrown away.
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
        self._full = False  # a job waited STUCK s with all ``limit`` threads busy (logged once until not)
        self._closed = False
        #: Jobs dropped unrun because their caller had gone (their future was cancelled).
        self.dropped = 0

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on a worker, in a copy of the caller's context (its context
        variables); the returned future is resolved on ``loop``."""
        future: asyncio.Future[T] = loop.create_future()
        # run in a copy of the caller's context, as asyncio.to_thread does: a def stage sees the
        # request's context variables in the pool as it does once it runs on the loop
        call = contextvars.copy_context().run
        with self._lock:
            self._check_open()
            self._jobs.append((call, (fn, *args), loop, future, time.monotonic()))
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
        are busy with slow jobs), and look again while jobs wait. Jobs whose caller has gone
        get no thread; those at the head of the queue are dropped here."""
        with self._lock:
            jobs = self._jobs
            while jobs and _gone(jobs[0]):
                jobs.popleft()
                self.dropped += 1
            if not jobs or self._closed:
                self._watching = False
                if self._awake < self.limit:
                    self._full = False
                return
            now = time.monotonic()
            late, stuck = now - self.STALL, now - self.STUCK
            newly_full = False
            for job in jobs:
                if job[4] > late:
                    break
                if _gone(job):
                    continue
                if self._start_one(stuck=job[4] <= stuck):
                    self._full = False
                    continue
                if job[4] <= stuck:  # no thread for it even beyond ``workers``: told once
                    newly_full, self._full = not self._full, True
                break
            try:
                loop.call_later(self.STALL, self._watch, loop)
            except RuntimeError:  # the loop is closing: the pool is shut down with it
                self._watching = False
                return
        if newly_full:
            logger.warning(
                "All %d svckit worker threads are busy (a blocking stage that outlived its timeout keeps "
                "its thread): blocking calls queue, and every served thing's plain def stages wait or "
                "time out until a thread is free. SVCKIT_WORKERS sets the pool's size (a limit of 8 times it).",
                self.limit,
            )

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                while True:
                    while not jobs:
                        self._awake -= 1
                        if self._closed or len(self._threads) > self.workers:  # closed, or an extra thread
                            self._threads.remove(threading.current_thread())
                            return
                        self._sleeping += 1
                        self._wake.wait()
                    job = jobs.popleft()
                    # Its caller has gone (the served timeout cancelled the future, or the
                    # client left): drop it unrun. A future only cancelled once this look is
                    # past runs to its end, like any job already running.
                    if job[2] is None or not job[3].done():
                        break
                    self.dropped += 1
                    del job
            fn, args, loop, future, _ = job
            del job
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

    def stats(self) -> dict[str, int]:
        """How busy the pool is: ``threads`` started, ``busy`` of them (running a job, or
        about to take one), ``workers``, ``max`` threads (``limit``), ``queued`` jobs waiting
        and ``dropped`` ones (their caller had gone)."""
        with self._lock:
            queued = sum(1 for job in self._jobs if not _gone(job))
            return {
                "threads": len(self._threads),
                "busy": self._awake,
                "workers": self.workers,
                "max": self.limit,
                "queued": queued,
                "dropped": self.dropped,
            }

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


def _gone(job: tuple[Any, ...]) -> bool:
    """Whether a queued job's caller has gone: a job of ``run`` whose asyncio future is done
    (cancelled) before it ran. ``submit`` jobs are checked by ``set_running_or_notify_cancel``."""
    return job[2] is not None and job[3].done()  # type: ignore[no-any-return]
