"""An HTTP echo server process for the HTTP benchmark, serving from a non-main thread as a kernel does.

``--kind bare``: starlette + uvicorn (httptools, uvloop) in a thread, configured as svckit's
HTTP transport configures it. ``--kind svckit``: ``sk.serve`` of a one-stage flow whose
stage is a plain ``def``; ``--kind svckit-async``: the same stage as ``async def``;
``--kind svckit-inline``: the plain ``def`` marked ``inline=True`` (run on the loop).
``--kind fastapi-def``: FastAPI with a plain ``def`` endpoint on uvicorn in a thread (the
second baseline: what a user would write instead), run by the FastAPI venv's Python.
``--kind none`` serves nothing (the busy loop's reference speed).

``--busy`` keeps the main thread in a pure-Python loop (a kernel running a cell); with
``--rate-file`` it writes its iteration count there about every 0.1 s, so the benchmark
can show what serving (and the switch interval) costs the busy cell.
``--dashboard`` (svckit kinds) also shows ``srv.dashboard()`` and keeps it alive. With no
frontend, every widget comm message is serialised and signed as ipykernel's ``Session``
would before sending it on IOPub, then counted and dropped; a ``stats`` line on stdin
answers ``STATS {"comm_msgs": n, "comm_bytes": b, "updates": u}`` (totals so far).

Prints ``READY <url>`` once the first request has been answered, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import urllib.request
from typing import Any

ACTION = "echo"


def bare_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        msg = json.loads(await request.body())
        msg["text"] = msg["text"]
        return Response(json.dumps(msg, separators=(",", ":")).encode(), media_type="application/json")

    return Starlette(routes=[Route(f"/{ACTION}", echo, methods=["POST"])])


def serve_bare() -> str:
    """uvicorn + starlette on a uvloop loop in a daemon thread, as svckit's transport configures it."""
    import uvicorn
    import uvloop

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    config = uvicorn.Config(
        bare_app(),
        http="httptools",
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    started = threading.Event()

    def main() -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        task = loop.create_task(server.serve(sockets=[sock]))
        loop.call_soon(started.set)
        loop.run_until_complete(task)

    threading.Thread(target=main, name="bare-server", daemon=True).start()
    started.wait()
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def serve_fastapi() -> str:
    """FastAPI with a plain ``def`` endpoint, on uvicorn in a daemon thread: what a notebook user
    writes without svckit (the JupyUvi / BentoML-threaded pattern). FastAPI runs a ``def``
    endpoint in anyio's thread pool; the body is checked by a pydantic model, as svckit checks
    ``text: str``. Runs from ``benchmarks/.venv-fastapi`` (``make bench`` makes it), so FastAPI's
    own pins never touch svckit's environment."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel, ConfigDict

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        text: str

    def echo(msg: Message) -> dict[str, Any]:
        return msg.model_dump()

    # this module's annotations are strings (``from __future__``) and Message is local to this
    # function, where FastAPI cannot resolve them: give it the objects
    echo.__annotations__ = {"msg": Message, "return": dict[str, Any]}
    app = FastAPI()
    app.post(f"/{ACTION}")(echo)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fastapi-server", daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


class CommCounter:
    """What a kernel's IOPub would have carried: comm messages and their serialised bytes."""

    messages = 0
    bytes = 0


def install_counting_comm() -> None:
    """Make ``comm.create_comm`` return comms that serialise each message as ipykernel does, then count it.

    ipykernel's ``Comm.publish_msg`` runs ``json_clean`` on the content and hands it to
    ``Session.send``, which builds the header, JSON-packs every part and signs it with
    HMAC-SHA256 before writing to the IOPub socket; here the socket write is the only step left out.
    """
    import comm
    from comm.base_comm import BaseComm
    from ipykernel.jsonutil import json_clean
    from jupyter_client.session import Session

    session = Session(key=b"svckit-bench-key", username="bench")
    lock = threading.Lock()

    class CountingComm(BaseComm):
        def publish_msg(
            self,
            msg_type: str,
            data: dict[str, Any] | None = None,
            metadata: dict[str, Any] | None = None,
            buffers: list[bytes] | None = None,
            **keys: Any,
        ) -> None:
            content = json_clean(dict(data={} if data is None else data, comm_id=self.comm_id, **keys))
            msg = session.msg(msg_type, content, parent={}, metadata=json_clean(metadata or {}))
            parts = session.serialize(msg, ident=self.topic)
            size = sum(len(p) for p in parts) + sum(len(b) for b in buffers or ())
            with lock:
                CommCounter.messages += 1
                CommCounter.bytes += size

    comm.create_comm = lambda *a, **k: CountingComm(*a, **k)


def serve_svckit(is_async: bool, dashboard: bool = False, inline: bool | None = None) -> str:
    import svckit as sk

    if is_async:

        async def echo(text: str) -> dict[str, Any]:
            return {"text": text}

    else:

        def echo(text: str) -> dict[str, Any]:  # type: ignore[misc]
            return {"text": text}

    srv = sk.serve(sk.Flow(sk.service(echo, inline=inline)), name=ACTION, http=0)
    assert srv.url is not None
    if dashboard:
        install_counting_comm()
        _dashboards.append(srv.dashboard())  # displayed for the life of the process
    _served.append(srv)
    return srv.url


_served: list[Any] = []
_dashboards: list[Any] = []


def answer_stats() -> None:
    """Serve ``stats`` requests from stdin until it closes (the parent stopping us)."""
    for line in sys.stdin:
        if line.strip() == "stats":
            updates = sum(d.updates for d in _dashboards)
            stats = {"comm_msgs": CommCounter.messages, "comm_bytes": CommCounter.bytes, "updates": updates}
            print("STATS", json.dumps(stats), flush=True)


#: Requests every server answers before it says READY (and before a busy cell starts): the
#: measurement is of the steady state, after svckit has moved its quick def stage to the loop
#: (within its first 100 calls; a cell that is busy from the start makes those 5-10 ms each).
WARM_UP = 300


def wait_ready(url: str) -> None:
    body = json.dumps({"text": "hello world", "n": 42}).encode()
    answered = 0
    for _ in range(500 + WARM_UP):
        try:
            req = urllib.request.Request(f"{url}/{ACTION}", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                assert json.loads(r.read())["text"] == "hello world"
            answered += 1
            if answered >= WARM_UP:
                return
        except OSError:
            import time

            time.sleep(0.01)
    raise SystemExit("the server never answered")


def busy(rate_file: str) -> None:
    """A cell computing in pure Python until the parent's SIGTERM; reports its progress.

    Every ~0.1 s it writes "<iterations so far> <perf_counter>" to ``rate_file``.
    """
    import os
    import time

    n = 0
    last = time.perf_counter()
    while True:
        n += 1
        if n & 0xFFFF == 0 and rate_file:
            now = time.perf_counter()
            if now - last >= 0.1:
                tmp = rate_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(f"{n} {now}")
                os.replace(tmp, rate_file)
                last = now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--kind", choices=["bare", "fastapi-def", "svckit", "svckit-async", "svckit-inline", "none"], required=True
    )
    parser.add_argument("--busy", action="store_true", help="keep the main thread busy in pure Python")
    parser.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval value")
    parser.add_argument("--rate-file", default="", help="where the busy loop writes its iterations/s")
    parser.add_argument("--dashboard", action="store_true", help="show srv.dashboard() (svckit kinds)")
    args = parser.parse_args()
    if args.switch:
        sys.setswitchinterval(args.switch)
    if args.kind == "none":  # nothing served: the busy loop's reference speed
        print("READY", flush=True)
    else:
        if args.dashboard and not args.kind.startswith("svckit"):
            parser.error("--dashboard needs an svckit kind")
        if args.kind == "bare":
            url = serve_bare()
        elif args.kind == "fastapi-def":
            url = serve_fastapi()
        else:
            inline = True if args.kind == "svckit-inline" else None  # default def: svckit places it
            url = serve_svckit(args.kind == "svckit-async", args.dashboard, inline=inline)
        wait_ready(url)
        print("READY", f"{url}/{ACTION}", flush=True)
    if args.busy:
        busy(args.rate_file)
    else:
        answer_stats()


if __name__ == "__main__":
    main()
