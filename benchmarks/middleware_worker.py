"""Served middleware: nanoseconds per request through the request path with an empty
``async def`` middleware against the same served flow without one.

Both are served in this process (``http=0``; no HTTP request is made) and driven through
``Served.path.handle`` — admission, middleware, running, counting, encoding — from a
coroutine on the runtime loop, one request in flight. The stage is ``inline=True`` so no
worker-pool hop hides the cost. Each round times a batch of each back to back (the order
flips every round) with the garbage collector off, as ``timeit`` does; the added cost is
taken within each round. Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any

BODY = b'{"x": 1}'


def main(rounds: int, number: int) -> dict[str, Any]:
    import svckit as sk
    from svckit.middleware import Request

    @sk.middleware
    async def empty_async(call: Any, msg: dict[str, Any]) -> dict[str, Any]:
        return await call(msg)

    @sk.middleware
    async def probe(call: Any, msg: dict[str, Any]) -> dict[str, Any]:
        return {**(await call(msg)), "probed": True}

    def inc_flow() -> Any:
        @sk.service(inline=True)
        def inc(x: int) -> dict[str, int]:
            return {"x": x + 1}

        return sk.Flow(inc)

    rt = sk.runtime()
    served = {
        "with": sk.serve(inc_flow(), name="mw_with", http=0, middleware=[empty_async]),
        "without": sk.serve(inc_flow(), name="mw_without", http=0),
    }
    checked = sk.serve(inc_flow(), name="mw_probe", http=0, middleware=[probe])
    try:

        async def batch(kind: str, n: int) -> float:
            srv = served[kind]
            handle, action = srv.path.handle, srv.name
            enabled = gc.isenabled()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    status, body = await handle(Request("http", action, BODY))
                elapsed = time.perf_counter() - t0
            finally:
                if enabled:
                    gc.enable()
            if status != 200 or json.loads(body) != {"x": 2}:
                raise RuntimeError(f"{action}: {status} {body!r}")
            return elapsed / n * 1e9

        # middleware=[...] wraps the served call (else the comparison measures nothing)
        status, body = rt.call(checked.path.handle(Request("http", checked.name, BODY)))
        if status != 200 or json.loads(body).get("probed") is not True:
            raise RuntimeError(f"served middleware did not run: {status} {body!r}")
        for kind in served:  # warm both paths up
            rt.call(batch(kind, max(10, number // 10)))
        times: dict[str, list[float]] = {k: [] for k in served}
        for i in range(rounds):
            for kind in ("with", "without") if i % 2 == 0 else ("without", "with"):
                times[kind].append(rt.call(batch(kind, number)))
    finally:
        checked.stop()
        for srv in served.values():
            srv.stop()
        sk.shutdown()
    added = [w - b for w, b in zip(times["with"], times["without"], strict=True)]
    ratios = [w / b for w, b in zip(times["with"], times["without"], strict=True)]
    quartiles = statistics.quantiles(added, n=4) if len(added) > 1 else [added[0]] * 3
    return {
        "with_ns_per_call": round(statistics.median(times["with"]), 1),
        "without_ns_per_call": round(statistics.median(times["without"]), 1),
        "added_ns_per_call": round(statistics.median(added), 1),
        "added_ns_quartiles": [round(quartiles[0], 1), round(quartiles[2], 1)],
        "ratio": round(statistics.median(ratios), 3),
        "rounds": rounds,
        "calls_per_round": number,
    }


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 151
    number = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(json.dumps(main(rounds, number)))
