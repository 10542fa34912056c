"""HTTP: a served one-stage flow (JSON POST echo) against the same handler on bare uvicorn + starlette,
and against FastAPI with a plain ``def`` endpoint in a thread (what a user would write instead).

Each measurement starts a fresh server process (``http_server.py``: the server in a
non-main thread, as in a kernel), loads it with ``wrk`` from another process, and stops
it. Servers of the compared kinds are measured alternately, round after round, and the
median of the rounds is reported. The busy conditions keep the server process's main
thread in a pure-Python loop; one of them also sets ``sys.setswitchinterval(0.001)``.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from common import HERE, PYTHON, Child, median, script, wrk, wrk_path

KINDS = ("bare", "fastapi-def", "svckit", "svckit-async", "svckit-inline")
#: The FastAPI baseline runs from its own venv (``make bench`` makes it), so FastAPI's pins
#: never change svckit's environment; without it that kind is left out.
FASTAPI_PYTHON = HERE / ".venv-fastapi" / "bin" / "python"
#: name → (connections, busy main thread, switch interval or None for the default 0.005 s)
CONDITIONS: dict[str, tuple[int, bool, float | None]] = {
    "idle_c1": (1, False, None),
    "idle_c16": (16, False, None),
    "busy_c1": (1, True, None),
    "busy_c16": (16, True, None),
    "busy_c16_switch1ms": (16, True, 0.001),
}


def measure(kind: str, connections: int, busy: bool, switch: float | None, seconds: float) -> dict[str, float]:
    """One server process, one wrk run; in the busy case also the busy loop's speed under load."""
    with tempfile.TemporaryDirectory() as tmp:
        rate_file = os.path.join(tmp, "rate")
        python = str(FASTAPI_PYTHON) if kind == "fastapi-def" else PYTHON
        args = [python, script("http_server.py"), "--kind", kind, "--rate-file", rate_file]
        if busy:
            args.append("--busy")
        if switch:
            args += ["--switch", str(switch)]
        with Child(args) as server:
            before = _progress(rate_file) if busy else None
            result = wrk(server.info, connections, seconds)
            if before is not None:  # the cell's speed while it was being served: iterations/s
                after = _progress(rate_file)
                result["busy_loop_per_s"] = (after[0] - before[0]) / (after[1] - before[1])
        return result


def unloaded_busy_rate(seconds: float) -> float:
    """The busy loop's speed with nothing served and no load: the reference for the cell's cost."""
    with tempfile.TemporaryDirectory() as tmp:
        rate_file = os.path.join(tmp, "rate")
        args = [PYTHON, script("http_server.py"), "--kind", "none", "--busy", "--rate-file", rate_file]
        with Child(args):
            before = _progress(rate_file)
            time.sleep(seconds)
            after = _progress(rate_file)
    return (after[0] - before[0]) / (after[1] - before[1])


def _progress(rate_file: str) -> tuple[int, float]:
    """The busy loop's "<iterations> <time>", waiting for its first report."""
    for _ in range(100):
        try:
            with open(rate_file) as f:
                n, t = f.read().split()
            return int(n), float(t)
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError("the busy server never reported its progress")


def run(smoke: bool = False) -> dict[str, Any]:
    if wrk_path() is None:
        return {"skipped": "wrk is not installed (make bench installs it)"}
    # a busy main thread makes single runs swing 2-5x, and this VM's idle ones swing 1.5x: more pairs
    rounds = busy_rounds = 1 if smoke else 5
    seconds = 1.0 if smoke else 3.0
    kinds = KINDS if FASTAPI_PYTHON.exists() else tuple(k for k in KINDS if k != "fastapi-def")
    results: dict[str, Any] = {}
    for cond, (conns, busy, switch) in CONDITIONS.items():
        samples: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for _ in range(busy_rounds if busy else rounds):
            for kind in kinds:
                samples[kind].append(measure(kind, conns, busy, switch, seconds))
        row: dict[str, Any] = {"connections": conns, "busy": busy, "switchinterval": switch or 0.005}
        for kind, runs in samples.items():
            row[kind] = {
                "rps": round(median([r["rps"] for r in runs])),
                "p50_ms": round(median([r["p50_ms"] for r in runs]), 3),
                "p99_ms": round(median([r["p99_ms"] for r in runs]), 3),
                "rounds_rps": [round(r["rps"]) for r in runs],
            }
            if busy:
                row[kind]["busy_loop_per_s"] = round(median([r["busy_loop_per_s"] for r in runs]))
        for kind in kinds[1:]:
            # ratio of medians would mix rounds; the median of per-round ratios keeps pairs together
            ratios = [s["rps"] / b["rps"] for s, b in zip(samples[kind], samples["bare"], strict=True)]
            row[f"{kind}_ratio"] = round(median(ratios), 3)
            if "fastapi-def" in samples and kind.startswith("svckit"):
                ratios = [s["rps"] / f["rps"] for s, f in zip(samples[kind], samples["fastapi-def"], strict=True)]
                row[f"{kind}_vs_fastapi"] = round(median(ratios), 3)
        results[cond] = row
    results["busy_loop_unloaded_per_s"] = round(unloaded_busy_rate(seconds))
    return results


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--smoke" in sys.argv), indent=1))
