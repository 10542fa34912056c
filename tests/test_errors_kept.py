"""Errors you can act on, and times and ids that line up: ``Served.errors`` with tracebacks kept
server-side in a bounded ring, ``last_traceback()``, ``debug=True``, the ERROR log headless,
timezone-aware times and the request ids of outputs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import requests

import svckit as sk
from svckit.metrics import ERRORS_KEPT, EXCERPT_CHARS, TRACEBACK_CHARS, Metrics, traceback_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cli import _free_port


@pytest.fixture
def divide(sk_serve):
    @sk.service
    def parse(x: float) -> dict:
        return {"x": x}

    @sk.service
    def inverse(x: float) -> dict:
        return {"y": 1 / x}

    return sk_serve(parse >> inverse, name="divide")


def test_errors_frame_has_the_traceback_the_request_id_and_what_caused_it(divide):
    client = sk.Client(divide.url)
    assert client.divide(x=2)["y"] == 0.5
    with pytest.raises(sk.RemoteError) as raised:
        client.divide(x=0)
    with pytest.raises(sk.BadMessage):
        client.divide(x="zero")
    client.close()
    assert "traceback" not in raised.value.to_dict()  # not on the wire by default
    errors = divide.settle().errors
    assert list(errors.columns) == [
        "time", "service", "type", "message", "status", "request_id", "excerpt", "traceback"
    ]  # fmt: skip
    first, second = errors.iloc[0], errors.iloc[1]
    assert (first["service"], first["type"], first["status"]) == ("inverse", "ZeroDivisionError", 500)
    assert first["excerpt"] == '{"x": 0}'
    tb = first["traceback"]
    assert tb.startswith("Traceback (most recent call last):") and tb.rstrip().endswith(
        "ZeroDivisionError: float division by zero"
    )
    assert 'return {"y": 1 / x}' in tb and "/svckit/" not in tb  # the user's line, no svckit frame
    assert second["type"] == "BadMessage" and pd.isna(second["traceback"])  # refused input: nothing to trace
    traffic = divide.traffic
    answered = traffic[(traffic.request_id == first["request_id"]) & (traffic.direction == "out")]
    assert list(answered.status) == [500]  # the same request in traffic
    assert errors.time.dt.tz is not None and str(errors.time.dt.tz) == "UTC"


def test_last_traceback_prints_the_newest(divide, capsys):
    assert divide.last_traceback() is None
    assert "has had no errors" in capsys.readouterr().out
    with pytest.raises(sk.RemoteError):
        sk.Client(divide.url).divide(x=0)
    assert divide.settle().last_traceback() is None  # printed, not returned: one copy in a cell
    out = capsys.readouterr().out
    assert out.strip() == divide.errors.traceback.iloc[-1].strip()
    assert "ZeroDivisionError" in out


def test_debug_puts_the_traceback_on_the_wire_with_paths_cut(sk_serve, tmp_path):
    secret = tmp_path / "deep" / "secret.csv"

    @sk.service
    def load(name: str) -> dict:
        return {"rows": open(secret).read()}

    srv = sk_serve(load, name="load", debug=True)
    reply = requests.post(f"{srv.url}/load", json={"name": "x"}, timeout=10)
    assert reply.status_code == 500
    body = reply.json()["error"]
    assert "Traceback (most recent call last)" in body["traceback"]
    assert str(secret) not in body["traceback"] and "…/secret.csv" in body["traceback"]
    assert str(secret) in srv.settle().errors.traceback.iloc[-1]  # kept whole server-side
    srv = sk_serve(load, name="load", debug=False)  # served again without debug: off again
    assert "traceback" not in requests.post(f"{srv.url}/load", json={"name": "x"}, timeout=10).json()["error"]


def test_kept_errors_are_bounded_in_count_and_size():
    m = Metrics()
    huge = "x" * 100_000
    for i in range(ERRORS_KEPT + 50):
        m.error("ValueError", "bad", "svc", float(i), status=500, request_id=i, excerpt=huge, traceback=huge)
    kept = list(m.errors_log)
    assert len(kept) == ERRORS_KEPT and kept[0]["request_id"] == 50
    assert all(len(e["excerpt"]) <= EXCERPT_CHARS and len(e["traceback"]) <= TRACEBACK_CHARS for e in kept)
    assert m.errors == ERRORS_KEPT + 50  # counted, all of them

    def deep(n: int) -> None:
        if n == 0:
            raise RecursionError("x" * 50_000)
        deep(n - 1)

    try:
        deep(500)
    except RecursionError as exc:
        text = traceback_text(exc)
    assert len(text) <= TRACEBACK_CHARS + 100 and "characters cut" in text and text.rstrip().endswith("x")


def test_a_flood_of_failing_requests_logs_a_bounded_number_of_tracebacks(divide, caplog):
    client = sk.Client(divide.url)
    with caplog.at_level(logging.ERROR, logger="svckit"):
        for _ in range(40):
            with pytest.raises(sk.RemoteError):
                client.divide(x=0)
    client.close()
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "Traceback" in r.getMessage()]
    assert 1 <= len(logged) <= 15  # a burst, then two a second
    assert "service 'inverse' raised ZeroDivisionError" in logged[0].getMessage()
    assert len(divide.settle().errors) == 40


def test_svckit_run_logs_a_raised_error_with_its_traceback_at_error(tmp_path):
    (tmp_path / "inv.py").write_text(
        textwrap.dedent(
            """
            import svckit as sk

            @sk.service
            def inverse(x: float) -> dict:
                return {"y": 1 / x}
            """
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "svckit.cli", "run", "inv:inverse", "--http", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        while not proc.stdout.readline().startswith("press Ctrl-C"):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with pytest.raises(sk.RemoteError):
            sk.Client(f"http://127.0.0.1:{port}").inverse(x=0)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "svckit: ERROR svckit.request: service 'inverse' raised ZeroDivisionError" in err
    assert "Traceback (most recent call last)" in err and 'return {"y": 1 / x}' in err


def test_outputs_carry_the_time_and_request_id_of_their_request(divide):
    client = sk.Client(divide.url)
    for x in (1, 2, 4):
        client.divide(x=x)
    client.close()
    outputs = divide.settle().outputs
    assert list(outputs.columns) == ["x", "y", "time", "request_id"]
    assert str(outputs.time.dt.tz) == "UTC"
    merged = outputs.merge(divide.traffic[divide.traffic.direction == "out"], on="request_id", suffixes=("", "_t"))
    assert len(merged) == 3 and (merged.status == 200).all()
    assert ((merged.time_t - merged.time).abs() < pd.Timedelta(seconds=1)).all()


def test_a_message_key_named_time_keeps_its_column(sk_serve):
    srv = sk_serve(sk.service(lambda time: time, name="clock"), name="clock")
    sk.Client(srv.url).clock(time="noon")
    assert list(srv.settle().outputs.columns) == ["time", "clock", "_time", "request_id"]
    assert srv.outputs.time.iloc[0] == "noon"


def test_times_are_utc_and_the_dashboard_shows_them_in_local_time():
    code = textwrap.dedent(
        """
        import time, comm
        import pandas as pd
        import svckit as sk

        comm.create_comm = lambda *a, **k: comm.DummyComm(*a, **k)
        srv = sk.serve(sk.service(lambda x: x, name="echo"), http=0)
        sk.Client(srv.url).echo(x=1)
        srv.settle()
        dash = srv.dashboard()
        row = srv.traffic.iloc[-1]
        assert str(row.time.tz) == "UTC", row.time
        assert abs(row.time.timestamp() - time.time()) < 30
        shown = time.strftime("%H:%M:%S", time.localtime(row.time.timestamp()))
        assert shown in dash.cards[0].traffic.value, (shown, dash.cards[0].traffic.value)
        utc = row.time.strftime("%H:%M:%S")
        assert utc not in dash.cards[0].traffic.value, "the dashboard shows UTC, not local time"
        print("ok", time.strftime("%Z"), shown, utc)
        dash.close(); srv.stop()
        """
    )
    env = {**os.environ, "TZ": "America/New_York"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok E"), out.stdout  # EST or EDT: the zone was in force
