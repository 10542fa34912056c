"""How a stage runs: retries, where an error came from, user-facing tracebacks, set-up when
called in a cell, and the bound copies that serving runs instead of the user's objects."""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
import os
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .callables import is_async_callable
from .errors import ControlFlow, Retry, RetryExhausted
from .placement import waits_here
from .runtime import at_shutdown, run_here

__all__ = [
    "Binder",
    "aretrying",
    "call_hook",
    "cell_ready",
    "copies_of",
    "note_origin",
    "noted",
    "origin_of",
    "retrying",
    "set_up_in_cell",
    "trimmed",
]

logger = logging.getLogger(__name__)


# -- where an error came from, without touching the exception ------------------------------

#: id(exception) -> (exception, service name). Exceptions cannot be weakly referenced, so
#: this holds the few most recent ones; the request path takes its entry out when it answers.
_origins: collections.OrderedDict[int, tuple[BaseException, str | None]] = collections.OrderedDict()
_ORIGINS_KEPT = 64
_origins_lock = threading.Lock()


def note_origin(exc: BaseException, name: str | None) -> None:
    """Remember the innermost service ``exc`` came from (for error rows and replies); None:
    it came out of what a middleware wrapped, from no stage in particular (svckit's own check)."""
    if isinstance(exc, ControlFlow) and name is not None:
        return
    with _origins_lock:
        found = _origins.get(id(exc))
        if found is not None and found[0] is exc:
            return  # an inner stage noted it first
        _origins[id(exc)] = (exc, name)
        while len(_origins) > _ORIGINS_KEPT:
            _origins.popitem(last=False)


def noted(exc: BaseException) -> bool:
    """True when ``exc`` came out of a stage or a wrapped call (``note_origin``)."""
    with _origins_lock:
        found = _origins.get(id(exc))
        return found is not None and found[0] is exc


def origin_of(exc: BaseException, forget: bool = False) -> str | None:
    """The name of the innermost service that raised ``exc``, where known (``forget``: and
    drop the entry, once the error is answered)."""
    with _origins_lock:
        found = _origins.get(id(exc))
        if found is None or found[0] is not exc:
            return None
        if forget:
            del _origins[id(exc)]
        return found[1]


# -- retries: one policy, a sync and an async loop around it -------------------------------


class _Attempts:
    """Counts a stage's retries and says how long to pause before the next one."""

    __slots__ = ("service", "tries")

    def __init__(self, service: Any) -> None:
        self.service = service
        self.tries = 0

    def pause(self, retry: Retry) -> float:
        """The pause before running again; raises the final error once ``retry.max`` is used up."""
        self.tries += 1
        if self.tries > retry.max:
            raise exhausted(self.service, retry, self.tries - 1) from retry
        return retry.after


def retrying(
    service: Any, step: Callable[[dict[str, Any]], None], msg: dict[str, Any], first: Retry | None = None
) -> None:
    """Run ``step(msg)``, again while it raises ``Retry`` (blocking pauses). ``first`` is a
    ``Retry`` an earlier try raised: it counts as an attempt."""
    __tracebackhide__ = True
    attempts = _Attempts(service)
    if first is not None:
        _pause(attempts.pause(first))
    while True:
        try:
            step(msg)
            return
        except Retry as retry:
            _pause(attempts.pause(retry))


def _pause(seconds: float) -> None:
    """A blocking pause between tries; from a stage svckit had moved to the loop, that stage
    goes back to the worker pool (from its next call: this pause holds the loop once)."""
    if seconds > 0:
        waits_here(f"it asked to be retried (sk.Retry) after {seconds:g} s")
    time.sleep(seconds)


async def aretrying(service: Any, step: Callable[[dict[str, Any]], Any], msg: dict[str, Any]) -> None:
    """``retrying`` on the loop: ``await step(msg)``, pauses with ``asyncio.sleep``."""
    attempts = _Attempts(service)
    while True:
        try:
            await step(msg)
            return
        except Retry as retry:
            await asyncio.sleep(attempts.pause(retry))


def exhausted(service: Any, retry: Retry, tries: int) -> BaseException:
    cause = retry.__cause__
    if cause is not None:
        return cause
    return RetryExhausted(
        f"Any {service.name!r} asked to be retried and still failed after {tries} retries.",
        service=service.name,
    )


# -- binding: serving runs copies ------------------------------------------------------------

