"""The ``svckit`` command: run a notebook or a module's flow headless, call a served action, read status."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

__all__ = ["main", "run_notebook"]

TEARDOWN_TAG = "teardown"
PARAMETERS_TAG = "parameters"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

DESCRIPTION = """\
Serve what a notebook or a module defines, headless, and talk to served things.

commands:
  run       run a notebook (or serve module:object) and keep serving until SIGINT or SIGTERM
  call      call a served action over HTTP or ZeroMQ and print the reply
  status    show what is served at an address: states and counters

Run 'svckit COMMAND --help' for the options of one command."""

RUN_EPILOG = """\
examples:
  svckit run notebooks/01-quickstart.ipynb
  svckit run report.ipynb -p rows 100 -p title "Monthly report" --http wordcount=8000
  svckit run myapp.flows:wordcount --http 8000 --zmq 5555 --token s3cret

A notebook runs in its own directory, as Jupyter runs it. Values of -p are read as JSON
when they parse (3 is a number, true a boolean, [1, 2] a list), else as strings; they are
set in a cell after the one tagged 'parameters', as papermill does. Cells tagged
'teardown' are skipped, so the services keep serving. SIGINT (Ctrl-C) or SIGTERM stops
every served thing, runs every teardown() and frees every port; a second signal exits at
once. --config FILE (JSON or TOML, one table per service) and SVCKIT_<SERVICE>_<KEY>
environment variables fill the typed config of class services."""

CALL_EPILOG = """\
examples:
  svckit call 127.0.0.1:8000 wordcount text="a b c"
  svckit call tcp://127.0.0.1:5555 wordcount text="over zmq"
  svckit call http://127.0.0.1:8000 simulate --json '{"steps": 3}'

An address without a scheme is HTTP; tcp://, ipc:// and inproc:// are ZeroMQ. Values are
read as JSON when they parse (n=3 is a number, text=a a string). Exits 1 with the error's
type and message when the call fails."""

STATUS_EPILOG = """\
examples:
  svckit status 127.0.0.1:8000
  svckit status http://127.0.0.1:8000 --json

Status is served over HTTP (GET /status); a ZeroMQ address has none."""


class UsageError(Exception):
    """A mistake in how the command was used: one sentence on stderr, exit code 2."""


class Failed(Exception):
    """The command ran and failed (a cell raised, a call failed): its message, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one sentence on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see '{self.prog} --help'.\n")


def _value(text: str) -> Any:
    """Values of ``key=value`` and ``-p``: JSON when they parse as JSON (``3``, ``true``, ``[1]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _fields(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{pair!r} is not key=value (write text=hello, or n=3 for a number)")
        out[key] = _value(value)
    return out


def _address(url: str) -> tuple[str, str]:
    """``("http", url)`` or ``("zmq", url)``; an address without a scheme is HTTP."""
    if url.startswith(("tcp://", "ipc://", "inproc://")):
        return "zmq", url
    if url.startswith(("http://", "https://")):
        return "http", url
    if "://" in url:
        raise UsageError(f"{url!r} has a scheme svckit does not speak; give http://, https:// or tcp://")
    if re.fullmatch(r"\d+", url):
        return "http", f"http://127.0.0.1:{url}"
    if re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]*):\d+(/.*)?", url):
        return "http", "http://" + (url if not url.startswith(":") else "127.0.0.1" + url)
    raise UsageError(f"{url!r} is not an address; give one such as 127.0.0.1:8000 or tcp://127.0.0.1:5555")


def _remote_error(exc: Exception) -> str:
    kind = getattr(exc, "type", None) if type(exc).__name__ == "RemoteError" else type(exc).__name__
    return f"error: {kind}: {getattr(exc, 'message', None) or exc}"


# -- call and status --------------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    from .client import Client, ZmqClient
    from .errors import SvckitError

    data: dict[str, Any] = {}
    if args.json is not None:
        text = sys.stdin.read() if args.json == "-" else args.json
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise UsageError('--json must be a JSON object, such as \'{"text": "a b"}\'')
        data = loaded
    data.update(_fields(args.fields))
    kind, url = _address(args.url)
    try:
        if kind == "zmq":
            with ZmqClient(url, timeout=args.timeout, token=args.token) as zclient:
                reply = zclient.call(args.action, data)
        else:
            with Client(url, timeout=args.timeout, token=args.token) as client:
                reply = client.call(args.action, data)
    except SvckitError as exc:
        print(_remote_error(exc), file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2, ensure_ascii=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .client import Client
    from .errors import SvckitError

    kind, url = _address(args.url)
    if kind == "zmq":
        raise UsageError("status is served over HTTP only (GET /status); give the HTTP address svckit run printed")
    try:
        with Client(url, timeout=args.timeout, token=args.token) as client:
            body = client.status()
    except SvckitError as exc:
        print(_remote_error(exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        print(status_table(body))
    return 0


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.0f} B"


def _seconds(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def status_table(body: dict[str, Any]) -> str:
    """``GET /status`` as a table a person reads: one row per served thing, then the details
    that do not fit a row (the last error, warnings, running program calls)."""
    served = body.get("served", {})
    if not served:
        return f"nothing is served on port {body.get('port')}"
    header = ["NAME", "STATE", "IN", "OUT", "ERRORS", "RATE/S", "UPTIME", "ADDRESSES"]
    rows = []
    notes = []
    for name, s in served.items():
        where = ", ".join(u for u in (s.get("http"), s.get("zmq")) if u)
        rows.append(
            [
                name,
                str(s.get("state", "?")),
                str(s.get("received", 0)),
                str(s.get("replied", 0)),
                str(s.get("errors", 0)),
                f"{s.get('rate', 0.0):.1f}",
                _seconds(s.get("uptime", 0)),
                where,
            ]
        )
        last = s.get("last_error")
        if last:
            notes.append(f"{name}: last error {last.get('type')}: {last.get('message')}")
        for warning in s.get("warnings", []):
            notes.append(f"{name}: warning: {warning}")
        placed = s.get("placement") or {}
        on_loop = [stage for stage, info in placed.items() if info.get("runs") == "loop"]
        if on_loop:
            notes.append(f"{name}: def stages on the runtime loop (proven quick): {', '.join(on_loop)}")
        for stage, info in placed.items():
            if "moved_back_at" in info:
                notes.append(f"{name}/{stage}: back in the worker pool: {info.get('why')}")
        for stage, info in (s.get("stages") or {}).items():
            running = info.get("running", [])
            text = f"{name}/{stage}: {len(running)} running"
            if info.get("waiting"):
                text += f", {info['waiting']} waiting"
            if "kept_dirs" in info:
                text += f", {info['kept_dirs']} work directories kept ({_bytes(info.get('kept_bytes', 0))})"
            notes.append(text)
            for call in running:
                percent = call.get("percent")
                shown = f"{percent:.0f}%" if percent is not None else "-"
                notes.append(
                    f"  call {call.get('call')} (pid {call.get('pid')}) {call.get('seconds', 0):.1f}s {shown} "
                    f"{call.get('line', '')}".rstrip()
                )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines + (["", *notes] if notes else []))


# -- run -----------------------------------------------------------------------------------------


def _ports(items: Sequence[str] | None, option: str) -> dict[str, int]:
    """``--http NAME=PORT`` / ``--http PORT`` (``"*"``: every served thing) as ``{name: port}``."""
    out: dict[str, int] = {}
    for item in items or ():
        name, sep, port = item.rpartition("=")
        if not sep:
            name = "*"
        if not re.fullmatch(r"\d{1,5}", port) or int(port) > 65535 or (sep and not name):
            raise UsageError(f"{option} {item!r}: give NAME=PORT or PORT, with a port from 0 to 65535")
        out[name] = int(port)
    return out


def _parameters(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs or ():
        if not name.isidentifier():
            raise UsageError(f"-p {name!r}: a parameter is a Python variable name, such as rows")
        out[name] = _value(value)
    return out


def _colourless(text: str) -> str:
    return _ANSI.sub("", text)


def _user_traceback(exc: BaseException, cells: dict[str, int]) -> str:
    """The traceback of a failing cell without IPython's frames, cells named by number, no colour."""
    ipython = os.path.dirname(importlib.import_module("IPython").__file__ or "") + os.sep
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb) if tb is not None else traceback.StackSummary()
    kept = traceback.StackSummary.from_list([f for f in frames if not f.filename.startswith(ipython)])
    for frame in kept:
        if frame.filename in cells:
            frame.filename = f"code cell {cells[frame.filename]}"
    lines = ["Traceback (most recent call last):\n", *kept.format()] if len(kept) else []
    lines += traceback.format_exception_only(type(exc), exc)
    return _colourless("".join(lines)).rstrip()


