"""Run svckit's benchmarks side by side with their baselines; print a table and save JSON.

    .venv/bin/python benchmarks/run.py            # the full suite (make bench)
    .venv/bin/python benchmarks/run.py --smoke    # every benchmark once with tiny counts
    .venv/bin/python benchmarks/run.py --only http,compose

Ratios come from pairs measured alternately in the same run; absolute figures stand
beside them. Results go to ``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_compose
import bench_dashboard
import bench_http
import bench_memory
import bench_middleware
import bench_scale
import bench_startup
import bench_zmq
from common import HERE

SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "compose": bench_compose.run,
    "middleware": bench_middleware.run,
    "startup": bench_startup.run,
    "http": bench_http.run,
    "zmq": bench_zmq.run,
    "dashboard": bench_dashboard.run,
    "memory": bench_memory.run,
    "scale": bench_scale.run,
}

#: Every row of the table, in order: (id, section, label).
ROWS: tuple[tuple[str, str, str], ...] = (
    ("http_idle_c1", "http", "HTTP echo, 1 conn, idle main thread"),
    ("http_idle_c16", "http", "HTTP echo, 16 conns, idle main thread"),
    ("http_busy_c1", "http", "HTTP echo, 1 conn, busy main thread"),
    ("http_busy_c16", "http", "HTTP echo, 16 conns, busy main thread"),
    ("http_busy_c16_switch1ms", "http", "HTTP echo, 16 conns, busy, switchinterval 1 ms"),
    ("http_busy_cell", "http", "busy cell's own loop speed at 16 conns (5 ms / 1 ms switch)"),
    ("http_async_idle_c1", "http", "HTTP echo, async def stage, 1 conn, idle"),
    ("http_async_busy_c1", "http", "HTTP echo, async def stage, 1 conn, busy"),
    ("http_async_idle_c16", "http", "HTTP echo, async def stage, 16 conns, idle"),
    ("http_async_busy_c16", "http", "HTTP echo, async def stage, 16 conns, busy"),
    ("http_inline_idle_c1", "http", "HTTP echo, def stage inline=True, 1 conn, idle"),
    ("http_inline_busy_c1", "http", "HTTP echo, def stage inline=True, 1 conn, busy"),
    ("http_inline_idle_c16", "http", "HTTP echo, def stage inline=True, 16 conns, idle"),
    ("http_inline_busy_c16", "http", "HTTP echo, def stage inline=True, 16 conns, busy"),
    ("zmq_req", "zmq", "ZMQ REQ/REP round trips, 1 REQ"),
    ("zmq_dealer16", "zmq", "ZMQ round trips, 16 DEALERs in flight"),
    ("zmq_pipeline", "zmq", "ZMQ PULL -> 3 stages -> PUSH"),
    ("zmq_async_req", "zmq", "ZMQ 1 REQ, async def stage"),
    ("zmq_async_dealer16", "zmq", "ZMQ 16 DEALERs, async def stage"),
    ("zmq_async_pipeline", "zmq", "ZMQ pipeline, async def stages"),
    ("compose_1", "compose", "flow(...) overhead, 1 stage"),
    ("compose_5", "compose", "flow(...) overhead, 5 stages"),
    ("compose_20", "compose", "flow(...) overhead, 20 stages"),
    ("middleware_flow", "middleware", "empty def middleware in a flow, per call"),
    ("middleware_served", "middleware", "empty async def middleware served, per request"),
    ("dashboard", "dashboard", "HTTP with dashboard attached vs without"),
    ("memory", "memory", "RSS growth, 10k -> 1M messages"),
    ("startup_serve", "startup", "sk.serve -> first response (cold)"),
    ("startup_replace", "startup", "re-serve (replace) -> first new response"),
    ("scale_cpu", "scale", "CPU-bound stage.on(client): 2 workers vs 1"),
    ("scale_seq", "scale", "on(client) per message, 1 at a time"),
    ("scale_par8", "scale", "on(client, limit=8) per message, 8 in flight"),
    ("scale_remote", "scale", "sk.remote, 8 in flight: ZMQ vs HTTP"),
)


def _row(
    value: str,
    base: str = "",
    ratio: float | None = None,
    target: str = "",
    met: bool | None = None,
    fastapi: str = "",
) -> dict[str, Any]:
    return {"svckit": value, "baseline": base, "ratio": ratio, "target": target, "met": met, "fastapi": fastapi}


#: svckit's default ``def`` stage against FastAPI's ``def`` endpoint in a thread, in every HTTP condition.
FASTAPI_TARGET = 1.5


def _http(res: dict[str, Any], cond: str, kind: str, target: float | None) -> dict[str, Any]:
    r = res[cond]
    s, b = r[kind], r["bare"]
    ratio = r[f"{kind}_ratio"]
    fastapi, vs = "", r.get(f"{kind}_vs_fastapi")
    met = None if target is None else ratio >= target
    goal = f">= {target}x bare" if target else ""
    if vs is not None:
        fastapi = f"{vs:.2f}x ({r['fastapi-def']['rps']:,} req/s)"
        if kind == "svckit":  # the default def stage must beat what a user would write instead
            goal += f"{', ' if goal else ''}>= {FASTAPI_TARGET}x FastAPI"
            met = (met is not False) and vs >= FASTAPI_TARGET
    return _row(
        f"{s['rps']:,} req/s p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} ms",
        f"{b['rps']:,} req/s p50 {b['p50_ms']:.2f} p99 {b['p99_ms']:.2f} ms",
        ratio,
        goal,
        met,
        fastapi,
    )


def build_rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Turn raw section results into table rows keyed by row id (every id in ``ROWS``)."""
    rows: dict[str, dict[str, Any]] = {}
    for row_id, section, label in ROWS:
        res = results.get(section)
        try:
            if res is None:
                row = _row("not run")
            elif "skipped" in res:
                row = _row(str(res["skipped"]))
            elif "error" in res:
                row = _row(f"error: {res['error']}")
            else:
                row = ROW_BUILDERS[row_id](res)
        except KeyError as exc:
            row = _row(f"not measured ({exc})")
        row["label"] = label
        rows[row_id] = row
    return rows


