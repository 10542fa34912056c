"""Where served plain ``def`` stages run: the pool, the loop once proven quick, and back for good.

The served tests run on real sockets (HTTP over 127.0.0.1, ZMQ through pyzmq) and tell where
each call ran by the thread that ran it: ``svckit-runtime`` is the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import threading
import time
from typing import Any

import pytest
import requests

import svckit as sk
from svckit.placement import Placement
from svckit.testing import wait_for

LOOP = "svckit-runtime"


def _thread() -> str:
    return threading.current_thread().name


def _post(session: requests.Session, url: str, **body: Any) -> dict[str, Any]:
    reply = session.post(url, json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    out: dict[str, Any] = reply.json()
    return out


def _post_once(url: str, **body: Any) -> dict[str, Any]:
    with requests.Session() as session:
        return _post(session, url, **body)


# -- the rules, on their own ------------------------------------------------------------------


def test_a_stage_is_promoted_after_enough_quick_calls_in_a_row() -> None:
    p = Placement("s")
    for _ in range(Placement.PROMOTE_AFTER - 1):
        p.pooled(0.00001, 0.00001)
    assert p.runs == "pool" and p.learning
    p.pooled(0.00001, 0.00001)
    assert p.runs == "loop" and not p.learning
    assert "100 calls in a row" in p.why and p.stats()["promoted_at"] > 0


def test_a_slow_or_waiting_call_starts_the_count_again() -> None:
    p = Placement("s")
    for _ in range(Placement.PROMOTE_AFTER - 1):
        p.pooled(0.00001, 0.00001)
    p.pooled(0.002, 0.002)  # slower than QUICK: computing too long for the loop
    assert p.streak == 0
    for _ in range(Placement.PROMOTE_AFTER - 1):
        p.pooled(0.00001, 0.00001)
    p.pooled(0.0003, 0.00001)  # quick, but it waited (I/O, a lock, a sleep): never on the loop
    assert p.streak == 0 and p.runs == "pool"


def test_a_promoted_stage_that_blocks_goes_back_for_good(caplog: pytest.LogCaptureFixture) -> None:
    p = Placement("slowpoke")
    for _ in range(Placement.PROMOTE_AFTER):
        p.pooled(0.00001, 0.00001)
    with caplog.at_level(logging.WARNING, logger="svckit.placement"):
        p.timed(0.2)
    assert p.runs == "pool" and not p.learning
    assert p.why == "a call took 200 ms (more than 10 ms)"
    assert "slowpoke" in caplog.text and "inline=False" in caplog.text
    for _ in range(10 * Placement.PROMOTE_AFTER):  # quick again: it stays in the pool
        p.pooled(0.00001, 0.00001)
    assert p.runs == "pool"
    assert "moved_back_at" in p.stats()


def test_inline_forces_either_way() -> None:
    on, off = Placement("a", inline=True), Placement("b", inline=False)
    assert on.runs == "loop" and off.runs == "pool"
    for _ in range(2 * Placement.PROMOTE_AFTER):
        off.pooled(0.00001, 0.00001)
    on.timed(1.0)
    assert on.runs == "loop" and off.runs == "pool"
    assert (on.why, off.why) == ("inline=True", "inline=False")


def test_svckit_promote_0_keeps_every_unmarked_stage_in_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCKIT_PROMOTE", "0")

    @sk.service
    def quick(x: int) -> dict[str, Any]:
        return {"where": _thread()}

    with sk.serve(quick, name="quick", http=0) as srv:
        s = requests.Session()
        for i in range(Placement.PROMOTE_AFTER + 20):
            assert _post(s, f"{srv.url}/quick", x=i)["where"] != LOOP
        assert srv.status()["placement"]["quick"] == {"runs": "pool", "why": "SVCKIT_PROMOTE=0"}


def test_inline_is_checked_and_kept_on_the_service() -> None:
    assert sk.service(lambda x: x).inline is None
    assert sk.service(lambda x: x, inline=False).inline is False
    with pytest.raises(sk.WiringError, match="async def"):

        async def a(x: int) -> int:
            return x

        sk.service(a, inline=True)


# -- served, on real sockets --------------------------------------------------------------------


def test_a_quick_def_stage_moves_to_the_loop_and_says_so() -> None:
    @sk.service
    def echo(text: str) -> dict[str, Any]:
        return {"where": _thread()}

    with sk.serve(echo >> sk.service(lambda where: None, name="keep"), name="echo", http=0) as srv:
        s = requests.Session()
        first = [_post(s, f"{srv.url}/echo", text="a")["where"] for _ in range(Placement.PROMOTE_AFTER)]
        assert all(w != LOOP for w in first), "a stage starts in the pool"
        for _ in range(Placement.PROMOTE_AFTER):  # room for a call the OS or the collector held up
            _post(s, f"{srv.url}/echo", text="a")
        later = [_post(s, f"{srv.url}/echo", text="a")["where"] for _ in range(50)]
        assert later.count(LOOP) == 50, later
        placement = srv.status()["placement"]
        assert placement["echo"]["runs"] == "loop" and placement["keep"]["runs"] == "loop"
        assert "quick calls" not in placement["echo"]["why"] and "100 calls in a row" in placement["echo"]["why"]
        picture = srv.picture(timing=True)._repr_html_()
        assert "on loop" in picture


def test_a_blocking_def_stage_never_runs_on_the_loop_twice_in_a_row_after_it_blocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 quick calls, then every call sleeps 0.2 s: the first slow one ran on the loop (it
    had been promoted); after it, not one call runs there, though many arrive at once."""
    calls: list[str] = []
    lock = threading.Lock()

    @sk.service
    def turns(n: int) -> dict[str, Any]:
        with lock:
            calls.append(_thread())
            count = len(calls)
        if count > 1000:
            time.sleep(0.2)
        return {"count": count}

    with caplog.at_level(logging.WARNING, logger="svckit.placement"), sk.serve(turns, name="turns", http=0) as srv:
        url = f"{srv.url}/turns"
        s = requests.Session()
        for i in range(1000):
            _post(s, url, n=i)
        assert calls[-1] == LOOP, "promoted after its quick calls"
        assert srv.status()["placement"]["turns"]["runs"] == "loop"
        # eight at once, then eight more: the loop ran the first slow call only
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            for _ in range(2):
                list(ex.map(lambda i: _post_once(url, n=i), range(8)))
        slow = calls[1000:]
        assert len(slow) == 16
        on_loop = [i for i, where in enumerate(slow) if where == LOOP]
        assert on_loop == [0], f"calls after it blocked ran on the loop: {slow}"
        placement = srv.status()["placement"]["turns"]
        assert placement["runs"] == "pool" and placement["why"].startswith("a call took 2")
        assert "moved_back_at" in placement
    assert "'turns' held up the runtime loop" in caplog.text


def test_inline_false_keeps_a_stage_in_the_pool() -> None:
    @sk.service(inline=False)
    def pooled(n: int) -> dict[str, Any]:
        return {"where": _thread()}

    with sk.serve(pooled, name="pooled", http=0) as srv:
        s = requests.Session()
        seen = {_post(s, f"{srv.url}/pooled", n=i)["where"] for i in range(3 * Placement.PROMOTE_AFTER)}
        assert LOOP not in seen and all(w.startswith("svckit-worker") for w in seen)
        assert srv.status()["placement"]["pooled"] == {"runs": "pool", "why": "inline=False"}


def test_a_stage_that_waits_every_call_is_never_promoted() -> None:
    """Quick by the clock (a fraction of a millisecond) but off the CPU: it could be a call
    into something this same runtime serves, which on the loop would wait on itself."""

    @sk.service
    def waits(n: int) -> dict[str, Any]:
        time.sleep(0.0002)
        return {"where": _thread()}

    with sk.serve(waits, name="waits", http=0) as srv:
        s = requests.Session()
        seen = {_post(s, f"{srv.url}/waits", n=i)["where"] for i in range(2 * Placement.PROMOTE_AFTER)}
        assert LOOP not in seen
        assert srv.status()["placement"]["waits"]["runs"] == "pool"


def test_in_a_run_of_def_stages_the_proven_ones_run_on_the_loop_and_the_rest_in_one_hop() -> None:
    @sk.service
    def first(n: int) -> dict[str, Any]:
        return {"a": _thread()}

    @sk.service(inline=False)
    def second(a: str) -> dict[str, Any]:
        return {"b": _thread()}

    @sk.service
    def third(b: str) -> dict[str, Any]:
        return {"c": _thread()}

    with sk.serve(first >> second >> third, name="trio", http=0) as srv, requests.Session() as s:
        for i in range(2 * Placement.PROMOTE_AFTER):
            out = _post(s, f"{srv.url}/trio", n=i)
            assert out["b"] != LOOP and out["c"] == out["b"], "second and third: one hop"
        assert out["a"] == LOOP
        placement = srv.status()["placement"]
        assert placement["first"]["runs"] == "loop" and placement["second"]["runs"] == "pool"


def test_a_stage_that_calls_into_the_runtime_or_a_client_is_never_promoted() -> None:
    @sk.service
    async def lookup(k: str) -> dict[str, Any]:
        return {"v": k.upper()}

    @sk.service
    def uses_async(k: str) -> dict[str, Any]:
        return {"got": lookup(k=k)["v"], "where": _thread()}

    with sk.serve(lookup, name="lookup", http=0) as other:
        client = sk.Client(other.url)

        @sk.service
        def uses_client(k: str) -> dict[str, Any]:
            return {"got": client.call("lookup", k=k)["v"], "where": _thread()}

        with sk.serve(uses_async, name="ua", http=0) as a, sk.serve(uses_client, name="uc", http=0) as b:
            with requests.Session() as s:
                for _ in range(Placement.PROMOTE_AFTER + 50):
                    assert _post(s, f"{a.url}/ua", k="x")["where"] != LOOP
                    assert _post(s, f"{b.url}/uc", k="x")["got"] == "X"
            for srv, name in ((a, "uses_async"), (b, "uses_client")):
                placed = srv.status()["placement"][name]
                assert placed["runs"] == "pool" and "another thread" in placed["why"], placed
        client.close()


def test_a_stage_that_turns_merely_slow_goes_back_after_a_few_calls() -> None:
    """4 ms a call, under the 10 ms bound: three such calls in sixteen move it back."""
    calls: list[str] = []

    @sk.service
    def dawdles(n: int) -> dict[str, Any]:
        calls.append(_thread())
        if len(calls) > 2 * Placement.PROMOTE_AFTER:
            end = time.perf_counter() + 0.004
            while time.perf_counter() < end:
                pass
        return {}

    with sk.serve(dawdles, name="dawdles", http=0) as srv, requests.Session() as s:
        for i in range(2 * Placement.PROMOTE_AFTER + 20):
            _post(s, f"{srv.url}/dawdles", n=i)
        assert calls[2 * Placement.PROMOTE_AFTER - 1] == LOOP
        slow = calls[2 * Placement.PROMOTE_AFTER :]
        assert 1 <= slow.count(LOOP) <= Placement.SLOW_CALLS and LOOP not in slow[Placement.SLOW_CALLS :], slow
        assert srv.status()["placement"]["dawdles"]["why"].startswith("3 of 16 calls")


def test_a_stage_twice_in_a_flow_does_not_block_the_loop_twice_in_one_message() -> None:
    calls: list[str] = []
    slow = threading.Event()

    @sk.service
    def twice(n: int) -> None:
        calls.append(_thread())
        if slow.is_set():
            time.sleep(0.05)

    mark = sk.service(lambda n: None, name="mark")
    with sk.serve(twice >> mark >> twice, name="twice", http=0) as srv, requests.Session() as s:
        for i in range(Placement.PROMOTE_AFTER + 10):
            _post(s, f"{srv.url}/twice", n=i)
        assert calls[-1] == LOOP
        slow.set()
        _post(s, f"{srv.url}/twice", n=0)
        assert calls[-2:] == [LOOP, calls[-1]] and calls[-1] != LOOP, calls[-4:]


def test_a_promoted_stage_that_asks_to_be_retried_with_a_pause_goes_back() -> None:
    count = 0

    @sk.service
    def flaky(n: int) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count == 2 * Placement.PROMOTE_AFTER:
            raise sk.Retry(after=0.05)
        return {"where": _thread()}

    with sk.serve(flaky, name="flaky", http=0) as srv, requests.Session() as s:
        seen = [_post(s, f"{srv.url}/flaky", n=i)["where"] for i in range(2 * Placement.PROMOTE_AFTER + 5)]
        assert seen[2 * Placement.PROMOTE_AFTER - 2] == LOOP and LOOP not in seen[2 * Placement.PROMOTE_AFTER :]
        assert "sk.Retry" in srv.status()["placement"]["flaky"]["why"]


