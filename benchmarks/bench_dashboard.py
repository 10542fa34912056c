"""Dashboard: served HTTP throughput with ``srv.dashboard()`` displayed against without it.

The same server process as the HTTP rows (``http_server.py --kind svckit``: the one-stage
JSON echo flow served from a non-main thread), loaded by ``wrk`` with 16 connections;
with ``--dashboard`` the process also shows the flow's dashboard, whose refresher renders
and sends widget updates at most 4 times a second while the load runs. With no frontend,
each comm message is serialised and signed as ipykernel would before sending it, and
counted, so the cost of rendering and serialising is in the figure.

Both kinds are measured alternately, round after round; the ratio is the median of the
per-round ratios (target: attached >= 0.9x of without).
"""

from __future__ import annotations

import json
import time
from typing import Any

from common import PYTHON, Child, median, script, wrk, wrk_path

CONNECTIONS = 16
KINDS = ("without", "dashboard")


def measure(dashboard: bool, seconds: float) -> dict[str, float]:
    """One server process, one ``wrk`` run; with the dashboard also its comm messages/s under load."""
    args = [PYTHON, script("http_server.py"), "--kind", "svckit"]
    if dashboard:
        args.append("--dashboard")
    with Child(args) as server:
        before = _stats(server) if dashboard else None
        t0 = time.perf_counter()
        result = wrk(server.info, CONNECTIONS, seconds)
        elapsed = time.perf_counter() - t0
        if before is not None:
            after = _stats(server)
            msgs = after["comm_msgs"] - before["comm_msgs"]
            result["comm_msgs_per_s"] = msgs / elapsed
            result["comm_kb_per_s"] = (after["comm_bytes"] - before["comm_bytes"]) / elapsed / 1024
            result["comm_msgs_total"] = after["comm_msgs"]
            if after["comm_msgs"] == 0:
                raise RuntimeError("the dashboard sent no comm messages: nothing was measured")
    return result


def _stats(server: Child) -> dict[str, Any]:
    server.send("stats")
    return dict(json.loads(server.expect("STATS")))


def run(smoke: bool = False) -> dict[str, Any]:
    if wrk_path() is None:
        return {"skipped": "wrk is not installed (make bench installs it)"}
    rounds = 1 if smoke else 5
    seconds = 1.0 if smoke else 4.0
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    for i in range(rounds):
        # alternate which goes first, so a drifting machine does not favour one side
        order = KINDS if i % 2 == 0 else KINDS[::-1]
        for kind in order:
            samples[kind].append(measure(kind == "dashboard", seconds))
    res: dict[str, Any] = {"connections": CONNECTIONS, "rounds": rounds, "seconds": seconds}
    for kind, runs in samples.items():
        res[kind] = {
            "rps": round(median([r["rps"] for r in runs])),
            "p50_ms": round(median([r["p50_ms"] for r in runs]), 3),
            "p99_ms": round(median([r["p99_ms"] for r in runs]), 3),
            "rounds_rps": [round(r["rps"]) for r in runs],
        }
    dash = samples["dashboard"]
    res["dashboard"]["comm_msgs_per_s"] = round(median([r["comm_msgs_per_s"] for r in dash]), 1)
    res["dashboard"]["comm_kb_per_s"] = round(median([r["comm_kb_per_s"] for r in dash]), 1)
    ratios = [d["rps"] / w["rps"] for d, w in zip(dash, samples["without"], strict=True)]
    res["ratios"] = [round(r, 3) for r in ratios]
    res["ratio"] = round(median(ratios), 3)
    return res


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--smoke" in sys.argv), indent=1))
