"""Middleware: code around every call. ``@sk.middleware``, ``sk.throttle``, the ``Request`` a
request-scope middleware sees, and svckit's own token check, body limit and request log.

A message-scope middleware ``mw(call, msg)`` gets the message and ``call``, which runs what it
wraps and returns the message after it. In a flow it wraps every stage after it
(``Wrapped``); in ``sk.serve(..., middleware=[...])`` it wraps every call of every transport.
A request-scope middleware ``mw(call, request)`` runs before the body is decoded and sees the
``Request``; ``call(request)`` returns the reply message. Both kinds may be ``async def``
(``await call(...)``), which is the fast kind: a plain ``def`` middleware served around
async stages runs in the worker pool and waits for the loop.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, ClassVar

from .callables import is_async_callable
from .errors import PayloadTooLarge, TooManyRequests, Unauthorized, WiringError
from .ids import accepted_id, format_request_id, next_number
from .params import check_name, merge
from .running import note_origin, noted
from .runtime import run_here, runtime
from .service import Service

__all__ = [
    "Middleware",
    "Request",
    "Throttle",
    "Wrapped",
    "body_limit",
    "middleware",
    "new_request_id",
    "request_log",
    "throttle",
    "token_check",
]

logger = logging.getLogger(__name__)
requests_log = logging.getLogger("svckit.requests")

_SCOPES = ("message", "request")


def new_request_id() -> str:
    """A request id unique to this process and run: ``<8 hex>-<counter in hex>``."""
    return str(format_request_id(next_number()))


class Request:
    """What a request-scope middleware sees: one request before its body is decoded.

    ``transport`` is ``"http"``, ``"zmq"`` or a pipeline's source (``"pull"``, ``"sub"``,
    ``"every"``, ``"loop"``); ``action`` what it asks for; ``headers`` the HTTP headers
    (lower-case names; empty over ZMQ); ``peer`` the client's address where known;
    ``size`` the body's size in bytes as announced (HTTP ``Content-Length``) or read;
    ``id`` the request id; ``token`` the credential it carries, if any; ``method`` the HTTP
    method (``"GET"`` for an action called with query fields; None off HTTP); ``emit``,
    set by a transport that streams, takes each encoded message of a streaming action.
    """

    __slots__ = (
        "_id",
        "_read",
        "action",
        "body",
        "emit",
        "ended",
        "gone",
        "headers",
        "limit",
        "method",
        "number",
        "peer",
        "size",
        "token",
        "transport",
    )

    def __init__(
        self,
        transport: str,
        action: str,
        body: bytes | None = b"",
        *,
        size: int | None = None,
        headers: Mapping[str, str] | None = None,
        peer: str | None = None,
        request_id: str | None = None,
        token: str | bytes | None = None,
        read: Callable[[int | None], Awaitable[bytes]] | None = None,
        method: str | None = None,
    ) -> None:
        self.transport = transport
        self.method = method if method is not None else ("POST" if transport == "http" else None)
        self.action = action
        self.body = body
        self.size = size if size is not None else len(body or b"")
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.peer = peer
        self._id = accepted_id(request_id)
        self.number = next_number()  # the id is made from it only when someone reads it
        self.token = token
        self.limit: int | None = None  # set by the body limit: what reading may take at most
        self.ended = False  # set by the request path: the message came out of the end of the flow
        self.gone = False  # set by a transport before it cancels a request whose client went away
        #: Set by a transport that streams: called with each encoded message of a streaming action.
        self.emit: Callable[[bytes], Awaitable[None]] | None = None
        self._read = read

    @property
    def id(self) -> str:
        """The request id: the one the client sent, else ``<8 hex>-<counter in hex>``."""
        if self._id is None:
            self._id = str(format_request_id(self.number))
        return self._id

    @property
    def trace_id(self) -> str | int:
        """The id as a traffic row keeps it: the number until the id is read (``metrics`` formats it)."""
        return self._id if self._id is not None else self.number

    @property
    def replies(self) -> bool:
        """True for a request a client waits on (HTTP, ZMQ); False for a pipeline message."""
        return self.transport in ("http", "zmq")

    async def read(self) -> bytes:
        """The body (read from the connection on first use, under ``limit``)."""
        if self.body is None:
            assert self._read is not None
            self.body = await self._read(self.limit)
            self.size = len(self.body)
        return self.body

    def __repr__(self) -> str:
        return f"<Request {self.id} {self.transport} {self.action!r} {self.size} bytes>"


class Middleware(Service):
    """A function around calls; made by ``@sk.middleware`` (see the module docstring).

    Examples
    --------
    >>> import svckit as sk
    >>> @sk.middleware
    ... def tagged(call, msg):
    ...     return {**call(msg), "tagged": True}
    >>> flow = tagged >> sk.service(lambda x: x + 1, name="inc")
    >>> flow(x=1)
    {'x': 1, 'inc': 2, 'tagged': True}
    """

    role: ClassVar[str] = "middleware"
    #: For a check that only looks at a request before calling on: the check itself.
    before: Callable[[Request], None] | None = None

    def __init__(self, fn: Callable[..., Any], *, scope: str = "message", name: str | None = None) -> None:
        if scope not in _SCOPES:
            raise WiringError(f"middleware(scope={scope!r}): the scope is 'message' or 'request'.")
        if not callable(fn):
            raise WiringError(f"@sk.middleware needs a function taking (call, msg), got {type(fn).__name__}.")
        _check_signature(fn)
        default = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None) or "middleware"
        self.fn = fn
        self.scope = scope
        self.name = check_name("middleware" if default == "<lambda>" else (name or default), "middleware name")
        self.output = self.name
        self.config = {}
        self._params = None
        self._actions = {}
        self.is_async = is_async_callable(fn)
        self.concurrent = self.is_async

    def run(self, msg: dict[str, Any]) -> None:
        """Standing last in a flow, a middleware wraps nothing: ``call`` returns the message."""
        Wrapped(self, None).run(msg)

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        await Wrapped(self, None).arun(msg, rt)

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        kind = "request middleware" if self.scope == "request" else "middleware"
        return f"<{kind.capitalize()} {self.name}>"


def _check_signature(fn: Callable[..., Any]) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    positional = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in positional):
        raise WiringError(
            f"Middleware {getattr(fn, '__name__', fn)!r} takes (call, msg): the call that runs what it "
            f"wraps, then the message (or the request, with scope='request'); it takes {len(positional)}."
        )


def _applied(msg: dict[str, Any], result: Any, output: str) -> None:
    """A middleware's return value, treated like a stage's: a dict is merged into the message."""
    if result is None or result is msg:
        return
    merge(msg, result, output)


def _passed(exc: BaseException) -> None:
    """``exc`` came out of ``call``: the middleware only let it through."""
    if not noted(exc):
        note_origin(exc, None)


def _count_failure(mw: Middleware, exc: BaseException) -> None:
    if not noted(exc):  # raised by the middleware itself, not by what it wraps
        mw.failures += 1
        note_origin(exc, mw.name)


class Wrapped(Service):
    """A message-scope middleware around ``inner`` (the rest of a flow, or a served node)."""

    _composite = True

    def __init__(self, mw: Middleware, inner: Service | None) -> None:
        self.mw = mw
        self.inner = inner
        self.name = mw.name if inner is None else f"{mw.name}({inner.name})"
        self.output = mw.output
        self.config = {}
        self._params = None
        self._actions = {}
        self.is_async = mw.is_async or (inner is not None and inner.is_async)
        self.concurrent = mw.is_async or (inner is not None and inner.concurrent)
        if inner is not None:
            self.methods = inner.methods
            self.streams = inner.streams
        self._calls: dict[int, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {}

    def run(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        mw, inner = self.mw, self.inner
        if mw.is_async:
            run_here(lambda rt: self.arun(msg, rt))
            return

        def call(message: dict[str, Any]) -> dict[str, Any]:
            __tracebackhide__ = True
            if inner is not None:
                try:
                    inner.run(message)
                except BaseException as exc:
                    _passed(exc)
                    raise
            return message

        mw.calls += 1
        try:
            result = mw.fn(call, msg)
        except Exception as exc:
            _count_failure(mw, exc)
            raise
        _applied(msg, result, mw.output)

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        mw = self.mw
        if not mw.is_async:
            await rt.blocking(self.run, msg)  # it may call `call` there: the rest runs in that thread
            return
        call = self._calls.get(id(rt))
        if call is None:
            call = self._calls[id(rt)] = self._make_call(rt)  # once per runtime, not per message
        mw.calls += 1
        try:
            result = await mw.fn(call, msg)
        except Exception as exc:
            _count_failure(mw, exc)
            raise
        if result is not None and result is not msg:
            merge(msg, result, mw.output)

    async def astream(self, msg: dict[str, Any], rt: Any) -> AsyncIterator[dict[str, Any]]:
        """Around a streaming ``inner``: the middleware is called once, and its ``call(msg)``
        returns once the stream has ended (with ``msg`` as given), while each message the
        stream yields goes out as it comes; what the middleware returns is not sent (its
        messages went out already), what it raises ends the stream with that error. A
        middleware that answers without calling on gives one message: ``msg`` with what it
        returned merged in, as a stage's return."""
        if not self.streams or self.inner is None:
            await self.arun(msg, rt)
            yield msg
            return
        forward = _Forward(self.inner, asyncio.Queue(maxsize=16))
        out = forward.out
        task = asyncio.ensure_future(Wrapped(self.mw, forward).arun(msg, rt))
        getter: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                if not out.empty():
                    yield out.get_nowait()
                    continue
                getter = asyncio.ensure_future(out.get())
                await asyncio.wait((getter, task), return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    item, getter = getter.result(), None
                    yield item
                    continue
                while not out.empty():
                    yield out.get_nowait()
                task.result()  # the middleware's (or the stream's) error, if any
                if not forward.started:
                    yield msg  # it answered itself
                return
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            forward.stop()  # a def middleware's stream runs as a task of its own: stopped too
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _make_call(self, rt: Any) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        inner = self.inner
        if inner is None:

            async def nothing(message: dict[str, Any]) -> dict[str, Any]:
                return message

            return nothing
        arun = inner.arun

        async def call(message: dict[str, Any]) -> dict[str, Any]:
            try:
                await arun(message, rt)
            except BaseException as exc:
                _passed(exc)
                raise
            return message

        return call

    def leaves(self) -> Iterator[Service]:
        yield self.mw
        if self.inner is not None:
            yield from self.inner.leaves()

    def describe(self) -> str:
        return self.name


class _Forward(Service):
    """What a middleware around a stream calls: runs the stream, handing each message to
    ``out`` (waiting while it is full), and leaves the message it was given as it is.

    From a ``def`` middleware's worker thread the stream runs as a task of its own on the
    loop; ``stop()`` (the stream's reader left, or its time ran out) cancels it, and with it
    the thread's wait."""

    _composite = True

    def __init__(self, inner: Service, out: asyncio.Queue[dict[str, Any]]) -> None:
        self.inner = inner
        self.out = out
        self.name = inner.name
        self.output = inner.output
        self.config = {}
        self._params = None
        self._actions = {}
        self.is_async = True
        self.concurrent = True
        self.started = False
        self.stopped = False
        self.tasks: list[asyncio.Task[Any]] = []

    def run(self, msg: dict[str, Any]) -> None:
        rt = runtime()  # from a def middleware's thread
        future = asyncio.run_coroutine_threadsafe(self.arun(msg, rt), rt.loop)
        future.result()

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        task = asyncio.current_task()
        if self.stopped:
            raise asyncio.CancelledError
        self.started = True
        if task is not None:
            self.tasks.append(task)
        async for item in self.inner.astream(dict(msg), rt):
            await self.out.put(item)

    def stop(self) -> None:
        """Cancel the stream where it runs (on the loop)."""
        self.stopped = True
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current and not task.done():
                task.cancel()

    def leaves(self) -> Iterator[Service]:
        yield from self.inner.leaves()


# -- request scope ------------------------------------------------------------------------------

RequestCall = Callable[[Request], Awaitable[dict[str, Any]]]


def around(mw: Middleware, inner: RequestCall, rt: Any) -> RequestCall:
    """``inner`` wrapped in the request-scope middleware ``mw`` (composed once per generation)."""
    fn = mw.fn

    async def guarded(request: Request) -> dict[str, Any]:  # what `call` runs: it marks what comes out
        try:
            return await inner(request)
        except BaseException as exc:
            _passed(exc)
            raise

    if mw.is_async:

        async def wrapped(request: Request) -> dict[str, Any]:
            mw.calls += 1
            try:
                result = await fn(guarded, request)
            except Exception as exc:
                _count_failure(mw, exc)
                raise
            return _reply_of(result, request, guarded)

        return wrapped

    loop = rt.loop

    def blocking(request: Request) -> Any:
        # On a worker thread: `call` waits for the rest of the path on the loop.
        def call(req: Request) -> dict[str, Any]:
            return asyncio.run_coroutine_threadsafe(_coroutine(guarded, req), loop).result()

        return fn(call, request)

    async def wrapped_sync(request: Request) -> dict[str, Any]:
        mw.calls += 1
        try:
            result = await rt.blocking(blocking, request)
        except Exception as exc:
            _count_failure(mw, exc)
            raise
        return _reply_of(result, request, guarded)

    return wrapped_sync


async def _coroutine(inner: RequestCall, request: Request) -> dict[str, Any]:
    return await inner(request)


def _reply_of(result: Any, request: Request, inner: RequestCall) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    if result is None:
        raise WiringError(
            f"A request-scope middleware returned None for {request.action!r}: return what `call(request)` returned."
        )
    return {"result": result}


def _own_check(check: Callable[[Request], None], name: str) -> Middleware:
    """svckit's own request-scope middleware that only looks before it calls on: ``check``
    raises to refuse. The request path runs such checks one after another, without a
    coroutine each (``before``); composed by hand, the middleware does the same."""

    async def checked(call: RequestCall, request: Request) -> dict[str, Any]:
        check(request)
        return await call(request)

    checked.__name__ = name
    mw = Middleware(checked, scope="request", name=name)
    mw.before = check
    return mw


def token_check(owner: str, token: str) -> Middleware:
    """svckit's token check: a request (not a pipeline message) must carry ``token``."""
    expected = token.encode()

    def check_token(request: Request) -> None:
        if request.replies:
            given = request.token
            given_bytes = given.encode() if isinstance(given, str) else (given or b"")
            if not hmac.compare_digest(given_bytes, expected):
                # names nothing served: a caller without the token learns no name or action
                raise Unauthorized(
                    "This needs a token: send 'Authorization: Bearer <token>' over HTTP, "
                    "or the token as the frame after the JSON over ZMQ."
                )

    return _own_check(check_token, "token")


def body_limit(limit: int) -> Middleware:
    """svckit's body limit: refuse a body over ``limit`` bytes before reading it (413)."""

    def limit_body(request: Request) -> None:
        if request.size > limit:
            raise PayloadTooLarge(f"The request body is {request.size} bytes; the limit is {limit}.")
        request.limit = limit

    return _own_check(limit_body, "body_limit")


def request_log(owner: str) -> Middleware:
    """svckit's request log: one ``svckit.requests`` DEBUG line per request (id, transport,
    action, ms). Serving puts it first in the chain when that logger logs DEBUG at the time
    of ``sk.serve``; otherwise it costs nothing."""

    async def log_requests(call: RequestCall, request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return await call(request)
        finally:
            requests_log.debug(
                "%s %s %s %r %.2f ms",
                owner,
                request.id,
                request.transport,
                request.action,
                (time.perf_counter() - start) * 1e3,
                extra={"svckit_service": owner},
            )

    return Middleware(log_requests, scope="request", name="request_log")


class Throttle(Middleware):
    """A token bucket: at most ``per_second`` requests a second on average, ``burst`` at once;
    past it a request is refused with ``TooManyRequests`` (HTTP 429). See ``throttle``."""

    def __init__(self, per_second: float, burst: int | None = None, *, name: str | None = None) -> None:
        if isinstance(per_second, bool) or not isinstance(per_second, int | float) or per_second <= 0:
            raise WiringError(f"throttle({per_second!r}): give the rate as a positive number of requests a second.")
        if burst is None:
            burst = max(1, int(per_second))
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise WiringError(f"throttle(burst={burst!r}): give how many requests may come at once (1 or more).")
        self.per_second = float(per_second)
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        super().__init__(self._admit, scope="request", name=name or "throttle")

    async def _admit(self, call: RequestCall, request: Request) -> dict[str, Any]:
        now = time.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if tokens < 1:
            self._tokens = tokens
            wait = (1 - tokens) / self.per_second
            raise TooManyRequests(
                f"More than {self.per_second:g} requests a second (burst {self.burst}) for {request.action!r}; "
                f"try again in {wait:.3f} s.",
                retry_after=round(wait, 3),
            )
        self._tokens = tokens - 1
        return await call(request)

    def _bound(self, binder: Any) -> None:
        self._tokens = float(self.burst)  # each served thing has its own bucket
        self._at = time.monotonic()
        self.fn = self._admit  # the copy's own bucket, not the original's

    def __repr__(self) -> str:
        return f"<Throttle {self.per_second:g}/s burst {self.burst}>"


def throttle(per_second: float, burst: int | None = None) -> Throttle:
    """Request-scope middleware that limits the rate: ``sk.serve(flow, middleware=[sk.throttle(100)])``.

    A token bucket of ``burst`` requests (default: one second's worth) refilled at
    ``per_second``. A request past it is answered ``TooManyRequests`` (HTTP 429, a ZMQ error
    reply) with ``retry_after`` seconds in the error body, and counted as an error. Each
    served thing it is given to has its own bucket.
    """
    return Throttle(per_second, burst)


def middleware(fn: Callable[..., Any] | None = None, /, *, scope: str = "message", name: str | None = None) -> Any:
    """Make middleware of a function ``fn(call, msg)``: ``@sk.middleware`` or ``@sk.middleware(scope="request")``.

    In a flow (``timed >> parse >> count``) it wraps every stage after it; in
    ``sk.serve(..., middleware=[...])`` it wraps every call of every transport, in the
    order given. What it returns is treated like a stage's return (a dict is merged into
    the message it was given); an svckit error it raises is the error reply, any other
    exception is a 500 counted as that middleware's error.

    ``scope="request"`` runs before decoding: ``fn(call, request)`` sees the ``Request``
    (transport, action, headers, peer, size, id) and may refuse it by raising an svckit
    error; it is only for ``sk.serve(middleware=...)``.

    Examples
    --------
    >>> import time
    >>> import svckit as sk
    >>> @sk.middleware
    ... def timed(call, msg):
    ...     start = time.perf_counter()
    ...     out = call(msg)
    ...     return {**out, "ms": round((time.perf_counter() - start) * 1e3) * 0}
    >>> (timed >> sk.service(lambda text: len(text), name="size"))(text="abc")
    {'text': 'abc', 'size': 3, 'ms': 0}
    """

    def wrap(f: Callable[..., Any]) -> Middleware:
        if isinstance(f, Service):
            raise WiringError(f"{f!r} is a service; @sk.middleware goes on a function taking (call, msg).")
        return Middleware(f, scope=scope, name=name)

    if fn is not None:
        return wrap(fn)
    return wrap
