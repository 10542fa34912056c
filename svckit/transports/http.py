"""HTTP transport: one uvicorn server per port on the runtime loop, with a dispatch table.

The ASGI app routes ``POST /{action}`` to the request path of the served thing that has
the action, and serves ``GET /``, ``/health``, ``/status`` and ``/openapi.json``. Several
served things may share a port; each adds its actions to the table. A stopped one keeps
its actions while others serve on the port, so its clients get ``ServiceUnavailable``
(503), not ``UnknownAction``; another served thing may take them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from typing import Any, Protocol

from starlette.responses import Response

from ..codec import encode, error_reply
from ..errors import BadRequest, PayloadTooLarge, Unauthorized, UnknownAction, WiringError
from ..middleware import Request
from ..net import ports
from ..request import RequestPath
from ..state import State

__all__ = ["HttpEndpoint", "Member"]

logger = logging.getLogger(__name__)

_JSON = "application/json"
_LINKS = {"status": "status", "health": "health", "openapi": "openapi.json"}


class Member(Protocol):
    """What an HTTP endpoint needs of a served thing (``served.Served``)."""

    name: str
    path: RequestPath
    node: Any

    @property
    def actions(self) -> list[str]: ...
    @property
    def state(self) -> State: ...
    def status(self) -> dict[str, Any]: ...
    def params_for(self, action: str) -> list[Any]: ...


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _error(exc: BaseException, status: int | None = None, headers: dict[str, str] | None = None) -> Response:
    code, body = error_reply(exc)
    return _json(status or code, body, headers)


class HttpEndpoint:
    """A uvicorn server on one bound socket, dispatching actions to served things."""

    def __init__(self, rt: Any, sock: socket.socket, host: str) -> None:
        self.runtime = rt
        self.sock = sock
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.routes: dict[str, Member] = {}
        self.served: list[Member] = []
        self.server: Any = None
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return ("http", self.host, self.port)

    # -- lifecycle (on the runtime loop) -----------------------------------------
    async def open(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            http=_http_impl(),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        while not self.server.started:
            if self._task.done():
                self.sock.close()
                raise OSError(f"the HTTP server on port {self.port} could not start; see the svckit log")
            await asyncio.sleep(0.002)
        ports(self.runtime)[self.key] = self

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        except (Exception, SystemExit):  # uvicorn exits on startup failures: never let it end the loop
            logger.exception("HTTP server on port %s ended", self.port)

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (5 s at most), free the port."""
        self.closed = True
        table = ports(self.runtime)
        if table.get(self.key) is self:
            del table[self.key]
        self.routes = {}
        self.served = []
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
        self.sock.close()

    # -- the dispatch table (changed from the caller's thread; read on the loop) --------
    def check(self, served: Member, actions: list[str]) -> dict[str, Member]:
        """The dispatch table with ``served`` serving ``actions``; raises ``WiringError`` on a
        clash with a running served thing (a stopped one's actions are taken over)."""
        routes = {a: s for a, s in self.routes.items() if s is not served}
        for action in actions:
            owner = routes.get(action)
            if owner is not None and owner.state is not State.STOPPED:
                raise WiringError(
                    f"Port {self.port} already serves action {action!r} for {owner.name!r}; "
                    "serve under another name or on another port."
                )
            routes[action] = served
        return routes

    def attach(self, served: Member) -> None:
        """Add (or refresh) a served thing's actions in this port's dispatch table."""
        routes = self.check(served, served.actions)
        evicted = {id(s) for s in self.routes.values() if s is not served} - {id(s) for s in routes.values()}
        self.routes = routes
        self.served = [s for s in self.served if id(s) not in evicted]
        if served not in self.served:
            self.served.append(served)

    def park(self, served: Member) -> bool:
        """``served`` stopped: its actions stay (answered 503) while others serve here. True
        when nothing running is left on this port (then close it)."""
        return not any(s is not served and s.state is not State.STOPPED for s in self.served)

    def detach(self, served: Member) -> bool:
        """Remove a served thing's actions; True when nothing running is left on this port."""
        self.routes = {a: s for a, s in self.routes.items() if s is not served}
        if served in self.served:
            self.served.remove(served)
        return not any(s.state is not State.STOPPED for s in self.served)

    # -- the ASGI app ------------------------------------------------------------
    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        action = path.strip("/")
        method: str = scope["method"]
        if method == "POST":
            response = await self._post(action, scope, receive)
        elif method in ("GET", "HEAD"):
            response = self._get(action, scope)
        else:
            unknown = UnknownAction(f"Method {method} is not served; use POST /{{action}} or GET.")
            response = _error(unknown, 405, {"Allow": "GET, POST"})
        await response(scope, receive, send)

    async def _post(self, action: str, scope: dict[str, Any], receive: Any) -> Response:
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        length = headers.get("content-length")
        size = int(length) if length is not None and length.isdigit() else 0
        client = scope.get("client")
        request = Request(
            "http",
            action,
            None,
            size=size,
            headers=headers,
            peer=f"{client[0]}:{client[1]}" if client else None,
            request_id=headers.get("x-request-id"),
            token=_token(headers),
            read=lambda limit: _read_body(receive, limit),
        )
        served = self.routes.get(action)
        if served is None:
            known = ", ".join(self.routes) or "none"
            unknown = UnknownAction(f"No action {action!r} on port {self.port}; actions here: {known}.")
            if self.served:  # counted by the first served thing on the port
                status, body = self.served[0].path.reject(unknown, request)
            else:
                status, body = error_reply(unknown, request_id=request.id)
        else:
            status, body = await served.path.handle(request)
        return _json(status, body, {"X-Request-ID": request.id})

    def _get(self, action: str, scope: dict[str, Any]) -> Response:
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        prefix = self._prefix(scope, headers)
        tokens = [s.path.token for s in self.served if s.path.token is not None]
        given = _token(headers)
        if action != "health" and tokens and not any(_same(given, t) for t in tokens):
            # status, the index and the schema tell what is served and its last errors
            return _error(Unauthorized("This port is served with a token: send 'Authorization: Bearer <token>'."))
        if action == "health":
            bad = [s.name for s in self.served if s.state is not State.RUNNING]
            health = {"status": "ok" if not bad else "unavailable", "not_running": bad}
            return _json(200 if not bad else 503, encode(health))
        if action == "status":
            return _json(200, encode({"port": self.port, "served": {s.name: s.status() for s in self.served}}))
        if action == "openapi.json":
            from .openapi import build

            return _json(200, encode(build(self.routes, prefix)))
        if action == "":
            links = {name: f"{prefix}/{path}" for name, path in _LINKS.items()}
            index = {"actions": {a: f"{prefix}/{a}" for a in self.routes}, "links": links}
            return _json(200, encode(index))
        if action in self.routes:
            return _error(UnknownAction(f"{action!r} takes POST with a JSON object body."), 405, {"Allow": "POST"})
        return _error(UnknownAction(f"Nothing at GET /{action}; try GET /, /status or /openapi.json."))

    @staticmethod
    def _prefix(scope: dict[str, Any], headers: dict[str, str]) -> str:
        forwarded = headers.get("x-forwarded-prefix")
        prefix = forwarded if forwarded is not None else scope.get("root_path", "")
        return prefix.rstrip("/")


def _token(headers: dict[str, str]) -> str | None:
    """The credential a request carries: ``Authorization: Bearer <token>`` (the scheme in any
    case, as RFC 9110 says), or ``X-Svckit-Token``."""
    given = headers.get("authorization")
    if given is not None:
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    return headers.get("x-svckit-token")


def _same(given: str | None, token: str) -> bool:
    return hmac.compare_digest((given or "").encode(), token.encode())


async def _read_body(receive: Any, limit: int | None) -> bytes:
    """The request body, streamed under ``limit`` bytes (``PayloadTooLarge`` past it)."""
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("The client closed the connection before it sent the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
