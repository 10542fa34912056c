"""A real Jupyter kernel (nbclient) serves a flow, calls it and shuts down without hanging."""

from __future__ import annotations

import tempfile
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
Config = pytest.importorskip("traitlets.config").Config

#: jupyter_client sends SIGTERM after half of this and SIGKILL at the end of it.
SHUTDOWN_WAIT = 40.0
#: A clean shutdown takes about a second here.
CLEAN_EXIT = 8.0
#: ipykernel 7.4 races at shutdown: its control thread flushes stdout after the main thread
#: has stopped the IOPub thread, waits out ``OutStream.flush_timeout`` (10 s) and prints
#: this on the kernel's stderr. It happens with no svckit in the kernel too (1 run in 25
#: here with plain ``print`` cells). That wait is allowed; any other delay is not.
IPYKERNEL_RACE = "IOStream.flush timed out"
IPYKERNEL_FLUSH_TIMEOUT = 10.0
#: Its other shutdown race (ipykernel PR 1518 fixes a third): the control thread publishes a
#: status after the main thread stopped the IOPub thread, and blocks for ever sending on the
#: IOPub thread's event pipe (``IOPubThread.schedule``) while the main thread joins it; the
#: kernel is SIGTERMed, and the stacks it then dumps show just that.
IPYKERNEL_HANG = ("ipykernel/iostream.py", "in schedule", "ipykernel/kernelbase.py", "in process_control")

CELLS = [
    """\
import faulthandler, signal, sys  # a kernel SIGTERMed for not exiting shows every thread's stack
faulthandler.register(signal.SIGTERM, file=sys.__stderr__, all_threads=True, chain=True)
import svckit as sk

@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}

@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}

flow = parse >> count
srv = sk.serve(flow, name="wordcount", http=0)
print(repr(srv))""",
    """\
reply = sk.Client(srv.url).call("wordcount", text="a b c")
print(reply)""",
    """\
flow(text="x y")""",
]

SHUTDOWN = """\
sk.shutdown()
print(repr(srv), "shut down")"""


def _run(cells: list[str], timeout: float) -> tuple[object, float, int | None, str]:
    """Execute ``cells`` in a fresh kernel: the notebook, its shutdown time, exit code and stderr."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    # A long grace period, so a slow machine is not mistaken for a hang: the exit code tells.
    config = Config({"KernelManager": {"shutdown_wait_time": SHUTDOWN_WAIT}})
    client = nbclient.NotebookClient(nb, config=config, timeout=timeout, kernel_name="python3", startup_timeout=60)
    seen: dict[str, object] = {}

    def executed(cell_index: int, **_: object) -> None:
        if cell_index == len(cells) - 1:  # the last cell ran; the kernel is shut down next
            seen["process"] = client.km.provisioner.process
            seen["t0"] = time.monotonic()

    client.on_cell_executed = executed
    with tempfile.TemporaryFile("w+") as stderr:
        client.execute(stderr=stderr)  # shuts the kernel down gracefully; jupyter_client kills it after a wait
        seconds = time.monotonic() - seen["t0"]
        stderr.seek(0)
        return nb, seconds, seen["process"].returncode, stderr.read()


def _assert_exited_by_itself(code: int | None, seconds: float, stderr: str) -> None:
    """Exit code 0: the kernel ended by itself on the shutdown request, not by SIGTERM/SIGKILL,
    and no later than ipykernel's own flush timeout makes it."""
    if code != 0 and _ipykernel_hang(stderr):
        return  # not svckit's: no svckit thread was left (checked there), only ipykernel's own
    assert code == 0, f"the kernel did not exit by itself (exit code {code}, {seconds:.1f} s):\n{stderr[-12000:]}"
    limit = CLEAN_EXIT + (IPYKERNEL_FLUSH_TIMEOUT if IPYKERNEL_RACE in stderr else 0.0)
    assert seconds < limit, f"the kernel took {seconds:.1f} s to exit:\n{stderr[-3000:]}"


def _ipykernel_hang(stderr: str) -> bool:
    """The stacks a SIGTERMed kernel dumped show ipykernel's shutdown hang (``IPYKERNEL_HANG``)
    and no svckit frame in any thread: every svckit thread had ended."""
    dump = stderr[stderr.find("Thread 0x") :] if "Thread 0x" in stderr else ""
    return bool(dump) and all(mark in dump for mark in IPYKERNEL_HANG) and "/svckit/" not in dump


def _text(cell: object) -> str:
    """What a cell printed to stdout and displayed; errors and stderr fail the test."""
    parts, errors = [], []
    for out in cell.outputs:  # type: ignore[attr-defined]
        if out.output_type == "error":
            errors.append("\n".join(out.traceback))
        elif out.output_type == "stream" and out.name == "stderr":
            errors.append(out.text)
        elif out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"] + "\n")
    assert not errors, "".join(errors)
    return "".join(parts)


@pytest.mark.timeout(90)
def test_kernel_serves_calls_and_shuts_down():
    nb, seconds, code, stderr = _run([*CELLS, SHUTDOWN], timeout=30)
    assert _text(nb.cells[0]) == "<Served wordcount: running>\n"
    assert _text(nb.cells[1]) == "{'text': 'a b c', 'words': ['a', 'b', 'c'], 'n': 3}\n"
    assert _text(nb.cells[2]) == "{'text': 'x y', 'words': ['x', 'y'], 'n': 2}\n"
    assert _text(nb.cells[3]) == "<Served wordcount: stopped> shut down\n"
    _assert_exited_by_itself(code, seconds, stderr)


@pytest.mark.timeout(90)
def test_kernel_exits_promptly_while_still_serving():
    """No ``sk.shutdown()``: the daemon thread and the atexit hook must not hold the kernel up."""
    nb, seconds, code, stderr = _run(CELLS, timeout=30)
    assert _text(nb.cells[1]).startswith("{'text': 'a b c'")
    _assert_exited_by_itself(code, seconds, stderr)
