"""``sk.remote``: a flow's stage served by another process, over ZMQ and HTTP."""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import svckit as sk
from svckit.testing import wait_for

SVCKIT = [sys.executable, "-m", "svckit.cli"]

WORDS = """
import os
import svckit as sk

@sk.service
def parse(text: str) -> dict:
    if text == "boom":
        raise ValueError("no booms here")
    return {"words": text.split(), "served_by": os.getpid()}

flow = parse >> sk.service(lambda words: len(words), name="n")
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Other:
    """``svckit run words:flow`` in a subprocess on fixed ports, so it can be killed and restarted."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.http, self.zmq = _free_port(), _free_port()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        args = ["run", "words:flow", "--http", str(self.http), "--zmq", str(self.zmq), "--name", "wordcount"]
        self.proc = subprocess.Popen(
            [*SVCKIT, *args], cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"svckit run ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
            if line.startswith("press Ctrl-C"):
                return
        raise AssertionError("svckit run did not serve in time")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.proc = None


@pytest.fixture
def other(tmp_path):
    (tmp_path / "words.py").write_text(textwrap.dedent(WORDS))
    served = Other(tmp_path)
    served.start()
    try:
        yield served
    finally:
        served.kill()


@sk.service
def clean(raw: str) -> dict:
    return {"text": raw.strip().lower()}


@sk.service
def label(n: int) -> dict:
    return {"label": "long" if n > 2 else "short"}


@pytest.mark.parametrize("over", ["zmq", "http"])
def test_a_flow_calls_another_process_and_heals_when_it_comes_back(other, sk_serve, over):
    addr = f"tcp://127.0.0.1:{other.zmq}" if over == "zmq" else f"http://127.0.0.1:{other.http}"
    flow = clean >> sk.remote(addr, "wordcount", timeout=10, connect_timeout=1) >> label
    srv = sk_serve(flow, name="pipeline")
    with sk.Client(srv.url) as c:
        reply = c.pipeline(raw="  A B C ")
        assert (reply["n"], reply["label"], reply["words"]) == (3, "long", ["a", "b", "c"])
        assert reply["served_by"] != os.getpid(), "the middle stage ran in the other process"
        # remote errors under their own names
        with pytest.raises(sk.RemoteError) as err:
            c.pipeline(raw="boom")
        assert (err.value.type, err.value.message) == ("ValueError", "no booms here")
        assert flow(raw="x y")["label"] == "short", "called right in a cell too"

        other.kill()
        with pytest.raises(sk.ServiceUnavailable, match=r"Remote stage 'wordcount'|Cannot reach"):
            c.pipeline(raw="a b")
        with pytest.raises(sk.ServiceUnavailable):
            c.pipeline(raw="a b")

        other.start()  # the same ports
        reply = wait_for(lambda: _ok(c, raw="back again now"), timeout=20, what="the flow to heal")
        assert reply["n"] == 3
    extra = srv.status()["stages"]["wordcount"]
    assert extra["kind"] == "remote" and extra["unavailable"] >= 2 and extra["waiting"] == 0


def _ok(c: sk.Client, **fields):
    try:
        return c.pipeline(**fields)
    except sk.ServiceUnavailable:
        return None


def test_a_bad_message_stays_a_bad_message(sk_serve):
    srv = sk_serve(sk.service(lambda n: {"twice": 2 * n}, name="twice"), zmq=0, http=0)
    for addr in (srv.zmq_url, srv.url):
        stage = sk.remote(addr, "twice")
        assert stage(n=2)["twice"] == 4
        with pytest.raises(sk.BadMessage) as err:
            stage(m=2)
        assert err.value.field == "n" and err.value.service == "twice"
        with pytest.raises(sk.UnknownAction):
            sk.remote(addr, "thrice")(n=1)


def test_many_messages_in_flight_on_one_socket(sk_serve):
    import asyncio

    @sk.service
    async def slow(i: int) -> dict:
        await asyncio.sleep(0.05)
        return {"j": i}

    upstream = sk_serve(slow, name="slow", zmq=0)
    srv = sk_serve(sk.remote(upstream.zmq_url, "slow"), name="local")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: sk.Client(srv.url).local(i=i), range(64)))
    took = time.monotonic() - started
    assert [r["j"] for r in replies] == list(range(64))
    assert took < 64 * 0.05 / 2, f"requests overlapped on the one socket ({took:.2f} s)"


def test_nothing_listening_is_unavailable_quickly():
    port = _free_port()
    for addr in (f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
        started = time.monotonic()
        with pytest.raises(sk.ServiceUnavailable):
            sk.remote(addr, "x", connect_timeout=0.3)(a=1)
        assert time.monotonic() - started < 3


def test_a_slow_reply_is_a_timeout(sk_serve):
    import asyncio

    @sk.service
    async def stuck(i: int) -> dict:
        await asyncio.sleep(5)
        return {}

    upstream = sk_serve(stuck, name="stuck", zmq=0)
    with pytest.raises(sk.ServiceTimeout, match=r"Remote stage 'stuck': no reply .* within 0.2 s"):
        sk.remote(upstream.zmq_url, "stuck", timeout=0.2)(i=1)


def test_token_and_describe(sk_serve):
    srv = sk_serve(sk.service(lambda n: n + 1, name="inc"), zmq=0, http=0, token="s3cret-token")
    for addr in (srv.zmq_url, srv.url):
        assert sk.remote(addr, "inc", token="s3cret-token")(n=1)["inc"] == 2
        with pytest.raises(sk.Unauthorized):
            sk.remote(addr, "inc")(n=1)
    stage = sk.remote("tcp://127.0.0.1:5555", "inc", name="far_inc")
    assert repr(stage) == "<Service far_inc: remote tcp://127.0.0.1:5555>"
    assert re.fullmatch(r"<Flow inc >> far_inc>", repr(sk.service(lambda n: n, name="inc") >> stage))


def test_wiring_errors():
    with pytest.raises(sk.WiringError, match="give a ZMQ address"):
        sk.remote("127.0.0.1:5555", "x")
    with pytest.raises(sk.WiringError, match="timeout=0"):
        sk.remote("tcp://127.0.0.1:5555", "x", timeout=0)
    with pytest.raises(sk.WiringError, match="name the remote action"):
        sk.remote("tcp://127.0.0.1:5555", "")
