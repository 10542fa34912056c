"""External programs as services: ``sk.program(cmd=[...])`` runs an executable per message.

Each message gets a fresh work directory (its ``inputs`` written there as files), the
command with its ``{field}`` placeholders filled from the message (one argv item per
value, never through a shell), and an asyncio subprocess in a process group of its own.
Its stdout and stderr are read line by line as they come (kept in ``.stdout`` and
``.stderr`` files in the work directory, a bounded tail in memory) and turned into the
progress the dashboard and ``status()`` show. On exit the named output files come back
with the exit code, the duration and the tail of stderr. A timeout, a stop or a
cancelled request sends SIGTERM to the whole group, then SIGKILL after ``grace``
seconds, so no child or grandchild outlives its call. The directory is removed
afterwards unless ``keep`` says otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import json
import logging
import os
import re
import shutil
import signal
import string
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BadMessage, ProgramFailed, ServiceTimeout, ServiceUnavailable, WiringError
from .params import Params, check_name
from .running import Binder, copies_of
from .runtime import at_shutdown, runtime
from .service import Service

__all__ = ["Program", "program"]

logger = logging.getLogger(__name__)

KEEP = ("always", "failed", "never")
RESULTS = ("auto", "text", "path")
#: Placeholders every program may use besides its fields.
BUILTINS = ("workdir",)
_CHUNK = 1 << 16
_READER_GRACE = 1.0  # seconds to wait for the pipes to close once the process group is gone
_ids = itertools.count(1)


def _relative(path: Any, what: str, name: str) -> str:
    """``path`` as a relative path that stays inside a work directory, else ``WiringError``."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise WiringError(f"Program {name!r}: {what} {path!r} must be a file name inside the work directory.")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or path.startswith("~"):
        raise WiringError(
            f"Program {name!r}: {what} {path!r} leaves the work directory; give a relative path "
            "without '..', such as 'result.txt'."
        )
    return path


def _placeholders(text: str, where: str, name: str) -> list[str]:
    """The field names ``{...}`` in ``text`` names; ``WiringError`` for a form svckit does not fill."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise WiringError(
            f"Program {name!r}: {where} {text!r} is not a valid template ({exc}); write {{{{ for a brace."
        )
    found = []
    for _, field, _, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or conversion:
            raise WiringError(
                f"Program {name!r}: {where} {text!r} has the placeholder {{{field}}}; a placeholder names "
                "one message field, such as {steps} (write {{ and }} for literal braces)."
            )
        found.append(field)
    return found


def argv_text(value: Any) -> str:
    """How a message value is written as one argv item: strings as they are, booleans as
    ``true``/``false``, numbers as Python writes them, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, separators=(",", ":"))