def test_a_stage_that_turns_slow_holds_up_other_served_things_for_one_call_at_most() -> None:
    """Another served thing's requests, sent one after another while the slow stage gets 8
    requests at once, wait at most about one slow call (0.2 s), not eight (1.6 s)."""
    count = 0

    @sk.service
    def turns(n: int) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count > 1000:
            time.sleep(0.2)
        return {}

    @sk.service
    def other(n: int) -> dict[str, Any]:
        return {}

    with sk.serve(turns, name="turns", http=0) as a, sk.serve(other, name="other", http=0) as b:
        s = requests.Session()
        for i in range(1000):
            _post(s, f"{a.url}/turns", n=i)
            _post(s, f"{b.url}/other", n=i)
        assert a.status()["placement"]["turns"]["runs"] == "loop"
        assert b.status()["placement"]["other"]["runs"] == "loop"
        waits: list[float] = []
        done = threading.Event()

        failed: list[BaseException] = []

        def measure() -> None:
            with requests.Session() as client:
                while not done.is_set():
                    start = time.perf_counter()
                    try:
                        _post(client, f"{b.url}/other", n=0)
                    except BaseException as exc:
                        failed.append(exc)
                        return
                    waits.append(time.perf_counter() - start)

        watcher = threading.Thread(target=measure)
        watcher.start()
        try:
            wait_for(lambda: len(waits) >= 5, timeout=10, what="the other served thing answering")
            before = len(waits)
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                list(ex.map(lambda i: _post_once(f"{a.url}/turns", n=i), range(8)))
            wait_for(lambda: len(waits) >= before + 5, timeout=10, what="the other served thing answering after")
        finally:
            done.set()
            watcher.join(30)
        assert not failed, failed
        assert max(waits) < 0.4, f"the other served thing waited {max(waits):.3f} s (one slow call is 0.2 s)"
        assert b.status()["placement"]["other"]["runs"] == "loop", "the quick one stays on the loop"


def test_zmq_requests_and_pipelines_run_promoted_stages_on_the_loop(zsock: Any) -> None:
    zmq = pytest.importorskip("zmq")

    @sk.service
    def where(i: int) -> dict[str, Any]:
        return {"where": _thread()}

    with sk.serve(where, name="where", zmq=0) as srv:
        assert srv.zmq_url is not None
        client = sk.ZmqClient(srv.zmq_url)
        try:
            seen = [client.call("where", i=i)["where"] for i in range(2 * Placement.PROMOTE_AFTER + 30)]
        finally:
            client.close()
        assert LOOP not in seen[: Placement.PROMOTE_AFTER] and seen[-30:] == [LOOP] * 30

    total = 2000
    feed = zsock(zmq.PUSH)
    feed_port = feed.bind_to_random_port("tcp://127.0.0.1")
    out = zsock(zmq.PULL)
    out_port = out.bind_to_random_port("tcp://127.0.0.1")
    flow = sk.pull(f"tcp://127.0.0.1:{feed_port}") >> where >> sk.push(f"tcp://127.0.0.1:{out_port}")
    with sk.serve(flow, name="pipe") as pipe:
        for i in range(total):
            feed.send(b'{"i":%d}' % i)
        got = []
        while len(got) < total and out.poll(10_000):
            got.append(json.loads(out.recv()))
        assert len(got) == total, "every message came through"
        assert pipe.status()["placement"]["where"]["runs"] == "loop"
        assert [m["where"] for m in got].count(LOOP) >= total - 2 * Placement.PROMOTE_AFTER


