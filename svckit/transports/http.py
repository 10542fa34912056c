"""HTTP transport: one uvicorn server per port on the runtime loop, with a dispatch table.

The ASGI app routes ``POST /{action}`` to the request path of the served thing that has
the action, and serves ``GET /``, ``/health``, ``/status`` and ``/openapi.json``. Several
served things may share a port; each adds its actions to the table. A stopped one keeps
its actions while others serve on the port, so its clients get ``ServiceUnavailable``
(503), not ``UnknownAction``; another served thing may take them over.

What a request may see follows its token and each served thing's own browser rules: a
token-protected served thing's actions, status and schema are shown only to requests with
its token (served things without a token are public), and only to requests that pass that
served thing's own ``access.Guard`` (``Host``, ``Origin``, its ``allow_hosts`` and
``allow_origins``): one served thing's ``allow_hosts=["*"]`` opens no other's page. A page
(``GET /``, ``/status``, ``/openapi.json``, ``/health``), an unknown action or a CORS
preflight not to an action is refused (403/415) unless at least one served thing admits
it, and then shows only those that do; a preflight to an action, and a POST to one (its
``access.browser_check``, in its request path), follow that served thing's rules alone. An
unknown action is answered after the token is checked, listing only what is shown. CORS
headers go out only when every served thing shown lists the origin in ``allow_origins``.

Connections are uvicorn's, bounded by ``h1.Bounds`` with the strictest limits of the
served things on the port (not stopped): the smallest ``max_header``,
``limit_concurrency``, ``read_timeout`` and ``drain_timeout`` (closing waits for requests
in flight at most that long), taken again on every attach, park and detach.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import socket
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
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
_LINKS = {"status": "status", "health": "health", "openapi": "openapi.json", "docs": "docs"}
#: What the port answers itself, with GET (and HEAD): never actions.
_PAGES = frozenset(("", "health", "status", "openapi.json", "docs"))
_PAGE_METHODS = "GET, HEAD"
#: What a page of an allowed origin may send besides the CORS-safelisted headers.
_CORS_HEADERS = ("Authorization", "X-Request-ID", "X-Svckit-Token", "Last-Event-ID", "Cache-Control")


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
    def methods_for(self, action: str) -> tuple[str, ...]: ...


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

    ``limits`` hold until a served thing is attached; from then on ``max_header``,
    ``limit_concurrency``, ``read_timeout`` and ``drain_timeout`` are the strictest (the
    smallest) of the served things on the port that are not stopped, so a served thing
    attached later with looser limits loosens no one's.
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
        self.guard = Guard((), host, self._port_number)  # for a port with nothing served
        self.guards: list[tuple[Member, Guard, bool]] = []  # each served thing's own, its token
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cors_apps: dict[tuple[str, ...], CORSMiddleware] = {}

    def _port_number(self) -> int:
        return self.port

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
        """Add (or refresh) a served thing's actions in this port's dispatch table; the port's
        limits become the strictest of its served things'."""
        routes = self.check(served, served.actions)
        evicted = {id(s) for s in self.routes.values() if s is not served} - {id(s) for s in routes.values()}
        self.routes = routes
        self.served = [s for s in self.served if id(s) not in evicted]
        if served not in self.served:
            self.served.append(served)
        self._limit()
        self._guard_again()

    def _limit(self, leaving: Member | None = None) -> None:
        """The strictest limits of the served things here that still serve (all of them when
        every one is stopped; unchanged when none is left)."""
        here = [s for s in self.served if s is not leaving]
        members = [s for s in here if s.state is not State.STOPPED] or here
        if not members:
            return
        each = [s.limits for s in members]
        strictest = Limits(
            max_header=min(x.max_header for x in each),
            limit_concurrency=min(x.limit_concurrency for x in each),
            read_timeout=min(x.read_timeout for x in each),
            drain_timeout=min(x.drain_timeout for x in each),
        )
        self.bounds.configure(strictest)
        self.drain_timeout = strictest.drain_timeout

    def _guard_again(self) -> None:
        guards = []
        for s in self.served:
            tokened = s.path.token is not None
            guards.append((s, Guard([s.access], self.host, self._port_number, None, tokened), tokened))
        self.guards = guards

    def park(self, served: Member) -> bool:
        """``served`` stopped: its actions stay (answered 503) while others serve here. True
        when nothing running is left on this port (then close it)."""
        self._limit(leaving=served)
        return not any(s is not served and s.state is not State.STOPPED for s in self.served)

    def detach(self, served: Member) -> bool:
        """Remove a served thing's actions; True when nothing running is left on this port."""
        self.routes = {a: s for a, s in self.routes.items() if s is not served}
        if served in self.served:
            self.served.remove(served)
            self._limit()
            self._guard_again()
        return not any(s.state is not State.STOPPED for s in self.served)

    # -- the browser checks of each served thing, for what the port answers itself --------
    def _admitting(
        self, headers: Mapping[str, str], peer: str | None, post: bool, among: Member | None = None
    ) -> list[Member]:
        """The served things (only ``among`` when given) whose own browser checks pass the
        request; raises the first refusal when none does."""
        guards = self.guards
        if any((s.path.token is not None) is not tokened for s, _, tokened in guards):
            self._guard_again()  # a re-serve brought or took a token
            guards = self.guards
        if among is not None:
            guards = [g for g in guards if g[0] is among]
        if not guards:
            self.guard.check(headers, peer, post)
            return []
        admitted = []
        refusal: SvckitError | None = None
        for served, guard, _ in guards:
            try:
                guard.check(headers, peer, post)
            except SvckitError as exc:
                refusal = refusal or exc
                continue
            admitted.append(served)
        if not admitted and refusal is not None:
            raise refusal
        return admitted

    def _guard_of(self, served: Member) -> Guard | None:
        for s, guard, _ in self.guards:
            if s is served:
                return guard
        return None

    def _cors(self, origin: str | None, shown: list[Member]) -> CORSMiddleware | None:
        """Starlette's CORS middleware for a reply a page of ``origin`` may read: when every
        served thing it shows lists ``origin`` in ``allow_origins``; else None."""
        if origin is None or not shown:
            return None
        for served in shown:
            guard = self._guard_of(served)
            if guard is None or not guard.allows_origin(origin):
                return None
        return self._cors_of(shown[0])

    def _cors_of(self, served: Member) -> CORSMiddleware:
        """The CORS middleware of ``served``'s ``allow_origins`` (one per set, kept)."""
        origins = tuple(sorted({o.lower().rstrip("/") for o in served.access.allow_origins}))
        cors = self._cors_apps.get(origins)
        if cors is None:
            if len(self._cors_apps) >= 64:
                self._cors_apps.clear()  # re-serves with ever new origins: bounded
            cors = self._cors_apps[origins] = CORSMiddleware(
                _no_app,
                allow_origins=origins,
                allow_methods=("GET", "POST"),
                allow_headers=_CORS_HEADERS,
                expose_headers=("X-Request-ID",),
                allow_credentials=False,  # a token travels in a header; cookies are never asked for
                allow_private_network=True,  # a public page calling 127.0.0.1 asks for this too
                max_age=600,
            )
        return cors

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
        served = self.routes.get(action)
        cors: CORSMiddleware | None = None
        if method == "POST" or (method == "GET" and served is not None and "GET" in served.methods_for(action)):
            allowed = served.methods_for(action) if served is not None else ("POST",)
            if served is not None and method not in allowed and not _opens(served, scope):
                # a caller without its token learns nothing of it, not even what it takes:
                # answered as for an action that is not there (401, or 404 naming the public ones)
                served, allowed = None, ("POST",)
            if method not in allowed or (served is None and _is_page(action)):
                response = self._refused(scope) or _not_allowed(method, action, allowed if served else None)
            elif served is not None and action == served.name and _streams(served):
                await self._stream(action, served, scope, receive, send, method)
                return
            else:
                answer = await self._call(action, served, scope, receive, method)
                if answer is None:
                    return  # the client went away: nobody to answer (counted as disconnected)
                # the two ASGI messages written here: a starlette Response costs ~1.5 us more a request
                status, body, extra, cors = answer
                head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *extra]
                if cors is not None:
                    send = functools.partial(cors.send, send=send, request_headers=Headers(scope=scope))
                await send({"type": "http.response.start", "status": status, "headers": head})
                await send({"type": "http.response.body", "body": body})
                return
        elif method in ("GET", "HEAD"):
            response, cors = self._get(action, scope)
        elif method == "OPTIONS":
            response = self._options(action, scope)
        else:
            methods = served.methods_for(action) if served is not None and _opens(served, scope) else None
            response = self._refused(scope) or _not_allowed(method, action, methods)
        if cors is not None:
            send = functools.partial(cors.send, send=send, request_headers=Headers(scope=scope))
        await response(scope, receive, send)

    async def _stream(
        self, action: str, served: Member, scope: dict[str, Any], receive: Any, send: Any, method: str
    ) -> None:
        """A streaming action's reply: each message as it comes, as Server-Sent Events when
        the request accepts ``text/event-stream``, else as newline-delimited JSON. An error
        before the first message is the usual JSON error reply with its status; one after
        it ends the stream as a last line (``{"error": ...}``) or an ``error`` event."""
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        stream = _Stream(send, sse=b"text/event-stream" in accept.lower())
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        cors = self._cors(origin.decode("latin-1"), [served]) if origin is not None else None
        if cors is not None:
            stream.send = functools.partial(cors.send, send=send, request_headers=Headers(scope=scope))
        answer = await self._call(action, served, scope, receive, method, stream)
        if answer is None:
            return
        status, body, extra, _ = answer
        await stream.finish(status, body, extra)

    async def _call(
        self,
        action: str,
        served: Member | None,
        scope: dict[str, Any],
        receive: Any,
        method: str,
        stream: _Stream | None = None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], CORSMiddleware | None] | None:
        """The reply to ``POST /{action}`` (or ``GET /{action}?field=value`` for an action that
        takes GET): status, JSON body, extra headers and the CORS middleware to send it
        through; None when the client went away before it."""
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        client = scope.get("client")
        if method == "GET":
            query: bytes = scope.get("query_string", b"")
            size = len(query)
            target: Any = None
            if served is not None:
                target = served.node if action == served.name else served.params_for(action)
            read = functools.partial(_query_body, target, query)
        else:
            length = headers.get("content-length")
            size = int(length) if length is not None and length.isdigit() else 0
            read = functools.partial(_read_body, receive, scope=scope)
        request = Request(
            "http",
            action,
            None,
            size=size,
            headers=headers,
            peer=f"{client[0]}:{client[1]}" if client else None,
            request_id=headers.get("x-request-id"),
            token=_token(headers),
            read=read,
            method=method,
        )
        if stream is not None:
            stream.request_id = request.id.encode("latin-1")
            request.emit = stream.emit
        if served is None:
            status, body, shown = self._unknown(action, request)
        else:
            shown = [served]
            # for the connection: a client that goes away cancels this task (``h1``)
            scope[SCOPE_REQUEST] = request
            scope[SCOPE_TASK] = asyncio.current_task(self._loop)
            try:
                status, body = await served.path.handle(request)
            except asyncio.CancelledError:
                cut = self._cut_short(request)
                return None if cut is None else (*cut, None)
            finally:
                # no cycle scope -> request -> its reader -> scope: freed without the collector
                scope[SCOPE_REQUEST] = scope[SCOPE_TASK] = None
        extra = [(b"x-request-id", request.id.encode("latin-1"))]
        if status == 413:
            extra.append((b"connection", b"close"))  # the rest of that body is not worth reading
        origin = headers.get("origin")
        return status, body, extra, (self._cors(origin, shown) if origin is not None else None)

    def _cut_short(self, request: Request) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """The answer for a request cancelled while handled (the port closing past its grace):
        503 JSON, never uvicorn's plain-text 500; None when its client went away."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if request.gone:
            return None
        gone = ServiceUnavailable(f"The HTTP server on port {self.port} closed before it answered.")
        status, body = error_reply(gone)
        return status, body, [(b"connection", b"close"), (b"x-request-id", request.id.encode("latin-1"))]

    def _unknown(self, action: str, request: Request) -> tuple[int, bytes, list[Member]]:
        """No served thing here has ``action``: refused unless some served thing's browser
        checks pass it, then by the token, before anything served here is named; else 404
        with what it may see (the body, and the served things shown, for CORS)."""
        counter = self.served[0] if self.served else None
        shown: list[Member] | None = None
        try:
            admitted = self._admitting(request.headers, request.peer, post=True)
            shown = self._shown(admitted, request.token if isinstance(request.token, str) else None)
            if shown is None:
                raise Unauthorized("This port is served with a token: send 'Authorization: Bearer <token>'.")
            counter = shown[0] if shown else counter
            known = ", ".join(a for a, s in self.routes.items() if any(s is v for v in shown)) or "none"
            raise UnknownAction(f"No action {action!r} on port {self.port}; actions here: {known}.")
        except SvckitError as exc:
            if counter is not None:
                counter.path.reject(exc, request)  # counted; the reply names no served thing
            return (*error_reply(exc, request_id=request.id), shown or [])

    def _shown(self, admitted: list[Member], given: str | None) -> list[Member] | None:
        """What a request that ``admitted`` served things' browser checks pass, with token
        ``given``, may see; None when that is nothing, for want of the right token."""
        visible = self._visible(given)
        if visible is None:
            return None
        shown = [s for s in visible if any(s is a for a in admitted)]
        if not shown and admitted:
            return None  # only served things with a token it does not carry let it in
        return shown

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

    def _refused(self, scope: dict[str, Any]) -> Response | None:
        """Refused (403) unless some served thing's browser checks (``Host``, ``Origin``) pass."""
        try:
            self._admitting(_headers(scope), _peer(scope), post=False)
        except SvckitError as exc:
            return _error(exc)
        return None

    def _get(self, action: str, scope: dict[str, Any]) -> tuple[Response, CORSMiddleware | None]:
        headers = _headers(scope)
        try:
            admitted = self._admitting(headers, _peer(scope), post=False)
        except SvckitError as exc:
            return _error(exc), None
        prefix = self._prefix(scope, headers)
        visible = self._shown(admitted, _token(headers))
        origin = headers.get("origin")
        cors = self._cors(origin, visible or admitted) if origin is not None else None
        if action == "health":
            bad = [s for s in admitted if s.state is not State.RUNNING]
            names = [s.name for s in bad if visible is not None and any(s is v for v in visible)]
            health = {"status": "ok" if not bad else "unavailable", "not_running": names}
            return _json(200 if not bad else 503, encode(health)), cors
        if action == "docs" or action.startswith("docs/"):
            from .docs import page  # static: the page asks for a token itself when the schema needs one

            return page(action[5:], prefix, {}), cors
        if visible is None:
            # status, the index and the schema tell what is served and its last errors
            unauthorized = Unauthorized("This port is served with a token: send 'Authorization: Bearer <token>'.")
            return _error(unauthorized), cors
        routes = {a: s for a, s in self.routes.items() if any(s is v for v in visible)}
        if action == "status":
            body = {"port": self.port, "served": {s.name: s.status() for s in visible}}
            return _json(200, encode(body)), cors
        if action == "openapi.json":
            from .openapi import build

            return _json(200, encode(build(routes, prefix))), cors
        if action == "":
            links = {name: f"{prefix}/{path}" for name, path in _LINKS.items()}
            index = {"actions": {a: f"{prefix}/{a}" for a in routes}, "links": links}
            return _json(200, encode(index)), cors
        if action in routes:
            return _not_allowed(scope["method"], action, routes[action].methods_for(action)), cors
        return _error(UnknownAction(f"Nothing at GET /{action}; try GET /, /status, /docs or /openapi.json.")), cors

    def _options(self, action: str, scope: dict[str, Any]) -> Response:
        """A CORS preflight from a page of an origin in ``allow_origins``, answered by
        Starlette's CORS middleware: of the served thing with ``action``, else of one that
        admits the request; else 405 (403 for a foreign origin)."""
        headers = _headers(scope)
        served = self.routes.get(action)
        try:
            admitted = self._admitting(headers, _peer(scope), post=False, among=served)
        except SvckitError as exc:
            return _error(exc)
        origin = headers.get("origin")
        allowing = None
        if origin is not None and "access-control-request-method" in headers:
            allowing = next((s for s in admitted if self._allows(s, origin)), None)
        if allowing is None:
            methods = served.methods_for(action) if served is not None and _opens(served, scope) else None
            return _not_allowed("OPTIONS", action, methods, preflight=True)
        return self._cors_of(allowing).preflight_response(request_headers=Headers(scope=scope))

    def _allows(self, served: Member, origin: str) -> bool:
        guard = self._guard_of(served)
        return guard is not None and guard.allows_origin(origin)

    @staticmethod
    def _prefix(scope: dict[str, Any], headers: dict[str, str]) -> str:
        forwarded = headers.get("x-forwarded-prefix")
        prefix = forwarded if forwarded is not None else scope.get("root_path", "")
        return prefix.rstrip("/")