def _compose(n: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def build(res: dict[str, Any]) -> dict[str, Any]:
        r = res[n]
        over = r["svckit_overhead_ns_per_stage"]
        sf = r.get("service_flow_overhead_ns_per_stage")
        ratio = r.get("overhead_ratio_to_service_flow")
        met = over <= 300 and (ratio is not None and ratio <= 0.2)
        base = f"plain {r['plain_ns_per_stage']:.0f} ns/stage"
        if sf is not None:
            base += f"; service-flow +{sf:.0f} ns/stage"
        return _row(
            f"+{over:.0f} ns/stage ({r['svckit_ns_per_stage']:.0f} total)",
            base,
            ratio,
            "<= 300 ns and <= 0.2x service-flow",
            met,
        )

    return build


def _middleware(key: str, target: float | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """ns an empty middleware adds per call: with it against without, paired within each round."""

    def build(res: dict[str, Any]) -> dict[str, Any]:
        r = res[key]
        added = r["added_ns_per_call"]
        goal = f"<= {target:.0f} ns added" if target is not None else ""
        if "added_ns_quartiles" in r:
            lo, hi = r["added_ns_quartiles"]
            goal += f" (rounds IQR {lo:+.0f}..{hi:+.0f} ns, n={r['rounds']})"
        return _row(
            f"+{added:.0f} ns/call ({r['with_ns_per_call']:.0f} total)",
            f"no middleware {r['without_ns_per_call']:.0f} ns/call",
            r["ratio"],
            goal,
            None if target is None else added <= target,
        )

    return build


def _switch(res: dict[str, Any]) -> dict[str, Any]:
    row = _http(res, "busy_c16_switch1ms", "svckit", None)
    d, f = res["busy_c16"], res["busy_c16_switch1ms"]
    bare, svc = f["bare"]["rps"] / d["bare"]["rps"], f["svckit"]["rps"] / d["svckit"]["rps"]
    row["target"] += f" (vs 5 ms: bare {bare:.2f}x, svckit {svc:.2f}x)"
    return row


def _busy_cell(res: dict[str, Any]) -> dict[str, Any]:
    """How fast the busy main thread itself ran while served, at both switch intervals."""
    d, f = res["busy_c16"], res["busy_c16_switch1ms"]

    def speeds(kind: str) -> str:
        return f"{d[kind]['busy_loop_per_s'] / 1e6:.1f}M / {f[kind]['busy_loop_per_s'] / 1e6:.1f}M iter/s"

    alone = res["busy_loop_unloaded_per_s"] / 1e6
    return _row(speeds("svckit"), speeds("bare"), None, f"info; {alone:.1f}M iter/s unserved")


def _zmq(key: str, kind: str, target: float | None, unit: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def build(res: dict[str, Any]) -> dict[str, Any]:
        r = res[key]
        if key == "pipeline":
            value, base = f"{r[kind + '_msgs_per_s']:,} {unit}", f"{r['raw_msgs_per_s']:,} {unit} (raw sync)"
            lost = r["lost"][kind]
            if any(lost):
                value += f" LOST {lost}"
        else:
            value, base = f"{r[kind + '_rps']:,} {unit}", f"{r['raw_rps']:,} {unit} (raw REP)"
        ratio = r[f"{kind}_ratio"]
        met = None if target is None else ratio >= target
        return _row(value, base, ratio, f">= {target}x raw" if target else "", met)

    return build


def _dashboard(res: dict[str, Any]) -> dict[str, Any]:
    """Throughput with the dashboard displayed against without, the comm traffic it sent, the spread."""
    d, w = res["dashboard"], res["without"]
    ratio = res["ratio"]
    spread = f"{min(res['ratios']):.2f}-{max(res['ratios']):.2f}"
    return _row(
        f"{d['rps']:,} req/s p50 {d['p50_ms']:.2f} p99 {d['p99_ms']:.2f} ms; "
        f"{d['comm_msgs_per_s']:.1f} comm msg/s ({d['comm_kb_per_s']:.1f} KB/s)",
        f"{w['rps']:,} req/s p50 {w['p50_ms']:.2f} p99 {w['p99_ms']:.2f} ms (no dashboard)",
        ratio,
        f">= 0.9x without (rounds {spread}, n={len(res['ratios'])})",
        ratio >= 0.9,
    )


def _scale_cpu(res: dict[str, Any]) -> dict[str, Any]:
    r = res["cpu"]
    spread = f"{min(r['ratios']):.2f}-{max(r['ratios']):.2f}"
    return _row(
        f"{r['two_workers_msgs_per_s']:.1f} msg/s ({r['msg_ms']:.0f} ms a message)",
        f"{r['one_worker_msgs_per_s']:.1f} msg/s (1 worker)",
        r["ratio"],
        f">= 1.6x 1 worker (rounds {spread}, n={r['rounds']})",
        r["ratio"] >= 1.6,
    )


def _scale_overhead(kind: str, base: str, label: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def build(res: dict[str, Any]) -> dict[str, Any]:
        r = res["overhead"]
        svc, direct = r[f"{kind}_on_client_ms"], r[f"{kind}_{base}_ms"]
        return _row(f"{svc:.2f} ms/msg", f"{direct:.2f} ms/msg ({label})", round(svc / direct, 3), "info")

    return build


ROW_BUILDERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "http_idle_c1": lambda r: _http(r, "idle_c1", "svckit", 0.8),
    "http_idle_c16": lambda r: _http(r, "idle_c16", "svckit", 1.0),
    "http_busy_c1": lambda r: _http(r, "busy_c1", "svckit", 0.5),
    "http_busy_c16": lambda r: _http(r, "busy_c16", "svckit", 0.8),
    "http_busy_c16_switch1ms": _switch,
    "http_busy_cell": lambda r: _busy_cell(r),
    "http_async_idle_c1": lambda r: _http(r, "idle_c1", "svckit-async", None),
    "http_async_busy_c1": lambda r: _http(r, "busy_c1", "svckit-async", None),
    "http_async_idle_c16": lambda r: _http(r, "idle_c16", "svckit-async", None),
    "http_async_busy_c16": lambda r: _http(r, "busy_c16", "svckit-async", None),
    "http_inline_idle_c1": lambda r: _http(r, "idle_c1", "svckit-inline", None),
    "http_inline_busy_c1": lambda r: _http(r, "busy_c1", "svckit-inline", None),
    "http_inline_idle_c16": lambda r: _http(r, "idle_c16", "svckit-inline", None),
    "http_inline_busy_c16": lambda r: _http(r, "busy_c16", "svckit-inline", None),
    "zmq_req": _zmq("rep_req", "svckit", 0.8, "rt/s"),
    "zmq_dealer16": _zmq("rep_dealer", "svckit", 0.8, "rt/s"),
    "zmq_pipeline": _zmq("pipeline", "svckit", 0.6, "msg/s"),
    "zmq_async_req": _zmq("rep_req", "svckit-async", None, "rt/s"),
    "zmq_async_dealer16": _zmq("rep_dealer", "svckit-async", None, "rt/s"),
    "zmq_async_pipeline": _zmq("pipeline", "svckit-async", None, "msg/s"),
    "compose_1": _compose("1"),
    "compose_5": _compose("5"),
    "compose_20": _compose("20"),
    "middleware_flow": _middleware("flow", None),
    "middleware_served": _middleware("served", 1000),
    "dashboard": _dashboard,
    "memory": lambda r: _row(
        f"{r['growth_mb']:+.1f} MB ({r['rss_after_baseline_mb']:.0f} -> {r['rss_after_all_mb']:.0f} MB)",
        f"{r['messages']:,} msgs at {r['msgs_per_s']:,}/s",
        None,
        "<= 20 MB",
        r["growth_mb"] <= 20,
    ),
    "startup_serve": lambda r: _row(
        f"{r['serve_cold_ms']:.0f} ms",
        f"warm re-serve {r['serve_warm_ms']:.1f} ms",
        None,
        "<= 200 ms",
        r["serve_cold_ms"] <= 200,
    ),
    "scale_cpu": _scale_cpu,
    "scale_seq": _scale_overhead("seq", "submit_result", "client.submit(...).result() loop"),
    "scale_par8": _scale_overhead("par8", "submit_wait", "8 submits, gathered per batch"),
    "scale_remote": lambda r: _row(
        f"ZMQ {r['remote']['zmq_msgs_per_s']:,} msg/s",
        f"HTTP {r['remote']['http_msgs_per_s']:,} msg/s",
        r["remote"]["ratio"],
        "info",
    ),
    "startup_replace": lambda r: _row(
        f"{r['replace_ms']:.1f} ms", f"max {r['replace_max_ms']:.1f} ms", None, "<= 300 ms", r["replace_ms"] <= 300
    ),
}


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = ("benchmark", "svckit", "baseline", "ratio", "vs FastAPI def", "target", "status")
    lines = []
    for row in rows.values():
        status = {True: "met", False: "MISSED", None: "-"}[row["met"]]
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        fastapi = row.get("fastapi") or "-"
        lines.append((row["label"], row["svckit"], row["baseline"], ratio, fastapi, row["target"], status))
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("svckit", "uvicorn", "starlette", "uvloop", "httptools", "pyzmq", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="each benchmark once with tiny counts")
    parser.add_argument("--only", default="", help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON results")
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    started = time.time()
    info = machine()
    results: dict[str, Any] = {}
    for name in chosen:
        t0 = time.perf_counter()
        print(f"-- {name} ...", flush=True)
        try:
            results[name] = SECTIONS[name](args.smoke)
        except Exception as exc:  # one broken benchmark must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"   {name} took {time.perf_counter() - t0:.1f} s", flush=True)
    rows = build_rows(results)
    info["load_average_end"] = os.getloadavg()
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "smoke": args.smoke,
        "machine": info,
        "rows": rows,
        "results": results,
    }
    out = args.out
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        out = HERE / "results" / f"{'smoke' if args.smoke else 'bench'}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print()
    print(table(rows))
    print(
        f"\n{info['cpus']} CPUs, {info['platform']}, Python {info['python']}; "
        f"load average {info['load_average'][0]:.2f} at start, {info['load_average_end'][0]:.2f} at end; "
        f"{report['seconds']:.0f} s"
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
