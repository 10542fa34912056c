"""The svckit command: `svckit call` and `svckit run` in real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

import svckit as sk

SVCKIT = [sys.executable, "-m", "svckit.cli"]


@pytest.fixture
def wordcount(sk_serve):
    @sk.service
    def parse(text: str) -> dict:
        return {"words": text.split()}

    return sk_serve(parse >> sk.service(lambda words: len(words), name="n"), name="wordcount")


def test_call_prints_the_reply_as_json(wordcount):
    out = subprocess.run([*SVCKIT, "call", wordcount.url, "wordcount", "text=a b c"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 3


def test_call_reads_values_as_json_when_they_parse(sk_serve):
    srv = sk_serve(sk.service(lambda a, b: {"kinds": [type(a).__name__, type(b).__name__]}, name="kinds"))
    out = subprocess.run([*SVCKIT, "call", srv.url, "kinds", "a=3", "b=three"], capture_output=True, text=True)
    assert json.loads(out.stdout)["kinds"] == ["int", "str"]


def test_call_reports_a_remote_error_and_fails(wordcount):
    out = subprocess.run([*SVCKIT, "call", wordcount.url, "wordcount", "txt=x"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith("error: BadMessage: Service 'parse' needs field 'text'")


def test_call_rejects_an_argument_that_is_not_key_value(wordcount):
    out = subprocess.run([*SVCKIT, "call", wordcount.url, "wordcount", "oops"], capture_output=True, text=True)
    assert out.returncode != 0 and "'oops' is not key=value" in out.stderr


def _notebook(path, cells, teardown):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells])
    last = nbformat.v4.new_code_cell("srv.stop()")
    last.metadata["tags"] = ["teardown"]
    if teardown:
        nb.cells.append(last)
    nbformat.write(nb, path)


def test_run_serves_a_notebook_until_interrupted(tmp_path):
    nb = tmp_path / "service.ipynb"
    _notebook(
        nb,
        [
            """
            import svckit as sk

            @sk.service
            def shout(text: str) -> str:
                return text.upper()
            """,
            "srv = sk.serve(shout, name='shout', http=0)\nsrv",
        ],
        teardown=True,
    )
    proc = subprocess.Popen([*SVCKIT, "run", str(nb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the notebook has run and serves
        found = re.match(r"serving shout at (http://127\.0\.0\.1:\d+)", line)
        assert found, line + proc.stderr.read() if proc.poll() is not None else line
        assert sk.Client(found.group(1)).shout(text="hi")["shout"] == "HI"  # the teardown cell was skipped
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_run_names_the_cell_that_failed(tmp_path):
    nb = tmp_path / "broken.ipynb"
    _notebook(nb, ["x = 1", "1 / 0"], teardown=False)
    out = subprocess.run([*SVCKIT, "run", str(nb)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "code cell 2 failed: ZeroDivisionError" in out.stderr


def test_run_says_so_when_nothing_is_served(tmp_path):
    nb = tmp_path / "idle.ipynb"
    _notebook(nb, ["x = 1"], teardown=False)
    out = subprocess.run([*SVCKIT, "run", str(nb)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "serves nothing" in out.stderr


# -- the complete command line (issue 14) -------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rebind(port: int) -> None:
    """Listen on ``port`` as a server would (SO_REUSEADDR): fails while anything still listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


