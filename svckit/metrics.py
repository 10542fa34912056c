"""Metrics: counters and bounded ring buffers of recent messages, read as cheap snapshots.

Everything here is written on the runtime thread and read from the notebook's thread;
appends to a ``deque`` and ``deque.copy()`` are atomic in CPython, so no lock is taken
on the request path.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .ids import format_request_id
from .logs import LogBuffer, log_buffer  # where they lived first

__all__ = ["TRAFFIC_COLUMNS", "LogBuffer", "Metrics", "log_buffer"]

TRAFFIC_COLUMNS = ("time", "endpoint", "direction", "action", "size", "latency_ms", "status", "request_id")


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
        self.outputs: deque[dict[str, Any]] = deque(maxlen=keep)
        self.traffic: deque[tuple[Any, ...]] = deque(maxlen=keep)
        self.errors_log: deque[dict[str, Any]] = deque(maxlen=100)
        self._seconds: deque[list[int]] = deque(maxlen=11)  # [second, count] buckets for the rate
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
        self.traffic.append((now, endpoint, "out", action, size, (now - started) * 1000.0, status, request_id))

    def undelivered(self, endpoint: str, action: str, size: int, request_id: str | int | None = None) -> None:
        """A request whose client went away before its reply reached it: counted once, here,
        and not as replied (a traffic row ``gone``)."""
        self.disconnected += 1
        self.traffic.append((time.time(), endpoint, "gone", action, size, None, 499, request_id))

    def output(self, message: dict[str, Any]) -> None:
        self.outputs.append(message)

    def error(self, exc_type: str, message: str, service: str | None, now: float) -> None:
        self.errors += 1
        self.errors_by_type[exc_type] = self.errors_by_type.get(exc_type, 0) + 1
        entry = {"time": now, "type": exc_type, "message": message, "service": service}
        self.last_error = entry
        self.errors_log.append(entry)

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

    def outputs_frame(self, last: int | None = None) -> Any:
        """Recent outputs as a pandas DataFrame, oldest first, one column per key."""
        import pandas as pd

        rows = list(self.outputs.copy())
        if last is not None:
            rows = rows[-last:]
        return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()

    def traffic_frame(self, last: int | None = None) -> Any:
        """Recent traffic as a pandas DataFrame with ``TRAFFIC_COLUMNS``, oldest first."""
        import pandas as pd

        rows = list(self.traffic.copy())
        if last is not None:
            rows = rows[-last:]
        rows = [(*row[:-1], format_request_id(row[-1])) for row in rows]  # kept as numbers until read
        frame = pd.DataFrame.from_records(rows, columns=list(TRAFFIC_COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame
