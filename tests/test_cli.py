"""The svckit command: `svckit call` and `svckit run` in real subprocesses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap

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
