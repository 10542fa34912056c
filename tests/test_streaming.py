"""Generator stages stream: in a cell, over HTTP (NDJSON and Server-Sent Events), over ZMQ
(item frames and an end marker) and in pipelines, with errors, timeouts and clients that leave."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

import svckit as sk
from svckit.streaming import ROOM, pump
from svckit.testing import collect, holds, wait_for


@sk.service
def words(text: str) -> Iterator[dict]:
    """One message per word."""
    for word in text.split():
        yield {"word": word}


@sk.service
async def ticks(n: int):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


upper = sk.service(lambda word: word.upper(), name="upper")


@sk.service
def late_failure(text: str) -> Iterator[dict]:
    yield {"first": True}
    raise ValueError("the second word broke")


# -- in a cell ---------------------------------------------------------------------------------------


def test_a_generator_stage_called_in_a_cell_gives_every_message(sk_runtime):
    flow = words >> upper
    assert flow.streams and words.streams and not upper.streams
    assert flow(text="a b") == [
        {"text": "a b", "word": "a", "upper": "A"},
        {"text": "a b", "word": "b", "upper": "B"},
    ]
    assert ticks(n=3) == [{"n": 3, "ticks": 0}, {"n": 3, "ticks": 1}, {"n": 3, "ticks": 2}]
    assert upper.stream(word="x") == [{"word": "x", "upper": "X"}]
    assert words(text="") == []


def test_stages_around_a_generator_and_stopflow(sk_runtime):
    @sk.service
    def clean(text: str) -> dict:
        return {"text": text.strip()}

    @sk.service
    def no_b(word: str) -> dict:
        if word == "b":
            raise sk.StopFlow()
        return {"kept": True}

    out = (clean >> words >> no_b >> upper)(text=" a b ")
    assert out == [
        {"text": "a b", "word": "a", "kept": True, "upper": "A"},
        {"text": "a b", "word": "b"},  # stopped there: that message so far
    ]


def test_class_services_branches_and_middleware_stream(sk_runtime):
    class Split(sk.Service):
        sep: str = ","

        def process(self, line: str):
            for part in line.split(self.sep):
                yield {"part": part}

    assert [m["part"] for m in Split(sep=";")(line="a;b")] == ["a", "b"]
    routed = sk.branch("kind", {"w": words}, default=upper)
    assert [m["word"] for m in routed(kind="w", text="x y")] == ["x", "y"]
    assert routed(kind="other", word="q") == [{"kind": "other", "word": "q", "upper": "Q"}]
    seen = []

    @sk.middleware
    def watch(call, msg):
        seen.append(sorted(call(msg)))

    assert [m["word"] for m in (watch >> words)(text="m n")] == ["m", "n"]
    assert seen == [["text"]]


def test_what_cannot_stream_is_refused_when_composed():
    with pytest.raises(sk.WiringError, match="cannot be merged"):
        sk.parallel(words, upper)
    with pytest.raises(sk.WiringError, match="drop inline=True"):
        sk.service(inline=True)(words.fn)


def test_a_def_generator_runs_ahead_of_its_reader_by_room_items_at_most(sk_runtime):
    made = []
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                made.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    async def read_two() -> list[int]:
        got = []
        items = pump(endless, asyncio.get_running_loop(), sk_runtime.pool)
        async for item in items:
            got.append(item)
            if len(got) == 2:
                await asyncio.sleep(0.2)  # a slow reader: the generator must wait for it
                break
        await items.aclose()
        return got

    assert sk_runtime.call(read_two()) == [0, 1]
    assert closed.wait(5), "the generator was not closed once its reader left"
    assert len(made) <= ROOM + 1, f"it ran {len(made)} items ahead of a reader that took 2"


def test_a_reader_that_does_not_read_holds_no_worker(sk_runtime):
    """Before: a def generator's thread waited for its reader, so 300 quiet readers held 195
    of the pool's threads (and slowed everything else the runtime serves)."""

    def endless():
        while True:
            yield "x"

    async def stall(count: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        streams = [pump(endless, loop, sk_runtime.pool) for _ in range(count)]
        for items in streams:
            assert await items.__anext__() == "x"  # each read once, then left unread
        return streams

    streams = sk_runtime.call(stall(50))
    wait_for(lambda: sk_runtime.pool.stats()["busy"] == 0, timeout=5, what="no worker busy")
    assert sk_runtime.pool.stats()["queued"] == 0

    async def close_all() -> None:
        for items in streams:
            await items.aclose()

    sk_runtime.call(close_all())


# -- over HTTP ----------------------------------------------------------------------------------------


def test_http_streams_ndjson_by_default_and_sse_when_asked(sk_serve, http):
    srv = sk_serve(words >> upper, name="shout")
    plain = http.post(f"{srv.url}/shout", json={"text": "a b c"})
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in plain.text.splitlines()]
    assert [m["upper"] for m in lines] == ["A", "B", "C"]
    assert plain.headers["x-request-id"]
    sse = http.post(f"{srv.url}/shout", json={"text": "x y"}, headers={"Accept": "text/event-stream"})
    assert sse.headers["content-type"] == "text/event-stream"
    events = [block for block in sse.text.split("\n\n") if block]
    assert events[:2] == [
        'data: {"text":"x y","word":"x","upper":"X"}',
        'data: {"text":"x y","word":"y","upper":"Y"}',
    ]
    assert events[2] == 'event: end\ndata: {"items":2}'
    status = srv.status()
    assert (status["received"], status["replied"], status["errors"]) == (2, 2, 0)
    assert len(srv.outputs) == 5  # every message that came out of the end


def test_a_stream_is_read_as_it_comes_with_client_stream(sk_serve):
    gate = threading.Event()

    @sk.service
    def slow_words(text: str):
        for i, word in enumerate(text.split()):
            if i == 1:
                gate.wait(10)  # the first message must be out before the second is made
            yield {"word": word}

    srv = sk_serve(slow_words)
    with sk.Client(srv.url) as client:
        items = client.stream("slow_words", text="a b")
        assert next(items)["word"] == "a"
        gate.set()
        assert [m["word"] for m in items] == ["b"]
        assert client.call("slow_words", text="p q") == {
            "items": [{"text": "p q", "word": "p"}, {"text": "p q", "word": "q"}]
        }


def test_an_error_before_the_first_message_keeps_its_status(sk_serve, http):
    srv = sk_serve(words)
    reply = http.post(f"{srv.url}/words", json={"text": 3})
    assert reply.status_code == 422 and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["field"] == "text"


def test_an_error_after_messages_ends_the_stream_with_it(sk_serve, http):
    srv = sk_serve(late_failure)
    reply = http.post(f"{srv.url}/late_failure", json={"text": "a b"})
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert lines[0] == {"text": "a b", "first": True}
    assert lines[1]["error"]["type"] == "ValueError" and "second word" in lines[1]["error"]["message"]
    sse = http.post(f"{srv.url}/late_failure", json={"text": "a"}, headers={"Accept": "text/event-stream"})
    assert sse.text.split("\n\n")[1].startswith("event: error\ndata: ")
    with sk.Client(srv.url) as client:
        got = []
        with pytest.raises(sk.RemoteError, match="second word"):
            for item in client.stream("late_failure", text="a"):
                got.append(item)
        assert got == [{"text": "a", "first": True}]
    assert srv.status()["errors_by_type"] == {"ValueError": 3}


def test_the_served_timeout_bounds_a_stream(sk_serve, http):
    release = threading.Event()

    @sk.service
    def stuck(text: str):
        yield {"one": 1}
        release.wait(10)
        yield {"two": 2}

    srv = sk_serve(stuck, timeout=0.5)
    try:
        reply = http.post(f"{srv.url}/stuck", json={"text": "a"}, timeout=10)
        lines = [json.loads(line) for line in reply.text.splitlines()]
        assert lines[0]["one"] == 1
        assert lines[1]["error"]["type"] == "ServiceTimeout"
    finally:
        release.set()


def test_the_served_timeout_bounds_each_message_not_the_whole_feed(sk_serve, http):
    @sk.service
    async def feed(n: int):
        for i in range(n):
            await asyncio.sleep(0.15)  # the feed's own pace: 0.75 s in all, past the timeout
            yield {"i": i}

    srv = sk_serve(feed, timeout=0.5)
    reply = http.post(f"{srv.url}/feed", json={"n": 5}, timeout=10)
    assert [json.loads(line)["i"] for line in reply.text.splitlines()] == [0, 1, 2, 3, 4]
    assert srv.status()["errors"] == 0


@pytest.fixture(params=["httptools", "h11"])
def impl(request, monkeypatch):
    """Both of uvicorn's HTTP/1.1 implementations."""
    from svckit.transports import http

    monkeypatch.setattr(http, "_http_impl", lambda: request.param)
    return request.param