def _fill(template: str, values: Mapping[str, Any]) -> str:
    out = []
    for literal, field, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            value = values[field]
            out.append(format(value, spec) if spec else argv_text(value))
    return "".join(out)


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _group_alive(pgid: int) -> bool:
    """True while some process of group ``pgid`` still runs (zombies waiting to be reaped
    by init do not count: on Linux they are told apart in ``/proc``)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not sys.platform.startswith("linux"):
        return True
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
                return True
        return False
    return True


def _signal(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _Tail:
    """The last ``lines`` lines of a stream, each cut to ``width`` characters."""

    def __init__(self, lines: int) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)

    def text(self) -> str:
        return "\n".join(self.lines)


class Call:
    """One running message of a program: its process, work directory and progress."""

    __slots__ = ("id", "line", "percent", "pid", "proc", "reason", "started", "workdir")

    def __init__(self, workdir: str) -> None:
        self.id = next(_ids)
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir = workdir
        self.started = time.monotonic()
        self.pid: int | None = None
        self.percent: float | None = None
        self.line = ""
        self.reason: str | None = None  # why it was stopped from outside: "timeout", "stopped"

    def snapshot(self) -> dict[str, Any]:
        return {
            "call": self.id,
            "pid": self.pid,
            "seconds": round(time.monotonic() - self.started, 2),
            "percent": self.percent,
            "line": self.line,
        }


class Program(Service):
    """A service that runs an external program per message; made by ``sk.program``.

    Examples
    --------
    >>> import sys, svckit as sk
    >>> echo = sk.program([sys.executable, "-c", "import sys; print(sys.argv[1])", "{text}"], name="echo")
    >>> echo
    <Service echo: python -c ... {text}>
    >>> reply = echo(text="hi")
    >>> reply["returncode"], reply["stderr_tail"]
    (0, '')
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        inputs: Sequence[str] | Mapping[str, str] | None = None,
        outputs: Sequence[str] | Mapping[str, str] = (),
        params: Sequence[str] | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        progress: str | re.Pattern[str] | Callable[[str], Any] | None = None,
        keep: str = "failed",
        env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        grace: float = 5.0,
        name: str | None = None,
        copy: Sequence[str | os.PathLike[str]] = (),
        results: str = "auto",
        text_limit: int = 1 << 16,
        stderr_lines: int = 20,
        line_limit: int = 4096,
    ) -> None:
        if isinstance(cmd, str) or not isinstance(cmd, Sequence) or not cmd:
            raise WiringError(
                f"sk.program(cmd={cmd!r}): give the command as a non-empty list of strings, such as "
                "[sys.executable, 'simulate.py', '--steps', '{steps}']; it never runs through a shell."
            )
        if not all(isinstance(c, str | os.PathLike) for c in cmd):
            raise WiringError(f"sk.program(cmd={list(cmd)!r}): every item of the command must be a string.")
        items = [os.fspath(c) for c in cmd]
        default = _default_name(items)
        self.name = check_name(name or re.sub(r"[^A-Za-z0-9_.\-]", "_", default), "program name")
        label = self.name
        self.output = self.name
        self.config = {}
        self._actions = {}
        self.is_async = True
        self.concurrent = True
        self.inline = False
        if keep not in KEEP:
            raise WiringError(f"Program {label!r}: keep={keep!r}; give 'always', 'failed' or 'never'.")
        if results not in RESULTS:
            raise WiringError(f"Program {label!r}: results={results!r}; give 'auto', 'text' or 'path'.")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise WiringError(f"Program {label!r}: timeout={timeout!r}; give a positive number of seconds, or None.")
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
            raise WiringError(f"Program {label!r}: grace={grace!r}; give the seconds between SIGTERM and SIGKILL.")
        if limit is None:
            limit = os.cpu_count() or 1
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise WiringError(f"Program {label!r}: limit={limit!r}; give how many may run at once (1 or more).")
        for key, value in (("text_limit", text_limit), ("stderr_lines", stderr_lines), ("line_limit", line_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise WiringError(f"Program {label!r}: {key}={value!r}; give a whole number, 0 or more.")
        self.keep = keep
        self.results = results
        self.timeout = None if timeout is None else float(timeout)
        self.grace = float(grace)
        self.limit = limit
        self.text_limit = text_limit
        self.stderr_lines = stderr_lines
        self.line_limit = max(line_limit, 80)
        self.inputs = self._files(inputs or (), "inputs")
        self.outputs = self._files(outputs, "outputs")
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.copy = tuple(self._copied(p) for p in copy)
        self.workdir = None if workdir is None else os.path.abspath(os.fspath(workdir))
        self.progress = self._progress_reader(progress)
        self.cmd = (self._executable(items[0]), *items[1:])
        # the fields it reads: params= as declared, else every placeholder; inputs always
        templates = [("cmd item", c) for c in self.cmd]
        templates += [("output", p) for p in self.outputs.values()]
        templates += [(f"env {k}", v) for k, v in self.env.items()]
        named = {f: where for where, t in templates for f in _placeholders(t, where, label)}
        fields = self._params_spec(params, named)
        clash = set(fields) & set(self.inputs)
        if clash:
            raise WiringError(f"Program {label!r}: {sorted(clash)[0]!r} is both an input file and a parameter.")
        for field, (where) in named.items():
            if field not in fields and field not in self.inputs and field not in BUILTINS:
                raise WiringError(
                    f"Program {label!r}: the {where} placeholder {{{field}}} names no field; declare it in "
                    f"params= (params={{{field!r}: str}}) or inputs=, or use one of: {', '.join(BUILTINS)}."
                )
        for field in (*fields, *self.inputs):
            if field in BUILTINS:
                raise WiringError(f"Program {label!r}: {field!r} is svckit's own placeholder; rename the field.")
        self._fields = fields
        self._params = Params(_signature_fn(fields, self.inputs), self.name)
        # per served thing (each bound copy) or per object: made on first use
        self._root: str | None = None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: Any = None
        self._running: dict[int, Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kept: dict[str, tuple[int, str]] = {}  # path -> (bytes, why)
        self._waiting = 0
        self.runs = 0
        self.failed_runs = 0
        self.timeouts = 0

    # -- construction helpers -------------------------------------------------------
    def _files(self, spec: Sequence[str] | Mapping[str, str], what: str) -> dict[str, str]:
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, Mapping):
            pairs = list(spec.items())
        else:
            pairs = [(f, f) for f in spec]
        out = {}
        for field, path in pairs:
            if not isinstance(field, str) or (not field.isidentifier() and what == "inputs"):
                raise WiringError(
                    f"Program {self.name!r}: {what} field {field!r} must be a message field name; map it to a "
                    f"file name with {what}={{'data': 'data.csv'}}."
                )
            out[field] = _relative(path, f"{what[:-1]} file", self.name)
        return out

    def _copied(self, path: str | os.PathLike[str]) -> str:
        full = os.path.abspath(os.fspath(path))
        if not os.path.exists(full):
            raise WiringError(f"Program {self.name!r}: copy= names {os.fspath(path)!r}, which does not exist.")
        return full

    def _executable(self, first: str) -> str:
        if "{" in first:
            return first  # filled per message: checked when it runs
        if os.sep in first or (os.altsep and os.altsep in first):
            full = os.path.abspath(first)  # the program runs in its work directory: resolve it here
            if not os.path.isfile(full):
                raise WiringError(f"Program {self.name!r}: the executable {first!r} does not exist.")
            return full
        found = shutil.which(first)
        if found is None:
            raise WiringError(f"Program {self.name!r}: no executable {first!r} on PATH; give its full path.")
        return first

    def _params_spec(self, params: Any, named: Mapping[str, str]) -> dict[str, tuple[Any, Any]]:
        if params is None:
            return {f: (Any, inspect.Parameter.empty) for f in named if f not in self.inputs and f not in BUILTINS}
        if isinstance(params, str):
            params = [params]
        out: dict[str, tuple[Any, Any]] = {}
        items = params.items() if isinstance(params, Mapping) else ((p, Any) for p in params)
        for key, spec in items:
            if not isinstance(key, str) or not key.isidentifier():
                raise WiringError(f"Program {self.name!r}: params= names {key!r}, which is not a field name.")
            if isinstance(spec, tuple) and len(spec) == 2:
                out[key] = spec
            else:
                out[key] = (spec, inspect.Parameter.empty)
        return out

    def _progress_reader(self, progress: Any) -> Callable[[str], Any] | None:
        if progress is None or (callable(progress) and not isinstance(progress, re.Pattern)):
            return progress  # type: ignore[no-any-return]
        if isinstance(progress, str):
            try:
                progress = re.compile(progress)
            except re.error as exc:
                raise WiringError(f"Program {self.name!r}: progress={progress!r} is not a regular expression ({exc}).")
        if not isinstance(progress, re.Pattern):
            raise WiringError(f"Program {self.name!r}: progress= takes a regular expression or a function of a line.")
        if not progress.groupindex:
            raise WiringError(
                f"Program {self.name!r}: progress={progress.pattern!r} has no named group; name what it reads, "
                r"such as (?P<percent>\d+)%."
            )
        return progress.search

    # -- facts ------------------------------------------------------------------
    def describe(self) -> str:
        shown = [os.path.basename(c) if os.path.isabs(c) else c for c in self.cmd]
        if _INTERPRETERS.match(Path(shown[0]).stem):
            shown[0] = re.sub(r"[\d.]+$", "", Path(shown[0]).stem)  # python3.11 -> python: the same everywhere
        if len(shown) > 4:
            shown = [*shown[:2], "...", *shown[-1:]]
        return f"{self.name}: {' '.join(shown)}"

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"

    @property
    def root(self) -> str | None:
        """The directory its work directories are made in (None until the first call)."""
        return self._root

    def kept(self) -> dict[str, int]:
        """The work directories kept on disk (by it and by its served copies): path → bytes."""
        out = {}
        for prog in self._family():
            for path, (size, _) in list(prog._kept.items()):
                if os.path.isdir(path):
                    out[path] = size
                else:
                    prog._kept.pop(path, None)
        return out

    def clean(self) -> int:
        """Remove every kept work directory (its own and its served copies'); the bytes freed."""
        freed = 0
        for prog in self._family():
            for path, (size, _) in list(prog._kept.items()):
                shutil.rmtree(path, ignore_errors=True)
                prog._kept.pop(path, None)
                freed += size
        return freed

    def _family(self) -> list[Program]:
        return [self, *(c for c in copies_of(self) if isinstance(c, Program))]

    def status_extra(self) -> dict[str, Any]:
        """What ``Served.status()`` shows of it: calls running (with their progress), calls
        waiting for a slot, counts, and the work directories kept on disk."""
        kept = self.kept() if self._origin is None else self._own_kept()
        return {
            "kind": "program",
            "running": [c.snapshot() for c in list(self._running.values())],
            "waiting": self._waiting,
            "limit": self.limit,
            "runs": self.runs,
            "failed": self.failed_runs,
            "timeouts": self.timeouts,
            "kept_dirs": len(kept),
            "kept_bytes": sum(kept.values()),
            "root": self._root,
        }

    def _own_kept(self) -> dict[str, int]:
        out = {}
        for path, (size, _) in list(self._kept.items()):
            if os.path.isdir(path):
                out[path] = size
            else:
                self._kept.pop(path, None)
        return out

    # -- binding and lifecycle ----------------------------------------------------------
    def _bound(self, binder: Binder) -> None:
        # a served copy has its own root, slots, calls and kept directories
        self._root = None
        self._sem = None
        self._sem_loop = None
        self._running = {}
        self._tasks = set()
        self._kept = {}
        self._waiting = 0
        self.runs = self.failed_runs = self.timeouts = 0
        self._owner = binder.owner

    async def close(self) -> None:
        """Served thing stopping: stop every call still running (SIGTERM, ``grace``, SIGKILL)
        and wait for them; remove its root when nothing in it is kept."""
        calls = list(self._running.values())
        for call in calls:
            call.reason = call.reason or "stopped"
        await asyncio.gather(
            *(self._stop_group(c.proc, c.proc.pid) for c in calls if c.proc is not None), return_exceptions=True
        )
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:  # they answer ServiceUnavailable now their process is gone
            await asyncio.wait(tasks, timeout=2 * _READER_GRACE + 1)
        self._remove_root()

    def _remove_root(self) -> None:
        root = self._root
        if root is not None and self.workdir is None:
            with contextlib.suppress(OSError):
                os.rmdir(root)  # only when empty: kept directories stay where status() said
            if not os.path.isdir(root):
                self._root = None
            else:
                logger.info("program %r keeps %d work directories under %s", self.name, len(self._kept), root)

    def _make_root(self) -> str:
        if self._root is None or not os.path.isdir(self._root):
            if self.workdir is not None:
                os.makedirs(self.workdir, exist_ok=True)
                self._root = self.workdir
            else:
                owner = getattr(self, "_owner", None)
                prefix = f"svckit-{owner}-{self.name}-" if owner and owner != self.name else f"svckit-{self.name}-"
                self._root = tempfile.mkdtemp(prefix=prefix)
                if self._origin is None:  # called in a cell: its root goes at sk.shutdown() or exit
                    weakref.finalize(self, _rmdir_quietly, self._root)
                    _cell_programs.add(self)
                    at_shutdown(_remove_cell_roots)
        return self._root

    def _slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.limit), loop
        return self._sem

    # -- running -----------------------------------------------------------------
    async def _astep(self, msg: dict[str, Any]) -> None:
        assert self._params is not None
        values = {k: d for k, (_, d) in self._fields.items() if d is not inspect.Parameter.empty}
        values.update(self._params.bind(msg))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            self._waiting += 1
            try:
                await self._slots().acquire()
            finally:
                self._waiting -= 1
            try:
                msg.update(await self._run(values))
            finally:
                self._slots().release()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _run(self, values: dict[str, Any]) -> dict[str, Any]:
        rt = runtime()
        root = self._make_root()
        workdir = await rt.blocking(tempfile.mkdtemp, "", f"{self.name}-", root)
        call = Call(workdir)
        self._running[call.id] = call
        self.runs += 1
        ok = False
        path_outputs = False
        try:
            await rt.blocking(self._prepare, workdir, values)
            filled = {**values, "workdir": workdir}
            for field in self.inputs:
                filled[field] = self.inputs[field]
            argv = [_fill(c, filled) for c in self.cmd]
            env = {**os.environ, **{k: _fill(v, filled) for k, v in self.env.items()}}
            returncode, stderr_tail = await self._execute(call, argv, env)
            duration = round(time.monotonic() - call.started, 3)
            if returncode != 0:
                raise ProgramFailed(
                    f"Program {self.name!r} {_exit_text(returncode)}"
                    + (f"; the last line of its stderr: {stderr_tail.splitlines()[-1]}" if stderr_tail else "")
                    + ".",
                    service=self.name,
                    returncode=returncode,
                    stderr_tail=stderr_tail,
                    duration=duration,
                )
            reply, path_outputs = await rt.blocking(self._collect, workdir, filled)
            reply.update(returncode=returncode, duration=duration, stderr_tail=stderr_tail)
            ok = True
            return reply
        except BaseException as exc:
            self.failed_runs += 1
            if isinstance(exc, ProgramFailed | ServiceTimeout) and self.keep != "never":
                exc.details["workdir"] = workdir
                exc.workdir = workdir  # type: ignore[union-attr]
            raise
        finally:
            del self._running[call.id]
            # kept for a look inside: runs the program failed (an exit code, its own timeout, an
            # output missing), not runs stopped from outside (a stop, the served timeout)
            failed = not ok and call.reason not in ("stopped", "cancelled")
            keep = path_outputs or self.keep == "always" or (self.keep == "failed" and failed)
            if keep:
                why = "output" if path_outputs else ("failed" if not ok else "always")
                self._kept[workdir] = (await _quietly(rt.blocking(_size, workdir), 0), why)
            else:
                await _quietly(rt.blocking(shutil.rmtree, workdir, True), None)

    def _prepare(self, workdir: str, values: dict[str, Any]) -> None:
        """Write the input files and copy the ``copy=`` files in (in the worker pool)."""
        for source in self.copy:
            target = os.path.join(workdir, os.path.basename(source))
            if os.path.isdir(source):
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        for field, rel in self.inputs.items():
            value = values.get(field)
            target = os.path.join(workdir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if isinstance(value, bytes | bytearray | memoryview):
                data = bytes(value)
            elif isinstance(value, str):
                data = value.encode()
            else:
                data = json.dumps(value).encode()  # a JSON value: written as JSON text
            with open(target, "wb") as f:
                f.write(data)

    def _collect(self, workdir: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The reply fields of the output files (in the worker pool), and whether one is a path."""
        reply: dict[str, Any] = {}
        as_path = False
        missing = []
        for field, template in self.outputs.items():
            rel = _fill(template, values)
            _relative(rel, "output file", self.name)  # a filled-in name must stay inside too
            path = os.path.join(workdir, rel)
            if not os.path.isfile(path):
                missing.append(rel)
                continue
            text = None
            if self.results == "text" or (self.results == "auto" and os.path.getsize(path) <= self.text_limit):
                with open(path, "rb") as f:
                    raw = f.read()
                with contextlib.suppress(UnicodeDecodeError):
                    text = raw.decode()
            if text is None and self.results == "text":
                raise ProgramFailed(
                    f"Program {self.name!r} wrote {rel!r}, which is not UTF-8 text; serve it with results='auto' "
                    "or 'path' to get its path instead.",
                    service=self.name,
                    returncode=0,
                )
            if text is None:
                reply[field] = path
                as_path = True
            else:
                reply[field] = text
        if missing:
            raise ProgramFailed(
                f"Program {self.name!r} exited 0 but did not write {', '.join(map(repr, missing))}.",
                service=self.name,
                returncode=0,
                missing=missing,
            )
        return reply, as_path

    async def _execute(self, call: Call, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Run ``argv`` in ``call.workdir``; its return code and stderr tail. Stops the whole
        process group on timeout or cancellation (raising what it was stopped by)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=call.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except ValueError as exc:  # an embedded NUL byte
            raise BadMessage(f"Program {self.name!r}: a value cannot be passed as an argument ({exc}).") from None
        except OSError as exc:
            raise ProgramFailed(
                f"Program {self.name!r} could not start {os.path.basename(argv[0])!r}: {exc.strerror or exc}.",
                service=self.name,
                returncode=None,
            ) from None
        call.pid = proc.pid
        call.proc = proc
        pgid = proc.pid  # start_new_session: it leads a session and a group of its own
        tail = _Tail(self.stderr_lines)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.ensure_future(self._read(proc.stdout, call, os.path.join(call.workdir, ".stdout"), None)),
            asyncio.ensure_future(self._read(proc.stderr, call, os.path.join(call.workdir, ".stderr"), tail)),
        ]
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    returncode = await proc.wait()
                    # a grandchild may still hold the pipes: give them a moment, then stop the group
                    await asyncio.wait(readers, timeout=0.5)
            except TimeoutError:
                call.reason = "timeout"
                self.timeouts += 1
                await self._stop_group(proc, pgid)
                raise ServiceTimeout(
                    f"Program {self.name!r} did not finish within {self.timeout:g} s: its process group was "
                    f"sent SIGTERM, then SIGKILL after {self.grace:g} s.",
                    service=self.name,
                    stderr_tail=tail.text(),
                ) from None
            except asyncio.CancelledError:
                call.reason = call.reason or "cancelled"
                await asyncio.shield(self._stop_group(proc, pgid))
                if call.reason == "stopped":
                    raise ServiceUnavailable(
                        f"Program {self.name!r} was stopped (its served thing stopped) before it finished.",
                        service=self.name,
                    ) from None
                raise
            if _group_alive(pgid):  # it exited, leaving children behind: they go too
                await self._stop_group(proc, pgid)
            if call.reason == "stopped":
                raise ServiceUnavailable(
                    f"Program {self.name!r} was stopped (its served thing stopped) before it finished.",
                    service=self.name,
                )
            return returncode, tail.text()
        finally:
            await _finish_readers(readers, proc)

    async def _stop_group(self, proc: asyncio.subprocess.Process, pgid: int) -> None:
        """SIGTERM to the group, up to ``grace`` seconds for it to go, then SIGKILL; reaped."""
        _signal(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if proc.returncode is not None and not _group_alive(pgid):
                break
            await asyncio.sleep(0.02)
        else:
            _signal(pgid, signal.SIGKILL)
            logger.info("program %r (pid %d) outlived SIGTERM by %g s: killed", self.name, pgid, self.grace)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()

    async def _read(self, stream: asyncio.StreamReader, call: Call, log: str, tail: _Tail | None) -> None:
        """Read ``stream`` to its end in chunks: every chunk to ``log``, every line (cut to
        ``line_limit``) to the progress and ``tail``. Memory stays bounded whatever it prints."""
        limit = self.line_limit
        partial = b""
        with open(log, "wb") as out:
            while True:
                chunk = await stream.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()[: limit * 4]
                for raw in lines:
                    self._line(raw[: limit * 4].decode(errors="replace")[:limit].rstrip("\r"), call, tail)
            if partial:
                self._line(partial.decode(errors="replace")[:limit].rstrip("\r"), call, tail)

    def _line(self, line: str, call: Call, tail: _Tail | None) -> None:
        if tail is not None:
            tail.lines.append(line)
        if not line.strip():
            return
        call.line = line
        reader = self.progress
        if reader is None:
            return
        try:
            found = reader(line)
        except Exception:  # a progress function that fails on a line: that line shows no progress
            logger.debug("progress of %r failed on %r", self.name, line, exc_info=True)
            return
        if isinstance(found, re.Match):
            found = {k: v for k, v in found.groupdict().items() if v is not None}
        if isinstance(found, bool) or found is None:
            return
        if isinstance(found, int | float):
            call.percent = float(found)
        elif isinstance(found, str):
            call.line = found
        elif isinstance(found, Mapping):
            if "percent" in found:
                with contextlib.suppress(TypeError, ValueError):
                    call.percent = float(found["percent"])
            text = found.get("message") or found.get("line")
            if text:
                call.line = str(text)

    def leaves(self) -> Iterator[Service]:
        yield self


_INTERPRETERS = re.compile(r"^(python[\d.]*|pypy[\d.]*|sh|bash|zsh|node|Rscript|julia|perl|ruby)$")


def _default_name(cmd: list[str]) -> str:
    """The executable's name, or the script's when it is an interpreter running one."""
    stem = Path(cmd[0]).stem
    if _INTERPRETERS.match(stem) and len(cmd) > 1 and not cmd[1].startswith("-") and "{" not in cmd[1]:
        stem = Path(cmd[1]).stem
    return stem or "program"


_cell_programs: weakref.WeakSet[Program] = weakref.WeakSet()


def _remove_cell_roots() -> None:
    for prog in list(_cell_programs):
        prog._remove_root()


def _rmdir_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


async def _quietly(awaitable: Any, default: Any) -> Any:
    try:
        return await awaitable
    except Exception:
        logger.debug("program housekeeping failed", exc_info=True)
        return default


async def _finish_readers(readers: Sequence[asyncio.Future[Any]], proc: asyncio.subprocess.Process) -> None:
    """Let the readers see the end of the pipes (a moment, now the group is gone), then stop
    them and close the pipes: a grandchild that escaped the group never makes a call hang."""
    pending = [r for r in readers if not r.done()]
    if pending:
        await asyncio.wait(pending, timeout=_READER_GRACE)
    for r in readers:
        if not r.done():
            r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _signature_fn(fields: Mapping[str, tuple[Any, Any]], inputs: Mapping[str, str]) -> Callable[..., Any]:
    """A stand-in callable whose signature is the program's fields, for ``Params``."""

    def fields_of(**kw: Any) -> None:
        return None

    parameters = []
    annotations: dict[str, Any] = {}
    for name, (kind, default) in fields.items():
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind))
        annotations[name] = kind
    for name in inputs:
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Any))
        annotations[name] = Any
    parameters.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    fields_of.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    fields_of.__annotations__ = annotations
    return fields_of