class _Stream:
    """The reply of a streaming action on one HTTP connection: its head goes out with the
    first message (so an error before it keeps its status), then one chunk per message."""

    __slots__ = ("count", "request_id", "send", "sse", "started")

    def __init__(self, send: Any, sse: bool) -> None:
        self.send = send
        self.sse = sse
        self.started = False
        self.count = 0
        self.request_id = b""

    async def _start(self) -> None:
        self.started = True
        kind = b"text/event-stream" if self.sse else b"application/x-ndjson"
        head = [
            (b"content-type", kind),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies that buffer (nginx) pass it on at once
            (b"x-request-id", self.request_id),
        ]
        await self.send({"type": "http.response.start", "status": 200, "headers": head})

    async def emit(self, data: bytes) -> None:
        if not self.started:
            await self._start()
        self.count += 1
        chunk = b"data: " + data + b"\n\n" if self.sse else data + b"\n"
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def finish(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        """End the stream with the request path's answer: ``{"items": n}`` or an error body."""
        if not self.started and status != 200:
            head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *extra]
            await self.send({"type": "http.response.start", "status": status, "headers": head})
            await self.send({"type": "http.response.body", "body": body})
            return
        if not self.started:
            await self._start()  # a stream of no messages
        if self.sse:
            tail = (b"event: end\ndata: " if status == 200 else b"event: error\ndata: ") + body + b"\n\n"
        else:
            tail = b"" if status == 200 else body + b"\n"
        await self.send({"type": "http.response.body", "body": tail})


