"""A ZMQ server process for the ZMQ benchmarks: svckit or raw pyzmq, serving from a non-main thread.

Modes:
- ``--kind raw --mode rep``: a pyzmq REP socket in a thread answering ``[action, json]`` with
  ``[b"ok", json]`` (the same echo work: decode, run the stage, encode).
- ``--kind svckit --mode rep``: ``sk.serve(flow, zmq=0)`` — svckit's ROUTER endpoint.
- ``--kind raw --mode pipe``: a thread with a synchronous PULL → the three plain stage functions
  → PUSH, connecting to ``--pull`` and ``--push``.
- ``--kind svckit --mode pipe``: ``sk.serve(sk.pull(in) >> a >> b >> c >> sk.push(out))``.
- ``--kind svckit-async``: the same with the stages written as ``async def`` (no worker-pool hop).
Prints ``READY <address>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import zmq

ACTION = "echo"


def echo(text: str) -> dict[str, Any]:
    return {"text": text}


def stage_a(x: int) -> dict[str, Any]:
    return {"x": x + 1}


def stage_b(x: int) -> dict[str, Any]:
    return {"y": x * 2}


def stage_c(x: int, y: int) -> dict[str, Any]:
    return {"z": x + y}


def as_async(fn: Any) -> Any:
    """The same stage as an ``async def`` (svckit runs it on the loop, not in the worker pool)."""

    async def stage(**kw: Any) -> Any:
        return fn(**kw)

    stage.__name__ = fn.__name__
    stage.__signature__ = __import__("inspect").signature(fn)  # type: ignore[attr-defined]
    return stage


def raw_rep() -> str:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    def main() -> None:
        while True:
            _action, body = sock.recv_multipart()
            msg = json.loads(body)
            msg.update(echo(msg["text"]))
            sock.send_multipart([b"ok", json.dumps(msg, separators=(",", ":")).encode()])

    threading.Thread(target=main, daemon=True).start()
    return f"tcp://127.0.0.1:{port}"


def raw_pipe(pull: str, push: str) -> str:
    ctx = zmq.Context.instance()
    src = ctx.socket(zmq.PULL)
    dst = ctx.socket(zmq.PUSH)
    src.set_hwm(0)
    dst.set_hwm(0)
    src.connect(pull)
    dst.connect(push)

    def main() -> None:
        while True:
            msg = json.loads(src.recv())
            msg.update(stage_a(msg["x"]))
            msg.update(stage_b(msg["x"]))
            msg.update(stage_c(msg["x"], msg["y"]))
            dst.send(json.dumps(msg, separators=(",", ":")).encode())

    threading.Thread(target=main, daemon=True).start()
    return pull


def svckit_rep(is_async: bool) -> str:
    import svckit as sk

    srv = sk.serve(sk.Flow(sk.service(as_async(echo) if is_async else echo)), name=ACTION, zmq=0)
    assert srv.zmq_url is not None
    return str(srv.zmq_url)


def svckit_pipe(pull: str, push: str, is_async: bool) -> str:
    import svckit as sk

    a, b, c = (as_async(f) if is_async else f for f in (stage_a, stage_b, stage_c))
    flow = sk.pull(pull) >> a >> b >> c >> sk.push(push)
    sk.serve(flow, name="pipeline")
    return pull


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["raw", "svckit", "svckit-async"], required=True)
    parser.add_argument("--mode", choices=["rep", "pipe"], required=True)
    parser.add_argument("--pull", default="")
    parser.add_argument("--push", default="")
    args = parser.parse_args()
    is_async = args.kind == "svckit-async"
    if args.mode == "rep":
        addr = raw_rep() if args.kind == "raw" else svckit_rep(is_async)
    else:
        addr = raw_pipe(args.pull, args.push) if args.kind == "raw" else svckit_pipe(args.pull, args.push, is_async)
    print("READY", addr, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
