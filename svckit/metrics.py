"""Metrics: counters, bounded ring buffers of recent messages and errors, and latency, read as cheap snapshots.

Everything here is written on the runtime thread (a stage's time: on the thread that ran
it) and read from the notebook's thread; appends to a ``deque`` and ``deque.copy()`` are
atomic in CPython, so no lock is taken on the request path.

Latency is kept as a log-scale histogram (four bins per doubling, so a percentile read
from it is within 10 % of the exact one) per second of the last ``SERIES_SECONDS``, and per
stage over the last half minute or so (``StageTimer``): a fixed, small amount of memory
whatever the traffic, and a dict increment per message.

Times are seconds since the epoch (``time.time()``) until read: the frames hold
timezone-aware UTC timestamps, the dashboard shows local time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import time
import traceback as tb_module
from collections import deque
from collections.abc import Callable
from typing import Any

from .ids import format_request_id
from .logs import LogBuffer, log_buffer  # where they lived first
from .placement import Placement, promotion_enabled, timed_codes
from .placement import _here as here

__all__ = [
    "ERRORS_KEPT",
    "ERROR_COLUMNS",
    "EXCERPT_CHARS",
    "SERIES_SECONDS",
    "TRACEBACK_CHARS",
    "TRAFFIC_COLUMNS",
    "LogBuffer",
    "Metrics",
    "StageTimer",
    "instrument",
    "log_buffer",
    "percentile",
    "traceback_text",
]

TRAFFIC_COLUMNS = ("time", "endpoint", "direction", "action", "size", "latency_ms", "status", "request_id")
ERROR_COLUMNS = ("time", "service", "type", "message", "status", "request_id", "excerpt", "traceback")

#: Seconds of rate and latency history kept per served thing (what the dashboard charts).
SERIES_SECONDS = 300
#: Errors kept per served thing, and the most characters of a traceback and of the message
#: that caused it kept with each: what a client sending bad requests can make us hold.
ERRORS_KEPT = 100
TRACEBACK_CHARS = 8000
EXCERPT_CHARS = 200

_BINS_PER_DOUBLING = 4
_BIN_OFFSET = 40  # bin 0 is 1 us; the top bin (160) about 17 minutes


def _bin(ms: float) -> int:
    """The histogram bin of a duration in milliseconds."""
    if ms <= 0.001:
        return 0
    b = int(math.log2(ms) * _BINS_PER_DOUBLING) + _BIN_OFFSET
    return b if b < 160 else 160


def _bin_ms(b: int) -> float:
    """The middle of bin ``b``, in milliseconds (geometric)."""
    return float(2.0 ** ((b - _BIN_OFFSET + 0.5) / _BINS_PER_DOUBLING))


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram made by ``_bin``, in milliseconds; None when empty."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return _bin_ms(b)
    return _bin_ms(max(hist))


class StageTimer:
    """Time spent in one bound stage per call: count, mean and a histogram over the last
    ``window`` to ``2 * window`` seconds (two halves, the older dropped as time moves on).

    ``add`` runs on whatever thread ran the stage; a rare lost increment between two worker
    threads only blurs a figure that is an estimate anyway.
    """

    __slots__ = ("calls", "current", "previous", "since", "window")

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self.calls = 0
        self.current: list[Any] = [0, 0.0, {}]  # [count, seconds, histogram]
        self.previous: list[Any] = [0, 0.0, {}]
        self.since = time.monotonic()

    def add(self, seconds: float) -> None:
        """Count one call that took ``seconds``."""
        self.calls += 1
        cur = self.current
        cur[0] += 1
        cur[1] += seconds
        b = _bin(seconds * 1000.0)
        hist = cur[2]
        hist[b] = hist.get(b, 0) + 1

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """``{"calls", "recent", "mean_ms", "p99_ms"}``: all calls, and the recent ones' mean and p99."""
        now = time.monotonic() if now is None else now
        if now - self.since >= self.window:  # move on: what is older than two windows goes
            stale = now - self.since >= 2 * self.window
            self.previous = [0, 0.0, {}] if stale else self.current
            self.current = [0, 0.0, {}]
            self.since = now
        prev, cur = self.previous, self.current
        count = prev[0] + cur[0]
        hist = dict(prev[2])
        for b, n in list(cur[2].items()):
            hist[b] = hist.get(b, 0) + n
        return {
            "calls": self.calls,
            "recent": count,
            "mean_ms": (prev[1] + cur[1]) * 1000.0 / count if count else None,
            "p99_ms": percentile(hist, 0.99),
        }


