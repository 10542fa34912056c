"""ZMQ: svckit's ROUTER endpoint against a raw pyzmq REP thread, and a PULL → three stages → PUSH pipeline.

The load comes from ``zmq_load.py`` in another process (wrk cannot speak ZMQ). Each
measurement starts a fresh server process (``zmq_server.py``); svckit and raw alternate
round after round and the median is reported. The ``svckit-async`` kind runs the same
stages written as ``async def``: the difference to ``svckit`` is the worker-pool hop.
"""

from __future__ import annotations

from typing import Any

from common import PYTHON, Child, free_port, median, run_json, script

#: raw pyzmq, svckit with plain ``def`` stages, svckit with the same stages as ``async def``.
KINDS = ("raw", "svckit", "svckit-async")


def zmq_available() -> str | None:
    """None when svckit's ZMQ transport imports and has the documented API, else why not."""
    try:
        import svckit as sk
        import svckit.transports.zmq
    except ImportError as exc:
        return f"svckit.transports.zmq does not import yet ({exc})"
    missing = [n for n in ("pull", "push") if not hasattr(sk, n)]
    if missing:
        return "svckit has no " + ", ".join(f"sk.{n}" for n in missing) + " yet"
    return None


def rep(kind: str, mode: str, seconds: float) -> dict[str, Any]:
    with Child([PYTHON, script("zmq_server.py"), "--kind", kind, "--mode", "rep"]) as server:
        return run_json([PYTHON, script("zmq_load.py"), mode, server.info, str(seconds)], seconds + 60)


def pipe(kind: str, count: int) -> dict[str, Any]:
    a, b = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    args = [PYTHON, script("zmq_server.py"), "--kind", kind, "--mode", "pipe", "--pull", a, "--push", b]
    with Child(args):
        return run_json([PYTHON, script("zmq_load.py"), "pipe", a, b, str(count)], 120)


def run(smoke: bool = False) -> dict[str, Any]:
    why = zmq_available()
    if why is not None:
        return {"skipped": why}
    rounds = 1 if smoke else 3
    seconds = 0.5 if smoke else 3.0
    count = 2000 if smoke else 30_000
    results: dict[str, Any] = {}
    for mode in ("req", "dealer"):
        samples: dict[str, list[float]] = {k: [] for k in KINDS}
        for _ in range(rounds):
            for kind in KINDS:
                samples[kind].append(rep(kind, mode, seconds)["rps"])
        row: dict[str, Any] = {f"{k}_rps": round(median(v)) for k, v in samples.items()}
        for kind in KINDS[1:]:
            ratios = [s / r for s, r in zip(samples[kind], samples["raw"], strict=True)]
            row[f"{kind}_ratio"] = round(median(ratios), 3)
        row["rounds"] = {k: [round(v) for v in vs] for k, vs in samples.items()}
        results[f"rep_{mode}"] = row
    psamples: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            psamples[kind].append(pipe(kind, count))
    prow: dict[str, Any] = {"messages": count}
    for kind, runs in psamples.items():
        prow[f"{kind}_msgs_per_s"] = round(median([r["msgs_per_s"] for r in runs]))
    for kind in KINDS[1:]:
        pairs = zip(psamples[kind], psamples["raw"], strict=True)
        prow[f"{kind}_ratio"] = round(median([s["msgs_per_s"] / r["msgs_per_s"] for s, r in pairs]), 3)
    prow["all_delivered"] = all(r["ok"] for rs in psamples.values() for r in rs)
    prow["lost"] = {k: [r["sent"] - r["received"] for r in rs] for k, rs in psamples.items()}
    results["pipeline"] = prow
    return results


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--smoke" in sys.argv), indent=1))