async def _no_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """What svckit's CORS middlewares wrap: nothing (they are asked for headers and preflights)."""


def _opens(served: Member, scope: dict[str, Any]) -> bool:
    """The request may learn of ``served``: it has no token, or the request carries it."""
    token = served.path.token
    return token is None or _same(_token(_headers(scope)), token)


def _streams(served: Member) -> bool:
    """Its action streams, in the generation a request arriving now is handled by."""
    node = served.path.gen.nodes.get(served.name)
    return node is not None and node.streams


def _is_page(action: str) -> bool:
    return action in _PAGES or action.startswith("docs/")


def _not_allowed(method: str, action: str, methods: tuple[str, ...] | None, preflight: bool = False) -> Response:
    """405 naming what ``/{action}`` takes (``methods`` of an action; None: a page or nothing)."""
    if methods is None and (_is_page(action) or preflight):
        allow = _PAGE_METHODS if _is_page(action) else "GET, POST"
        what = f"GET /{action}" if _is_page(action) else f"/{action}"
    elif methods is None:
        allow, what = "GET, POST", f"/{action}"
    else:
        allow, what = ", ".join(methods), f"Action {action!r}"
    if preflight:
        text = (
            "Method OPTIONS is served only for CORS preflights from a page of one of allow_origins; "
            f"{what} takes {allow}."
        )
    else:
        text = f"{what} takes {allow}, not {method}."
    return _error(UnknownAction(text), 405, {"Allow": allow})


async def _query_body(target: Any, query: bytes, limit: int | None) -> bytes:
    """The JSON message of a GET's query string (``?x=21&tag=a&tag=b``), each value coerced
    from its string by the annotated type of the field's reader (``fields.query_message``)."""
    from urllib.parse import parse_qsl

    from ..fields import query_message

    try:
        items = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="strict", max_num_fields=1000)
    except UnicodeDecodeError:
        raise BadRequest("The query string is not percent-encoded UTF-8.") from None
    except ValueError:
        raise BadRequest("The query string has more than 1000 fields.") from None
    return encode(query_message(target, items))


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}


def _peer(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


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


async def _read_body(receive: Any, limit: int | None, *, scope: dict[str, Any]) -> bytes:
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