def test_a_pipeline_working_through_a_backlog_on_the_loop_lets_the_loop_turn(zsock: Any) -> None:
    """A backlog of queued messages whose stage runs on the loop (here ``inline=True``, so it
    stays there) is taken about 5 ms a turn of the loop, not the whole queue (1,000 messages,
    a second here) in one go: everything else the runtime serves gets its turns meanwhile."""
    zmq = pytest.importorskip("zmq")
    feed = zsock(zmq.PUSH)
    feed_port = feed.bind_to_random_port("tcp://127.0.0.1")

    @sk.service(inline=True)
    def work(i: int) -> None:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass

    gaps: list[float] = []

    async def turns() -> None:  # how long the loop goes between two turns
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0)
            now = loop.time()
            gaps.append(now - last)
            last = now

    with sk.serve(sk.pull(f"tcp://127.0.0.1:{feed_port}") >> work, name="backlog") as pipe:
        probe = sk.runtime().submit(turns())
        try:
            for i in range(2000):
                feed.send(b'{"i":%d}' % i)
            wait_for(lambda: pipe.status()["replied"] >= 2000, timeout=60, what="the backlog handled")
        finally:
            probe.cancel()
        assert len(gaps) > 200  # about one a 5 ms budget; 19 when a consumer took the whole queue
        assert max(gaps) < 0.3, f"the loop went {max(gaps):.3f} s without a turn"


def test_a_def_stage_sees_the_requests_context_variables_in_the_pool_as_on_the_loop() -> None:
    user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anon")

    @sk.middleware
    async def who(call: Any, msg: dict[str, Any]) -> dict[str, Any]:
        user.set(f"user-{msg['n']}")
        return dict(await call(msg))

    @sk.service
    def greet(n: int) -> dict[str, Any]:
        return {"user": user.get(), "where": _thread()}

    with sk.serve(who >> greet, name="greet", http=0) as srv, requests.Session() as s:
        replies = [_post(s, f"{srv.url}/greet", n=i) for i in range(2 * Placement.PROMOTE_AFTER)]
    assert replies[0]["where"] != LOOP and replies[-1]["where"] == LOOP
    assert [r["user"] for r in replies] == [f"user-{i}" for i in range(2 * Placement.PROMOTE_AFTER)]


def test_a_promoted_stage_that_starts_calling_into_the_runtime_fails_that_call_and_goes_back() -> None:
    """On the loop, an async service called from a def stage (``run_here``) or one of svckit's
    clients would wait on the loop itself: that one call is refused (409) and the stage runs in
    the pool from the next, where the same call works."""

    @sk.service
    async def lookup(k: str) -> dict[str, Any]:
        return {"v": k.upper()}

    with sk.serve(lookup, name="lookup", http=0) as backend:
        client = sk.Client(backend.url)
        calls = 0

        @sk.service
        def cached(k: str, how: str) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls <= 2 * Placement.PROMOTE_AFTER:
                return {"v": k, "where": _thread()}
            v = lookup(k=k)["v"] if how == "async" else client.call("lookup", k=k)["v"]
            return {"v": v, "where": _thread()}

        for how in ("async", "client"):
            calls = 0
            with sk.serve(cached, name="cached", http=0) as srv, requests.Session() as s:
                url = f"{srv.url}/cached"
                seen = [_post(s, url, k="x", how=how)["where"] for _ in range(2 * Placement.PROMOTE_AFTER)]
                assert seen[-1] == LOOP
                refused = s.post(url, json={"k": "x", "how": how}, timeout=30)
                assert refused.status_code == 409, refused.text
                assert "worker pool" in refused.json()["error"]["message"]
                again = _post(s, url, k="x", how=how)
                assert again == {"k": "x", "how": how, "v": "X", "where": again["where"]}
                assert again["where"] != LOOP
                placed = srv.status()["placement"]["cached"]
                assert placed["runs"] == "pool" and "from the loop" in placed["why"], placed
        client.close()


def test_def_middleware_keeps_its_stages_in_the_pool_and_is_not_placed() -> None:
    @sk.middleware
    def around(call: Any, msg: dict[str, Any]) -> dict[str, Any]:
        return dict(call(msg))

    @sk.service
    def inner(n: int) -> dict[str, Any]:
        return {"where": _thread()}

    with sk.serve(around >> inner, name="wrapped", http=0) as srv, requests.Session() as s:
        seen = {_post(s, f"{srv.url}/wrapped", n=i)["where"] for i in range(2 * Placement.PROMOTE_AFTER)}
        assert LOOP not in seen
        placement = srv.status()["placement"]
        assert set(placement) == {"inner"}, "a middleware is not placed"
        assert placement["inner"]["runs"] == "pool" and "def middleware" in placement["inner"]["why"]
