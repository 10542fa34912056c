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
- **moved back for good**: a call of a promoted stage that takes longer than ``BLOCK``
  seconds (on the loop or still in the pool) sends it back to the pool for the life of its
  served copy, with a warning in the log; ``status()`` and the flow picture show it.

The worst a promoted stage that turns slow can do is hold up the loop for the one call in
which it turned: once it returns, it never runs on the loop again. The call itself cannot be
cut short (Python cannot stop a thread, and the loop is one). A stage that waits on something
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
import time
from typing import Any

__all__ = ["Placement", "promotion_enabled"]

logger = logging.getLogger("svckit.placement")


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
    PROMOTE_AFTER = 200
    #: A promoted stage's call longer than this sends it back to the pool for good.
    BLOCK = 0.010

    __slots__ = ("forced", "learning", "loop", "loop_calls", "moved_at", "name", "promoted_at", "streak", "why")

    def __init__(self, name: str, inline: bool | None = None, promote: bool = True) -> None:
        self.name = name
        self.forced = inline  # True/False: inline= said so; None: svckit decides
        self.loop = inline is True
        self.learning = inline is None and promote
        self.streak = 0
        self.loop_calls = 0  # calls timed while promoted
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

    def pooled(self, wall: float, cpu: float) -> None:
        """A call that ran in the pool while ``learning`` took ``wall`` seconds, ``cpu`` of them on the CPU."""
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
        """A call of a promoted stage took ``wall`` seconds (wherever it ran): past ``BLOCK``, it
        goes back to the pool for good."""
        self.loop_calls += 1
        if wall > self.BLOCK and self.forced is None and self.loop:
            self.loop = False
            self.moved_at = time.time()
            self.why = f"a call took {_ms(wall)} (more than {_ms(self.BLOCK)})"
            logger.warning(
                "stage %r blocked the runtime loop: %s; it runs in the worker pool from now on "
                "(mark it @sk.service(inline=False) to keep it there from the start).",
                self.name,
                self.why,
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
