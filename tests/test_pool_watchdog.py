"""The worker pool drops jobs whose caller has gone and reports how busy it is; the loop-stall
watchdog names an ``async def`` stage that holds the runtime loop (issue 12)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
import requests
import zmq

import svckit as sk
from svckit.logs import log_buffer
from svckit.testing import wait_for


def _lines_since(start: float, text: str) -> list[Any]:
    return [line for line in log_buffer().tail(200) if line.time >= start and text in line.message]


# -- the worker pool ------------------------------------------------------------------
def test_jobs_answered_504_before_a_worker_took_them_never_run(sk_serve, zsock):
    """40 requests to a 1 s ``def`` stage with ``timeout=0.05``: the 32 workers take 32 of
    them at once; the rest wait for a thread beyond the workers (0.1 s with every worker
    busy), and their requests are answered 504 before then. Those must never run."""
    started: dict[int, float] = {}
    finished: dict[int, float] = {}
    lock = threading.Lock()

    @sk.service
    def slow(i: int) -> None:
        with lock:
            started[i] = time.monotonic()
        time.sleep(1.0)  # the workload
        with lock:
            finished[i] = time.monotonic()

    srv = sk_serve(slow, name="slow", zmq=0, timeout=0.05)
    probe = sk_serve(sk.service(lambda: None, name="probe"), name="probe")
    sock = zsock(zmq.DEALER)
    sock.connect(srv.zmq_url)
    count = 40
    for i in range(count):
        sock.send_multipart([b"", b"slow", json.dumps({"i": i}).encode(), str(i).encode()])
    replied: dict[int, float] = {}
    kinds: dict[int, str] = {}
    while len(replied) < count:
        assert sock.poll(10_000), f"{count - len(replied)} replies missing"
        _, status, body, rid = sock.recv_multipart()
        replied[int(rid)] = time.monotonic()
        kinds[int(rid)] = json.loads(body)["error"]["type"] if status == b"error" else status.decode()
    assert set(kinds.values()) == {"ServiceTimeout"}

    # Queued after all of them (the queue is first in, first out): once it has run, every
    # job of ``slow`` was taken by a worker, to run or to be dropped.
    status = requests.get(f"{probe.url}/status", timeout=10).json()["served"]["probe"]
    requests.post(f"{probe.url}/probe", json={}, timeout=10).raise_for_status()
    wait_for(lambda: len(finished) == len(started), timeout=10, what="the started bodies to end")

    late = sorted(i for i, t in started.items() if t > replied[i])
    assert late == [], f"{len(late)} bodies started after their request was answered 504"
    assert len(started) < count
    pool = srv.status()["pool"]
    assert pool["dropped"] == count - len(started)
    assert pool["max"] == 8 * pool["workers"] == 256
    assert status["pool"]["busy"] >= 1 and status["pool"]["max"] == 256  # over HTTP too
    wait_for(lambda: srv.status()["pool"]["busy"] == 0, timeout=5, what="the pool to be idle")
    assert srv.status()["pool"]["queued"] == 0


def test_a_full_pool_is_reported_and_logged(monkeypatch, sk_serve, client_for, zsock):
    """With every thread up to the limit stuck, other served things' blocking stages wait and
    time out: ``status()["pool"]`` shows it, and it is logged once."""
    monkeypatch.setenv("SVCKIT_WORKERS", "2")  # a pool of 2 workers, 16 threads at most
    sk.shutdown()  # the next runtime reads it
    start = time.time()
    release = threading.Event()

    @sk.service
    def stuck(i: int) -> None:
        release.wait(10)  # the workload: blocked until the test lets go

    srv = sk_serve(stuck, name="stuck", zmq=0)
    quick = sk_serve(sk.service(lambda x: x, name="quick"), name="quick", timeout=0.3)
    try:
        assert srv.status()["pool"]["max"] == 16
        sock = zsock(zmq.DEALER)
        sock.connect(srv.zmq_url)
        for i in range(20):
            sock.send_multipart([b"", b"stuck", json.dumps({"i": i}).encode()])
        wait_for(lambda: srv.status()["pool"]["queued"] == 4, timeout=10, what="16 busy threads, 4 calls queued")
        # every thread is stuck: a quick plain def stage of another served thing waits, and times out
        with pytest.raises(sk.ServiceTimeout):
            client_for(quick.url).quick(x=1)
        pool = srv.status()["pool"]
        assert pool["threads"] == pool["busy"] == pool["max"] == 16
        assert pool["queued"] == 4  # the quick call's job left the queue with its caller
        full = "All 16 svckit worker threads are busy"
        wait_for(lambda: _lines_since(start, full), timeout=5, what="the warning")
        assert len(_lines_since(start, full)) == 1
    finally:
        release.set()
    for _ in range(20):
        assert sock.poll(10_000)
        assert sock.recv_multipart()[1] == b"ok"
    assert client_for(quick.url).quick(x=2)["quick"] == 2
    wait_for(lambda: srv.status()["pool"]["busy"] == 0, timeout=10, what="the pool to be idle")
    assert srv.status()["pool"]["dropped"] == 1  # the quick call that timed out never ran


# -- the loop-stall watchdog --------------------------------------------------------------
def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # CPU-bound, never awaits: the workload
        pass


def test_an_async_stage_that_holds_the_loop_is_reported_by_name(sk_serve, client_for):
    start = time.time()

    @sk.service
    async def crunch(n: int) -> dict:
        _spin(1.5)
        return {"n": n + 1}

    srv = sk_serve(crunch, name="crunch", timeout=1.0)
    # answered once the loop is back: 504, as late as it is (before: 200 after 1.5 s)
    with pytest.raises(sk.ServiceTimeout, match=r"within 1.0 s .*it finished 1\.[5-9]\d s after"):
        client_for(srv.url, timeout=20).call("crunch", n=1)
    lines = wait_for(lambda: _lines_since(start, "has not turned"), timeout=5, what="a stall in the log")
    assert len(lines) == 1
    (line,) = lines
    assert line.level == "WARNING" and line.service == "crunch"
    assert "stage 'crunch' of 'crunch'" in line.message and "test_pool_watchdog.py:" in line.message
    stalls = srv.status()["stalls"]
    assert stalls["count"] == 1 and stalls["threshold"] == 0.5
    assert stalls["last"]["stage"] == "crunch" and stalls["last"]["service"] == "crunch"
    wait_for(lambda: srv.status()["stalls"]["last"]["seconds"] >= 0.9, timeout=5, what="the stall's length")
    assert srv.status()["stalls"]["last"]["seconds"] < 2.0
    dash = srv.dashboard()
    try:
        shown = dash.runtime_info.value
        assert 'svckit-stalls">1<' in shown and "last: crunch of crunch" in shown
        assert "worker pool: " in shown and "at most 256" in shown
    finally:
        dash.close()


def test_an_async_stage_that_awaits_is_no_stall(sk_serve, client_for):
    start = time.time()

    @sk.service
    async def nap(n: int) -> dict:
        await asyncio.sleep(1.5)
        return {"n": n + 1}

    srv = sk_serve(nap, name="nap")
    client = client_for(srv.url, timeout=20)
    assert client.call("nap", n=1)["n"] == 2
    assert srv.status()["stalls"]["count"] == 0
    assert not _lines_since(start, "has not turned")


def test_the_watchdog_threshold_comes_from_the_environment_and_it_ends_with_the_runtime(monkeypatch):
    monkeypatch.setenv("SVCKIT_STALL_MS", "250")
    sk.shutdown()
    rt = sk.runtime()
    dog = rt.watchdog._thread
    assert rt.watchdog.threshold == 0.25
    assert dog is not None and dog.daemon and dog.is_alive()
    sk.shutdown()
    wait_for(lambda: not dog.is_alive(), timeout=5, what="the watchdog thread to end")
    monkeypatch.setenv("SVCKIT_STALL_MS", "0")  # off: no thread at all
    assert sk.runtime().watchdog._thread is None


def test_a_stall_is_named_only_in_the_status_of_its_own_served_thing(sk_serve, client_for):
    @sk.service
    async def hog(n: int) -> dict:
        _spin(0.9)
        return {"n": n}

    guarded = sk_serve(hog, name="guarded", token="s3cret")
    other = sk_serve(sk.service(lambda x: x, name="other"), name="other")
    client_for(guarded.url, token="s3cret", timeout=20).call("guarded", n=1)
    wait_for(lambda: guarded.status()["stalls"]["count"] >= 1, timeout=5, what="the stall counted")
    assert guarded.status()["stalls"]["last"]["stage"] == "hog"
    seen = requests.get(f"{other.url}/status", timeout=10).json()["served"]["other"]["stalls"]
    assert seen["count"] >= 1 and seen["last"] is None, seen  # the loop stalled, but whose and where is not its
