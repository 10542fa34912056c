"""Where a served plain ``def`` stage runs: the worker pool, or the runtime loop once it has proven quick.

A hop to the worker pool and back costs two thread wake-ups (~30-60 us on an idle kernel),
and up to a whole switch interval each (5 ms) while a cell keeps the kernel's main thread
busy, for a stage whose own work often takes 2 us. An ``async def`` stage pays none of it,
but a plain ``def`` may block (a file, a socket, ``time.sleep``), and a stage that blocks on
the loop holds up everything the runtime serves. So every served ``def`` stage starts in
the pool and is watched:

- **promoted**: once ``PROMOTE_AFTER`` calls in a row have each returned within ``QUICK``
  seconds without waiting (the thread's CPU time is within ``WAIT`` of the wall time: no
  I/O, lock, sleep or call into another thread), it runs on the loop;
- **never promoted**: a stage whose call crossed into another thread and waited for it
  (``Runtime.call``/``run_here``, as calling an ``async`` service from a ``def`` does, or
  one of svckit's clients: on the loop that would wait on the loop itself) stays in the pool;
- **moved back for good**: a call of a promoted stage that takes longer than ``BLOCK``
  seconds, or ``SLOW_CALLS`` calls over ``SLOW`` seconds among its last ``SLOW_WINDOW``
  (a stage that turned merely slow), or one that asks the loop to wait (it crossed into
  another thread, or ``sk.Retry`` with a pause), sends it back to the pool for the life of
  its served copy, with a warning in the log; ``status()`` and the flow picture show it.

The worst a promoted stage that turns slow can do is hold up the loop for the one call in
which it turned (or ``SLOW_CALLS`` calls of under ``BLOCK``): once it is moved back it never
runs on the loop again, not even later in the same message. The call itself cannot be cut
short (Python cannot stop a thread, and the loop is one). A stage that waits on something
every call is never promoted; one that waits only now and then (a cache miss) may be, and then
blocks the loop once. ``inline=True`` runs a ``def`` on the loop from the first call, never
moved back; ``inline=False`` keeps it in the pool, never promoted. ``SVCKIT_PROMOTE=0`` in the
environment keeps every stage that says neither in the pool.

The counters are updated on whatever thread ran the call, without a lock: two worker threads
finishing calls of the same stage at once may lose an increment of the streak, which only
delays a promotion.

Examples
--------
>>> from svckit.placement import Placement
>>> p = Placement("parse")
>>> p.runs
'pool'
>>> for _ in range(Placement.PROMOTE_AFTER):
...     p.pooled(0.000002, 0.000002)
>>> p.runs
'loop'
>>> p.timed(0.2)  # it turned slow: back to the pool for good
>>> p.runs, p.why
('pool', 'a call took 200 ms (more than 10 ms)')
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

__all__ = ["Placement", "crossed", "mark_loop_thread", "on_loop", "promotion_enabled", "waits_here"]

logger = logging.getLogger("svckit.placement")


class _Here(threading.local):
    #: Calls into another thread made on this thread so far (``crossed``).
    crossings = 0
    #: True on the runtime's loop thread (``mark_loop_thread``).
    is_loop = False


_here = _Here()
#: The code of the wrappers that time a stage's calls (``metrics.instrument``): a frame of one
#: holds its stage's placement as ``place``, which is how ``on_loop`` finds the stage running,
#: at no cost to a call.
timed_codes: set[Any] = set()


def mark_loop_thread() -> None:
    """Called by the runtime on its loop thread: promoted stages that run here are watched
    for what would make the loop wait (``waits_here``)."""
    _here.is_loop = True


def crossed() -> None:
    """Note that this thread is about to wait for another one (``Runtime.call``, a client
    request): a stage that does so while it learns is never promoted."""
    _here.crossings += 1


def on_loop() -> Placement | None:
    """The promoted stage running on this thread right now, when this is the runtime loop:
    the innermost timed call on the stack (a look up the stack, for rare paths only)."""
    if not _here.is_loop:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code in timed_codes:
            place = frame.f_locals.get("place")
            return place if isinstance(place, Placement) and place.loop and place.forced is None else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def waits_here(why: str) -> None:
    """A promoted stage running right now is about to make the loop wait (``why``): it goes
    back to the pool for good, from its next call. Nothing when no promoted stage runs here."""
    place = on_loop()
    if place is not None:
        place.move_back(why)


def promotion_enabled() -> bool:
    """False when ``SVCKIT_PROMOTE`` is ``0`` (or ``false``/``no``/``off``) in the environment."""
    return os.environ.get("SVCKIT_PROMOTE", "1").strip().lower() not in ("0", "false", "no", "off")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"


class Placement:
    """Where one bound ``def`` stage runs, and what decided it (see the module docstring).

    ``loop`` is the flag the request path reads on every call: True once promoted (or for
    ``inline=True``). ``learning`` is True while calls in the pool are still being timed
    for a promotion (``pooled``); ``timed`` watches a promoted stage's calls.
    """

    #: A call in the pool counts toward promotion when it returned within this many seconds...
    QUICK = 0.001
    #: ...and spent at most this long off the CPU (waiting on I/O, a lock, a sleep).
    WAIT = 0.00005
    #: Quick calls in a row before a stage runs on the loop.
    PROMOTE_AFTER = 100
    #: A promoted stage's call longer than this sends it back to the pool for good...
    BLOCK = 0.010
    #: ...and so do ``SLOW_CALLS`` calls longer than ``SLOW`` among its last ``SLOW_WINDOW``.
    #: (A quick stage on the loop of a busy kernel now and then waits a switch interval, 5 ms,
    #: for the GIL mid-call: once, never three times in sixteen calls.)
    SLOW = 0.002
    SLOW_CALLS = 3
    SLOW_WINDOW = 16

    __slots__ = (
        "calls",
        "forced",
        "learning",
        "loop",
        "moved_at",
        "name",
        "promoted_at",
        "slow_at",
        "streak",
        "why",
    )

    def __init__(self, name: str, inline: bool | None = None, promote: bool = True) -> None:
        self.name = name
        self.forced = inline  # True/False: inline= said so; None: svckit decides
        self.loop = inline is True
        self.learning = inline is None and promote
        self.streak = 0
        self.calls = 0  # calls timed while promoted (counted by ``timed``'s caller)
        self.slow_at: list[int] = []  # which of them were over SLOW (the last SLOW_CALLS)
        self.promoted_at: float | None = None
        self.moved_at: float | None = None
        if inline is True:
            self.why = "inline=True"
        elif inline is False:
            self.why = "inline=False"
        elif not promote:
            self.why = "SVCKIT_PROMOTE=0"
        else:
            self.why = f"not yet {self.PROMOTE_AFTER} quick calls in a row"

    @property
    def runs(self) -> str:
        """``"loop"`` or ``"pool"``: where its next call runs."""
        return "loop" if self.loop else "pool"

    def pin(self, why: str) -> None:
        """Never promote it (``why``): it runs in the pool, whatever its calls take."""
        if self.learning:
            self.learning = False
            self.why = why

    def pooled(self, wall: float, cpu: float, crossed: bool = False) -> None:
        """A call that ran in the pool while ``learning`` took ``wall`` seconds, ``cpu`` of them
        on the CPU; ``crossed``: it waited for another thread (never promoted, then)."""
        if crossed:
            self.pin("it calls into another thread and waits (the runtime, or a client)")
            return
        if self.loop:  # another thread promoted it while this call ran: it counts as a promoted one's
            if wall > self.BLOCK:
                self.timed(wall)
            return
        if wall < self.QUICK and wall - cpu < self.WAIT:
            self.streak += 1
            if self.streak >= self.PROMOTE_AFTER and self.learning:
                self.learning = False
                self.loop = True
                self.promoted_at = time.time()
                self.why = f"{self.PROMOTE_AFTER} calls in a row returned within {_ms(self.QUICK)} without waiting"
                logger.debug("stage %r runs on the runtime loop now: %s", self.name, self.why)
        else:
            self.streak = 0

    def timed(self, wall: float) -> None:
        """A call of a promoted stage took ``wall`` seconds (wherever it ran), more than
        ``SLOW``: past ``BLOCK``, or the ``SLOW_CALLS``-th such call in ``SLOW_WINDOW``, it
        goes back to the pool for good."""
        if wall > self.BLOCK:
            self.move_back(f"a call took {_ms(wall)} (more than {_ms(self.BLOCK)})")
            return
        slow = self.slow_at
        slow.append(self.calls)
        del slow[: -self.SLOW_CALLS]
        if len(slow) == self.SLOW_CALLS and slow[-1] - slow[0] < self.SLOW_WINDOW:
            self.move_back(
                f"{self.SLOW_CALLS} of {self.SLOW_WINDOW} calls took more than {_ms(self.SLOW)} (the last {_ms(wall)})"
            )

    def move_back(self, why: str) -> None:
        """Back to the pool for good (``why``), unless ``inline=True`` keeps it on the loop."""
        if self.forced is not None or not self.loop:
            return
        self.loop = False
        self.moved_at = time.time()
        self.why = why
        logger.warning(
            "stage %r held up the runtime loop: %s; it runs in the worker pool from now on "
            "(mark it @sk.service(inline=False) to keep it there from the start).",
            self.name,
            why,
        )

    def stats(self) -> dict[str, Any]:
        """``{"runs", "why"}``, and when it moved: what ``status()["placement"]`` shows per stage."""
        out: dict[str, Any] = {"runs": self.runs, "why": self.why}
        if self.promoted_at is not None:
            out["promoted_at"] = round(self.promoted_at, 3)
        if self.moved_at is not None:
            out["moved_back_at"] = round(self.moved_at, 3)
        return out

    def __repr__(self) -> str:
        return f"<Placement {self.name!r}: {self.runs} ({self.why})>"
