"""Soak: steady HTTP, ZMQ and pipeline traffic while the flow is served again every few seconds.

One flow, ``sk.pull(addr) >> work``, is served as ``soak`` on fixed HTTP and ZMQ ports. For
``SOAK_SECONDS`` (default 60) three client threads keep a steady, bounded rate each: HTTP
``POST /soak`` on one keep-alive connection, ZMQ ``[soak, json]`` on a REQ socket, and a PUSH
socket feeding the pipeline numbered messages. Meanwhile the main thread serves a new copy of
the flow under the same name on the same ports every ``--reserve-every`` seconds, as re-running
a notebook cell does.

The properties, checked at the end (exit status 1 when one fails):

- no failed request: every HTTP and ZMQ call answered 200 with the right result;
- every numbered message delivered or counted: delivered + counted dropped == sent, none twice;
- every re-serve returned without an error;
- RSS and open file descriptors flat: sampled after the warm-up and at the end.

Prints a table of the figures (``--json PATH`` also writes them). Throughput and latency are
reported, never checked. Run with ``make soak``; ``tests/test_soak.py`` runs a 5 s version.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

import svckit as sk

NAME = "soak"
CALL_TIMEOUT = 5.0
#: What "flat" allows between the sample after warm-up and the one at the end.
RSS_SLACK_MB = 20.0
FD_SLACK = 2


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ledger:
    """The numbered messages that reached the end of the flow (from worker threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: set[int] = set()
        self.duplicates = 0

    def deliver(self, seq: int) -> None:
        with self.lock:
            if seq in self.seen:
                self.duplicates += 1
            self.seen.add(seq)

    @property
    def delivered(self) -> int:
        with self.lock:
            return len(self.seen)


def make_flow(pull_addr: str, ledger: Ledger) -> sk.Service:
    """A new flow each time, as a re-run cell makes one: pull numbered messages, count them."""

    def work(x: int = 0, seq: int = -1) -> dict[str, Any]:
        if seq >= 0:
            ledger.deliver(seq)
        return {"y": x + 1}

    return sk.pull(pull_addr) >> sk.service(work, name="work")


@dataclass
class Channel:
    """One client thread's figures."""

    name: str
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failed += 1
        self.failures[why] = self.failures.get(why, 0) + 1

    def figures(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def q(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3, 2) if lat else float("nan")

        return {
            "ok": self.ok,
            "failed": self.failed,
            "failures": self.failures,
            "per_s": round((self.ok + self.failed) / seconds, 1),
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "max_ms": round(lat[-1] * 1e3, 2) if lat else float("nan"),
        }


def paced(rate: float, stop: threading.Event, step: Callable[[int], None]) -> None:
    """Call ``step(i)`` ``rate`` times a second until ``stop`` is set (no catching up in bursts)."""
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            stop.wait(due - now)
            continue
        if now - due > 1.0:  # fell behind by a second (a stall): drop the backlog of ticks
            start, i = now, 0
        step(i)
        i += 1


def http_client(port: int, rate: float, stop: threading.Event, out: Channel) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
    headers = {"Content-Type": "application/json"}

    def step(i: int) -> None:
        nonlocal conn
        t0 = time.perf_counter()
        try:
            conn.request("POST", f"/{NAME}", json.dumps({"x": i}).encode(), headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            out.fail(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
            return
        out.latencies.append(time.perf_counter() - t0)
        if resp.status != 200:
            out.fail(f"{resp.status} {_error_type(body)}")
        elif json.loads(body).get("y") != i + 1:
            out.fail("wrong result")
        else:
            out.ok += 1

    try:
        paced(rate, stop, step)
    finally:
        conn.close()


def zmq_client(ctx: zmq.Context[Any], addr: str, rate: float, stop: threading.Event, out: Channel) -> None:
    def connect() -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(addr)
        return sock

    sock = connect()

    def step(i: int) -> None:
        nonlocal sock
        t0 = time.perf_counter()
        sock.send_multipart([NAME.encode(), json.dumps({"x": i}).encode()])
        if not sock.poll(int(CALL_TIMEOUT * 1000)):
            out.fail("no reply")
            sock.close(linger=0)  # a REQ socket that lost its reply cannot send again
            sock = connect()
            return
        frames = sock.recv_multipart()
        out.latencies.append(time.perf_counter() - t0)
        if frames[0] != b"ok":
            out.fail(f"error {_error_type(frames[1])}")
        elif json.loads(frames[1]).get("y") != i + 1:
            out.fail("wrong result")
        else:
            out.ok += 1

    try:
        paced(rate, stop, step)
    finally:
        sock.close(linger=0)


def pusher(push: zmq.Socket[bytes], rate: float, stop: threading.Event, out: Channel) -> None:
    def step(i: int) -> None:
        seq = out.ok + out.failed  # numbered by attempt: an unsent number is never delivered
        try:
            push.send(json.dumps({"seq": seq}).encode())
        except zmq.Again:
            out.fail("send timed out")
            return
        out.ok += 1

    paced(rate, stop, step)


def _error_type(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return repr(body[:60])


def soak(seconds: float, reserve_every: float, rate: float) -> dict[str, Any]:
    ledger = Ledger()
    ctx: zmq.Context[Any] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDTIMEO, int(CALL_TIMEOUT * 1000))
    pull_port = push.bind_to_random_port("tcp://127.0.0.1")
    pull_addr = f"tcp://127.0.0.1:{pull_port}"
    http_port, zmq_port = free_port(), free_port()
    channels = {name: Channel(name) for name in ("http", "zmq", "push")}
    stop = threading.Event()
    srv = sk.serve(make_flow(pull_addr, ledger), name=NAME, http=http_port, zmq=zmq_port)
    threads = [
        threading.Thread(target=http_client, args=(http_port, rate, stop, channels["http"]), name="soak-http"),
        threading.Thread(target=zmq_client, args=(ctx, str(srv.zmq_url), rate, stop, channels["zmq"]), name="soak-zmq"),
        threading.Thread(target=pusher, args=(push, rate, stop, channels["push"]), name="soak-push"),
    ]
    reserves: list[float] = []
    reserve_errors: dict[str, int] = {}
    try:
        try:
            for t in threads:
                t.start()
            # Warm-up: every channel has answered, then a little steady traffic before the first sample.
            warm = min(2.0, max(0.5, seconds / 10))
            deadline = time.monotonic() + 10
            while not (channels["http"].ok and channels["zmq"].ok and ledger.delivered):
                if time.monotonic() > deadline:
                    raise RuntimeError("no traffic got through within 10 s of serving")
                time.sleep(0.01)
            stop.wait(warm)
            start_rss, start_fds, start_threads = rss_mb(), fd_count(), threading.active_count()
            t_start = time.monotonic()
            end = t_start + seconds
            next_reserve = t_start + reserve_every
            while (now := time.monotonic()) < end:
                if now < next_reserve:
                    stop.wait(min(next_reserve, end) - now)
                    continue
                t0 = time.perf_counter()
                try:
                    again = sk.serve(make_flow(pull_addr, ledger), name=NAME, http=http_port, zmq=zmq_port)
                    assert again is srv, "serving again under the same name replaces in place"
                except Exception as exc:
                    reserve_errors[type(exc).__name__] = reserve_errors.get(type(exc).__name__, 0) + 1
                reserves.append(time.perf_counter() - t0)
                next_reserve += reserve_every
            end_rss, end_fds, end_threads = rss_mb(), fd_count(), threading.active_count()
            elapsed = time.monotonic() - t_start + warm
        finally:
            stop.set()
            for t in threads:
                t.join(CALL_TIMEOUT + 5)
        # What was sent is delivered or counted once the flow has caught up (10 s at most).
        sent = channels["push"].ok
        deadline = time.monotonic() + 10
        while ledger.delivered + srv.status()["dropped"] < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        status = srv.status()
    finally:
        srv.stop()
        sk.shutdown()
        push.close(linger=0)
        ctx.term()
    delivered, dropped = ledger.delivered, status["dropped"]
    result = {
        "seconds": round(elapsed, 1),
        "rate_per_channel": rate,
        "reserve_every_s": reserve_every,
        "http": channels["http"].figures(elapsed),
        "zmq": channels["zmq"].figures(elapsed),
        "pipeline": {
            "sent": sent,
            "unsent": channels["push"].failed,
            "delivered": delivered,
            "dropped": dropped,
            "lost": sent - delivered - dropped,
            "duplicates": ledger.duplicates,
            "errors": status["errors"],
            "errors_by_type": status["errors_by_type"],
        },
        "reserves": {
            "count": len(reserves),
            "errors": reserve_errors,
            "median_ms": round(statistics.median(reserves) * 1e3, 1) if reserves else None,
            "max_ms": round(max(reserves) * 1e3, 1) if reserves else None,
        },
        "rss_mb": {"start": round(start_rss, 1), "end": round(end_rss, 1), "growth": round(end_rss - start_rss, 1)},
        "fds": {"start": start_fds, "end": end_fds, "growth": end_fds - start_fds},
        "threads": {"start": start_threads, "end": end_threads, "growth": end_threads - start_threads},
    }
    result["failed"] = properties(result)
    return result


def properties(r: dict[str, Any]) -> list[str]:
    """The properties that failed, each as a sentence (empty: all hold)."""
    failed = []
    for name in ("http", "zmq"):
        if r[name]["failed"]:
            failed.append(f"{r[name]['failed']} {name} calls failed: {r[name]['failures']}")
    pipe = r["pipeline"]
    if pipe["lost"]:
        failed.append(
            f"pipeline: {pipe['lost']} of {pipe['sent']} messages neither delivered nor counted as dropped "
            f"(delivered {pipe['delivered']}, dropped {pipe['dropped']}, errors {pipe['errors_by_type']})"
        )
    if pipe["duplicates"]:
        failed.append(f"pipeline: {pipe['duplicates']} messages delivered twice")
    if r["reserves"]["errors"]:
        failed.append(f"re-serve failed: {r['reserves']['errors']}")
    if r["rss_mb"]["growth"] > RSS_SLACK_MB:
        failed.append(f"RSS grew {r['rss_mb']['growth']} MB (more than {RSS_SLACK_MB} MB)")
    if r["fds"]["growth"] > FD_SLACK:
        failed.append(f"open file descriptors grew by {r['fds']['growth']} (more than {FD_SLACK})")
    return failed


def table(r: dict[str, Any]) -> str:
    h, z, p = r["http"], r["zmq"], r["pipeline"]
    rows = [
        ("duration", f"{r['seconds']} s, re-served every {r['reserve_every_s']} s ({r['reserves']['count']} times)"),
        ("re-serve", f"median {r['reserves']['median_ms']} ms, max {r['reserves']['max_ms']} ms"),
        ("HTTP calls", f"{h['ok']} ok, {h['failed']} failed; {h['per_s']}/s, p50 {h['p50_ms']} ms, "
         f"p99 {h['p99_ms']} ms, max {h['max_ms']} ms"),
        ("ZMQ calls", f"{z['ok']} ok, {z['failed']} failed; {z['per_s']}/s, p50 {z['p50_ms']} ms, "
         f"p99 {z['p99_ms']} ms, max {z['max_ms']} ms"),
        ("pipeline", f"{p['sent']} sent, {p['delivered']} delivered, {p['dropped']} counted dropped, "
         f"{p['lost']} lost, {p['duplicates']} twice"),
        ("RSS", f"{r['rss_mb']['start']} -> {r['rss_mb']['end']} MB ({r['rss_mb']['growth']:+} MB)"),
        ("open fds", f"{r['fds']['start']} -> {r['fds']['end']} ({r['fds']['growth']:+})"),
        ("threads", f"{r['threads']['start']} -> {r['threads']['end']} ({r['threads']['growth']:+})"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines += [f"FAILED: {f}" for f in r["failed"]] or ["every property holds"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "60")))
    parser.add_argument("--reserve-every", type=float, default=2.0, help="seconds between re-serves")
    parser.add_argument("--rate", type=float, default=200.0, help="calls (messages) per second per channel")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    result = soak(args.seconds, args.reserve_every, args.rate)
    print(table(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
