"""Middleware: nanoseconds an empty middleware adds per call, in a flow and when served.

In a flow (in-process, as in a cell): ``(empty >> inc)(x=1)`` against ``Flow(inc)(x=1)``
with ``empty = sk.middleware(lambda call, msg: call(msg))``, alternating the two in each
round like ``bench_compose``. Served: the request path with an empty ``async def``
middleware against the same served flow without one, in a fresh process (see
``middleware_worker.py``). The added cost is taken within each round; medians are reported.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from typing import Any

from common import PYTHON, median, run_json, script


def flow_builders() -> dict[str, Callable[[], Any]]:
    """name → a zero-argument callable that runs one message through ``inc``, with or without ``empty``."""
    import svckit as sk

    @sk.service
    def inc(x: int) -> dict[str, int]:
        return {"x": x + 1}

    empty = sk.middleware(lambda call, msg: call(msg))
    with_mw = empty >> inc
    inc_only_flow = sk.Flow(inc)

    def middleware_flow() -> Any:
        return with_mw(x=1)

    def plain_flow() -> Any:
        return inc_only_flow(x=1)

    out: dict[str, Callable[[], Any]] = {"with": middleware_flow, "without": plain_flow}
    for name, fn in out.items():
        assert fn()["x"] == 2, name
    return out


def flow(smoke: bool) -> dict[str, Any]:
    rounds = 3 if smoke else 15
    number = 100 if smoke else 5000
    fns = flow_builders()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timeit.timeit(fn, number=number) / number * 1e9)
    added = [w - b for w, b in zip(times["with"], times["without"], strict=True)]
    ratios = [w / b for w, b in zip(times["with"], times["without"], strict=True)]
    return {
        "with_ns_per_call": round(median(times["with"]), 1),
        "without_ns_per_call": round(median(times["without"]), 1),
        "added_ns_per_call": round(median(added), 1),
        "ratio": round(median(ratios), 3),
        "rounds": rounds,
        "calls_per_round": number,
    }


def served(smoke: bool) -> dict[str, Any]:
    rounds, number = (3, 50) if smoke else (151, 500)
    return run_json([PYTHON, script("middleware_worker.py"), str(rounds), str(number)], 120)


def run(smoke: bool = False) -> dict[str, Any]:
    return {"flow": flow(smoke), "served": served(smoke)}


if __name__ == "__main__":
    import json

    print(json.dumps(run("--smoke" in sys.argv), indent=1))
