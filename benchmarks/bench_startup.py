"""Start-up: ``sk.serve`` → first response and replace → first new response (see ``startup_worker.py``).

Three fresh processes; each gives one cold serve (the runtime starts, uvicorn is
imported) and several warm serves and replaces. Medians are reported.
"""

from __future__ import annotations

from typing import Any

from common import PYTHON, median, run_json, script


def run(smoke: bool = False) -> dict[str, Any]:
    processes, repeats = (1, 1) if smoke else (3, 5)
    cold: list[float] = []
    warm: list[float] = []
    replace: list[float] = []
    for _ in range(processes):
        out = run_json([PYTHON, script("startup_worker.py"), str(repeats)], 120)
        cold.append(out["cold_ms"])
        warm += out["warm_ms"]
        replace += out["replace_ms"]
    return {
        "serve_cold_ms": round(median(cold), 2),
        "serve_warm_ms": round(median(warm), 2),
        "replace_ms": round(median(replace), 2),
        "replace_max_ms": round(max(replace), 2),
        "serve_cold_all_ms": [round(c, 2) for c in cold],
    }