def instrument(stage: Any) -> StageTimer:
    """Give a bound leaf stage a ``StageTimer`` (``stage._timer``) and time its calls.

    The stage's own entry point is wrapped on the instance: ``run`` for a plain ``def`` (on
    the worker thread or the loop, wherever it runs), ``arun`` for an ``async def``; a
    generator stage is not timed (its time is the stream's). A plain ``def`` also gets its
    ``Placement`` (``stage._place``), fed by the same timing: while it learns, its calls'
    CPU time too. Serving does this to the copies it binds, never to a user's object.
    """
    timer = StageTimer()
    stage._timer = timer
    if getattr(stage, "streams", False):
        return timer
    clock = time.perf_counter
    add = timer.add
    if getattr(stage, "is_async", False):
        arun = stage.arun

        async def timed_arun(msg: dict[str, Any], rt: Any) -> None:
            start = clock()
            try:
                await arun(msg, rt)
            finally:
                add(clock() - start)

        stage.arun = timed_arun
    else:
        run: Callable[[dict[str, Any]], None] = stage.run
        # a source's or a def middleware's calls stay where they are: timed, never placed
        placed = getattr(stage, "role", "stage") == "stage"
        place = Placement(stage.name, getattr(stage, "inline", None) if placed else False, promotion_enabled())
        if placed:
            stage._place = place
        cpu = time.thread_time
        slow = place.SLOW

        def timed_run(msg: dict[str, Any]) -> None:
            __tracebackhide__ = True
            if place.learning:  # in the pool, timed for a promotion to the loop: wall and CPU time
                crossings = here.crossings
                used = cpu()
                start = clock()
                try:
                    run(msg)
                finally:
                    took = clock() - start
                    add(took)
                    place.pooled(took, cpu() - used, here.crossings != crossings)
                return
            start = clock()
            try:
                run(msg)
            finally:
                took = clock() - start
                add(took)
                if took > slow and place.loop:
                    place.calls = timer.calls
                    place.timed(took)  # it turned slow: back to the pool for good

        stage.run = timed_run
        timed_codes.add(timed_run.__code__)  # where placement.on_loop finds the stage running
    return timer


_HIDDEN = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,  # svckit itself
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(concurrent.futures.__file__)) + os.sep,
)


def _shown(frame: Any) -> bool:
    """False for svckit's, asyncio's and concurrent.futures' frames, and for frames marked
    ``__tracebackhide__`` (pytest's convention; svckit's compiled fast paths carry it)."""
    if frame.f_code.co_filename.startswith(_HIDDEN):
        return False
    return not frame.f_locals.get("__tracebackhide__", False)


def _format(exc: BaseException, seen: set[int]) -> list[str]:
    seen.add(id(exc))
    out: list[str] = []
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        out += _format(cause, seen)
        out.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        out += _format(context, seen)
        out.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    frames = [(f, line) for f, line in tb_module.walk_tb(exc.__traceback__)]
    kept = [(f, line) for f, line in frames if _shown(f)] or frames[-1:]  # raised by svckit: where
    if kept:
        out.append("Traceback (most recent call last):\n")
        out += tb_module.StackSummary.extract(iter(kept[-64:]), lookup_lines=True).format()
    out += tb_module.format_exception_only(type(exc), exc)
    return out


def traceback_text(exc: BaseException, limit: int = TRACEBACK_CHARS) -> str:
    """``exc``'s traceback as text, without svckit's and asyncio's frames (as a stage's
    error called in a cell shows it), at most ``limit`` characters (its start and its end)."""
    try:
        text = "".join(_format(exc, set()))
    except Exception:  # a traceback never costs the reply
        text = f"{type(exc).__name__}: {exc}\n"
    if len(text) > limit:
        head = limit // 4
        cut = len(text) - limit
        text = f"{text[:head]}\n… {cut} characters cut …\n{text[-(limit - head) :]}"
    return text


class Metrics:
    """Counters and recent history of one served thing.

    ``keep`` bounds each ring buffer, so memory does not grow with traffic.
    """

    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self.received = 0
        self.replied = 0
        self.errors = 0
        self.stopped = 0
        self.dropped = 0
        self.disconnected = 0  # requests whose client went away before their reply reached it
        self.iterations = 0
        self.by_action: dict[str, int] = {}
        self.errors_by_type: dict[str, int] = {}
        self.last_error: dict[str, Any] | None = None
        #: (time, request id, message) of each message that came out of the end of the flow
        self.outputs: deque[tuple[float, str | int | None, dict[str, Any]]] = deque(maxlen=keep)
        self.traffic: deque[tuple[Any, ...]] = deque(maxlen=keep)
        self.errors_log: deque[dict[str, Any]] = deque(maxlen=ERRORS_KEPT)
        self._seconds: deque[list[int]] = deque(maxlen=11)  # [second, count] buckets for the rate
        #: per second: [second, replies, errors, latency histogram, p50, p99] (the last two
        #: filled in by the reader once the second is over)
        self.series: deque[list[Any]] = deque(maxlen=SERIES_SECONDS)
        self.started = time.time()

    # -- written on the runtime thread -------------------------------------------
    def resize(self, keep: int) -> None:
        """Keep ``keep`` recent outputs and traffic rows from now on (the newest are kept)."""
        if keep != self.keep:
            self.keep = keep
            self.outputs = deque(self.outputs.copy(), maxlen=keep)
            self.traffic = deque(self.traffic.copy(), maxlen=keep)

    def received_one(
        self, endpoint: str, action: str, size: int, now: float, request_id: str | int | None = None
    ) -> None:
        self.received += 1
        self.by_action[action] = self.by_action.get(action, 0) + 1
        self.traffic.append((now, endpoint, "in", action, size, None, None, request_id))
        second = int(now)
        buckets = self._seconds
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])

    def replied_one(
        self,
        endpoint: str,
        action: str,
        size: int,
        started: float,
        now: float,
        status: int,
        request_id: str | int | None = None,
    ) -> None:
        self.replied += 1
        ms = (now - started) * 1000.0
        self.traffic.append((now, endpoint, "out", action, size, ms, status, request_id))
        second = int(now)
        series = self.series
        bucket = series[-1] if series else None
        if bucket is None or bucket[0] != second:
            bucket = [second, 0, 0, {}, None, None]
            series.append(bucket)
        bucket[1] += 1
        if status >= 400:
            bucket[2] += 1
        hist = bucket[3]
        b = _bin(ms)
        hist[b] = hist.get(b, 0) + 1

    def undelivered(self, endpoint: str, action: str, size: int, request_id: str | int | None = None) -> None:
        """A request whose client went away before its reply reached it: counted once, here,
        and not as replied (a traffic row ``gone``)."""
        self.disconnected += 1
        self.traffic.append((time.time(), endpoint, "gone", action, size, None, 499, request_id))

    def output(self, message: dict[str, Any], request_id: str | int | None = None) -> None:
        """A message that came out of the end of the flow, with when and for which request."""
        self.outputs.append((time.time(), request_id, message))

    def error(
        self,
        exc_type: str,
        message: str,
        service: str | None,
        now: float,
        *,
        status: int | None = None,
        request_id: str | int | None = None,
        excerpt: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """Count an error reply; keep it (with its traceback, cut to ``TRACEBACK_CHARS``, and
        an excerpt of the message that caused it) among the last ``ERRORS_KEPT``."""
        self.errors += 1
        self.errors_by_type[exc_type] = self.errors_by_type.get(exc_type, 0) + 1
        self.last_error = {"time": now, "type": exc_type, "message": message, "service": service}
        if traceback is not None and len(traceback) > TRACEBACK_CHARS:
            traceback = traceback[-TRACEBACK_CHARS:]
        self.errors_log.append(
            {
                **self.last_error,
                "status": status,
                "request_id": request_id,
                "excerpt": excerpt[:EXCERPT_CHARS] if excerpt is not None else None,
                "traceback": traceback,
            }
        )

    def drop(self, count: int = 1, endpoint: str | None = None, action: str = "", size: int = 0) -> None:
        """Count messages lost on the way (a full queue, a PUB peer too slow); with ``endpoint``,
        also log a ``dropped`` row in the traffic."""
        self.dropped += count
        if endpoint is not None:
            self.traffic.append((time.time(), endpoint, "dropped", action, size, None, None, None))

    # -- read from any thread ----------------------------------------------------
    def rate(self, window: int = 5, now: float | None = None) -> float:
        """Messages received per second over the last ``window`` whole seconds."""
        now_s = int(time.time() if now is None else now)
        total = sum(c for s, c in self._seconds.copy() if now_s - window <= s < now_s)
        return total / window

    def recent(
        self, seconds: int = 120, now: float | None = None
    ) -> list[tuple[int, int, int, float | None, float | None]]:
        """``(second, replies, errors, p50_ms, p99_ms)`` for each whole second of the last
        ``seconds`` (the one under way left out), oldest first; a second with no reply is
        ``(second, 0, 0, None, None)``."""
        now_s = int(time.time() if now is None else now)
        first = now_s - seconds
        found: dict[int, list[Any]] = {}
        for bucket in self.series.copy():
            second = bucket[0]
            if first <= second < now_s:
                if bucket[4] is None and bucket[1]:  # over: its percentiles will not change
                    hist = dict(bucket[3])
                    bucket[4], bucket[5] = percentile(hist, 0.5), percentile(hist, 0.99)
                found[second] = bucket
        out = []
        for second in range(first, now_s):
            b = found.get(second)
            out.append((second, b[1], b[2], b[4], b[5]) if b is not None else (second, 0, 0, None, None))
        return out

    def counters(self) -> dict[str, Any]:
        """A snapshot of the counters as plain JSON-able data."""
        return {
            "received": self.received,
            "replied": self.replied,
            "errors": self.errors,
            "stopped": self.stopped,
            "dropped": self.dropped,
            "disconnected": self.disconnected,
            "iterations": self.iterations,
            "by_action": dict(self.by_action),
            "errors_by_type": dict(self.errors_by_type),
            "rate": self.rate(),
            "last_error": dict(self.last_error) if self.last_error else None,
        }

    def outputs_frame(self, last: int | None = None, stamped: bool = True) -> Any:
        """Recent outputs as a pandas DataFrame, oldest first, one column per key; with
        ``stamped``, then ``time`` (UTC) and ``request_id`` (``_time``/``_request_id`` when
        the messages have keys of those names), to match them with ``traffic_frame`` rows."""
        import pandas as pd

        rows = list(self.outputs.copy())
        if last is not None:
            rows = rows[-last:]
        if not rows:
            return pd.DataFrame()
        frame = pd.DataFrame.from_records([message for _, _, message in rows])
        if stamped:
            time_col = "time" if "time" not in frame.columns else "_time"
            id_col = "request_id" if "request_id" not in frame.columns else "_request_id"
            frame[time_col] = pd.to_datetime([t for t, _, _ in rows], unit="s", utc=True).round("us")
            frame[id_col] = [format_request_id(rid) for _, rid, _ in rows]
        return frame

    def errors_frame(self) -> Any:
        """Recent errors as a pandas DataFrame with ``ERROR_COLUMNS``, oldest first (``time`` in UTC)."""
        import pandas as pd

        rows = [
            {**{k: e.get(k) for k in ERROR_COLUMNS}, "request_id": format_request_id(e.get("request_id"))}
            for e in self.errors_log.copy()
        ]
        frame = pd.DataFrame.from_records(rows, columns=list(ERROR_COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.round("us")
        return frame

    def traffic_frame(self, last: int | None = None) -> Any:
        """Recent traffic as a pandas DataFrame with ``TRAFFIC_COLUMNS``, oldest first."""
        import pandas as pd

        rows = list(self.traffic.copy())
        if last is not None:
            rows = rows[-last:]
        rows = [(*row[:-1], format_request_id(row[-1])) for row in rows]  # kept as numbers until read
        frame = pd.DataFrame.from_records(rows, columns=list(TRAFFIC_COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.round("us")
        return frame
