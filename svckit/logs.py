"""Service logs and prints: kept in a buffer the dashboard shows, never stray output in a cell.

Anything the runtime's threads write lands in whichever notebook cell runs at that moment
(DESIGN §3). ``log_buffer()`` keeps svckit's and uvicorn's log records in a ``LogBuffer``;
inside a Jupyter kernel it also ``capture()``s: ``sys.stdout``/``sys.stderr`` become
``StreamRouter``s that send what threads named ``svckit-…`` write (``print()`` in a stage,
the last-resort log handler) into the same buffer line by line, and svckit's records stop
propagating to the root logger. Headless (``svckit run``, scripts, pytest) nothing is
rerouted: prints go to the terminal and svckit's records propagate as usual.

Examples
--------
>>> from svckit.logs import log_buffer
>>> buffer = log_buffer()
>>> buffer.add("stdout", "svckit-worker_0", "hello", service="echo")
>>> buffer.tail(1)[0].message
'hello'
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple, TextIO

__all__ = [
    "PREFIX",
    "LogBuffer",
    "LogLine",
    "StreamRouter",
    "capture",
    "current_service",
    "in_kernel",
    "log_buffer",
    "release",
    "watch_stages",
]

#: What svckit names its threads: text written on them is routed to the buffer.
PREFIX = "svckit-"
#: A partial line (no newline yet) older than this goes to the buffer when it is next read.
PARTIAL_AGE = 1.0
#: A line grown this long without a newline goes to the buffer as it is.
MAX_LINE = 8192

_LOGGERS = ("svckit", "uvicorn")
_QUIET = frozenset({"DEBUG", "INFO"})  # levels of a line of no known service that a service's dashboard leaves out
_OWN = frozenset({"write", "writelines", "flush"})  # what a StreamRouter does itself


class LogLine(NamedTuple):
    """One line of the buffer: a log record, or a line printed on a svckit thread."""

    time: float
    level: str  # a logging level name, or "stdout" / "stderr" for printed lines
    source: str  # the logger's name, or the thread that printed
    service: str | None  # the served thing it belongs to, where known
    message: str


class LogBuffer(logging.Handler):
    """Keeps the last lines svckit logged or its threads printed, for the dashboard.

    ``version`` counts the lines added so far, so a reader redraws only when it moved.
    """

    def __init__(self, keep: int = 200) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[LogLine] = deque(maxlen=keep)
        self.version = 0
        self.routers: list[StreamRouter] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            service = getattr(record, "svckit_service", None) or service_here()
            self.add(record.levelname, record.name, self.format(record), service, record.created)
            if not _captured and record.name.split(".", 1)[0] == "svckit":
                _last_resort(record)
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)

    def add(self, level: str, source: str, message: str, service: str | None = None, when: float | None = None) -> None:
        """Append one line (any thread)."""
        line = LogLine(time.time() if when is None else when, level, source, service, message)
        with self.lock or _lock:  # one lock for the line and the version that announces it
            self.lines.append(line)
            self.version += 1

    def settle(self) -> None:
        """Move partial lines that will get no newline (their thread ended, or they are old) in."""
        for router in list(self.routers):
            router.drain(PARTIAL_AGE)

    def tail(self, count: int, services: Collection[str] | None = None) -> list[LogLine]:
        """The last ``count`` lines, oldest first.

        With ``services``, only their lines, and those of no known service that are more
        than information (warnings, errors, printed text).
        """
        self.settle()
        picked: list[LogLine] = []
        for line in reversed(self.lines.copy()):
            if services is None or line.service in services or (line.service is None and line.level not in _QUIET):
                picked.append(line)
                if len(picked) >= count:
                    break
        picked.reverse()
        return picked


def _last_resort(record: logging.LogRecord) -> None:
    """Headless and with no handler configured, show svckit's warnings as Python would without
    this buffer (its handler would otherwise silence ``logging.lastResort``)."""
    last = logging.lastResort
    if last is None or record.levelno < last.level or logging.getLogger().handlers:
        return
    log: logging.Logger | None = logging.getLogger(record.name)
    while log is not None:
        if any(h is not _buffer for h in log.handlers) or not log.propagate:
            return  # someone configured logging their own way
        log = log.parent
    last.handle(record)


class StreamRouter:
    """Stands in for ``sys.stdout``/``sys.stderr``: svckit's threads write to the buffer.

    Text written by a thread whose name starts with ``PREFIX`` is buffered per thread and
    goes to the ``LogBuffer`` one line at a time, tagged ``stdout``/``stderr``; text from
    any other thread goes straight to the wrapped stream. Every other attribute is the
    wrapped stream's. Once ``release()``d, a router still referenced somewhere passes
    everything through.
    """

    __slots__ = (
        "__dict__",  # for write/flush patched on the instance (IPython tees a cell's output this way)
        "_svckit_active",
        "_svckit_buffer",
        "_svckit_lock",
        "_svckit_name",
        "_svckit_pending",
        "_svckit_stream",
    )

    def __init__(self, stream: TextIO, name: str, buffer: LogBuffer) -> None:
        object.__setattr__(self, "_svckit_stream", stream)
        object.__setattr__(self, "_svckit_name", name)
        object.__setattr__(self, "_svckit_buffer", buffer)
        object.__setattr__(self, "_svckit_active", True)
        object.__setattr__(self, "_svckit_lock", threading.Lock())
        # thread -> (text without a newline yet, when it started)
        object.__setattr__(self, "_svckit_pending", {})
        buffer.routers.append(self)  # so that reading the buffer settles this router's partial lines

    @property
    def wrapped(self) -> TextIO:
        """The stream this router writes other threads' text to."""
        return self._svckit_stream  # type: ignore[no-any-return]

    def write(self, text: str) -> int:
        thread = threading.current_thread()
        if not (self._svckit_active and thread.name.startswith(PREFIX)):
            return self._svckit_stream.write(text)  # type: ignore[no-any-return]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._svckit_lock:
            pending = self._svckit_pending
            before, since = pending.pop(thread, ("", time.monotonic()))
            *lines, rest = (before + text).split("\n")
            if len(rest) >= MAX_LINE:
                lines.append(rest)
                rest = ""
            if rest:
                pending[thread] = (rest, since)
        if lines:
            self._emit(thread, lines)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        thread = threading.current_thread()
        if self._svckit_active and thread.name.startswith(PREFIX):
            with self._svckit_lock:
                rest = self._svckit_pending.pop(thread, None)
            if rest is not None:
                self._emit(thread, [rest[0]])
        self._svckit_stream.flush()

    def drain(self, older_than: float = 0.0) -> None:
        """Send partial lines to the buffer: those of ended threads, and those older than ``older_than`` s."""
        now = time.monotonic()
        with self._svckit_lock:
            pending = self._svckit_pending
            done = [t for t, (_, since) in pending.items() if not t.is_alive() or now - since >= older_than]
            taken = [(t, pending.pop(t)[0]) for t in done]
        for thread, text in taken:
            self._emit(thread, [text])

    def _emit(self, thread: threading.Thread, lines: list[str]) -> None:
        service = service_here()
        add = self._svckit_buffer.add
        for line in lines:
            add(self._svckit_name, thread.name, line.rstrip("\r"), service)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_svckit_"):  # not set up yet (copy, pickle): never recurse
            raise AttributeError(name)
        return getattr(self._svckit_stream, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:  # patching our write must wrap ours, or it would call itself through the stream
            object.__setattr__(self, name, value)
        else:
            setattr(self._svckit_stream, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _OWN:
            object.__delattr__(self, name)
        else:
            delattr(self._svckit_stream, name)

    def __repr__(self) -> str:
        return f"<svckit StreamRouter of {self._svckit_stream!r}>"


#: The name of the served thing whose message the current task handles (set by the request path).
current_service: contextvars.ContextVar[str | None] = contextvars.ContextVar("svckit_service", default=None)

#: What serving registered: it lists ``(served name, node)`` for every served thing (see ``watch_stages``).
_served_stages: list[Callable[[], Iterable[tuple[str, Any]]]] = []


def watch_stages(lister: Callable[[], Iterable[tuple[str, Any]]]) -> None:
    """Tell the log router where served things are: ``lister()`` yields ``(name, node)`` pairs.

    Serving calls this once, so a line printed on a worker thread is put under the served
    thing one of whose stages is on the call stack, without this module importing serving.
    """
    if lister not in _served_stages:
        _served_stages.append(lister)


def service_here() -> str | None:
    """The name of the served thing the calling code works for, where known.

    On the runtime thread, the served thing whose message the current task handles; on a
    svckit worker thread, the served thing one of whose stages is on the call stack.
    """
    current = current_service.get()
    if current is not None:
        return current
    if not threading.current_thread().name.startswith(PREFIX):
        return None
    try:
        codes = _stage_codes()
    except Exception:  # served things changing under us: unknown, this time
        return None
    if not codes:
        return None
    frame = sys._getframe(1)
    for _ in range(100):
        if frame is None:
            break
        name = codes.get(frame.f_code)
        if name is not None:
            return name
        frame = frame.f_back  # type: ignore[assignment]
    return None


_codes: tuple[tuple[Any, ...], dict[Any, str]] = ((), {})


def _stage_codes() -> dict[Any, str]:
    """Code object -> served name, for every function a served thing's stages run."""
    global _codes
    served = [pair for lister in _served_stages for pair in lister()]
    if not served:
        return {}
    key = tuple((name, id(node)) for name, node in served)
    if _codes[0] == key:
        return _codes[1]
    codes: dict[Any, str] = {}
    for name, node in served:
        for leaf in node.leaves():
            for fn in _functions(leaf):
                code = getattr(fn, "__code__", None)
                if code is not None:
                    codes.setdefault(code, name)
    _codes = (key, codes)
    return codes


def _functions(leaf: Any) -> list[Any]:
    """The user's functions a stage runs: its ``fn`` and what its own classes define."""
    found: list[Any] = []
    objects = [leaf]
    fn = getattr(leaf, "fn", None)
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func  # type: ignore[union-attr]
    if fn is not None:
        found.append(getattr(fn, "__func__", fn))
        objects.append(fn)
    for obj in objects:
        for cls in type(obj).__mro__:
            if cls.__module__.split(".", 1)[0] in ("svckit", "builtins", "functools"):
                continue
            found.extend(getattr(v, "__func__", v) for v in vars(cls).values())
    return found


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where stray output would land in a cell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return getattr(shell, "kernel", None) is not None


_lock = threading.RLock()
_buffer: LogBuffer | None = None
_captured = False
_propagate = True  # the svckit logger's propagate before capture()
_repointed: list[tuple[logging.StreamHandler[Any], Any]] = []


def log_buffer(kernel: bool | None = None) -> LogBuffer:
    """The process's svckit log buffer, attached to the ``svckit`` and ``uvicorn`` loggers on first use.

    Inside a Jupyter kernel (``kernel``: whether to act as if, by default detected) it
    also ``capture()``s. Called each time a runtime starts; safe to call any number of times.
    """
    global _buffer
    with _lock:
        if _buffer is None:
            _buffer = LogBuffer()
            for name in _LOGGERS:
                log = logging.getLogger(name)
                log.addHandler(_buffer)
                if log.level == logging.NOTSET or log.level > logging.INFO:
                    log.setLevel(logging.INFO)
            # uvicorn's lines would otherwise reach a root handler and land in whatever cell runs
            logging.getLogger("uvicorn").propagate = False
        buffer = _buffer
    if in_kernel() if kernel is None else kernel:
        capture()
    return buffer


def capture() -> LogBuffer:
    """Route what svckit's threads print into the buffer, and keep svckit's records out of the root logger.

    Wraps ``sys.stdout`` and ``sys.stderr`` in ``StreamRouter``s (unless they already
    are), points the root logger's stream handlers that wrote to them at the routers, and
    turns off propagation of the ``svckit`` logger. Idempotent; undone by ``release()``.
    """
    global _captured, _propagate
    buffer = log_buffer(kernel=False)
    with _lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is None or (isinstance(stream, StreamRouter) and stream._svckit_active):
                continue
            router = StreamRouter(stream, name, buffer)
            setattr(sys, name, router)
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                    handler.setStream(router)  # type: ignore[arg-type]
                    _repointed.append((handler, stream))
        if not _captured:
            _propagate = logging.getLogger("svckit").propagate
        logging.getLogger("svckit").propagate = False
        _captured = True
    return buffer


def release() -> None:
    """Undo ``capture()``: partial lines go to the buffer, the streams and handlers are put back."""
    global _captured
    with _lock:
        buffer = _buffer
        if buffer is None:
            return
        for router in reversed(buffer.routers):
            router.drain()
            object.__setattr__(router, "_svckit_active", False)
            name = router._svckit_name
            if getattr(sys, name) is router:
                setattr(sys, name, router.wrapped)
        for handler, stream in reversed(_repointed):
            if isinstance(handler.stream, StreamRouter):
                handler.setStream(stream)
        _repointed.clear()
        buffer.routers.clear()
        if _captured:
            logging.getLogger("svckit").propagate = _propagate
        _captured = False
