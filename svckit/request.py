"""The request path: admission, middleware, running, counting and encoding, one for every transport.

HTTP, ZMQ and pipeline messages all come here as a ``Request``. ``RequestPath.handle`` is
the one place a request becomes a reply, in one order for all of them:

1. counted as received (a traffic row ``in``, with its request id);
2. the request-scope middleware chain: svckit's request log (when ``svckit.requests`` logs
   DEBUG), token check (requests only) and body limit, then the ``scope="request"``
   middleware and ``sk.throttle``s given to ``sk.serve``, in the order given (checks that
   only look before calling on run as plain calls, without a coroutine each);
3. refused with ``ServiceUnavailable`` unless the served thing is running;
4. the body read (HTTP streams it under the limit) and decoded: strict JSON, an object;
5. the action's node run under the served timeout: the served flow wrapped in the
   message-scope middleware given to ``sk.serve``, or an ``@sk.handle`` action;
6. encoded and counted once, as replied (a traffic row ``out``) with its status, an
   output row when the message came out of the end of the flow, and an error row when not.

A transport only routes (which served thing has the action) and speaks its wire format;
a request it refuses before routing (an unknown action, a malformed ZMQ envelope) is
counted here too, through ``RequestPath.reject``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .codec import JSON_TYPES, decode, encode, error_reply, redact_paths
from .errors import (
    BadMessage,
    BadResult,
    Fatal,
    ServiceTimeout,
    ServiceUnavailable,
    StopFlow,
    SvckitError,
    Unauthorized,
    UnknownAction,
    status_of,
)
from .limits import Access, Limits
from .logs import current_service
from .metrics import EXCERPT_CHARS, Metrics, traceback_text
from .middleware import Middleware, Request, Wrapped, around
from .running import origin_of
from .runtime import Runtime
from .service import Service
from .state import State

__all__ = ["Generation", "RequestPath"]

logger = logging.getLogger(__name__)


class _Deadlines:
    """The served timeout for every message in flight on one loop: what ``asyncio.timeout``
    does, with one timer for all of them instead of a timer armed and disarmed per message
    (~5 us each here, a sixth of a pipeline message's time on the loop).

    The timer fires at the earliest deadline watched and cancels the tasks past theirs;
    ``done`` tells the task whether that cancellation was this timeout's.
    """

    __slots__ = ("expired", "loop", "tasks", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[Any], seconds: float) -> float:
        """Cancel ``task`` once ``seconds`` have passed; its deadline (on the loop's clock)."""
        deadline = self.loop.time() + seconds
        self.tasks[task] = deadline
        timer = self.timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._sweep)
        return deadline

    def done(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; True when its deadline passed and it was cancelled for that."""
        if self.tasks.pop(task, None) is None and task in self.expired:
            self.expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        following: float | None = None
        for task, deadline in list(self.tasks.items()):
            if deadline <= now:
                del self.tasks[task]
                self.expired.add(task)
                task.cancel()
            elif following is None or deadline < following:
                following = deadline
        if following is not None:
            self.timer = self.loop.call_at(following, self._sweep)


class Generation:
    """What one serve (or re-serve) of a served thing runs: its bound nodes by action, its
    timeout and its request chain; requests in flight hold on to theirs, so a re-serve
    swaps in a new generation while the old one drains."""

    __slots__ = ("chain", "checks", "drained", "inflight", "nodes", "number", "tasks", "timeout", "token")

    def __init__(
        self, number: int, nodes: Mapping[str, Service], timeout: float | None, token: str | None = None
    ) -> None:
        self.number = number
        self.nodes = dict(nodes)
        self.timeout = timeout
        self.token = token
        self.inflight = 0
        self.tasks: dict[asyncio.Task[Any], Request] = {}  # the requests in flight, by their task
        self.drained: asyncio.Event | None = None
        self.checks: tuple[Callable[[Request], None], ...] = ()
        self.chain: Callable[[Request], Awaitable[dict[str, Any]]] | None = None

    def done(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self.drained is not None:
            self.drained.set()

    async def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no request of this generation is in flight."""
        if self.inflight > 0:
            if self.drained is None or self.drained.is_set():  # one event for every waiter
                self.drained = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self.drained.wait()
            except TimeoutError:
                return False
        return True


class RequestPath:
    """The request path of one served thing (see the module docstring).

    ``state``, ``token`` and the current ``Generation`` are set by serving; everything
    here runs on the runtime loop.
    """

    def __init__(self, name: str, rt: Runtime, metrics: Metrics) -> None:
        self.name = name
        self.runtime = rt
        self.metrics = metrics
        self.state = State.CREATED
        self.limits = Limits()
        self.access = Access()
        self.gen = Generation(0, {}, None)
        self._deadlines: _Deadlines | None = None
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: ``sk.serve(..., debug=True)``: error replies carry the traceback (kept server-side otherwise)
        self.debug = False
        self._logged = _LogBudget()

    @property
    def token(self) -> str | None:
        """The token the current generation asks for (it comes and goes with its generation)."""
        return self.gen.token

    # -- set up by serving -----------------------------------------------------------
    def generation(
        self,
        node: Service,
        actions: Mapping[str, Service],
        timeout: float | None,
        request_mw: list[Middleware],
        message_mw: list[Middleware],
        token: str | None = None,
    ) -> Generation:
        """A new generation: ``node`` under this path's name and ``actions``, each wrapped in
        ``message_mw`` (outermost first), behind the ``request_mw`` chain (outermost first)."""
        nodes: dict[str, Service] = {self.name: node, **actions}
        for mw in reversed(message_mw):
            nodes = {action: Wrapped(mw, inner) for action, inner in nodes.items()}
        gen = Generation(self.gen.number + 1, nodes, timeout, token)
        # Checks that lead the chain and only look before calling on (svckit's token check and
        # body limit) run one after another in ``handle``, not as a coroutine each.
        lead = 0
        while lead < len(request_mw) and request_mw[lead].before is not None:
            lead += 1
        gen.checks = tuple(mw.before for mw in request_mw[:lead] if mw.before is not None)
        chain: Callable[[Request], Awaitable[dict[str, Any]]] = functools.partial(self._admitted, gen)
        for mw in reversed(request_mw[lead:]):
            chain = around(mw, chain, self.runtime)
        gen.chain = chain
        return gen

    def fail(self, exc: BaseException) -> None:
        """Mark the served thing failed (a stage raised ``Fatal``): it answers 503 until restarted."""
        self.state = State.FAILED
        logger.warning("service %r failed: %s", self.name, exc)

    # -- the request path ------------------------------------------------------------
    async def handle(self, request: Request, reply: bool = True) -> tuple[int, bytes]:
        """Answer one request: admit, decode, run, count and (with ``reply``) encode. Never
        raises (but for cancellation): every failure is a counted error reply."""
        start = time.time()
        metrics = self.metrics
        current_service.set(self.name)
        metrics.received_one(request.transport, request.action, request.size, start, request.trace_id)
        gen = self.gen
        gen.inflight += 1
        # With its loop given, current_task skips looking the running loop up.
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        if task is None:
            task = asyncio.current_task()
            assert task is not None
            self._loop = task.get_loop()
        gen.tasks[task] = request
        try:
            for check in gen.checks:
                check(request)
            assert gen.chain is not None
            msg = await gen.chain(request)
        except asyncio.CancelledError:
            if request.gone:  # the client went away: nobody to answer, counted once as that
                metrics.undelivered(request.transport, request.action, request.size, request.trace_id)
                raise
            expired = task in self._expired
            self._expired.discard(task)
            # stopped, or shut down, with this request still running: counted, as a 503
            gone = ServiceUnavailable(
                f"Service {self.name!r} stopped before it answered"
                + (f" (it had {self.limits.drain_timeout} s to finish)." if expired else "."),
                service=self.name,
            )
            answer = self._error(gone, request, start)
            if expired and task.uncancel() == 0:
                return answer  # answered 503 over its own transport
            raise
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from a stage too: never end the loop
            return self._error(exc, request, start)
        finally:
            del gen.tasks[task]
            if self._expired:
                self._expired.discard(task)
            gen.done()
        body = b""
        if reply:
            try:
                body = encode(msg)
            except (TypeError, ValueError, RecursionError) as exc:
                return self._error(self._unsendable(exc), request, start)  # not an output: it could not be sent
        if request.ended:
            metrics.output(msg, request.trace_id)
        metrics.replied_one(request.transport, request.action, len(body), start, time.time(), 200, request.trace_id)
        return 200, body

    async def _admitted(self, gen: Generation, request: Request) -> dict[str, Any]:
        """The innermost step of the request chain: state, body, decode, run."""
        if self.state is not State.RUNNING:
            what = "failed (a stage raised Fatal)" if self.state is State.FAILED else self.state.value
            raise ServiceUnavailable(
                f"Service {self.name!r} is {what}; call .restart() on it to serve again.", service=self.name
            )
        raw = request.body if request.body is not None else await request.read()
        msg = decode(raw) if raw else {}
        if type(msg) is not dict:
            kind = JSON_TYPES.get(type(msg), type(msg).__name__)
            raise BadMessage(f"The request body must be a JSON object, not a JSON {kind}.", service=self.name)
        node = gen.nodes.get(request.action)
        if node is None:  # a re-serve took the action away since the request was routed
            raise UnknownAction(f"{self.name!r} no longer serves {request.action!r}.", service=self.name)
        if node.streams:
            return await self._streamed(node, msg, request, gen.timeout)
        try:
            if gen.timeout is None:
                await node.arun(msg, self.runtime)
            else:
                await self._timed(node.arun(msg, self.runtime), gen.timeout)
            request.ended = request.action == self.name
        except StopFlow:
            self.metrics.stopped += 1
        except Fatal as exc:
            self.fail(exc)
            raise
        return msg

    async def _streamed(
        self, node: Service, msg: dict[str, Any], request: Request, timeout: float | None
    ) -> dict[str, Any]:
        """Run a streaming action: each message it yields is encoded, counted as an output
        (when it came out of the end of the flow) and handed to ``request.emit`` (a pipeline
        has none: its sinks are in the flow). The served timeout bounds each message: the
        first, then each next (a feed that sends one a second runs as long as it likes).
        The reply is ``{"items": count}``: a transport's end marker."""
        count = 0
        ends = request.action == self.name

        async def each() -> None:
            nonlocal count
            emit = request.emit
            stream = node.astream(msg, self.runtime)
            try:
                while True:
                    try:
                        out = await (anext(stream) if timeout is None else self._timed(anext(stream), timeout))
                    except StopAsyncIteration:
                        return
                    await one(out, emit)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        async def one(out: dict[str, Any], emit: Callable[[bytes], Awaitable[None]] | None) -> None:
            nonlocal count
            try:
                data = encode(out)
            except (TypeError, ValueError, RecursionError) as exc:
                raise self._unsendable(exc) from None
            if emit is not None:
                await emit(data)
            if ends:
                self.metrics.output(out, request.trace_id)
            count += 1
            # A turn of the loop each message: an async generator that never awaits, sent to
            # a client whose writes return at once (it went away: uvicorn drops them), would
            # hold the loop for ever; this lets its connection_lost, the served timeout and
            # everything else the runtime serves run in between.
            await asyncio.sleep(0)

        try:
            await each()
        except StopFlow:
            self.metrics.stopped += 1
        except Fatal as exc:
            self.fail(exc)
            raise
        return {"items": count}

    def _unsendable(self, exc: BaseException) -> BadResult:
        """The error for a reply ``encode`` refused (``exc``)."""
        if "Out of range float" in str(exc):
            # the input's values made it overflow (or be undefined): the caller's to change, 422
            bad = BadResult(
                f"The reply of {self.name!r} holds a number JSON cannot carry (infinity or NaN): the values "
                "sent made a result overflow or undefined; send smaller or other values.",
                service=self.name,
            )
            bad.status = 422
            return bad
        why = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return BadResult(
            f"The reply of {self.name!r} cannot be sent as JSON: {why}. "
            "Return dicts of str, numbers, bools, None, lists and dicts.",
            service=self.name,
        )

    async def _timed(self, work: Awaitable[Any], seconds: float) -> Any:
        """``work`` (a node's ``arun``) under the served timeout: ``ServiceTimeout`` when it
        runs past it.

        The same as ``async with asyncio.timeout(seconds)``, cancellation bookkeeping included.
        """
        deadlines = self._deadlines
        # With its loop given, current_task skips looking the running loop up (a Python
        # function in 3.11); None when the runtime was started anew since.
        task = asyncio.current_task(deadlines.loop) if deadlines is not None else None
        if deadlines is None or task is None:
            task = asyncio.current_task()
            assert task is not None
            deadlines = self._deadlines = _Deadlines(task.get_loop())
        cancelling = task.cancelling()
        deadline = deadlines.watch(task, seconds)
        try:
            result = await work
        except asyncio.CancelledError as exc:
            if deadlines.done(task) and task.uncancel() <= cancelling:
                raise ServiceTimeout(
                    f"Service {self.name!r} did not answer within {seconds} s (the served timeout).",
                    service=self.name,
                ) from exc
            raise
        except BaseException:
            if deadlines.done(task):
                task.uncancel()
            raise
        late = deadlines.done(task)
        if late:
            task.uncancel()
        if late or deadlines.loop.time() > deadline:
            # it finished, but past its deadline: a stage that held the loop (the watchdog
            # names it) is answered as late as it is, not 200 after the time it was given
            raise ServiceTimeout(
                f"Service {self.name!r} did not answer within {seconds} s (the served timeout); it finished "
                f"{deadlines.loop.time() - deadline + seconds:.2f} s after the request (an async stage that "
                "computes without awaiting holds the runtime loop: await between steps, or make it a plain def "
                "marked inline=False).",
                service=self.name,
            )
        return result

    def expire(self, gen: Generation | None = None) -> int:
        """Answer every request of ``gen`` (default: the current one) still in flight with
        ``ServiceUnavailable`` (503) over its own transport, cancelling what it runs; the
        number of requests expired. On the runtime loop."""
        gen = gen if gen is not None else self.gen
        for task in list(gen.tasks):
            if not task.done():
                self._expired.add(task)
                task.cancel()
        return len(gen.tasks)

    def undelivered(self, request: Request, size: int) -> None:
        """A reply the transport could not deliver (the client went away): counted once, as
        that, instead of as replied."""
        metrics = self.metrics
        metrics.replied -= 1
        metrics.undelivered(request.transport, request.action, size, request.trace_id)

    def reject(self, exc: BaseException, request: Request) -> tuple[int, bytes]:
        """Answer a request a transport refused before it reached this path (an unknown
        action, a malformed envelope): counted like any other error reply."""
        start = time.time()
        self.metrics.received_one(request.transport, request.action, request.size, start, request.trace_id)
        return self._error(exc, request, start)

    def _error(self, exc: BaseException, request: Request, start: float) -> tuple[int, bytes]:
        origin = origin_of(exc, forget=True)
        service = getattr(exc, "service", None) or origin or self.name
        now = time.time()
        message = str(getattr(exc, "message", None) or exc)
        redact = not self.access.expose_errors
        status = status_of(exc)
        # A traceback for what the caller did not cause (a 5xx: user code raising, Fatal, a bad
        # result; not a refusal nor a timeout): kept with the error row and logged at ERROR;
        # on the wire only with debug=True. A client's bad input (4xx) costs no traceback.
        tb = None
        if status >= 500 and not isinstance(exc, ServiceUnavailable | ServiceTimeout):
            tb = traceback_text(exc)
        body = request.body
        excerpt = bytes(body[:EXCERPT_CHARS]).decode("utf-8", "replace") if body else None
        # the log keeps the message whole; what a client can read (the reply, /status) is cut
        self.metrics.error(
            type(exc).__name__,
            redact_paths(message) if redact else message,
            service,
            now,
            status=status,
            request_id=request.trace_id,
            excerpt=excerpt,
            traceback=tb,
        )
        if tb is not None:
            if self._logged.take(now):
                logger.error(
                    "service %r raised %s: %s (request %s)\n%s",
                    service,
                    type(exc).__name__,
                    exc,
                    request.id,
                    tb.rstrip(),
                    extra={"svckit_service": self.name},
                )
        elif not isinstance(exc, SvckitError):
            logger.info("service %r raised %s: %s", service, type(exc).__name__, exc)
        shown = None if isinstance(exc, Unauthorized) else service  # no name for a caller without the token
        wire_tb = None
        if self.debug and tb is not None:
            wire_tb = redact_paths(tb) if redact else tb
        status, body = error_reply(exc, redact=redact, service=shown, request_id=request.id, traceback=wire_tb)
        self.metrics.replied_one(request.transport, request.action, len(body), start, now, status, request.id)
        return status, body


class _LogBudget:
    """How many error tracebacks are logged: ``burst`` at once, then ``per_second`` (the rest
    are counted and said in the next one logged), so a client sending failing requests
    cannot fill a headless server's log."""

    __slots__ = ("burst", "per_second", "skipped", "tokens", "when")

    def __init__(self, per_second: float = 2.0, burst: int = 10) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.when = 0.0
        self.skipped = 0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.when) * self.per_second)
        self.when = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            if self.skipped:
                logger.error("%d more error tracebacks were not logged (kept in Served.errors)", self.skipped)
                self.skipped = 0
            return True
        self.skipped += 1
        return False
