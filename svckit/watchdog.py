"""The loop-stall watchdog: notices when the runtime loop stops turning and names the code holding it.

An ``async def`` stage (or an ``inline=True`` one) runs on the runtime loop. One that computes
for a second without awaiting holds up everything the runtime serves: no request is read or
answered, no served timeout fires, no source ticks. Python cannot take the loop back, so the
watchdog tells: the loop stamps a heartbeat every ``TICK`` seconds (one timer callback, no work
per request), and a daemon thread that finds the heartbeat more than ``threshold`` seconds late
looks at the loop thread's stack (``sys._current_frames()``), logs a warning naming the served
stage on it and the line it is at, and counts the stall.

``threshold`` defaults to 0.5 s, or ``SVCKIT_STALL_MS`` milliseconds from the environment when the
runtime starts (0 turns the watchdog off); ``sk.runtime().watchdog.threshold`` changes it live.
The thread ends with the runtime's loop thread.

Examples
--------
>>> import svckit as sk
>>> sk.runtime().watchdog.stats()["count"] >= 0
True
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import sysconfig
import threading
import time
from types import FrameType
from typing import Any

from . import logs
from .codec import redact_paths

__all__ = ["TICK", "Watchdog", "threshold_from_env"]

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of the loop (and two looks of the watchdog).
TICK = 0.1
#: The default threshold, in seconds.
THRESHOLD = 0.5

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB = tuple(
    {os.path.abspath(p) + os.sep for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])}
)
_SITE = tuple(
    {os.path.abspath(p) + os.sep for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
)


def threshold_from_env() -> float:
    """``SVCKIT_STALL_MS`` in seconds (0: off), or the default 0.5 s when it is unset or not a number."""
    raw = os.environ.get("SVCKIT_STALL_MS", "").strip()
    if not raw:
        return THRESHOLD
    try:
        return max(0.0, float(raw) / 1000)
    except ValueError:
        logger.warning("SVCKIT_STALL_MS=%r is not a number of milliseconds; using %d.", raw, THRESHOLD * 1000)
        return THRESHOLD


class Watchdog:
    """Watches one runtime loop for stalls (see the module docstring).

    ``count`` stalls so far; ``last`` the latest one, a dict with ``time`` (when it was
    noticed), ``seconds`` (how long the loop did not turn, at least; growing while it lasts),
    ``service`` (the served thing whose stage held the loop, where known), ``stage`` (the
    function) and ``where`` (``file:line`` it was at); ``longest`` the longest in seconds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, threshold: float) -> None:
        self.loop = loop
        self.loop_thread = thread
        #: Seconds the loop may go without turning before it counts as a stall (0: off).
        self.threshold = threshold
        self.count = 0
        self.last: dict[str, Any] | None = None
        self.longest = 0.0
        self.beat = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the heartbeat on the loop and the watching thread (once; from any thread)."""
        if self._thread is not None:
            return
        self.beat = time.monotonic()
        self.loop.call_soon_threadsafe(self._tick)
        self._thread = threading.Thread(target=self._watch, name="svckit-watchdog", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        """On the loop: the heartbeat."""
        self.beat = time.monotonic()
        self.loop.call_later(TICK, self._tick)

    def _watch(self) -> None:
        stall: dict[str, Any] | None = None
        since = 0.0  # the heartbeat the stall came after
        while self.loop_thread.is_alive():
            time.sleep(TICK)
            threshold = self.threshold
            beat = self.beat
            late = time.monotonic() - beat - TICK
            if stall is None:
                if threshold > 0 and late > threshold and self.loop.is_running():
                    since = beat
                    stall = self._noticed(late)
            elif beat != since:  # the loop turned again
                seconds = max(stall["seconds"], beat - since - TICK)
                self._ended(stall, seconds)
                stall = None
            else:
                stall["seconds"] = round(late, 3)
                self.longest = max(self.longest, late)

    def _noticed(self, late: float) -> dict[str, Any]:
        frame = sys._current_frames().get(self.loop_thread.ident or -1)
        service, stage, where = culprit(frame)
        stall = {"time": time.time(), "seconds": round(late, 3), "service": service, "stage": stage, "where": where}
        self.last = stall
        self.count += 1
        self.longest = max(self.longest, late)
        if service:
            held = f"stage {stage!r} of {service!r}"
        elif _ours(where.rpartition(":")[0]):
            held = f"{stage!r} (svckit's own code, or the loop waiting for the GIL that other threads hold)"
        else:
            held = f"{stage!r}"
        logger.warning(
            "The svckit runtime loop has not turned for %.1f s: %s holds it, at %s. Nothing else this "
            "runtime serves runs meanwhile (requests, timeouts, sources). Await between steps, or make it "
            "a plain def marked @sk.service(inline=False) so it runs in the worker pool.",
            late,
            held,
            where,
            extra={"svckit_service": service},
        )
        return stall

    def _ended(self, stall: dict[str, Any], seconds: float) -> None:
        stall["seconds"] = round(seconds, 3)
        self.longest = max(self.longest, seconds)
        logger.info(
            "The svckit runtime loop turned again after %.1f s (held by %r).",
            seconds,
            stall["stage"],
            extra={"svckit_service": stall["service"]},
        )

    def stats(self, redact: bool = False) -> dict[str, Any]:
        """``count``, ``threshold`` (s), ``longest`` (s) and ``last`` (a copy), as ``GET /status``
        shows them; with ``redact``, a ``where`` outside the working directory is cut (``redact_paths``)."""
        last = dict(self.last) if self.last is not None else None
        if last is not None and redact:
            last["where"] = redact_paths(last["where"])
        return {"count": self.count, "threshold": self.threshold, "longest": round(self.longest, 3), "last": last}


def culprit(frame: FrameType | None) -> tuple[str | None, str, str]:
    """``(served name, function, "file:line")`` of the code running in ``frame``'s stack.

    The innermost frame of a served stage's function names it; without one, the innermost
    frame outside svckit and the standard library (asyncio included), else the innermost.
    """
    if frame is None:
        return None, "?", "?"
    try:
        codes = logs._stage_codes()
    except Exception:  # served things changing under us: unknown, this time
        codes = {}
    outside: FrameType | None = None
    f: FrameType | None = frame
    for _ in range(200):
        if f is None:
            break
        code = f.f_code
        service = codes.get(code)
        if service is not None:
            return service, code.co_name, f"{code.co_filename}:{f.f_lineno}"
        if outside is None and not _ours(code.co_filename):
            outside = f
        f = f.f_back
    chosen = outside if outside is not None else frame
    return None, chosen.f_code.co_name, f"{chosen.f_code.co_filename}:{chosen.f_lineno}"


def _ours(filename: str) -> bool:
    """Whether code in ``filename`` is svckit's or the standard library's (not a user's)."""
    if filename.startswith("<frozen") or filename.startswith(_PACKAGE):
        return True
    return filename.startswith(_STDLIB) and not filename.startswith(_SITE)
