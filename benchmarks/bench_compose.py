"""Composition: nanoseconds per stage of ``flow(...)`` against plain calls and service-flow's ``>>``.

Every stage is the same trivial function ``inc(x: int) -> dict`` (read one int, return a
dict that is merged into the message). The plain baseline calls the same functions on a
dict by hand; service-flow 0.3.1 composes them as ``Middleware`` over a context dict.
Run in-process (no I/O to measure), alternating the three in each round.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import HERE, median

SF_VENV = HERE / ".venv-sf"


def _sf_site() -> Path | None:
    for site in sorted(SF_VENV.glob("lib/python*/site-packages")):
        if (site / "service_flow").is_dir():
            return site
    return None


def load_service_flow() -> Any:
    """Import service-flow from the bench-only venv (it is never a dependency of svckit)."""
    try:
        import service_flow.flow
    except ImportError:
        site = _sf_site()
        if site is None:
            return None
        sys.path.append(str(site))
        import service_flow.flow
    import logging

    import service_flow.middleware  # its Flow looks LambdaMiddleware up through this module

    logging.getLogger("service_flow").setLevel(logging.WARNING)
    return service_flow


def make_functions(n: int) -> list[Callable[..., dict[str, int]]]:
    fns = []
    for i in range(n):

        def inc(x: int) -> dict[str, int]:
            return {"x": x + 1}

        inc.__name__ = f"inc{i}"
        fns.append(inc)
    return fns


def builders(n: int) -> dict[str, Callable[[], Any]]:
    """name → a zero-argument callable that runs one message through ``n`` stages."""
    import svckit as sk

    fns = make_functions(n)
    flow = sk.Flow(*(sk.service(f) for f in fns))

    def svckit_flow() -> Any:
        return flow(x=0)

    def plain() -> Any:
        msg = {"x": 0}
        for f in fns:
            msg.update(f(x=msg["x"]))
        return msg

    out: dict[str, Callable[[], Any]] = {"svckit": svckit_flow, "plain": plain}
    sf = load_service_flow()
    if sf is not None:
        sf_flow = sf.flow.Flow(fns[0])
        for f in fns[1:]:
            sf_flow = sf_flow >> f

        def service_flow() -> Any:
            return sf_flow({"x": 0})

        out["service-flow"] = service_flow
    for name, fn in out.items():
        assert fn()["x"] == n, name
    return out


def run(smoke: bool = False) -> dict[str, Any]:
    """Per stage count: each round times svckit, plain and service-flow back to back.

    The overhead per stage is computed within each round (svckit minus plain, over the
    number of stages), so a burst of load from other processes hits both sides of a
    pair; the median over rounds is reported.
    """
    rounds = 3 if smoke else 15
    number = 100 if smoke else 5000
    results: dict[str, Any] = {}
    for n in (1, 5, 20):
        fns = builders(n)
        times: dict[str, list[float]] = {k: [] for k in fns}
        per = max(1, number // n)
        for _ in range(rounds):
            for name, fn in fns.items():
                times[name].append(timeit.timeit(fn, number=per) / per * 1e9)
        med = {k: median(v) for k, v in times.items()}
        row: dict[str, Any] = {f"{k}_ns_per_call": round(v, 1) for k, v in med.items()}
        row.update({f"{k}_ns_per_stage": round(v / n, 1) for k, v in med.items()})
        plain = times["plain"]
        over = [(t - p) / n for t, p in zip(times["svckit"], plain, strict=True)]
        row["svckit_overhead_ns_per_stage"] = round(median(over), 1)
        if "service-flow" in times:
            sf_over = [(t - p) / n for t, p in zip(times["service-flow"], plain, strict=True)]
            row["service_flow_overhead_ns_per_stage"] = round(median(sf_over), 1)
            ratios = [a / b for a, b in zip(over, sf_over, strict=True) if b > 0]
            row["overhead_ratio_to_service_flow"] = round(median(ratios), 3) if ratios else None
        row["rounds"] = rounds
        results[str(n)] = row
    results["service_flow_available"] = load_service_flow() is not None
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run("--smoke" in sys.argv), indent=1))
