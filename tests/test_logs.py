"""The log buffer and the stream routers: svckit's threads never print into a notebook cell."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

from svckit import logs
from svckit.logs import LogBuffer, StreamRouter


def on_thread(name: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` on a new thread called ``name`` and wait for it."""
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


@pytest.fixture
def router() -> tuple[StreamRouter, io.StringIO, LogBuffer]:
    stream = io.StringIO()
    buffer = LogBuffer(keep=10_000)
    return StreamRouter(stream, "stdout", buffer), stream, buffer


@pytest.fixture
def captured(capsys) -> Iterator[LogBuffer]:
    """``capture()`` as inside a kernel, around the streams capsys set up; released afterwards."""
    try:
        yield logs.capture()
    finally:
        logs.release()


def messages(buffer: LogBuffer) -> list[tuple[str, str, str]]:
    return [(line.level, line.source, line.message) for line in buffer.lines]


def test_svckit_threads_write_lines_to_the_buffer_others_to_the_stream(router):
    r, stream, buffer = router

    def worker():
        r.write("first ")
        r.write("line\nsecond")
        r.write(" line\n")

    on_thread("svckit-worker_7", worker)
    on_thread("somebody-else", lambda: r.write("theirs\n"))
    r.write("main\n")
    assert stream.getvalue() == "theirs\nmain\n"
    assert messages(buffer) == [
        ("stdout", "svckit-worker_7", "first line"),
        ("stdout", "svckit-worker_7", "second line"),
    ]