def test_a_client_that_leaves_stops_the_generator(sk_serve, http, impl):
    closed = threading.Event()
    made = []

    @sk.service
    def endless(text: str):
        try:
            while True:
                made.append(1)
                yield {"n": len(made), "pad": "x" * 1000}
                time.sleep(0.001)  # the generator's own pace, not a test's wait
        finally:
            closed.set()

    srv = sk_serve(endless)
    reply = http.post(f"{srv.url}/endless", json={"text": "a"}, stream=True)
    lines = reply.iter_lines()
    assert json.loads(next(lines))["n"] == 1
    reply.close()
    assert closed.wait(10), "the generator kept running after its client left"
    wait_for(lambda: srv.status()["disconnected"] == 1, what="the stream counted as disconnected")
    assert srv.status()["replied"] == 0


def test_middleware_given_to_serve_wraps_a_stream(sk_serve, http):
    calls = []

    @sk.middleware
    async def count(call, msg):
        calls.append(msg["text"])
        return await call(msg)

    srv = sk_serve(words, middleware=[count])
    reply = http.post(f"{srv.url}/words", json={"text": "a b"})
    assert [json.loads(line)["word"] for line in reply.text.splitlines()] == ["a", "b"]
    assert calls == ["a b"]


# -- over ZMQ -----------------------------------------------------------------------------------------


def test_zmq_streams_item_frames_then_an_end_marker(sk_serve):
    srv = sk_serve(words >> upper, name="shout", zmq=0)
    with sk.ZmqClient(srv.zmq_url) as client:
        assert [m["upper"] for m in client.stream("shout", text="a b c")] == ["A", "B", "C"]
        assert client.call("shout", text="q")["items"] == [{"text": "q", "word": "q", "upper": "Q"}]
        early = client.stream("shout", text="m n o")
        assert next(early)["upper"] == "M"
        early.close()  # the rest of that stream must never answer the next call
        assert client.call("shout", text="z")["items"][0]["upper"] == "Z"
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.connect(srv.zmq_url)
        raw.send_multipart([b"", b"stream:shout", b'{"text": "x y"}'])
        frames = [raw.recv_multipart() for _ in range(3)]
        assert [f[1] for f in frames] == [b"item", b"item", b"end"]
        assert json.loads(frames[2][2]) == {"items": 2}
    finally:
        raw.close()


def test_a_req_socket_gets_a_stream_as_one_reply(sk_serve):
    srv = sk_serve(words, zmq=0)
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 10_000)
    try:
        req.connect(srv.zmq_url)
        req.send_multipart([b"words", b'{"text": "a b"}'])
        status, body = req.recv_multipart()
        assert status == b"ok"
        assert [m["word"] for m in json.loads(body)["items"]] == ["a", "b"]
    finally:
        req.close()


def test_a_zmq_stream_ends_with_its_error(sk_serve):
    srv = sk_serve(late_failure, zmq=0)
    with sk.ZmqClient(srv.zmq_url) as client:
        got = []
        with pytest.raises(sk.RemoteError, match="second word"):
            for item in client.stream("late_failure", text="a"):
                got.append(item)
        assert got == [{"text": "a", "first": True}]
        with pytest.raises(sk.BadMessage):
            list(client.stream("late_failure"))


# -- in a pipeline ------------------------------------------------------------------------------------


def test_each_yielded_message_goes_on_downstream_in_a_pipeline(sk_serve):
    lines = iter(["a b", "c"])

    def next_line() -> dict | None:
        line = next(lines, None)
        return None if line is None else {"text": line}

    rows = collect()
    srv = sk_serve(sk.every(0.01, next_line) >> words >> upper >> rows, name="words_out")
    rows.wait(3, timeout=10)
    assert [m["upper"] for m in rows.items] == ["A", "B", "C"]
    srv.settle()
    assert len(srv.outputs) == 3


# -- what a review found (each failed before its fix) ----------------------------------------------


