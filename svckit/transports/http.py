"""HTTP transport: one uvicorn server per port on the runtime loop, with a dispatch table.

The ASGI app routes ``POST /{action}`` to the request path of the served thing that has
the action, and serves ``GET /``, ``/health``, ``/status`` and ``/openapi.json``. Several
served things may share a port; each adds its actions to the table. A stopped one keeps
its actions while others serve on the port, so its clients get ``ServiceUnavailable``
(503), not ``UnknownAction``; another served thing may take them over.

What a request may see follows its token: a token-protected served thing's actions,
status and schema are shown only to requests with its token (served things without a
token are public), and an unknown action is answered after the token is checked, listing
only what the token opens. The pages served here pass the browser checks of
``access.Guard`` (``Host``, ``Origin``) with every served thing's ``allow_hosts`` and
``allow_origins``; a POST to an action passes its served thing's own (``access.browser_check``,
in its request path). A page of an origin in ``allow_origins`` may call across sites (CORS).

Connections are uvicorn's, bounded by ``h1.Bounds`` with the limits of the served thing
attached last: ``max_header``, ``limit_concurrency``, ``read_timeout``; closing waits for
requests in flight at most ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from typing import Any, Protocol

from starlette.responses import Response

from ..access import Guard
from ..codec import encode, error_reply
from ..errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    SvckitError,
    Unauthorized,
    UnknownAction,
    WiringError,
)
from ..limits import Access, Limits
from ..middleware import Request
from ..net import ports
from ..request import RequestPath
from ..state import State
from .h1 import SCOPE_REQUEST, SCOPE_TASK, SCOPE_TIMED_OUT, Bounds, protocol_class

__all__ = ["HttpEndpoint", "Member"]

logger = logging.getLogger(__name__)

_JSON = "application/json"
_LINKS = {"status": "status", "health": "health", "openapi": "openapi.json"}
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Request-ID, X-Svckit-Token",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


class Member(Protocol):
    """What an HTTP endpoint needs of a served thing (``served.Served``)."""

    name: str
    path: RequestPath
    node: Any

    @property
    def actions(self) -> list[str]: ...
    @property
    def state(self) -> State: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def access(self) -> Access: ...
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
    """A uvicorn server on one bound socket, dispatching actions to served things.

    ``limits`` are the first served thing's; each one attached later brings its own
    (``max_header``, ``limit_concurrency``, ``read_timeout`` and ``drain_timeout`` are the
    port's, so the latest attached sets them for the connections that follow).
    """

    def __init__(self, rt: Any, sock: socket.socket, host: str, limits: Limits | None = None) -> None:
        self.runtime = rt
        self.sock = sock
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.routes: dict[str, Member] = {}
        self.served: list[Member] = []
        self.server: Any = None
        self.closed = False
        limits = limits if limits is not None else Limits()
        self.bounds = Bounds(limits, self.port)
        self.drain_timeout = limits.drain_timeout
        self.guard = Guard((), host, lambda: self.port)  # for what the port serves itself
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
            http=protocol_class(self.bounds, _http_impl()),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        loop = self._loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._serve())
        while not self.server.started:
            if self._task.done():
                self.sock.close()
                raise OSError(f"the HTTP server on port {self.port} could not start; see the svckit log")
            await asyncio.sleep(0.002)
        self.bounds.start(loop, self.server.server_state.connections)
        ports(self.runtime)[self.key] = self

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        except (Exception, SystemExit):  # uvicorn exits on startup failures: never let it end the loop
            logger.exception("HTTP server on port %s ended", self.port)

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (``grace`` s, by default the port's
        ``drain_timeout``), answer any still running ``ServiceUnavailable`` (503), free the
        port. Returns as soon as nothing is in flight."""
        self.closed = True
        table = ports(self.runtime)
        if table.get(self.key) is self:
            del table[self.key]
        self.routes = {}
        self.served = []
        server = self.server
        if server is not None and server.started:
            await self._drain(server, self.drain_timeout if grace is None else grace)
        self.bounds.stop()
        if self._task is not None:
            self._task.cancel()  # uvicorn's main loop: what its shutdown would do is done
            await asyncio.wait([self._task], timeout=1.0)
        self.sock.close()

    async def _drain(self, server: Any, grace: float) -> None:
        state = server.server_state
        for listener in getattr(server, "servers", ()):
            listener.close()
        self.sock.close()
        for conn in list(state.connections):
            try:
                conn.shutdown()  # idle ones close now; one with a request in flight after its reply
            except Exception:  # h11 may refuse to say goodbye on a connection it saw fail
                conn.transport.close()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=grace)
        left = [task for task in state.tasks if not task.done()]
        for task in left:
            task.cancel()  # answered 503 JSON (``_cut_short``), never uvicorn's plain-text 500
        if left:
            await asyncio.wait(left, timeout=1.0)
        for conn in list(state.connections):
            conn.transport.close()
        await asyncio.sleep(0)  # let the closed connections' connection_lost run

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
        """Add (or refresh) a served thing's actions in this port's dispatch table; its limits
        become the port's."""
        routes = self.check(served, served.actions)
        evicted = {id(s) for s in self.routes.values() if s is not served} - {id(s) for s in routes.values()}
        self.routes = routes
        self.served = [s for s in self.served if id(s) not in evicted]
        if served not in self.served:
            self.served.append(served)
        limits = served.limits
        self.bounds.configure(limits)
        self.drain_timeout = limits.drain_timeout
        self._guard_again()

    def _guard_again(self) -> None:
        self.guard = Guard([s.access for s in self.served], self.host, lambda: self.port)

    def park(self, served: Member) -> bool:
        """``served`` stopped: its actions stay (answered 503) while others serve here. True
        when nothing running is left on this port (then close it)."""
        return not any(s is not served and s.state is not State.STOPPED for s in self.served)

    def detach(self, served: Member) -> bool:
        """Remove a served thing's actions; True when nothing running is left on this port."""
        self.routes = {a: s for a, s in self.routes.items() if s is not served}
        if served in self.served:
            self.served.remove(served)
            self._guard_again()
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
            posted = await self._post(action, scope, receive)
            if posted is None:
                return  # the client went away: nobody to answer (counted as disconnected)
            response = posted
        elif method in ("GET", "HEAD"):
            response = self._get(action, scope)
        elif method == "OPTIONS":
            response = self._options(scope)
        else:
            response = self._refused(scope) or _error(
                UnknownAction(f"Method {method} is not served; use POST /{{action}} or GET."),
                405,
                {"Allow": "GET, POST"},
            )
        await response(scope, receive, send)

    async def _post(self, action: str, scope: dict[str, Any], receive: Any) -> Response | None:
        """The reply to ``POST /{action}``; None when the client went away before it."""
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
            read=lambda limit: _read_body(receive, limit, scope),
        )
        served = self.routes.get(action)
        if served is None:
            status, body = self._unknown(action, request)
        else:
            # for the connection: a client that goes away cancels this task (``h1``)
            scope[SCOPE_REQUEST] = request
            scope[SCOPE_TASK] = asyncio.current_task(self._loop)
            try:
                status, body = await served.path.handle(request)
            except asyncio.CancelledError:
                return self._cut_short(request)
            finally:
                # no cycle scope -> request -> its reader -> scope: freed without the collector
                scope[SCOPE_REQUEST] = scope[SCOPE_TASK] = None
        extra = {"X-Request-ID": request.id}
        if status == 413:
            extra["Connection"] = "close"  # the rest of that body is not worth reading
        origin = headers.get("origin")
        if origin is not None and self.guard.origins:
            self._cors(extra, origin)
        return _json(status, body, extra)

    def _cut_short(self, request: Request) -> Response | None:
        """The answer for a request cancelled while handled (the port closing past its grace):
        503 JSON, never uvicorn's plain-text 500; None when its client went away."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if request.gone:
            return None
        gone = ServiceUnavailable(f"The HTTP server on port {self.port} closed before it answered.")
        return _error(gone, None, {"Connection": "close", "X-Request-ID": request.id})

    def _unknown(self, action: str, request: Request) -> tuple[int, bytes]:
        """No served thing here has ``action``: refused by the port's checks, then by the
        token, before anything served here is named; else 404 with what the token opens."""
        counter = self.served[0] if self.served else None
        try:
            self.guard.check(request.headers, request.peer, post=True)
            visible = self._visible(request.token if isinstance(request.token, str) else None)
            if visible is None:
                raise Unauthorized("This port is served with a token: send 'Authorization: Bearer <token>'.")
            counter = visible[0] if visible else counter
            known = ", ".join(a for a, s in self.routes.items() if any(s is v for v in visible)) or "none"
            raise UnknownAction(f"No action {action!r} on port {self.port}; actions here: {known}.")
        except SvckitError as exc:
            if counter is not None:
                counter.path.reject(exc, request)  # counted; the reply names no served thing
            return error_reply(exc, request_id=request.id)

    def _visible(self, given: str | None) -> list[Member] | None:
        """The served things a request with token ``given`` may see: those without a token and
        those whose token it carries; None when it may see nothing (or its token opens none)."""
        served = self.served
        if all(s.path.token is None for s in served):
            return list(served)
        opened = [s for s in served if s.path.token is not None and given is not None and _same(given, s.path.token)]
        if given is not None and not opened:
            return None
        visible = [s for s in served if s.path.token is None or any(s is o for o in opened)]
        return visible or None

    def _refused(self, scope: dict[str, Any], headers: dict[str, str] | None = None) -> Response | None:
        """The port's browser checks (``Host``, ``Origin``) for what it serves itself."""
        if headers is None:
            headers = _headers(scope)
        client = scope.get("client")
        try:
            self.guard.check(headers, f"{client[0]}:{client[1]}" if client else None, post=False)
        except SvckitError as exc:
            return _error(exc)
        return None

    def _get(self, action: str, scope: dict[str, Any]) -> Response:
        headers = _headers(scope)
        refused = self._refused(scope, headers)
        if refused is not None:
            return refused
        prefix = self._prefix(scope, headers)
        visible = self._visible(_token(headers))
        extra: dict[str, str] = {}
        origin = headers.get("origin")
        if origin is not None and self.guard.origins:
            self._cors(extra, origin)
        if action == "health":
            bad = [s for s in self.served if s.state is not State.RUNNING]
            names = [s.name for s in bad if visible is not None and any(s is v for v in visible)]
            health = {"status": "ok" if not bad else "unavailable", "not_running": names}
            return _json(200 if not bad else 503, encode(health), extra)
        if visible is None:
            # status, the index and the schema tell what is served and its last errors
            unauthorized = Unauthorized("This port is served with a token: send 'Authorization: Bearer <token>'.")
            return _error(unauthorized, None, extra)
        routes = {a: s for a, s in self.routes.items() if any(s is v for v in visible)}
        if action == "status":
            body = {"port": self.port, "served": {s.name: s.status() for s in visible}}
            return _json(200, encode(body), extra)
        if action == "openapi.json":
            from .openapi import build

            return _json(200, encode(build(routes, prefix)), extra)
        if action == "":
            links = {name: f"{prefix}/{path}" for name, path in _LINKS.items()}
            index = {"actions": {a: f"{prefix}/{a}" for a in routes}, "links": links}
            return _json(200, encode(index), extra)
        if action in routes:
            return _error(UnknownAction(f"{action!r} takes POST with a JSON object body."), 405, {"Allow": "POST"})
        return _error(UnknownAction(f"Nothing at GET /{action}; try GET /, /status or /openapi.json."))

    def _options(self, scope: dict[str, Any]) -> Response:
        """A CORS preflight from a page of an origin in ``allow_origins``; else 405."""
        headers = _headers(scope)
        refused = self._refused(scope, headers)
        if refused is not None:
            return refused
        origin = headers.get("origin")
        if origin is None or "access-control-request-method" not in headers or not self.guard.allows_origin(origin):
            not_served = UnknownAction("Method OPTIONS is served only for CORS preflights from allow_origins.")
            return _error(not_served, 405, {"Allow": "GET, POST"})
        return Response(status_code=204, headers={"Access-Control-Allow-Origin": origin, **_CORS_PREFLIGHT})

    def _cors(self, extra: dict[str, str], origin: str) -> None:
        """Let a page of an allowed origin read the reply."""
        if self.guard.allows_origin(origin):
            extra["Access-Control-Allow-Origin"] = origin
            extra["Access-Control-Expose-Headers"] = "X-Request-ID"
            extra["Vary"] = "Origin"

    @staticmethod
    def _prefix(scope: dict[str, Any], headers: dict[str, str]) -> str:
        forwarded = headers.get("x-forwarded-prefix")
        prefix = forwarded if forwarded is not None else scope.get("root_path", "")
        return prefix.rstrip("/")


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


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


async def _read_body(receive: Any, limit: int | None, scope: dict[str, Any]) -> bytes:
    """The request body, streamed under ``limit`` bytes (``PayloadTooLarge`` past it)."""
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            if scope.get(SCOPE_TIMED_OUT):
                raise RequestTimeout("The request body did not arrive within the read_timeout.")
            raise BadRequest("The client closed the connection before it sent the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