def program(
    cmd: Sequence[str],
    *,
    inputs: Sequence[str] | Mapping[str, str] | None = None,
    outputs: Sequence[str] | Mapping[str, str] = (),
    params: Sequence[str] | Mapping[str, Any] | None = None,
    timeout: float | None = None,
    progress: str | re.Pattern[str] | Callable[[str], Any] | None = None,
    keep: str = "failed",
    env: Mapping[str, str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    grace: float = 5.0,
    name: str | None = None,
    copy: Sequence[str | os.PathLike[str]] = (),
    results: str = "auto",
    text_limit: int = 1 << 16,
    stderr_lines: int = 20,
    line_limit: int = 4096,
) -> Program:
    """A service that runs an external program once per message.

    Parameters
    ----------
    cmd
        The command, a list of strings (never run through a shell). ``{field}`` placeholders
        are filled from the message, each value as (part of) one argument: strings as they
        are, numbers as Python writes them, ``true``/``false``, anything else as JSON;
        ``{steps:03d}`` applies a format. ``{workdir}`` is the call's work directory; an input
        field's placeholder is its file name. A relative executable path is resolved now,
        against the current directory, since the program runs in its work directory.
    inputs
        Message fields written into the work directory as files before it runs: a list
        (the file is named as the field) or ``{field: "file name"}``. The field's value is
        the file's content: a string (UTF-8), bytes, or any other JSON value (as JSON). A
        value is never read as a path to copy: a caller over HTTP cannot make it read
        files of this machine. Files you name yourself go in with ``copy=``.
    outputs
        Files the program writes in its work directory that come back in the reply: a list
        (the reply field is the file name) or ``{field: "file name"}`` (names may have
        placeholders). Each comes back as text when it is UTF-8 and at most ``text_limit``
        bytes, else as its absolute path (``results="text"`` or ``"path"`` forces one form).
        A reply that hands back a path keeps its work directory, so the path stays good;
        ``.clean()`` removes kept directories. A program that exits 0 without writing one
        raises ``ProgramFailed``.
    params
        The message fields the command reads, with their types: ``{"steps": int}``, a
        ``(type, default)`` pair for an optional one, or a list of names. Validated like a
        function service's parameters. Default: every placeholder, any type, required.
    timeout
        Seconds a run may take; past it the group gets SIGTERM, then SIGKILL after
        ``grace``, and the call raises ``ServiceTimeout`` naming the program. (Give
        ``sk.serve(timeout=...)`` room for it too: the served timeout stops it the same way.)
    progress
        How its stdout and stderr lines become progress: a regular expression with named
        groups (``(?P<percent>[\\d.]+)%``; a ``message`` group replaces the line shown), or a
        function of a line returning a percent, a text, a dict of those, or None. Without
        it, the last line is the progress. Shown per running call in ``status()`` and on the
        dashboard.
    keep
        Which work directories stay on disk after their call: ``"failed"`` (default: those of
        runs that failed, for a look inside: a non-zero exit, a missing output, its own
        ``timeout``; not runs stopped from outside, by a stop or the served timeout),
        ``"always"`` or ``"never"``.
        ``status()`` shows how many bytes are kept.
    env
        Environment variables set for it over this process's own (values may have placeholders).
    workdir
        Where work directories are made; default: a temporary directory per served thing.
    limit
        How many run at once (default: the number of cores); more messages wait their turn.
    grace
        Seconds between SIGTERM and SIGKILL when it is stopped.
    name
        The service's name (default: the executable's name without its suffix).
    copy
        Files or directories of this machine copied into every work directory (a script, a
        config), named as they are.
    results, text_limit
        How output files come back: ``"auto"`` (text up to ``text_limit`` bytes of UTF-8,
        else a path), ``"text"`` or ``"path"``.
    stderr_lines, line_limit
        How many stderr lines the reply's ``stderr_tail`` keeps, and the longest line kept
        (longer lines are cut). Everything it printed is in ``.stdout`` and ``.stderr`` in
        its work directory.

    Returns
    -------
    Program
        A service whose reply merges into the message: the output fields, ``returncode``,
        ``duration`` (s) and ``stderr_tail``. A non-zero exit raises ``ProgramFailed`` with
        ``returncode``, ``stderr_tail`` and, when the directory is kept, ``workdir``.

    Examples
    --------
    >>> import sys, svckit as sk
    >>> upper = sk.program(
    ...     [sys.executable, "-c", "import sys; open('out.txt', 'w').write(open('in.txt').read().upper())"],
    ...     inputs={"text": "in.txt"}, outputs={"upper": "out.txt"}, name="upper")
    >>> upper(text="quiet")["upper"]
    'QUIET'
    """
    return Program(
        cmd,
        inputs=inputs,
        outputs=outputs,
        params=params,
        timeout=timeout,
        progress=progress,
        keep=keep,
        env=env,
        workdir=workdir,
        limit=limit,
        grace=grace,
        name=name,
        copy=copy,
        results=results,
        text_limit=text_limit,
        stderr_lines=stderr_lines,
        line_limit=line_limit,
    )
