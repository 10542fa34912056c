"""Memory: RSS after 1 000 000 messages through a served flow minus RSS after 10 000.

Messages are driven in-process through ``Served.handle`` — the one function every
transport calls to turn a request body into a reply (decode, run on the runtime, count,
encode) — from coroutines on the runtime loop, 64 in flight. That is the whole
per-message path except uvicorn's own parsing, at ~10 times the rate HTTP could drive from
this 2-core machine, so a million messages fit in the time budget; uvicorn itself keeps
no per-request state once a reply is sent. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

import psutil


def rss_mb() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


def main(total: int, first: int) -> dict[str, Any]:
    import svckit as sk
    from svckit.middleware import Request

    @sk.service
    def parse(text: str) -> dict[str, Any]:
        return {"words": text.split()}

    @sk.service
    def count(words: list[str]) -> dict[str, Any]:
        return {"n": len(words)}

    srv = sk.serve(parse >> count, name="wordcount", http=0)
    rt = sk.runtime()
    try:

        async def drive(n: int, start: int) -> None:
            async def worker(lo: int, hi: int) -> None:
                for i in range(lo, hi):
                    raw = b'{"text":"message %d with a few words"}' % i
                    status, _ = await srv.path.handle(Request("http", "wordcount", raw))
                    if status != 200:
                        raise RuntimeError(f"status {status}")

            width = 64
            step = -(-n // width)
            await asyncio.gather(
                *(worker(start + k * step, min(start + n, start + (k + 1) * step)) for k in range(width))
            )

        t0 = time.perf_counter()
        rt.call(drive(first, 0))
        after_first = rss_mb()
        rt.call(drive(total - first, first))
        elapsed = time.perf_counter() - t0
        after_total = rss_mb()
        replied = srv.metrics.replied
    finally:
        srv.stop()
        sk.shutdown()
    return {
        "messages": total,
        "baseline_messages": first,
        "rss_after_baseline_mb": round(after_first, 1),
        "rss_after_all_mb": round(after_total, 1),
        "growth_mb": round(after_total - after_first, 2),
        "replied": replied,
        "msgs_per_s": round(total / elapsed),
    }


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    print(json.dumps(main(total, first)))
