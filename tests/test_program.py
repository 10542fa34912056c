"""sk.program: external programs as services, with real subprocesses, sockets and signals."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import svckit as sk
from svckit.dashboard import _progress_html
from svckit.testing import wait_for

SIM = str(Path(__file__).resolve().parent.parent / "notebooks" / "programs" / "simulate.py")
PERCENT = r"\((?P<percent>\d+)%\)"


def simulate(*args: str, **kw):
    kw.setdefault("name", "simulate")
    return sk.program([sys.executable, SIM, *args], **kw)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def pids():
    """PIDs a test learns of (programs and their children): killed by PID if one survives."""
    seen: list[int] = []
    yield seen
    for pid in seen:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_prints_progress_and_writes_an_output_file(sk_serve):
    prog = simulate(
        "--steps", "{steps}", "--delay", "0.15", "--label", "{label}",
        params={"steps": int, "label": (str, "run")}, outputs={"result": "result.txt"}, progress=PERCENT,
    )  # fmt: skip
    srv = sk_serve(prog, name="sim", http=0, zmq=0)
    seen: list[dict] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            running = srv.status()["stages"]["simulate"]["running"]
            if running and running[0]["percent"]:
                seen.append({**running[0], "html": _progress_html(srv)})
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        reply = sk.Client(srv.url).sim(steps=8, label="first")
    finally:
        stop.set()
        watcher.join(5)
    assert reply["result"] == "first: 8 steps done, 0 words read\n"
    assert reply["returncode"] == 0 and reply["duration"] >= 8 * 0.15
    assert reply["stderr_tail"] == "simulate: first, 8 steps"
    assert seen, "no progress was seen while it ran"
    percents = [s["percent"] for s in seen]
    assert percents == sorted(percents) and 0 < percents[0] < 100
    assert any(s["line"].startswith("step ") for s in seen) and seen[-1]["pid"] > 0
    assert "<progress" in seen[-1]["html"] and "simulate" in seen[-1]["html"]
    over_zmq = sk.ZmqClient(srv.zmq_url).sim(steps=1)
    assert over_zmq["result"] == "run: 1 steps done, 0 words read\n"
    stage = srv.status()["stages"]["simulate"]
    assert stage["running"] == [] and stage["runs"] == 2 and stage["kept_dirs"] == 0 and stage["kept_bytes"] == 0
    assert os.listdir(stage["root"]) == []  # both work directories recycled
    root = stage["root"]
    srv.stop()
    assert not os.path.exists(root)  # an empty root goes with the served thing


def test_a_timeout_kills_the_whole_group_and_reports(sk_serve, pids):
    prog = simulate("--spawn", timeout=1.0, grace=0.5, keep="failed")
    srv = sk_serve(prog, name="hang")
    started = time.monotonic()
    with pytest.raises(sk.ServiceTimeout) as caught:
        sk.Client(srv.url).hang()
    took = time.monotonic() - started
    error = caught.value
    assert "Program 'simulate' did not finish within 1 s" in error.message
    assert "SIGTERM" in error.message and error.status == 504
    assert took < 1.0 + 0.5 + 2.0
    workdir = error.workdir  # kept: a timeout is a failure
    child = int(Path(workdir, "grandchild.pid").read_text())
    pids.append(child)
    assert "started grandchild" in Path(workdir, ".stdout").read_text()
    wait_for(lambda: gone(child), 10, what=f"grandchild {child} to be gone")
    assert srv.status()["stages"]["simulate"]["timeouts"] == 1
    assert prog.clean() > 0 and not os.path.exists(workdir)


def test_sigterm_ignored_gets_sigkill_after_the_grace(sk_serve):
    prog = simulate("--hang", "--ignore-term", timeout=0.5, grace=1.0, keep="never")
    srv = sk_serve(prog, name="stubborn")
    started = time.monotonic()
    with pytest.raises(sk.ServiceTimeout):
        sk.Client(srv.url).stubborn()
    took = time.monotonic() - started
    assert 0.5 + 1.0 <= took < 0.5 + 1.0 + 2.0
    assert srv.status()["stages"]["simulate"]["kept_dirs"] == 0


def test_a_failing_exit_is_program_failed_with_the_stderr_tail(sk_serve):
    prog = simulate("--steps", "4", "--fail", "3", outputs=["result.txt"], keep="never")
    srv = sk_serve(prog, name="bad")
    with pytest.raises(sk.ProgramFailed) as caught:
        sk.Client(srv.url).bad()
    error = caught.value
    assert error.returncode == 3
    assert error.stderr_tail.splitlines() == ["simulate: run, 4 steps", "error: the simulation diverged at step 2"]
    assert error.message == (
        "Program 'simulate' exited with code 3; the last line of its stderr: error: the simulation diverged at step 2."
    )
    assert not hasattr(error, "workdir")  # keep="never": nothing to look at
    status = srv.status()
    assert status["errors_by_type"] == {"ProgramFailed": 1} and status["stages"]["simulate"]["failed"] == 1


def test_twenty_concurrent_messages_get_twenty_work_directories_all_recycled(sk_serve):
    prog = simulate(
        "--steps", "2", "--delay", "0.2", "--label", "{workdir}", outputs={"result": "result.txt"}, limit=20
    )
    srv = sk_serve(prog, name="many")
    replies: list[dict] = []
    peak = []

    def one() -> None:
        with sk.Client(srv.url) as client:
            replies.append(client.many())

    threads = [threading.Thread(target=one) for _ in range(20)]
    started = time.monotonic()
    for t in threads:
        t.start()
    wait_for(lambda: peak.append(len(srv.status()["stages"]["simulate"]["running"])) or max(peak) >= 10, 20)
    for t in threads:
        t.join(30)
    took = time.monotonic() - started
    dirs = {r["result"].split(":")[0] for r in replies}
    assert len(replies) == 20 and len(dirs) == 20
    root = srv.status()["stages"]["simulate"]["root"]
    assert all(os.path.dirname(d) == root for d in dirs)
    assert not any(os.path.exists(d) for d in dirs) and os.listdir(root) == []
    assert took < 20 * 0.4  # they ran side by side, not one after another


def test_keep_failed_keeps_exactly_the_failed_ones(sk_serve):
    prog = simulate(
        "--steps", "1", "--delay", "0", "--exit-code", "{code}", "--label", "{workdir}", params={"code": int}
    )
    srv = sk_serve(prog, name="some")
    client = sk.Client(srv.url)
    failed, passed = set(), set()
    for n in range(10):
        try:
            passed.add(client.some(code=0)["returncode"] == 0 and n)
        except sk.ProgramFailed as exc:
            failed.add(exc.workdir)
        try:
            client.some(code=n % 3 + 1)
        except sk.ProgramFailed as exc:
            assert exc.returncode == n % 3 + 1
            failed.add(exc.workdir)
    assert len(failed) == 10 and len(passed) == 10
    assert set(prog.kept()) == failed
    stage = srv.status()["stages"]["simulate"]
    assert stage["kept_dirs"] == 10 and stage["kept_bytes"] == sum(prog.kept().values()) > 0
    assert sorted(os.listdir(stage["root"])) == sorted(os.path.basename(d) for d in failed)
    assert prog.clean() == stage["kept_bytes"]
    assert srv.status()["stages"]["simulate"]["kept_dirs"] == 0 and os.listdir(stage["root"]) == []


def test_inputs_are_written_as_files_and_placeholders_are_one_argument_each():
    prog = simulate(
        "--input", "{text}", "--label", "{label}", "--steps", "1", "--delay", "0",
        inputs={"text": "words.txt"}, outputs={"result": "result.txt"},
    )  # fmt: skip
    reply = prog(text="one two three", label="a label; rm -rf / $(x)")
    assert reply["result"] == "a label; rm -rf / $(x): 1 steps done, 3 words read\n"


def test_large_or_binary_outputs_come_back_as_paths_and_keep_their_directory():
    prog = simulate("--steps", "1", "--delay", "0", "--binary", "5000", outputs={"data": "result.txt"}, keep="never")
    reply = prog()
    path = reply["data"]
    assert os.path.isabs(path) and os.path.getsize(path) == 5000
    assert prog.kept() == {os.path.dirname(path): pytest.approx(5000, abs=200)}
    as_text = simulate("--steps", "1", "--delay", "0", outputs={"result": "result.txt"}, text_limit=10)
    assert os.path.isfile(as_text()["result"])  # over text_limit: a path
    assert prog.clean() > 5000 and not os.path.exists(path)
    as_text.clean()


def test_a_chatty_program_never_fills_a_pipe_or_memory():
    prog = simulate("--steps", "1", "--delay", "0", "--chatty", "30000", outputs=["result.txt"], line_limit=100)
    started = time.monotonic()
    reply = prog()
    assert reply["returncode"] == 0 and time.monotonic() - started < 20
    assert reply["result.txt"].startswith("run: 1 steps")


def test_stopping_the_served_thing_stops_its_running_programs(sk_serve, pids):
    prog = simulate("--hang", grace=0.5)
    srv = sk_serve(prog, name="forever")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            sk.Client(srv.url).forever()
        except Exception as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    running = wait_for(lambda: [c for c in srv.status()["stages"]["simulate"]["running"] if c["pid"]], 10)
    pids.append(running[0]["pid"])
    started = time.monotonic()
    srv.stop(timeout=0.5)
    caller.join(10)
    assert time.monotonic() - started < 5
    assert len(errors) == 1 and isinstance(errors[0], sk.ServiceUnavailable)
    wait_for(lambda: gone(running[0]["pid"]), 10, what="the program to be gone")
    assert prog.kept() == {}  # stopped, not failed: nothing kept, and its root went with it


def test_missing_fields_are_bad_messages(sk_serve):
    srv = sk_serve(simulate("--steps", "{steps}", params={"steps": int}), name="typed")
    with pytest.raises(sk.BadMessage, match="needs field 'steps'"):
        sk.Client(srv.url).typed()
    with pytest.raises(sk.BadMessage, match="'steps'"):
        sk.Client(srv.url).typed(steps="many")


def test_composes_with_other_stages():
    @sk.service
    def plan(n: int) -> dict:
        return {"steps": n * 2}

    @sk.service
    def report(result: str) -> dict:
        return {"summary": result.strip().upper()}

    flow = plan >> simulate("--steps", "{steps}", "--delay", "0", outputs={"result": "result.txt"}) >> report
    assert flow(n=1)["summary"] == "RUN: 2 STEPS DONE, 0 WORDS READ"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cmd": []}, "give the command as a non-empty list of strings"),
        ({"cmd": "ls -l"}, "give the command as a non-empty list of strings"),
        ({"cmd": ["ls", "{stepz}"], "params": {"steps": int}}, "the cmd item placeholder {stepz} names no field"),
        ({"cmd": ["ls", "{a.b}"]}, "a placeholder names one message field"),
        ({"cmd": ["ls"], "keep": "sometimes"}, "keep='sometimes'; give 'always', 'failed' or 'never'."),
        ({"cmd": ["ls"], "outputs": ["../escape.txt"]}, "leaves the work directory"),
        ({"cmd": ["ls"], "inputs": {"data": "/etc/passwd"}}, "leaves the work directory"),
        ({"cmd": ["ls"], "progress": r"\d+%"}, "has no named group"),
        ({"cmd": ["no-such-program-here"]}, "no executable 'no-such-program-here' on PATH"),
        ({"cmd": ["ls"], "timeout": 0}, "timeout=0; give a positive number of seconds"),
    ],
)
def test_bad_arguments_are_wiring_errors_at_construction(kwargs, message):
    with pytest.raises(sk.WiringError) as caught:
        sk.program(**kwargs)
    assert message in str(caught.value)
    assert str(caught.value).endswith(".")


def test_repr_is_short_and_stable():
    prog = simulate("--steps", "{steps}")
    assert repr(prog) == "<Service simulate: python simulate.py --steps {steps}>"
