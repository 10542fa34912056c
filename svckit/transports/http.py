"""HTTP transport: one uvicorn server per port on the runtime loop, with a dispatch table.

The ASGI app answers ``POST /{action}`` through ``Served.handle`` and serves
``GET /``, ``/health``, ``/status`` and ``/openapi.json``. Several served things may
share a port; each adds its actions to the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from ..errors import PayloadTooLarge, Unauthorized, UnknownAction, WiringError, error_body, status_of
from ..served import encode

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..served import Served

__all__ = ["HttpEndpoint"]

logger = logging.getLogger(__name__)

_JSON = "application/json"
_LINKS = {"status": "status", "health": "health", "openapi": "openapi.json"}


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _reply(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type=_JSON)


def _error(exc: BaseException, status: int | None = None, headers: dict[str, str] | None = None) -> Response:
    return _json(status or status_of(exc), encode({"error": error_body(exc)}), headers)


class HttpEndpoint:
    """A uvicorn server on one bound socket, dispatching actions to served things."""

    def __init__(self, rt: Runtime, sock: socket.socket, host: str) -> None:
        self.runtime = rt
        self.sock = sock
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.routes: dict[str, Served] = {}
        self.served: list[Served] = []
        self.server: Any = None
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
        self.runtime.endpoints[self.key] = self

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        except (Exception, SystemExit):  # uvicorn exits on startup failures: never let it end the loop
            logger.exception("HTTP server on port %s ended", self.port)

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (5 s at most), free the port."""
        self.runtime.endpoints.pop(self.key, None)
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
        self.sock.close()

    def check(self, served: Served, actions: list[str]) -> dict[str, Served]:
        """The dispatch table with ``served`` serving ``actions``; raises ``WiringError`` on a clash."""
        routes = {a: s for a, s in self.routes.items() if s is not served}
        for action in actions:
            owner = routes.get(action)
            if owner is not None:
                raise WiringError(
                    f"Port {self.port} already serves action {action!r} for {owner.name!r}; "
                    "serve under another name or on another port."
                )
            routes[action] = served
        return routes

    def attach(self, served: Served) -> None:
        """Add (or refresh) a served thing's actions in this port's dispatch table."""
        self.routes = self.check(served, served.actions)
        if served not in self.served:
            self.served.append(served)

    def detach(self, served: Served) -> bool:
        """Remove a served thing's actions; True when nothing is left on this port."""
        self.routes = {a: s for a, s in self.routes.items() if s is not served}
        if served in self.served:
            self.served.remove(served)
        return not self.served

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
        served = self.routes.get(action)
        if served is None:
            known = ", ".join(self.routes) or "none"
            return _error(UnknownAction(f"No action {action!r} on port {self.port}; actions here: {known}."))
        if served.token is not None and not self._authorized(scope, served.token):
            refused = Unauthorized(f"{served.name!r} needs a token: send 'Authorization: Bearer <token>'.")
            return _reply(*served.reject(refused, "http", action))
        limit = served.max_body
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            too_large = PayloadTooLarge(f"The request body is {length} bytes; the limit is {limit}.")
            return _reply(*served.reject(too_large, "http", action, int(length)))
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Response(status_code=499)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
                return _reply(*served.reject(too_large, "http", action, size))
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return _reply(*await served.handle(action, raw, "http"))

    def _get(self, action: str, scope: dict[str, Any]) -> Response:
        prefix = self._prefix(scope)
        tokens = [s.token for s in self.served if s.token is not None]
        if action != "health" and tokens and not any(self._authorized(scope, t) for t in tokens):
            # status, the index and the schema tell what is served and its last errors
            return _error(Unauthorized("This port is served with a token: send 'Authorization: Bearer <token>'."))
        if action == "health":
            bad = [s.name for s in self.served if s.state.value != "running"]
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
    def _prefix(scope: dict[str, Any]) -> str:
        forwarded = _header(scope, b"x-forwarded-prefix")
        prefix = forwarded if forwarded is not None else scope.get("root_path", "")
        return prefix.rstrip("/")

    @staticmethod
    def _authorized(scope: dict[str, Any], token: str) -> bool:
        given = _header(scope, b"authorization") or ""
        if given.startswith("Bearer "):
            given = given[7:]
        else:
            given = _header(scope, b"x-svckit-token") or ""
        return hmac.compare_digest(given.encode(), token.encode())


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
