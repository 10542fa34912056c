"""An HTTP echo server process for the HTTP benchmark, serving from a non-main thread as a kernel does.

``--kind bare``: starlette + uvicorn (httptools, uvloop) in a thread, configured as svckit's
HTTP transport configures it. ``--kind svckit``: ``sk.serve`` of a one-stage flow whose
stage is a plain ``def``; ``--kind svckit-async``: the same stage as ``async def``.
``--kind none`` serves nothing (the busy loop's reference speed).

``--busy`` keeps the main thread in a pure-Python loop (a kernel running a cell); with
``--rate-file`` it writes its iteration count there about every 0.1 s, so the benchmark
can show what serving (and the switch interval) costs the busy cell.
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


def serve_svckit(is_async: bool) -> str:
    import svckit as sk

    if is_async:

        async def echo(text: str) -> dict[str, Any]:
            return {"text": text}

    else:

        def echo(text: str) -> dict[str, Any]:  # type: ignore[misc]
            return {"text": text}

    srv = sk.serve(sk.Flow(sk.service(echo)), name=ACTION, http=0)
    assert srv.url is not None
    return srv.url


def wait_ready(url: str) -> None:
    body = json.dumps({"text": "hello world", "n": 42}).encode()
    for _ in range(500):
        try:
            req = urllib.request.Request(f"{url}/{ACTION}", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                assert json.loads(r.read())["text"] == "hello world"
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
    parser.add_argument("--kind", choices=["bare", "svckit", "svckit-async", "none"], required=True)
    parser.add_argument("--busy", action="store_true", help="keep the main thread busy in pure Python")
    parser.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval value")
    parser.add_argument("--rate-file", default="", help="where the busy loop writes its iterations/s")
    args = parser.parse_args()
    if args.switch:
        sys.setswitchinterval(args.switch)
    if args.kind == "none":  # nothing served: the busy loop's reference speed
        print("READY", flush=True)
    else:
        url = serve_bare() if args.kind == "bare" else serve_svckit(args.kind == "svckit-async")
        wait_ready(url)
        print("READY", f"{url}/{ACTION}", flush=True)
    if args.busy:
        busy(args.rate_file)
    else:
        sys.stdin.read()


if __name__ == "__main__":
    main()