class Running:
    """``svckit run ...`` in a subprocess: waits for its 'serving' lines, killed by PID if it outlives the test."""

    def __init__(self, args, cwd, env=None):
        self.proc = subprocess.Popen(
            [*SVCKIT, "run", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.serving: dict[str, list[str]] = {}
        self.err = ""

    def wait_serving(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.err = self.proc.stderr.read()
                raise AssertionError(f"svckit run ended (rc {self.proc.wait()}): {self.err}")
            self.lines.append(line)
            found = re.match(r"serving (\S+) at (.+)", line)
            if found:
                self.serving[found.group(1)] = found.group(2).split(", ")
            if line.startswith("press Ctrl-C"):
                return self.serving
        raise AssertionError("svckit run did not serve in time")

    def stop(self, sig=signal.SIGTERM, within=5.0):
        started = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(within + 10)
        took = time.monotonic() - started
        self.err = self.proc.stderr.read()
        return rc, took

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def running():
    made: list[Running] = []

    def start(args, cwd, env=None):
        run = Running(args, cwd, env)
        made.append(run)
        return run

    yield start
    for run in made:
        run.close()


def _cli(*args, **kw):
    return subprocess.run([*SVCKIT, *args], capture_output=True, text=True, timeout=60, **kw)


def test_run_quickstart_is_reached_by_call_and_status_and_stops_on_sigterm(running, tmp_path):
    run = running([str(REPO / "notebooks" / "01-quickstart.ipynb")], cwd=tmp_path)  # from another directory
    http, zmq = run.wait_serving()["wordcount"]
    assert http.startswith("http://127.0.0.1:") and zmq.startswith("tcp://127.0.0.1:")
    bare = http.removeprefix("http://")  # 127.0.0.1:PORT, as people type it
    out = _cli("call", bare, "wordcount", "text=a b c")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 3
    out = _cli("call", zmq, "wordcount", "text=over zero m q")  # the address svckit run printed
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 4
    table = _cli("status", bare)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "STATE", "IN", "OUT", "ERRORS", "RATE/S", "UPTIME", "ADDRESSES"]
    assert row.split()[:2] == ["wordcount", "running"] and http in row
    raw = json.loads(_cli("status", http, "--json").stdout)
    assert raw["served"]["wordcount"]["state"] == "running"
    rc, took = run.stop(signal.SIGTERM)
    assert rc == 0, run.err
    assert took < 5.0
    assert "SIGTERM: stopping" in run.err
    _rebind(int(http.rsplit(":", 1)[1]))  # freed: they bind again at once
    _rebind(int(zmq.rsplit(":", 1)[1]))


TEARDOWN_NB = [
    """
    import pathlib
    import svckit as sk

    class Greeter(sk.Service):
        greeting: str = "hello"

        def process(self, name: str) -> dict:
            return {"said": f"{self.greeting}, {name}: {here} x{times}"}

        def teardown(self) -> None:
            pathlib.Path("torn-down.txt").write_text(self.greeting)
    """,
    """
    times = 1  # defaults, overridden by -p
    shout = False
    """,
    "here = open('beside.txt').read().strip()  # a file next to the notebook, opened by its name",
    "srv = sk.serve(Greeter(), name='greet', http=0)",
]


def _greeter_notebook(directory):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in TEARDOWN_NB])
    nb.cells[1].metadata["tags"] = ["parameters"]
    path = directory / "greeter.ipynb"
    nbformat.write(nb, path)
    (directory / "beside.txt").write_text("next door")
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_in_the_notebooks_directory_with_parameters_and_pinned_ports_teardown_on_signal(running, tmp_path, sig):
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    path = _greeter_notebook(nbdir)
    port = _free_port()
    run = running([str(path), "-p", "times", "3", "--http", f"greet={port}"], cwd=tmp_path)
    (url,) = run.wait_serving()["greet"]
    assert url == f"http://127.0.0.1:{port}"  # served on port 0, pinned from the command line
    assert sk.Client(url).greet(name="ann")["said"] == "hello, ann: next door x3"
    rc, took = run.stop(sig)
    assert rc == 0 and took < 5.0, run.err
    assert (nbdir / "torn-down.txt").read_text() == "hello"  # teardown() ran on SIGTERM as on SIGINT
    _rebind(port)


def test_run_fills_typed_config_from_a_file_and_the_environment(running, tmp_path):
    path = _greeter_notebook(tmp_path)
    config = tmp_path / "greeter.toml"
    config.write_text('[greeter]\ngreeting = "bonjour"\n')
    run = running([str(path), "--config", str(config)], cwd=tmp_path)
    (url,) = run.wait_serving()["greet"]
    assert sk.Client(url).greet(name="ann")["said"].startswith("bonjour, ann")
    run.stop()
    run = running([str(path), "--config", str(config)], cwd=tmp_path, env={"SVCKIT_GREETER_GREETING": "hola"})
    (url,) = run.wait_serving()["greet"]
    assert sk.Client(url).greet(name="ann")["said"].startswith("hola, ann")  # the environment wins over the file
    run.stop()
    config.write_text("[greeter]\ngreting = 1\n")
    out = _cli("run", str(path), "--config", str(config))
    assert out.returncode == 1
    assert "code cell 4 failed: ConfigError: The config file" in out.stderr
    assert f"{config} sets 'greting' for Greeter" in out.stderr and "config keys are: greeting" in out.stderr


def test_run_a_parameter_of_a_notebook_without_a_parameters_cell_is_set_first(tmp_path):
    nb = tmp_path / "p.ipynb"
    _notebook(nb, ["print(repr(value), type(value).__name__)", "raise SystemExit('stop here')"], teardown=False)
    out = _cli("run", str(nb), "-p", "value", "[1, 2]")
    assert "[1, 2] list" in out.stdout
    assert "has no cell tagged 'parameters'" in out.stderr