def test_lines_of_threads_writing_at_once_stay_whole_and_none_is_lost(router):
    r, stream, buffer = router
    names = [f"svckit-worker_{i}" for i in range(6)]

    def worker():
        me = threading.current_thread().name
        for n in range(300):
            r.write(f"{me} ")
            r.write(f"says {n}")
            r.write("\n")

    threads = [threading.Thread(target=worker, name=name) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert stream.getvalue() == ""
    got = sorted(line.message for line in buffer.lines)
    assert got == sorted(f"{name} says {n}" for name in names for n in range(300))
    assert all(line.message.startswith(line.source) for line in buffer.lines)


def test_partial_lines_reach_the_buffer_on_flush_and_when_their_thread_ends(router):
    r, _, buffer = router

    def flushes():
        r.write("no newline, flushed")
        r.flush()

    on_thread("svckit-worker_1", flushes)
    assert messages(buffer) == [("stdout", "svckit-worker_1", "no newline, flushed")]
    on_thread("svckit-worker_2", lambda: r.write("no newline, thread ended"))
    assert buffer.tail(5)[-1].message == "no newline, thread ended"  # tail() settles the ended thread's text


def test_the_router_forwards_every_other_attribute(router):
    r, stream, _ = router
    assert r.wrapped is stream
    assert r.closed is False and r.isatty() is False
    assert r.getvalue is not None  # StringIO's own method
    r.custom = 3  # set on the wrapped stream, as code that tags sys.stdout expects
    assert stream.custom == 3  # type: ignore[attr-defined]
    with pytest.raises(io.UnsupportedOperation):
        r.fileno()
    teed: list[str] = []
    original = r.write

    def tee(data: str) -> int:  # what IPython does to sys.stdout.write while a cell runs
        teed.append(data)
        return original(data)

    r.write = tee  # type: ignore[method-assign]
    on_thread("svckit-worker_4", lambda: r.write("teed\n"))
    r.write("main teed\n")
    r.write = original  # type: ignore[method-assign]
    assert teed == ["teed\n", "main teed\n"] and stream.getvalue().endswith("main teed\n")
    assert "write" not in vars(stream)  # the stream's own write was left alone
    raised: list[BaseException] = []

    def write_bytes():
        try:
            r.write(b"bytes")  # type: ignore[arg-type]
        except TypeError as exc:
            raised.append(exc)

    on_thread("svckit-runtime", write_bytes)
    assert "must be str, not bytes" in str(raised[0])  # as a text stream says


def test_capture_is_idempotent_and_release_puts_everything_back(capsys):
    before_out, before_err = sys.stdout, sys.stderr
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        buffer = logs.capture()
        router = sys.stdout
        assert isinstance(router, StreamRouter) and router.wrapped is before_out
        assert isinstance(sys.stderr, StreamRouter) and sys.stderr.wrapped is before_err
        assert handler.stream is sys.stderr  # a root handler made earlier now writes through the router
        assert logging.getLogger("svckit").propagate is False
        assert logs.capture() is buffer and sys.stdout is router  # idempotent
        assert buffer.routers == [router, sys.stderr]

        def worker():
            print("from a worker", end="")  # partial: release() must not lose it
            logging.getLogger("test.worker").warning("logged by a worker")

        on_thread("svckit-worker_3", worker)
        print("from the test")
    finally:
        logs.release()
        root.removeHandler(handler)
    assert sys.stdout is before_out and sys.stderr is before_err
    assert handler.stream is before_err
    assert logging.getLogger("svckit").propagate is True
    out, err = capsys.readouterr()
    assert out == "from the test\n" and err == ""
    assert ("stdout", "svckit-worker_3", "from a worker") in messages(buffer)
    assert ("stderr", "svckit-worker_3", "logged by a worker") in messages(buffer)
    router.write("after release\n")  # a router left somewhere passes text through
    assert capsys.readouterr().out == "after release\n"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_svckit_records_stay_out_of_the_root_logger_only_while_captured(captured):
    root = Kept()  # what basicConfig or a kernel's root handler would get (pytest's caplog is attached everywhere)
    logging.getLogger().addHandler(root)
    try:
        logging.getLogger("svckit.test").warning("kept for the dashboard")
        assert root.messages == []
        assert captured.tail(1)[0][1:] == ("WARNING", "svckit.test", None, "kept for the dashboard")
        logs.release()
        logging.getLogger("svckit.test").warning("seen by the root logger too")
        assert root.messages == ["seen by the root logger too"]
    finally:
        logging.getLogger().removeHandler(root)


@pytest.mark.parametrize("kernel", [False, True])
def test_headless_warnings_reach_the_terminal_and_a_kernel_keeps_them(kernel):
    script = textwrap.dedent(
        f"""
        import logging, threading
        from svckit.logs import log_buffer
        buffer = log_buffer(kernel={kernel})
        log = logging.getLogger("svckit.test")
        log.warning("a warning")
        log.info("an info line")
        def stage():
            print("printed by a stage")
        t = threading.Thread(target=stage, name="svckit-worker_0")
        t.start(); t.join()
        print("lines:", [line.message for line in buffer.lines])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    kept = "lines: ['a warning', 'an info line'" + (", 'printed by a stage']" if kernel else "]")
    assert kept in proc.stdout
    if kernel:
        assert proc.stderr == "" and "printed by a stage\n" not in proc.stdout
    else:
        assert proc.stderr == "a warning\n"  # as Python shows a library's warning with logging unconfigured
        assert proc.stdout.startswith("printed by a stage\n")


def test_a_services_tail_leaves_out_other_services_and_mere_information_of_no_service():
    buffer = LogBuffer()
    buffer.add("INFO", "svckit.served", "mine", service="a")
    buffer.add("INFO", "svckit.served", "theirs", service="b")
    buffer.add("INFO", "uvicorn.error", "Started server process")
    buffer.add("WARNING", "svckit.runtime", "a warning of no service")
    buffer.add("stdout", "svckit-worker_0", "printed where nobody knows")
    assert [line.message for line in buffer.tail(10, {"a"})] == [
        "mine",
        "a warning of no service",
        "printed where nobody knows",
    ]
    assert len(buffer.tail(10)) == 5 and [line.message for line in buffer.tail(2)][-1] == "printed where nobody knows"
