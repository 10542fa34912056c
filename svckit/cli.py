"""The ``svckit`` command: ``svckit run NOTEBOOK`` serves a notebook headless; ``svckit call`` calls one."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

TEARDOWN_TAG = "teardown"


def _value(text: str) -> Any:
    """``key=value`` values: JSON when they parse as JSON (``3``, ``true``, ``[1]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _fields(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"svckit call: {pair!r} is not key=value.")
        out[key] = _value(value)
    return out


def cmd_call(args: argparse.Namespace) -> int:
    from .client import Client
    from .errors import SvckitError

    data = _fields(args.fields)
    if args.json:
        loaded = json.loads(args.json)
        if not isinstance(loaded, dict):
            raise SystemExit("svckit call: --json must be a JSON object.")
        data = {**loaded, **data}
    try:
        with Client(args.url, timeout=args.timeout, token=args.token) as client:
            reply = client.call(args.action, data)
    except SvckitError as exc:
        print(
            f"error: {type(exc).__name__ if type(exc).__name__ != 'RemoteError' else exc.type}: "  # type: ignore[attr-defined]
            f"{exc.message}",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(reply, indent=2))
    return 0


def run_notebook(path: str, skip_tags: Sequence[str] = (TEARDOWN_TAG,)) -> int:
    """Run a notebook's code cells in this process (IPython, so magics and top-level await work).

    Cells tagged ``teardown`` are skipped, so what the notebook serves keeps serving.
    Returns the number of cells run; raises ``RuntimeError`` naming the cell that failed.
    """
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell

    nb = nbformat.read(path, as_version=4)
    shell = InteractiveShell.instance()
    ran = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or set(cell.get("metadata", {}).get("tags", [])) & set(skip_tags):
            continue
        result = shell.run_cell(cell.source, store_history=False, silent=True)
        ran += 1
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            raise RuntimeError(f"{path}: code cell {index + 1} failed: {type(error).__name__}: {error}")
    return ran


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import current, shutdown
    from .served import registry

    try:
        run_notebook(args.notebook)
    except RuntimeError as exc:
        print(f"svckit run: {exc}", file=sys.stderr)
        shutdown()
        return 1
    rt = current()
    served = list(registry(rt).values()) if rt is not None else []
    if not served:
        print(
            f"svckit run: {args.notebook} serves nothing once run (cells tagged 'teardown' are skipped).",
            file=sys.stderr,
        )
        shutdown()
        return 1
    for s in served:
        where = ", ".join(u for u in (s.url, s.zmq_url) if u) or "pipeline"
        print(f"serving {s.name} at {where}", flush=True)
    print("press Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``svckit`` command."""
    parser = argparse.ArgumentParser(prog="svckit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a notebook headless and keep its services serving until Ctrl-C")
    run.add_argument("notebook")
    run.set_defaults(func=cmd_run)
    call = sub.add_parser("call", help="call a served action: svckit call URL ACTION key=value ...")
    call.add_argument("url")
    call.add_argument("action")
    call.add_argument("fields", nargs="*", help="key=value; values are read as JSON when they parse")
    call.add_argument("--json", help="a JSON object to send (key=value pairs are merged over it)")
    call.add_argument("--timeout", type=float, default=30.0)
    call.add_argument("--token")
    call.set_defaults(func=cmd_call)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
