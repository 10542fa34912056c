"""Scale-out: ``stage.on(client)`` on Dask ``LocalCluster``s, and ``sk.remote`` over ZMQ and HTTP.

- CPU-bound: a pure-Python stage (~40 ms a message) through ``on(client)`` on a cluster of
  one worker process and on one of two (one thread each), rounds alternating between them;
  messages per second of each, and the ratio (target >= 1.6x on 2 cores).
- Overhead: a trivial stage, one message at a time, ``staged(x=i)`` in a loop (what a cell
  does) against a loop of ``client.submit(inc, i, pure=False).result()``; then 8 in flight,
  ``on(client, limit=8)`` from the runtime against 8 submits gathered together per batch.
- Remote: ``sk.remote`` to a flow served in this process, 8 in flight, over ZMQ (one async
  DEALER) and over HTTP (``sk.Client`` in the worker pool).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from common import median


def burn(n: int) -> dict[str, int]:
    total = 0
    for i in range(n):
        total += i * i % 7
    return {"total": total}


def inc(x: int) -> dict[str, int]:
    return {"y": x + 1}


def _cluster(workers: int) -> tuple[Any, Any]:
    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = distributed.LocalCluster(
        n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
    )
    return cluster, distributed.Client(cluster, set_as_default=False)


async def _through(staged: Any, msgs: list[dict[str, Any]], rt: Any) -> None:
    await asyncio.gather(*(staged.arun(m, rt) for m in msgs))


def _rate(staged: Any, msgs: int, make: Any, rt: Any) -> float:
    batch = [make(i) for i in range(msgs)]
    t = time.perf_counter()
    rt.call(_through(staged, batch, rt), timeout=600)
    return msgs / (time.perf_counter() - t)


def cpu(smoke: bool) -> dict[str, Any]:
    import svckit as sk

    n = 20_000 if smoke else 1_500_000
    msgs, rounds = (4, 1) if smoke else (24, 3)
    one, two = _cluster(1), _cluster(2)
    try:
        rt = sk.runtime()
        stage = sk.service(burn)
        staged = {1: stage.on(one[1]), 2: stage.on(two[1])}
        for s in staged.values():
            _rate(s, 2, lambda i: {"n": 1000}, rt)  # warm: svckit's client, the function on the workers
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for w in (1, 2):
                rates[w].append(_rate(staged[w], msgs, lambda i: {"n": n}, rt))
        t = time.perf_counter()
        burn(n)
        single_ms = (time.perf_counter() - t) * 1e3
    finally:
        sk.shutdown()
        for cluster, client in (one, two):
            client.close()
            cluster.close()
    r1, r2 = median(rates[1]), median(rates[2])
    return {
        "msg_ms": round(single_ms, 1),
        "messages": msgs,
        "rounds": rounds,
        "one_worker_msgs_per_s": round(r1, 2),
        "two_workers_msgs_per_s": round(r2, 2),
        "ratio": round(r2 / r1, 3),
        "ratios": [round(b / a, 3) for a, b in zip(rates[1], rates[2], strict=True)],
    }


def overhead(smoke: bool) -> dict[str, Any]:
    import svckit as sk

    msgs = 20 if smoke else 300
    cluster, client = _cluster(2)
    try:
        rt = sk.runtime()
        staged = sk.service(inc).on(client)
        staged8 = sk.service(inc).on(client, limit=8)
        staged(x=0)
        client.submit(inc, 0, pure=False).result()
        seq_svc, seq_direct, par_svc, par_direct = [], [], [], []
        for _ in range(1 if smoke else 3):
            t = time.perf_counter()
            for i in range(msgs):
                staged(x=i)
            seq_svc.append((time.perf_counter() - t) / msgs * 1e3)
            t = time.perf_counter()
            for i in range(msgs):
                client.submit(inc, i, pure=False).result()
            seq_direct.append((time.perf_counter() - t) / msgs * 1e3)
            par_svc.append(1e3 / _rate(staged8, msgs, lambda i: {"x": i}, rt))
            t = time.perf_counter()
            for start in range(0, msgs, 8):
                futures = [client.submit(inc, i, pure=False) for i in range(start, min(start + 8, msgs))]
                client.gather(futures)
            par_direct.append((time.perf_counter() - t) / msgs * 1e3)
    finally:
        sk.shutdown()
        client.close()
        cluster.close()
    return {
        "messages": msgs,
        "seq_on_client_ms": round(median(seq_svc), 3),
        "seq_submit_result_ms": round(median(seq_direct), 3),
        "par8_on_client_ms": round(median(par_svc), 3),
        "par8_submit_wait_ms": round(median(par_direct), 3),
    }


def remote(smoke: bool) -> dict[str, Any]:
    import svckit as sk

    msgs = 200 if smoke else 4000
    out: dict[str, Any] = {"messages": msgs}
    try:
        rt = sk.runtime()
        srv = sk.serve(sk.service(inc, inline=True), name="inc", http=0, zmq=0)
        for kind, addr in (("zmq", srv.zmq_url), ("http", srv.url)):
            stage = sk.remote(addr, "inc")
            stage(x=0)
            rates = []
            for _ in range(1 if smoke else 3):
                rates.append(_rate_in_flight(stage, msgs, 8, rt))
            out[f"{kind}_msgs_per_s"] = round(median(rates))
    finally:
        sk.shutdown()
    out["ratio"] = round(out["zmq_msgs_per_s"] / out["http_msgs_per_s"], 2)
    return out


def _rate_in_flight(stage: Any, msgs: int, in_flight: int, rt: Any) -> float:
    async def go() -> None:
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with sem:
                await stage.arun({"x": i}, rt)

        await asyncio.gather(*(one(i) for i in range(msgs)))

    t = time.perf_counter()
    rt.call(go(), timeout=600)
    return msgs / (time.perf_counter() - t)


def run(smoke: bool = False) -> dict[str, Any]:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return {"skipped": "distributed is not installed (pip install 'svckit[dask]')"}
    return {"cpu": cpu(smoke), "overhead": overhead(smoke), "remote": remote(smoke)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--smoke" in sys.argv), indent=1))