def _leave_after_the_head(port: int, path: str, body: bytes = b"{}") -> None:
    """A raw HTTP client that reads the start of a streamed reply, then closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert sock.recv(4096)


def test_an_async_generator_that_never_awaits_cannot_hold_the_loop_when_its_client_leaves(sk_serve, http):
    """Before: writes to a client that had left returned at once, so the stream never let the
    loop turn; the runtime stopped answering anything (and status() hung)."""

    @sk.service
    async def rows(n: int = 10**9):
        for i in range(n):
            yield {"i": i}

    srv = sk_serve(rows, timeout=30)
    other = sk_serve(sk.service(lambda x: x, name="echo"), name="echo", http=srv.http_port)
    _leave_after_the_head(srv.http_port, "/rows")
    wait_for(lambda: srv.status()["disconnected"] == 1, timeout=10, what="the stream counted as disconnected")
    assert http.post(f"{other.url}/echo", json={"x": 1}, timeout=5).status_code == 200


def test_a_def_middleware_around_a_stream_lets_go_when_the_client_leaves(sk_serve):
    """Before: each client that left kept a worker thread, a task and an open generator."""
    closed = []

    @sk.service
    def endless(n: int = 0):
        try:
            while True:
                yield {"pad": "x" * 1000}
                time.sleep(0.001)  # the generator's own pace
        finally:
            closed.append(1)

    @sk.middleware
    def around(call, msg):
        return call(msg)

    srv = sk_serve(endless, middleware=[around], timeout=None)
    for _ in range(3):
        _leave_after_the_head(srv.http_port, "/endless")
    wait_for(lambda: len(closed) == 3, timeout=10, what="every generator closed")
    wait_for(lambda: srv.status()["pool"]["busy"] == 0, timeout=10, what="no worker held")
    assert srv.status()["disconnected"] == 3


def test_an_async_middleware_around_a_stream_leaves_no_task_behind(sk_serve, sk_runtime):
    """Before: each client that left left a pending Queue.get task on the loop."""

    @sk.service
    async def slow(n: int = 100):
        for i in range(n):
            yield {"i": i}
            await asyncio.sleep(0.5)

    @sk.middleware
    async def around(call, msg):
        return await call(msg)

    srv = sk_serve(slow, middleware=[around], timeout=None)

    def pending() -> list[str]:
        async def names() -> list[str]:
            return [t.get_coro().__qualname__ for t in asyncio.all_tasks() if not t.done()]

        return sk_runtime.call(names())

    for _ in range(3):
        _leave_after_the_head(srv.http_port, "/slow")
    wait_for(lambda: srv.status()["disconnected"] == 3, timeout=10, what="three streams counted as gone")
    wait_for(lambda: not [n for n in pending() if "Queue.get" in n], timeout=5, what="no Queue.get task left")


def test_a_middleware_that_answers_itself_gives_one_message(sk_serve, http, sk_runtime):
    """Before: a middleware that answered without calling on gave an empty stream."""

    @sk.middleware
    def cached(call, msg):
        return {"cached": True} if msg.get("text") == "hit" else call(msg)

    assert (cached >> words)(text="hit") == [{"text": "hit", "cached": True}]
    srv = sk_serve(words, middleware=[cached])
    reply = http.post(f"{srv.url}/words", json={"text": "hit"})
    assert [json.loads(line) for line in reply.text.splitlines()] == [{"text": "hit", "cached": True}]


def test_a_zmq_stream_waits_for_a_slow_reader_and_runs_ahead_of_it_by_a_bound(sk_serve):
    """Before: the generator ran 10,000 messages ahead of a reader that paused, and a reader
    that paused over a second lost its stream, told nothing (counted as disconnected)."""
    made = []

    @sk.service
    def numbers(n: int):
        for i in range(n):
            made.append(i)
            yield {"i": i, "pad": "x" * 4000}

    srv = sk_serve(numbers, zmq=0, timeout=None)
    seen = {"count": -1, "since": time.monotonic()}

    def still() -> bool:  # the generator made nothing new for half a second: it waits for its reader
        now, count = time.monotonic(), len(made)
        if count != seen["count"]:
            seen.update(count=count, since=now)
        return now - seen["since"] > 0.5

    with sk.ZmqClient(srv.zmq_url, timeout=10) as client:
        items = client.stream("numbers", n=10_000)
        assert next(items)["i"] == 0
        wait_for(still, timeout=10, what="the stream to wait for its reader")
        ahead = len(made)
        assert ahead < 4000, f"{ahead} messages made for a reader that took one"  # ZMQ queues ~1,000, TCP some
        holds(lambda: len(made) == ahead, 1.0, what="the stream staying where it waits")
        assert sum(1 for _ in items) == 9_999  # read after a pause of over a second: all there
    status = srv.status()
    assert (status["replied"], status["disconnected"]) == (1, 0)


def test_a_zmq_client_may_call_while_its_stream_is_open(sk_serve):
    """Before: the open stream held the client's lock, so a call from the same thread hung."""
    srv = sk_serve(words, zmq=0)
    with sk.ZmqClient(srv.zmq_url) as client:
        items = client.stream("words", text="a b c")
        assert next(items)["word"] == "a"
        assert client.call("words", text="z")["items"] == [{"text": "z", "word": "z"}]
        assert [m["word"] for m in items] == ["b", "c"]


def test_an_action_that_is_a_generator_is_refused_when_defined():
    """Before: it answered 500, a generator object not being JSON."""

    class Tail(sk.Service):
        def process(self, x: int) -> dict:
            return {}

        @sk.handle("lines")
        def lines(self, n: int = 3):
            yield from range(n)

    with pytest.raises(sk.WiringError, match="answers once"):
        Tail()