def run_notebook(
    path: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    skip_tags: Sequence[str] = (TEARDOWN_TAG,),
) -> int:
    """Run a notebook's code cells in this process (IPython, so magics and top-level await
    work), in the notebook's own directory (which stays the working directory).

    ``parameters`` are set in a cell put after the one tagged ``parameters`` (before the
    first cell when none is tagged), as papermill does. Cells tagged ``teardown`` are
    skipped, so what the notebook serves keeps serving. Returns the number of cells run;
    raises ``Failed`` naming the cell that failed, with its traceback (no colour codes).
    """
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell

    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise UsageError(f"there is no notebook at {os.fspath(path)}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise UsageError(f"{path} is not a notebook that can be read ({type(exc).__name__}: {exc})") from None
    cells = list(nb.cells)
    if parameters:
        tagged = [i for i, c in enumerate(cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
        if not tagged:
            print(
                f"svckit run: {os.path.basename(path)} has no cell tagged 'parameters'; "
                "the parameters are set before its first cell.",
                file=sys.stderr,
            )
        source = "# Parameters (svckit run -p)\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        injected = nbformat.v4.new_code_cell(source)
        injected.metadata["tags"] = ["injected-parameters"]
        cells.insert(tagged[0] + 1 if tagged else 0, injected)
    os.chdir(os.path.dirname(path))  # as Jupyter runs it: files beside it open by their names
    if sys.path[:1] != [os.path.dirname(path)]:
        sys.path.insert(0, os.path.dirname(path))
    import linecache

    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # a headless run writes nothing into ~/.ipython
    shell = InteractiveShell.instance(config=config)
    shell.colors = "nocolor"
    # the failure is reported once, on stderr, by svckit run (not by IPython on stdout)
    shell.showtraceback = lambda *a, **k: None  # type: ignore[method-assign]
    shell.showsyntaxerror = lambda *a, **k: None  # type: ignore[method-assign]
    ran = 0
    number = 0
    names: dict[str, int] = {}  # the file name IPython compiled a cell under -> its number
    for cell in cells:
        if cell.cell_type != "code":
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        injected_cell = "injected-parameters" in tags
        if not injected_cell:
            number += 1
        if tags & set(skip_tags):
            continue
        label = "the injected parameters cell" if injected_cell else f"code cell {number}"
        before = set(linecache.cache)
        result = shell.run_cell(cell.source, store_history=False, silent=True)
        for filename in set(linecache.cache) - before:
            names[filename] = number
        ran += 1
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            assert error is not None
            detail = _user_traceback(error, names) if error.__traceback__ is not None else ""
            summary = f"{os.path.basename(path)}: {label} failed: {type(error).__name__}: {error}"
            raise Failed(_colourless(summary) + ("\n" + detail if detail else ""))
    return ran


class _Signals:
    """SIGINT and SIGTERM in ``svckit run``: while cells run, either interrupts the cell; while
    serving, the first asks for a clean stop, a second exits at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: str | None = None
        self.serving = False
        self.stopping = False
        self.old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            print(f"svckit run: {name} again: exiting without waiting", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.received = name
        self.stop.set()
        if not self.serving:
            raise KeyboardInterrupt  # stops the cell running now; the cell's failure is reported


def _served_now() -> list[Any]:
    from .runtime import current
    from .served import registry

    rt = current()
    return [s for s in registry(rt).values()] if rt is not None else []


def _serve_until_signalled(signals: _Signals, check_pins: dict[str, dict[str, int]]) -> int:
    from .config import unused_sections
    from .runtime import shutdown

    served = _served_now()
    if not served:
        raise Failed("the notebook serves nothing once run (cells tagged 'teardown' are skipped)")
    names = {s.name for s in served}
    for option, pins in check_pins.items():
        for name in pins:
            if name != "*" and name not in names:
                raise UsageError(
                    f"{option} {name}={pins[name]} names nothing that is served (served: {', '.join(sorted(names))})"
                )
    for section in unused_sections():
        print(f"svckit run: the config file's table [{section}] matched no service.", file=sys.stderr)
    for s in served:
        where = ", ".join(u for u in (s.url, s.zmq_url) if u) or "a pipeline (no endpoint)"
        print(f"serving {s.name} at {where}", flush=True)
    print("press Ctrl-C (or send SIGTERM) to stop", flush=True)
    signals.serving = True
    while not signals.stop.wait(0.5):
        if not _served_now():
            print("svckit run: everything served has stopped", file=sys.stderr, flush=True)
            break
    signals.stopping = True
    if signals.received:
        print(f"svckit run: {signals.received}: stopping", file=sys.stderr, flush=True)
    shutdown(timeout=5.0)  # every served thing stops, teardown() runs, every port is freed
    return 0


def _setup(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Apply ``--config``, ``--http``/``--zmq`` pins and logging; return the pins by option."""
    logging.basicConfig(level=logging.WARNING, format="svckit: %(levelname)s %(name)s: %(message)s")
    if args.config:
        from .config import load_config_file
        from .errors import ConfigError

        try:
            load_config_file(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc).rstrip(".")) from None
        os.environ["SVCKIT_CONFIG"] = os.path.abspath(args.config)
    http, zmq = _ports(args.http, "--http"), _ports(args.zmq, "--zmq")
    return {"--http": http, "--zmq": zmq}


def cmd_run(args: argparse.Namespace) -> int:
    target: str = args.target
    is_module = not target.endswith(".ipynb") and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", target)
    if not is_module and not target.endswith(".ipynb"):
        if os.path.isfile(target):
            raise UsageError(f"{target!r} is not a notebook (.ipynb); give a notebook or module:object")
        raise UsageError(f"there is no notebook at {target} (give a .ipynb file, or module:object)")
    if not is_module:
        if args.host or args.token or args.name:
            raise UsageError("--host, --token and --name apply to module:object; a notebook's sk.serve() sets them")
        if not os.path.isfile(target):
            raise UsageError(f"there is no notebook at {target}")
    elif args.parameters:
        raise UsageError("-p sets notebook parameters; module:object takes none")
    pins = _setup(args)
    signals = _Signals()
    signals.install()
    try:
        if is_module:
            return _run_module(args, pins, signals)
        table: dict[str, dict[str, int]] = {}
        for option, key in (("--http", "http"), ("--zmq", "zmq")):
            for name, port in pins[option].items():
                table.setdefault(name, {})[key] = port
        if table:
            os.environ["SVCKIT_PORTS"] = json.dumps(table)
        try:
            run_notebook(target, _parameters(args.parameters))
        except KeyboardInterrupt:
            raise Failed(f"{signals.received or 'SIGINT'} arrived while the notebook ran") from None
        return _serve_until_signalled(signals, pins)
    except BaseException:
        signals.stopping = True
        from .runtime import shutdown

        shutdown(timeout=5.0)
        raise
    finally:
        signals.restore()


def _run_module(args: argparse.Namespace, pins: dict[str, dict[str, int]], signals: _Signals) -> int:
    from .errors import SvckitError
    from .served import serve
    from .service import Service

    module_name, _, attr = args.target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(f"cannot import {module_name!r}: there is no module {exc.name!r} here or on sys.path")
        raise Failed(f"importing {module_name!r} failed:\n{_colourless(traceback.format_exc()).rstrip()}") from None
    except Exception:
        raise Failed(f"importing {module_name!r} failed:\n{_colourless(traceback.format_exc()).rstrip()}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Service) and not callable(obj):
        raise UsageError(f"{args.target} is a {type(obj).__name__}, not a service, flow or function to serve")
    for option, table in pins.items():
        extra = [n for n in table if n not in ("*", args.name or getattr(obj, "name", None))]
        if extra:
            raise UsageError(f"{option} {extra[0]}={table[extra[0]]}: module:object takes {option} PORT")
    http = next(iter(pins["--http"].values()), None)
    zmq = next(iter(pins["--zmq"].values()), None)
    token = args.token or os.environ.get("SVCKIT_TOKEN") or None
    try:
        serve(obj, name=args.name, http=http, zmq=zmq, host=args.host or "127.0.0.1", token=token)
    except (SvckitError, OSError) as exc:
        raise Failed(f"cannot serve {args.target}: {getattr(exc, 'message', None) or exc}") from None
    return _serve_until_signalled(signals, {})


# -- the parser ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The ``svckit`` argument parser (its ``--help`` is what each command prints)."""
    from .version import __version__

    top = _Parser(prog="svckit", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"svckit {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser(
        "run",
        help="run a notebook or serve module:object until SIGINT or SIGTERM",
        description="Run a notebook headless (or serve a flow from a module) and keep serving until SIGINT or SIGTERM.",
        epilog=RUN_EPILOG,
        formatter_class=fmt,
    )
    run.add_argument("target", metavar="NOTEBOOK.ipynb | module:object", help="what to run")
    run.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a notebook parameter (repeatable; VALUE is read as JSON when it parses)",
    )
    run.add_argument("--config", metavar="FILE", help="a JSON or TOML file with one table of config per service")
    run.add_argument(
        "--http",
        action="append",
        metavar="[NAME=]PORT",
        help="serve NAME over HTTP on PORT (a notebook's port 0 is pinned); PORT alone: every served thing",
    )
    run.add_argument("--zmq", action="append", metavar="[NAME=]PORT", help="the same for ZeroMQ")
    run.add_argument("--host", help="module:object only: the interface to bind (default 127.0.0.1)")
    run.add_argument("--token", help="module:object only: the token requests must carry (default: $SVCKIT_TOKEN)")
    run.add_argument("--name", help="module:object only: the name it is served under (default: its own)")
    run.set_defaults(func=cmd_run)

    call = sub.add_parser(
        "call",
        help="call a served action and print the reply",
        description="Call a served action over HTTP or ZeroMQ and print the reply as JSON.",
        epilog=CALL_EPILOG,
        formatter_class=fmt,
    )
    call.add_argument("url", metavar="ADDRESS", help="http://HOST:PORT, HOST:PORT, or tcp://HOST:PORT")
    call.add_argument("action", metavar="ACTION", help="the action to call (a served name or one of its actions)")
    call.add_argument("fields", nargs="*", metavar="KEY=VALUE", help="message fields; values are JSON when they parse")
    call.add_argument("--json", metavar="OBJECT", help="a JSON object to send ('-': read it from stdin); KEY=VALUE win")
    call.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="how long to wait (default 30)")
    call.add_argument("--token", default=os.environ.get("SVCKIT_TOKEN"), help="the token (default: $SVCKIT_TOKEN)")
    call.set_defaults(func=cmd_call)

    status = sub.add_parser(
        "status",
        help="show what is served at an address",
        description="Show the served things at an HTTP address: state, counters, errors, running program calls.",
        epilog=STATUS_EPILOG,
        formatter_class=fmt,
    )
    status.add_argument("url", metavar="ADDRESS", help="http://HOST:PORT or HOST:PORT")
    status.add_argument("--json", action="store_true", help="print the raw GET /status document")
    status.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="how long to wait (default 10)")
    status.add_argument("--token", default=os.environ.get("SVCKIT_TOKEN"), help="the token (default: $SVCKIT_TOKEN)")
    status.set_defaults(func=cmd_status)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``svckit`` command."""
    args = parser().parse_args(argv)
    prog = f"svckit {args.command}"
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"{prog}: {str(exc).rstrip('.')}.", file=sys.stderr)
        return 2
    except Failed as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