def test_run_a_failing_cell_gives_a_traceback_without_colour(tmp_path):
    nb = tmp_path / "broken.ipynb"
    _notebook(nb, ["x = 1", "def f():\n    return 1 / 0", "f()"], teardown=False)
    out = _cli("run", str(nb), env={**os.environ, "FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert out.returncode == 1
    assert "\x1b" not in out.stderr and "\x1b" not in out.stdout
    assert "broken.ipynb: code cell 3 failed: ZeroDivisionError: division by zero" in out.stderr
    assert 'File "code cell 2", line 2, in f' in out.stderr and "Traceback (most recent call last)" in out.stderr
    assert "interactiveshell" not in out.stderr


def test_run_module_object_serves(running, tmp_path):
    (tmp_path / "wc.py").write_text(
        textwrap.dedent(
            """
            import svckit as sk

            @sk.service
            def parse(text: str) -> dict:
                return {"words": text.split()}

            flow = parse >> sk.service(lambda words: len(words), name="n")
            """
        )
    )
    http, zmq = _free_port(), _free_port()
    args = ["wc:flow", "--http", str(http), "--zmq", str(zmq), "--host", "127.0.0.1", "--token", "s3cret"]
    args += ["--name", "wordcount"]
    run = running(args, cwd=tmp_path)
    assert run.wait_serving()["wordcount"] == [f"http://127.0.0.1:{http}", f"tcp://127.0.0.1:{zmq}"]
    assert sk.Client(f"http://127.0.0.1:{http}", token="s3cret").wordcount(text="a b")["n"] == 2
    out = _cli("call", f"tcp://127.0.0.1:{zmq}", "wordcount", "text=a b c", "--token", "s3cret")
    assert json.loads(out.stdout)["n"] == 3
    out = _cli("call", f"127.0.0.1:{http}", "wordcount", "text=a")
    assert out.returncode == 1 and out.stderr.startswith("error: Unauthorized:")
    rc, _ = run.stop()
    assert rc == 0
    _rebind(http)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "svckit: the following arguments are required: COMMAND; see 'svckit --help'."),
        (["run"], "svckit run: the following arguments are required: NOTEBOOK.ipynb | module:object"),
        (["run", "missing.ipynb"], "svckit run: there is no notebook at missing.ipynb."),
        (["run", "no_such_module_here:flow"], "svckit run: cannot import 'no_such_module_here'"),
        (["run", "x.ipynb", "--http", "a=port"], "svckit run: --http 'a=port': give NAME=PORT or PORT"),
        (["run", "x.ipynb", "-p", "1st", "3"], "svckit run: -p '1st': a parameter is a Python variable name"),
        (["call", "127.0.0.1:1", "a", "--json", "{bad"], "svckit call: --json is not valid JSON"),
        (["call", "127.0.0.1:1", "a", "--json", "[1]"], "svckit call: --json must be a JSON object"),
        (["call", "not an address", "a"], "svckit call: 'not an address' is not an address"),
        (["call", "127.0.0.1:1", "a", "oops"], "svckit call: 'oops' is not key=value"),
        (["status", "tcp://127.0.0.1:1"], "svckit status: status is served over HTTP only"),
        (["frobnicate"], "svckit: argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_sentence_and_exit_2(tmp_path, args, says):
    (tmp_path / "x.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(says), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_unreachable_addresses_are_one_line_errors():
    port = _free_port()
    for address in (f"127.0.0.1:{port}", f"tcp://127.0.0.1:{port}"):
        out = _cli("call", address, "x", "a=1")
        assert out.returncode == 1 and out.stderr.startswith("error: ServiceUnavailable:"), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["run"], ["call"], ["status"]])
def test_help_on_every_command_is_plain_text(command):
    out = _cli(*command, "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: svckit")
    assert "``" not in out.stdout and "`" not in out.stdout


def test_version():
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"svckit {sk.__version__}"


def test_status_table_shows_running_program_calls():
    from svckit.cli import status_table

    body = {
        "port": 8000,
        "served": {
            "sim": {
                "state": "running", "received": 3, "replied": 2, "errors": 1, "rate": 0.4, "uptime": 75.2,
                "http": "http://127.0.0.1:8000", "zmq": None, "warnings": [],
                "last_error": {"type": "ProgramFailed", "message": "Program 'simulate' exited with code 3."},
                "stages": {"simulate": {"running": [{"call": 7, "pid": 42, "seconds": 1.25, "percent": 60.0,
                                                     "line": "step 3/5 (60%)"}],
                                        "waiting": 2, "kept_dirs": 1, "kept_bytes": 2048}},
            }
        },
    }  # fmt: skip
    assert status_table(body).splitlines() == [
        "NAME  STATE    IN  OUT  ERRORS  RATE/S  UPTIME  ADDRESSES",
        "sim   running  3   2    1       0.4     75s     http://127.0.0.1:8000",
        "",
        "sim: last error ProgramFailed: Program 'simulate' exited with code 3.",
        "sim/simulate: 1 running, 2 waiting, 1 work directories kept (2.0 kB)",
        "  call 7 (pid 42) 1.2s 60% step 3/5 (60%)",
    ]
    assert status_table({"port": 1, "served": {}}) == "nothing is served on port 1"
