"""``stage.on(executor)``: stages on a real Dask ``LocalCluster`` of worker processes and on process pools."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import zmq

import svckit as sk
from svckit.testing import collect, wait_for

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def client():
    """Two worker processes; Dask gives up on a task at the first worker that dies under it
    (``allowed-failures: 0``), so svckit's own resubmission is what the tests see."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.CRITICAL
        )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        sk.shutdown(timeout=10)  # svckit's own client to the scheduler goes first
        client.close(timeout=20)
        cluster.close(timeout=20)


@pytest.fixture
def healthy(client):
    """Both workers up before and after the test (one killed in a test is restarted by its nanny)."""
    client.wait_for_workers(2, timeout=60)
    yield client
    sk.shutdown(timeout=10)
    client.wait_for_workers(2, timeout=60)


@sk.service
def square(x: int) -> dict:
    return {"y": x * x, "pid": os.getpid()}


@sk.service
def fails(x: int) -> dict:
    raise ValueError(f"x={x} is not allowed")


def _spans(srv: sk.Served) -> list[tuple[float, float]]:
    return [(row["t0"], row["t1"]) for row in srv.outputs.to_dict("records")]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at any moment."""
    edges = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# -- Dask ------------------------------------------------------------------------------------


def test_results_merge_and_errors_keep_their_type(healthy, sk_serve):
    flow = square.on(healthy) >> sk.service(lambda y: y + 1, name="z")
    assert repr(flow.stages[0]) == "<Service square(x: int) on dask>"
    assert flow(x=3)["z"] == 10, "called right in a cell"
    srv = sk_serve(flow, name="sq")
    with sk.Client(srv.url) as c:
        reply = c.sq(x=5)
        assert (reply["y"], reply["z"]) == (25, 26)
        assert reply["pid"] != os.getpid(), "it ran in a worker process"
        with pytest.raises(sk.BadMessage, match="field 'x'"):
            c.sq(x="five")  # validated here, before anything travels
    bad = sk_serve(fails.on(healthy), name="fails")
    with sk.Client(bad.url) as c, pytest.raises(sk.RemoteError) as err:
        c.fails(x=2)
    assert err.value.type == "ValueError" and err.value.message == "x=2 is not allowed"
    extra = srv.status()["stages"]["square"]
    assert (extra["kind"], extra["executor"], extra["done"], extra["failed"]) == ("executor", "dask", 1, 1)
    assert bad.status()["stages"]["fails"]["failed"] == 1


def test_each_message_is_its_own_task(healthy):
    """Equal messages give equal arguments: a key made from them would return one cached result."""
    calls = []

    @sk.service
    def stamp(x: int) -> dict:
        import uuid

        return {"token": uuid.uuid4().hex}

    staged = stamp.on(healthy)
    tokens = {staged(x=1)["token"] for _ in range(5)}
    assert len(tokens) == 5, calls


def test_limit_bounds_the_tasks_in_flight(healthy, sk_serve):
    @sk.service
    def nap(i: int) -> dict:
        t0 = time.time()
        time.sleep(0.15)
        return {"t0": t0, "t1": time.time()}

    srv = sk_serve(nap.on(healthy, limit=1), name="nap")
    callers = 6
    with concurrent.futures.ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(lambda i: sk.Client(srv.url).nap(i=i), i) for i in range(callers)]
        wait_for(lambda: srv.status()["stages"]["nap"]["waiting"] >= 3, what="callers waiting for a slot")
        extra = srv.status()["stages"]["nap"]
        assert extra["in_flight"] == 1 and extra["limit"] == 1
        replies = [f.result(timeout=60) for f in futures]
    spans = [(r["t0"], r["t1"]) for r in replies]
    assert most_at_once(spans) == 1, "never two tasks at once on the cluster"
    assert srv.status()["stages"]["nap"]["peak"] == 1


def test_limit_two_uses_both_workers(healthy, sk_serve):
    @sk.service
    def nap(i: int) -> dict:
        t0 = time.time()
        time.sleep(0.3)
        return {"t0": t0, "t1": time.time(), "pid": os.getpid()}

    srv = sk_serve(nap.on(healthy, limit=2), name="nap")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda i: sk.Client(srv.url).nap(i=i), range(6)))
    assert most_at_once([(r["t0"], r["t1"]) for r in replies]) == 2
    assert len({r["pid"] for r in replies}) == 2
    assert srv.status()["stages"]["nap"]["peak"] == 2


def _pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_a_worker_killed_mid_task_is_retried_and_the_message_answered(healthy, sk_serve):
    @sk.service
    def slow(i: int) -> dict:
        time.sleep(1.5)
        return {"done": i, "pid": os.getpid()}

    pids = _pids(healthy)
    srv = sk_serve(slow.on(healthy, retries=2), name="slow", timeout=60)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(lambda: sk.Client(srv.url, timeout=60).slow(i=7))

        def running_on() -> str | None:
            for worker, keys in healthy.processing().items():
                if any(str(k).startswith("slow-") for k in keys):
                    return worker
            return None

        worker = wait_for(running_on, timeout=20, what="the task running on a worker")
        os.kill(pids[worker], signal.SIGKILL)
        answer = reply.result(timeout=60)
    assert answer["done"] == 7 and answer["pid"] != pids[worker]
    extra = srv.status()["stages"]["slow"]
    assert (extra["retried"], extra["lost"], extra["done"], extra["failed"]) == (1, 0, 1, 0)


def test_a_task_that_kills_every_worker_is_answered_worker_lost(healthy, sk_serve):
    @sk.service
    def crash(i: int) -> dict:
        os._exit(3)

    srv = sk_serve(crash.on(healthy, retries=1), name="crash", timeout=90)
    status, body = _post(srv.url + "/crash", {"i": 1})
    assert status == 503
    error = body["error"]
    assert error["type"] == "WorkerLost"
    assert error["worker"].startswith("worker tcp://127.0.0.1:") and error["attempts"] == 2
    assert error["message"].startswith("Service 'crash' lost its task to worker tcp://")
    with sk.Client(srv.url) as c, pytest.raises(sk.WorkerLost):
        c.crash(i=2)
    extra = srv.status()["stages"]["crash"]
    assert (extra["retried"], extra["lost"], extra["failed"], extra["done"]) == (2, 2, 2, 0)


def test_a_thousand_messages_none_lost(healthy, sk_serve):
    sink = collect()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    try:
        srv = sk_serve(sk.pull(f"tcp://127.0.0.1:{port}") >> square.on(healthy, limit=8) >> sink, name="many")
        for i in range(1000):
            push.send_json({"x": i})
        items = sink.wait(1000, timeout=100)
    finally:
        push.close(linger=0)
    assert sorted(m["x"] for m in items) == list(range(1000))
    assert all(m["y"] == m["x"] ** 2 for m in items)
    extra = srv.settle().status()["stages"]["square"]
    assert (extra["done"], extra["failed"], extra["lost"], extra["in_flight"]) == (1000, 0, 0, 0)
    assert extra["peak"] == 8, "32 consumers of the source share 8 slots"


def test_a_served_timeout_releases_the_task(healthy, sk_serve):
    @sk.service
    def forever(i: int) -> dict:
        time.sleep(30)
        return {}

    srv = sk_serve(forever.on(healthy), name="forever", timeout=0.5)
    status, _ = _post(srv.url + "/forever", {"i": 1})
    assert status == 504
    wait_for(lambda: not any(str(k).startswith("forever-") for k in healthy.who_has()), what="the task released")
    assert srv.status()["stages"]["forever"]["in_flight"] == 0


# -- concurrent.futures executors -------------------------------------------------------------------


def test_a_process_pool_runs_functions_defined_after_it_started():
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        pool.submit(int).result()  # its processes are running now

        offset = 100

        @sk.service
        def shifted(x: int) -> dict:  # a local closure: plain pickle could not ship it
            return {"y": x + offset, "pid": os.getpid()}

        staged = shifted.on(pool)
        assert repr(staged) == "<Service shifted(x: int) on ProcessPoolExecutor>"
        reply = staged(x=1)
        assert reply["y"] == 101 and reply["pid"] != os.getpid()
        with pytest.raises(ValueError, match="x=3 is not allowed"):
            fails.on(pool)(x=3)


def test_a_broken_process_pool_is_made_anew_by_its_factory(tmp_path):
    marker = tmp_path / "crashed"

    @sk.service
    def once(x: int) -> dict:
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the pool breaks: every task in it fails
        return {"y": x}

    made: list[concurrent.futures.Executor] = []

    def pool() -> concurrent.futures.Executor:
        made.append(concurrent.futures.ProcessPoolExecutor(1))
        return made[-1]

    staged = once.on(pool, retries=1)
    assert staged(x=4)["y"] == 4
    extra = staged.status_extra()
    assert (extra["retried"], extra["lost"], len(made)) == (1, 0, 2)
    sk.shutdown()
    assert all(ex._shutdown_thread for ex in made), "svckit shut down the pools it made"


def test_a_broken_pool_given_as_it_is_says_what_to_do():
    @sk.service
    def crash(x: int) -> dict:
        os._exit(1)

    broken = r"broken for good: pass \.on\(\) a function that makes one"
    with concurrent.futures.ProcessPoolExecutor(1) as pool, pytest.raises(sk.WorkerLost, match=broken):
        crash.on(pool, retries=0)(x=1)


def test_a_large_function_is_logged_once(caplog):
    blob = os.urandom(2 << 20)

    @sk.service
    def heavy(x: int) -> dict:
        return {"n": len(blob) + x}

    caplog.set_level(logging.WARNING, logger="svckit.scale")
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        staged = heavy.on(pool)
        for x in range(3):
            assert staged(x=x)["n"] == len(blob) + x
    warned = [r.getMessage() for r in caplog.records if r.name == "svckit.scale"]
    assert len(warned) == 1 and "pickles to 2.1 MB" in warned[0] and "client.scatter" in warned[0]


def test_sk_retry_in_the_task_runs_it_again():
    tries = []

    @sk.service
    def flaky(x: int) -> dict:
        tries.append(x)
        if len(tries) < 3:
            raise sk.Retry(after=0.01, max=5)
        return {"tries": len(tries)}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert flaky.on(pool)(x=1)["tries"] == 3


def test_wiring_errors_are_sentences():
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with pytest.raises(sk.WiringError, match="ships one plain function"):
            (square >> square).on(pool)

        @sk.service
        async def later(x: int) -> dict:
            return {}

        with pytest.raises(sk.WiringError, match="is async def"):
            later.on(pool)
        with pytest.raises(sk.WiringError, match=r"limit=0.*1 or more"):
            square.on(pool, limit=0)
        with pytest.raises(sk.WiringError, match="retries=-1"):
            square.on(pool, retries=-1)
        with pytest.raises(sk.WiringError, match="not a str"):
            square.on("tcp://127.0.0.1:8786")
    finally:
        pool.shutdown()


def test_the_user_stage_is_left_as_it_is():
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        staged = square.on(pool)
        assert staged is not square and square(x=2)["y"] == 4 and repr(square) == "<Service square(x: int)>"
        assert staged.name == "square" and staged.stage is square
    finally:
        pool.shutdown()


def test_import_svckit_does_not_import_dask():
    code = "import sys, svckit\nprint(sorted(m for m in ('dask', 'distributed', 'cloudpickle') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    import requests

    r = requests.post(url, json=body, timeout=120)
    return r.status_code, r.json()


def test_shutdown_closes_svckits_own_client(healthy):
    def clients(dask_scheduler=None):
        return sorted(dask_scheduler.clients)

    before = len(healthy.run_on_scheduler(clients))
    staged = square.on(healthy)
    assert staged(x=2)["y"] == 4
    assert len(healthy.run_on_scheduler(clients)) == before + 1, "svckit's asynchronous client on the runtime loop"
    sk.shutdown()
    wait_for(lambda: len(healthy.run_on_scheduler(clients)) == before, what="svckit's client to leave the scheduler")