_copies: weakref.WeakKeyDictionary[Any, list[weakref.ref[Any]]] = weakref.WeakKeyDictionary()
_copies_lock = threading.Lock()


def copies_of(svc: Any) -> list[Any]:
    """The live bound copies made of ``svc`` by serving, oldest first."""
    with _copies_lock:
        refs = _copies.get(svc, [])
        alive = [c for c in (r() for r in refs) if c is not None]
        if len(alive) != len(refs):
            _copies[svc] = [weakref.ref(c) for c in alive]
        return alive


class Binder:
    """What serving hands each stage it binds: the served thing's name and metrics, and the
    copies made so far (a stage used twice in one flow is one copy; a re-serve passes the
    previous generation's copies, so stages it keeps keep their copy, state and sockets)."""

    def __init__(self, owner: str, metrics: Any, kept: Mapping[int, tuple[Any, Any]] | None = None) -> None:
        self.owner = owner
        self.metrics = metrics
        self.kept = kept or {}
        self.memo: dict[int, tuple[Any, Any]] = {}  # what this generation binds
        self.made: list[Any] = []  # new bound leaves, to set up and open

    def bind(self, svc: Any) -> Any:
        found = self.memo.get(id(svc))
        if found is not None and found[0] is svc:
            return found[1]
        found = self.kept.get(id(svc))
        if found is not None and found[0] is svc and not svc._composite:
            self.memo[id(svc)] = found
            return found[1]
        bound = svc._bound_copy(self)
        self.memo[id(svc)] = (svc, bound)
        if not bound._composite:
            bound._origin = svc
            self.made.append(bound)
            with _copies_lock:
                _copies.setdefault(svc, []).append(weakref.ref(bound))
        return bound


# -- set up in a cell --------------------------------------------------------------------


class _Ready:
    """What was set up in a cell, held until ``sk.shutdown()`` tears it down (a set up
    service dropped from the notebook still gets its teardown)."""

    def __init__(self) -> None:
        self.items: dict[int, Any] = {}

    def __contains__(self, obj: Any) -> bool:
        return self.items.get(id(obj)) is obj

    def add(self, obj: Any) -> None:
        self.items[id(obj)] = obj

    def clear(self) -> None:
        self.items.clear()

    def __iter__(self) -> Any:
        return iter(list(self.items.values()))


cell_ready = _Ready()
_cell_lock = threading.RLock()


def set_up_in_cell(node: Any) -> None:
    """Run ``setup()`` of each leaf of ``node`` not set up in a cell yet; teardown at shutdown."""
    with _cell_lock:
        at_shutdown(_tear_down_cell)
        for leaf in node.leaves():
            if leaf in cell_ready or not leaf._has_setup:
                continue
            call_hook(leaf.setup)
            cell_ready.add(leaf)
        cell_ready.add(node)


def _tear_down_cell() -> None:
    with _cell_lock:
        leaves = [leaf for leaf in cell_ready if leaf._has_setup]
        cell_ready.clear()
    for leaf in leaves:
        try:
            call_hook(leaf.teardown)
        except Exception:
            logger.exception("teardown of %r failed", leaf.name)


def call_hook(hook: Callable[[], Any]) -> None:
    """Run a ``setup``/``teardown`` hook, sync or ``async def``, from the caller's thread."""
    if is_async_callable(hook):
        run_here(lambda rt: hook())
    else:
        hook()


# -- tracebacks a user reads -------------------------------------------------------------------

_HIDDEN = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.join(os.path.dirname(os.path.abspath(copy.__file__)), "concurrent") + os.sep,
)


def trimmed(exc: BaseException) -> BaseException:
    """``exc`` with svckit's (and asyncio's) frames taken out of its traceback, as pytest
    hides ``__tracebackhide__`` frames: a stage's error called in a cell shows the user's code."""
    kept: list[types.TracebackType] = []
    last = tb = exc.__traceback__
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_HIDDEN):
            kept.append(tb)
        last, tb = tb, tb.tb_next
    origin_of(exc, forget=True)  # shown to the user now: nothing will ask again
    if not kept and last is not None:
        kept = [last]  # raised by svckit itself (a bad message): where it was raised
    for here, after in zip(kept, [*kept[1:], None], strict=True):
        here.tb_next = after
    return exc.with_traceback(kept[0] if kept else None)
