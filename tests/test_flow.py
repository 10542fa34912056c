"""Flows: immutable ``>>`` composition, lifting, nesting, branch, parallel and control exceptions."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import svckit as sk


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}


@sk.service
def shout(text: str) -> dict:
    return {"text": text.upper()}


# -- composition ------------------------------------------------------------------


def test_flow_runs_stages_in_order():
    flow = parse >> count
    assert isinstance(flow, sk.Flow) and isinstance(flow, sk.Service)
    assert flow(text="a b c") == {"text": "a b c", "words": ["a", "b", "c"], "n": 3}


def test_flow_called_with_keywords_or_a_dict():
    flow = parse >> count
    assert flow(text="a b") == flow({"text": "a b"}) == {"text": "a b", "words": ["a", "b"], "n": 2}


def test_calling_does_not_change_the_callers_dict():
    msg = {"text": "a"}
    (parse >> count)(msg)
    assert msg == {"text": "a"}


def test_composition_is_immutable():
    flow = parse >> count
    stages = flow.stages
    longer = flow >> shout
    assert flow.stages == stages == (parse, count)
    assert longer.stages == (parse, count, shout)
    assert flow is not longer
    assert isinstance(parse, sk.Service) and not isinstance(parse, sk.Flow)
    with pytest.raises(AttributeError):
        flow.stages.append(shout)  # type: ignore[attr-defined]


def test_recomposing_does_not_duplicate_edges():
    first = parse >> count
    again = parse >> count
    assert first.stages == again.stages == (parse, count)
    assert repr(first) == repr(again) == "<Flow parse >> count>"
    for _ in range(3):  # a re-run cell
        flow = parse >> count
    assert flow.stages == (parse, count)
    assert flow(text="x")["n"] == 1


def test_anonymous_flows_flatten():
    assert ((parse >> count) >> shout).stages == (parse >> (count >> shout)).stages == (parse, count, shout)


def test_plain_callables_are_lifted_on_either_side():
    def n_words(words: list[str]) -> int:
        return len(words)

    right = parse >> n_words
    assert right(text="a b")["n_words"] == 2
    left = (lambda text: {"text": text.strip()}) >> parse
    assert left(text="  a b ")["words"] == ["a", "b"]
    assert [type(s).__name__ for s in left.stages] == ["FunctionService", "FunctionService"]


def test_unsupported_operands_are_a_type_error_when_composing():
    with pytest.raises(TypeError):
        parse >> 3  # type: ignore[operator]
    with pytest.raises(TypeError):
        "text" >> parse  # type: ignore[operator]
    with pytest.raises(sk.WiringError):
        sk.Flow()


def test_nested_named_flows():
    inner = sk.Flow(parse, count, name="wordcount")
    outer = shout >> inner >> (lambda n: {"double": 2 * n})
    assert len(outer.stages) == 3 and outer.stages[1] is inner
    assert repr(inner) == "<Flow wordcount: parse >> count>"
    assert repr(outer) == "<Flow shout >> wordcount >> lambda>"
    assert outer(text="a b") == {"text": "A B", "words": ["A", "B"], "n": 2, "double": 4}
    assert [s.name for s in outer.leaves()] == ["shout", "parse", "count", "lambda"]


def test_named_as_keeps_the_original():
    flow = parse >> count
    named = flow.named_as("wc")
    assert named.name == "wc" and flow.name == "parse_count"
    assert named.stages == flow.stages


# -- branch ------------------------------------------------------------------------


@sk.service
def img(data: str) -> str:
    return f"image:{data}"


@sk.service
def txt(data: str) -> str:
    return f"text:{data}"


@sk.service
def other(data: str) -> str:
    return f"other:{data}"


def test_branch_routes_by_key():
    route = sk.branch("kind", {"img": img, "txt": txt})
    assert route(kind="img", data="x")["img"] == "image:x"
    assert route(kind="txt", data="x")["txt"] == "text:x"
    assert repr(route) == "<Branch branch('kind', {'img': img, 'txt': txt})>"


def test_branch_default_takes_unknown_and_missing_values():
    route = sk.branch("kind", {"img": img}, default=other)
    assert route(kind="pdf", data="x")["other"] == "other:x"
    assert route(data="x")["other"] == "other:x"


def test_branch_missing_key_without_default_is_bad_message():
    route = sk.branch("kind", {"img": img, "txt": txt})
    with pytest.raises(sk.BadMessage) as info:
        route(data="x")
    assert info.value.field == "kind"
    assert "'kind'" in str(info.value)


def test_branch_unknown_value_without_default_is_bad_message():
    route = sk.branch("kind", {"img": img, "txt": txt})
    with pytest.raises(sk.BadMessage) as info:
        route(kind="pdf", data="x")
    assert info.value.field == "kind"
    assert "'pdf'" in str(info.value) and "'img'" in str(info.value) and "'txt'" in str(info.value)
    with pytest.raises(sk.BadMessage):
        route(kind=["unhashable"], data="x")


def test_branch_in_a_flow():
    flow = (lambda data: {"kind": "img" if data.endswith(".png") else "txt"}) >> sk.branch(
        "kind", {"img": img, "txt": txt}
    )
    assert flow(data="a.png")["img"] == "image:a.png"
    assert flow(data="a.md")["txt"] == "text:a.md"


def test_branch_wiring_errors_are_raised_when_composing():
    with pytest.raises(sk.WiringError):
        sk.branch("kind", {"img": 3})
    with pytest.raises(sk.WiringError):
        sk.branch("kind", {})


# -- parallel ----------------------------------------------------------------------


@sk.service
def length(text: str) -> dict:
    return {"length": len(text)}


@sk.service
def first(text: str) -> dict:
    return {"first": text[:1]}


def test_parallel_fans_out_and_merges_synchronously():
    flow = parse >> sk.parallel(length, first) >> (lambda length, first: f"{first}{length}")
    assert flow(text="abc") == {"text": "abc", "words": ["abc"], "length": 3, "first": "a", "lambda": "a3"}
    assert repr(flow) == "<Flow parse >> parallel(length, first) >> lambda>"


def test_parallel_branches_get_copies():
    @sk.service
    def mutate(text: str) -> dict:
        return {"text": "changed", "mutated": True}

    out = sk.parallel(mutate, length)(text="abc")
    assert out == {"text": "changed", "mutated": True, "length": 3}


def test_parallel_runs_concurrently_on_the_runtime(sk_runtime):
    barrier = threading.Barrier(2, timeout=5)  # only passes when both branches run at once

    @sk.service
    def left(x: int) -> dict:
        barrier.wait()
        return {"left": x}

    @sk.service
    def right(x: int) -> dict:
        barrier.wait()
        return {"right": x}

    flow = sk.parallel(left, right) >> (lambda left, right: left + right)
    msg = {"x": 2}
    sk_runtime.call(flow.arun(msg, sk_runtime), timeout=10)
    assert msg == {"x": 2, "left": 2, "right": 2, "lambda": 4}


def test_parallel_served_over_http(sk_serve, client_for):
    flow = parse >> sk.parallel(length, first)
    srv = sk_serve(flow, name="pw")
    assert client_for(srv.url).pw(text="hi there")["first"] == "h"


def test_parallel_needs_two_services():
    with pytest.raises(sk.WiringError):
        sk.parallel(length)


# -- async stages -----------------------------------------------------------------------


def test_flow_with_an_async_stage_called_from_the_test_thread(sk_runtime):
    @sk.service
    async def enrich(words: list[str]) -> dict:
        return {"upper": [w.upper() for w in words]}

    flow = parse >> enrich >> count
    assert flow.is_async
    assert flow(text="a b") == {"text": "a b", "words": ["a", "b"], "upper": ["A", "B"], "n": 2}


def test_async_parallel_called_synchronously(sk_runtime):
    @sk.service
    async def a(x: int) -> dict:
        return {"a": x}

    assert sk.parallel(a, length)(x=1, text="xy") == {"x": 1, "text": "xy", "a": 1, "length": 2}


# -- control exceptions ------------------------------------------------------------------


@sk.service
def gate(n: int) -> dict:
    if n < 0:
        raise sk.StopFlow("negative")
    return {"checked": True}


def test_stop_flow_returns_the_message_so_far():
    flow = gate >> (lambda n: n * 10)
    assert flow(n=1) == {"n": 1, "checked": True, "lambda": 10}
    assert flow(n=-1) == {"n": -1}


def test_stop_flow_over_http_is_counted(sk_serve, curl):
    srv = sk_serve(gate >> (lambda n: n * 10), name="gated")
    assert curl("POST", f"{srv.url}/gated", '{"n": -5}') == (200, {"n": -5})
    assert curl("POST", f"{srv.url}/gated", '{"n": 2}') == (200, {"n": 2, "checked": True, "lambda": 20})
    status = srv.status()
    assert status["stopped"] == 1 and status["errors"] == 0
    assert curl("GET", f"{srv.url}/status")[1]["served"]["gated"]["stopped"] == 1


def _flaky(fail_times: int, cause: bool = False):
    calls = []

    @sk.service
    def flaky(x: int) -> dict:
        calls.append(x)
        if len(calls) <= fail_times:
            if cause:
                raise sk.Retry(after=0.01, max=2) from ValueError(f"attempt {len(calls)} failed")
            raise sk.Retry(after=0.01, max=2)
        return {"tries": len(calls)}

    return flaky, calls


def test_retry_runs_the_stage_again_until_it_succeeds():
    flaky, calls = _flaky(2)
    assert (parse >> flaky)(text="a", x=1)["tries"] == 3
    assert len(calls) == 3


def test_retry_pauses_before_every_retry():
    times: list[float] = []

    @sk.service
    def flaky() -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise sk.Retry(after=0.05, max=3)

    flaky()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 2 and min(gaps) >= 0.045, gaps


def test_retry_exhausted_is_an_error():
    flaky, calls = _flaky(10)
    with pytest.raises(sk.RetryExhausted, match="'flaky'"):
        flaky(x=1)
    assert len(calls) == 3  # the first try and two retries


def test_retry_exhausted_raises_the_cause():
    flaky, _ = _flaky(10, cause=True)
    with pytest.raises(ValueError, match="attempt 3 failed"):
        flaky(x=1)


def test_async_retry(sk_runtime):
    calls = []

    @sk.service
    async def flaky(x: int) -> dict:
        calls.append(x)
        if len(calls) < 3:
            raise sk.Retry(after=0, max=3)
        return {"tries": len(calls)}

    assert flaky(x=1)["tries"] == 3


def test_retry_over_http(sk_serve, curl):
    flaky, _ = _flaky(1)
    srv = sk_serve(flaky, name="flaky")
    assert curl("POST", f"{srv.url}/flaky", '{"x": 1}') == (200, {"x": 1, "tries": 2})
    flaky, _ = _flaky(5)
    srv = sk_serve(flaky, name="flaky2")
    status, body = curl("POST", f"{srv.url}/flaky2", '{"x": 1}')
    assert status == 500 and body["error"]["type"] == "RetryExhausted"


def test_retry_arguments_are_checked():
    with pytest.raises(ValueError):
        sk.Retry(after=-1)
    with pytest.raises(ValueError):
        sk.Retry(max=0)


def test_fatal_answers_503_until_restart(sk_serve, curl):
    @sk.service
    def guard(x: int) -> dict:
        if x == 13:
            raise sk.Fatal("unlucky input broke the model")
        return {"ok": True}

    srv = sk_serve(guard, name="guard")
    url = f"{srv.url}/guard"
    assert curl("POST", url, '{"x": 1}') == (200, {"x": 1, "ok": True})
    status, body = curl("POST", url, '{"x": 13}')
    assert status == 503 and body["error"]["type"] == "Fatal"
    assert "unlucky" in body["error"]["message"]
    assert srv.state is sk.State.FAILED
    status, body = curl("POST", url, '{"x": 1}')  # even good input, until restarted
    assert status == 503 and body["error"]["type"] == "ServiceUnavailable"
    assert "restart" in body["error"]["message"]
    assert curl("GET", f"{srv.url}/health")[0] == 503
    srv.restart()
    assert srv.state is sk.State.RUNNING
    assert curl("POST", url, '{"x": 1}') == (200, {"x": 1, "ok": True})
    assert curl("GET", f"{srv.url}/health")[0] == 200


def test_fatal_called_in_a_cell_raises():
    @sk.service
    def broken() -> None:
        raise sk.Fatal("gone")

    with pytest.raises(sk.Fatal):
        broken()


def test_stop_flow_in_an_async_stage(sk_runtime):
    @sk.service
    async def agate(n: int) -> dict:
        if n < 0:
            raise sk.StopFlow()
        return {"ok": True}

    flow = agate >> (lambda n: n + 1)
    assert flow(n=-1) == {"n": -1}
    assert flow(n=1) == {"n": 1, "ok": True, "lambda": 2}


def test_branch_errors_over_http(sk_serve, curl):
    srv = sk_serve(sk.branch("kind", {"img": img, "txt": txt}), name="route")
    assert curl("POST", f"{srv.url}/route", '{"kind": "img", "data": "x"}')[1]["img"] == "image:x"
    status, reply = curl("POST", f"{srv.url}/route", '{"kind": "pdf", "data": "x"}')
    assert status == 422 and reply["error"]["field"] == "kind"


def test_inline_stages_run_on_the_loop_thread_and_plain_ones_in_the_pool(sk_serve):
    import threading

    seen: dict[str, str] = {}

    @sk.service(inline=True)
    def quick(x: int) -> dict:
        seen["quick"] = threading.current_thread().name
        return {"y": x + 1}

    @sk.service
    def plain(y: int) -> dict:
        seen["plain"] = threading.current_thread().name
        return {"z": y + 1}

    srv = sk_serve(quick >> plain, name="mixed")
    assert sk.Client(srv.url).mixed(x=1) == {"x": 1, "y": 2, "z": 3}
    assert seen["quick"] == "svckit-runtime"
    assert seen["plain"].startswith("svckit-worker")
    assert quick(x=1) == {"x": 1, "y": 2}  # called in a cell it runs right here


def test_inline_is_for_plain_functions_only():
    async def already(x: int) -> None:
        return None

    with pytest.raises(sk.WiringError, match="async def"):
        sk.service(already, inline=True)
