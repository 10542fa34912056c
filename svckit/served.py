"""Serving: ``serve()`` and the ``Served`` handle, its lifecycle and its request handling.

``Served.handle`` is the one place a request becomes a reply, for every transport:
it decodes the JSON, runs the flow on the runtime, counts, and encodes the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import inspect
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from .errors import (
    BadMessage,
    BadRequest,
    BadResult,
    Fatal,
    PortInUse,
    ServiceTimeout,
    ServiceUnavailable,
    StateError,
    StopFlow,
    SvckitError,
    WiringError,
    error_body,
    status_of,
)
from .metrics import Metrics
from .runtime import Runtime, runtime
from .service import Params, Service, check_name, lift

__all__ = ["Served", "State", "serve"]

logger = logging.getLogger(__name__)

_serve_lock = threading.RLock()

#: The served thing whose message the current task handles (sinks count their drops on it).
current: contextvars.ContextVar[Served | None] = contextvars.ContextVar("svckit_served", default=None)


class State(enum.StrEnum):
    """Lifecycle of a served thing."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()  # numpy scalars
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()  # numpy arrays
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":"))


def encode(obj: Any) -> bytes:
    """Strict JSON (no NaN), with numpy, datetime and pydantic values converted."""
    return _ENCODER.encode(obj).encode()  # one encoder for all: json.dumps builds one per call


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259); send null or a string instead")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)

#: JSON's names for the types a request body may be, for "must be an object" errors.
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def decode(raw: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: no NaN or Infinity. Raises ``BadRequest`` naming what is wrong."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The request body is not UTF-8 text: {exc}.") from None
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise BadRequest("The request body is JSON nested too deeply to read.") from None


def error_reply(exc: BaseException, **extra: Any) -> tuple[int, bytes]:
    return status_of(exc), encode({"error": error_body(exc, **extra)})


def _check_port(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise WiringError(f"{what}={value!r}: give a port number from 0 to 65535 (0 picks a free one), or None.")
    return value


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """Bind a listening TCP socket in the caller's thread, so "in use" is raised right here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if isinstance(exc, socket.gaierror) or exc.errno == 99:  # EADDRNOTAVAIL: not an address of this machine
            raise WiringError(
                f"host={host!r}: cannot bind {what} there ({exc}); give an address of this machine, "
                "such as '127.0.0.1', or '0.0.0.0' for every interface."
            ) from exc
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise PortInUse(
                f"{what} port {port} on {host} is already in use by another process or socket. "
                f"Stop what holds it, pick another port, or pass {what.lower()}=0 for a free one.",
                port=port,
                host=host,
            ) from exc
        raise
    return sock


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

    def watch(self, task: asyncio.Task[Any], seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self.tasks[task] = deadline
        timer = self.timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._sweep)

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


class Served:
    """A service or flow being served by the runtime; returned by ``sk.serve``.

    Examples
    --------
    >>> import svckit as sk
    >>> srv = sk.serve(sk.service(lambda x: x + 1, name="inc"), http=0)
    >>> srv
    <Served inc: running>
    >>> sk.Client(srv.url).inc(x=1)
    {'x': 1, 'inc': 2}
    >>> srv.stop()
    """

    def __init__(
        self,
        rt: Runtime,
        node: Service,
        name: str,
        *,
        host: str,
        timeout: float | None,
        token: str | None,
        max_body: int,
        keep: int,
    ) -> None:
        self.runtime = rt
        self.node = node
        self.name = name
        self.host = host
        self.timeout = timeout
        self.token = token
        self.max_body = max_body
        self.metrics = Metrics(keep)
        self.state = State.CREATED
        self.http_port: int | None = None
        self.zmq_port: int | None = None
        self._http: Any = None
        self._zmq: Any = None
        self._actions = node.actions()
        self._gen = 0
        self._inflight: dict[int, int] = {0: 0}
        self._drained: dict[int, asyncio.Event] = {}
        self._deadlines: _Deadlines | None = None

    # -- facts ---------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """The HTTP base URL, e.g. ``http://127.0.0.1:8000``; None when not served over HTTP."""
        if self.http_port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"

    @property
    def proxy_url(self) -> str | None:
        """The URL a browser opens through jupyter-server-proxy inside JupyterHub or Binder.

        Built from ``JUPYTERHUB_SERVICE_PREFIX`` (or ``SVCKIT_PROXY_PREFIX`` for another
        Jupyter server's base URL): ``{prefix}proxy/{port}/``. None outside a hub.
        """
        prefix = os.environ.get("SVCKIT_PROXY_PREFIX") or os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        if self.http_port is None or not prefix:
            return None
        return f"{prefix.rstrip('/')}/proxy/{self.http_port}/"

    @property
    def zmq_url(self) -> str | None:
        """The ZMQ address, e.g. ``tcp://127.0.0.1:5555``; None when not served over ZMQ."""
        if self.zmq_port is None:
            return None
        return f"tcp://{self.host}:{self.zmq_port}"

    @property
    def actions(self) -> list[str]:
        """The actions this serves: its name, then its ``@handle`` actions."""
        return [self.name, *self._actions]

    def params_for(self, action: str) -> list[Params]:
        if action == self.name:
            return self.node.input_params()
        return [self._actions[action][1]]

    def status(self) -> dict[str, Any]:
        """State and counters, as served on ``GET /status``."""
        return {
            "name": self.name,
            "state": self.state.value,
            "actions": self.actions,
            "http": self.url,
            "proxy": self.proxy_url,
            "zmq": self.zmq_url,
            "uptime": round(time.time() - self.metrics.started, 3),
            **self.metrics.counters(),
        }

    @property
    def outputs(self) -> Any:
        """Recent messages that came out of the end of the flow (pandas DataFrame, oldest first)."""
        return self.metrics.outputs_frame()

    @property
    def traffic(self) -> Any:
        """Recent messages in and out (pandas DataFrame: time, endpoint, direction, action, ...)."""
        return self.metrics.traffic_frame()

    def settle(self, timeout: float = 10.0, quiet: float = 0.05) -> Served:
        """Wait until what was sent has been handled; return ``self``.

        Settled means: every request received has been answered, a pipeline's queue is
        empty, and the counters did not move for ``quiet`` seconds. Use it before printing
        counts in a notebook, so they do not depend on timing. A source that ticks faster
        than ``quiet`` never settles: wait for a condition with ``svckit.testing.wait_for``.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        from .sources import pending

        metrics = self.metrics
        deadline = time.monotonic() + timeout
        last: tuple[int, ...] = ()
        since = time.monotonic()
        while True:
            now = time.monotonic()
            snapshot = (metrics.received, metrics.replied, metrics.errors, metrics.dropped)
            idle = metrics.received == metrics.replied and not pending(self)
            if not idle or snapshot != last:
                last, since = snapshot, now
            elif now - since >= quiet:
                return self
            if now > deadline:
                busy = metrics.received - metrics.replied + pending(self)
                raise TimeoutError(f"{self.name!r} did not settle within {timeout} s ({busy} messages in flight).")
            time.sleep(0.005)

    def dashboard(self, **kwargs: Any) -> Any:
        """A live ipywidgets dashboard of this served thing (see ``sk.dashboard``)."""
        from .dashboard import dashboard

        return dashboard(self, **kwargs)

    def __repr__(self) -> str:
        return f"<Served {self.name}: {self.state.value}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        """Its state and the addresses to reach it; inside JupyterHub or Binder the proxied
        link a browser can open comes first, beside the local one."""
        from html import escape

        parts = [f"<b>{escape(self.name)}</b>: {escape(self.state.value)}"]
        if self.proxy_url:
            link = escape(self.proxy_url)
            parts.append(f'<a href="{link}" target="_blank">{link}</a> (through the Jupyter server)')
        if self.url:
            parts.append(f"<code>{escape(self.url)}</code>")
        if self.zmq_url:
            parts.append(f"<code>{escape(self.zmq_url)}</code>")
        return '<span class="svckit-served">' + " · ".join(parts) + "</span>"

    # -- the request path -----------------------------------------------------
    async def handle(self, action: str, raw: bytes, via: str) -> tuple[int, bytes]:
        """Answer one request: decode, run, count, encode. Never raises."""
        start = time.time()
        try:
            return await self._process(action, raw, via, start, reply=True)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # svckit's own fault: still a JSON answer, and counted
            logger.exception("answering %r on %r failed", action, self.name)
            return self._error(exc, via, action, start)

    async def feed(self, raw: bytes, via: str) -> None:
        """Pass one message of a pipeline through the flow, as ``handle`` does, but without
        encoding a reply nobody reads (its ``out`` traffic row has size 0). Never raises."""
        start = time.time()
        try:
            await self._process(self.name, raw, via, start, reply=False)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            logger.exception("a message of %r could not be handled", self.name)
            self._error(exc, via, self.name, start)

    async def _process(self, action: str, raw: bytes, via: str, start: float, reply: bool) -> tuple[int, bytes]:
        """Decode, run, count and (with ``reply``) encode one message; an error reply is counted too."""
        metrics = self.metrics
        current.set(self)
        metrics.received_one(via, action, len(raw), start)
        try:
            msg = decode(raw) if raw else {}
        except BadRequest as exc:
            return self._error(exc, via, action, start)
        if type(msg) is not dict:
            kind = _JSON_TYPES.get(type(msg), type(msg).__name__)
            exc2 = BadMessage(f"The request body must be a JSON object, not a JSON {kind}.", service=self.name)
            return self._error(exc2, via, action, start)
        if self.state is not State.RUNNING:
            what = "failed (a stage raised Fatal)" if self.state is State.FAILED else self.state.value
            exc3 = ServiceUnavailable(
                f"Service {self.name!r} is {what}; call .restart() on it to serve again.", service=self.name
            )
            return self._error(exc3, via, action, start)
        gen = self._gen
        node = self.node
        self._inflight[gen] += 1
        ended = False  # the message came out of the end of the flow: an output row
        try:
            if action != self.name:
                msg = await self._run_action(action, msg)
            else:
                try:
                    if self.timeout is None:
                        await node.arun(msg, self.runtime)
                    else:
                        await self._timed(node, msg, self.timeout)
                    ended = True
                except StopFlow:
                    metrics.stopped += 1
        except Fatal as exc:
            self._fail(exc)
            return self._error(exc, via, action, start)
        except TimeoutError:
            exc4 = ServiceTimeout(
                f"Service {self.name!r} did not answer within {self.timeout} s (the served timeout).",
                service=self.name,
            )
            return self._error(exc4, via, action, start)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from a stage too: never end the loop
            return self._error(exc, via, action, start)
        finally:
            self._done(gen)
        body = b""
        if reply:
            try:
                body = encode(msg)
            except (TypeError, ValueError, RecursionError) as exc:
                why = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                bad = BadResult(
                    f"The reply of {self.name!r} cannot be sent as JSON: {why}. "
                    "Return dicts of str, numbers, bools, None, lists and dicts.",
                    service=self.name,
                )
                return self._error(bad, via, action, start)  # not an output: it could not be sent
        if ended:
            metrics.output(msg)
        metrics.replied_one(via, action, len(body), start, time.time(), 200)
        return 200, body

    async def _timed(self, node: Service, msg: dict[str, Any], seconds: float) -> None:
        """``node.arun`` under the served timeout: ``TimeoutError`` when it runs past it.

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
        deadlines.watch(task, seconds)
        try:
            await node.arun(msg, self.runtime)
        except asyncio.CancelledError as exc:
            if deadlines.done(task) and task.uncancel() <= cancelling:
                raise TimeoutError from exc  # cancelled for the deadline only: it timed out
            raise
        except BaseException:
            if deadlines.done(task):
                task.uncancel()
            raise
        if deadlines.done(task):
            task.uncancel()

    async def _run_action(self, action: str, msg: dict[str, Any]) -> dict[str, Any]:
        fn, params = self._actions[action]
        kw = params.bind(msg)
        if inspect.iscoroutinefunction(fn):
            result = await fn(**kw)
        else:
            result = await self.runtime.blocking(functools.partial(fn, **kw))
        if result is None:
            return {}
        if isinstance(result, Mapping):
            return dict(result)
        return {action: result}

    def reject(self, exc: BaseException, via: str, action: str, size: int = 0) -> tuple[int, bytes]:
        """Answer a request a transport refused before it reached the flow (bad token, too
        large, malformed): counted like any other error reply."""
        start = time.time()
        self.metrics.received_one(via, action, size, start)
        return self._error(exc, via, action, start)

    def _error(self, exc: BaseException, via: str, action: str, start: float) -> tuple[int, bytes]:
        service = getattr(exc, "service", None) or getattr(exc, "_svckit_service", None) or self.name
        now = time.time()
        self.metrics.error(type(exc).__name__, str(getattr(exc, "message", None) or exc), service, now)
        if not isinstance(exc, SvckitError):
            logger.info("service %r raised %s: %s", service, type(exc).__name__, exc)
        status, body = error_reply(exc, service=service)
        self.metrics.replied_one(via, action, len(body), start, now, status)
        return status, body

    def _done(self, gen: int) -> None:
        if gen not in self._inflight:  # its drain timed out and gave up on it
            return
        left = self._inflight[gen] - 1
        self._inflight[gen] = left
        if left == 0 and gen in self._drained:
            self._drained[gen].set()

    def _fail(self, exc: BaseException) -> None:
        self.state = State.FAILED
        logger.warning("service %r failed: %s", self.name, exc)

    async def _drain(self, gen: int, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until no request of generation ``gen`` is in flight."""
        if self._inflight.get(gen, 0) > 0:
            event = self._drained.setdefault(gen, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
            self._drained.pop(gen, None)
        if gen != self._gen:  # the current generation keeps its counter for when it serves again
            self._inflight.pop(gen, None)

    # -- lifecycle -------------------------------------------------------------
    def _open(self, http: int | None, zmq: int | None) -> None:
        """Bind ports here (errors surface in the caller), then start the endpoints on the runtime."""
        from .transports import http as http_transport

        rt = self.runtime
        self.state = State.STARTING
        self._inflight.setdefault(self._gen, 0)  # stop() drained and dropped it
        sock = None
        endpoint = None
        try:
            if http is not None:
                endpoint = rt.endpoints.get(("http", self.host, http)) if http else None
                if endpoint is None:
                    sock = bind_tcp(self.host, http, "HTTP")
            _setup(self.node)
            if http is not None:
                if endpoint is None:
                    assert sock is not None
                    endpoint = http_transport.HttpEndpoint(rt, sock, self.host)
                    rt.call(endpoint.open())
                    sock = None
                endpoint.attach(self)
                self._http = endpoint
                self.http_port = endpoint.port
            if zmq is not None:
                from .transports import zmq as zmq_transport

                self._zmq = zmq_transport.open_endpoint(self, zmq)
                self.zmq_port = self._zmq.port
            self._start_sources()
        except BaseException:
            if sock is not None:
                sock.close()
            self._close_endpoints()
            self.state = State.STOPPED
            with contextlib.suppress(Exception):
                _teardown(self.node)
            raise
        self.state = State.RUNNING
        rt.served[self.name] = self

    def _start_sources(self) -> None:
        if self.node.role == "source":
            from .sources import start_pipeline

            start_pipeline(self)

    def _stop_sources(self) -> None:
        if self.node.role == "source":
            from .sources import stop_pipeline

            stop_pipeline(self)

    def _close_endpoints(self) -> None:
        if self._http is not None:
            endpoint, self._http = self._http, None
            if endpoint.detach(self):
                with contextlib.suppress(Exception):
                    self.runtime.call(endpoint.close(), timeout=10)
        if self._zmq is not None:
            zmq_endpoint, self._zmq = self._zmq, None
            with contextlib.suppress(Exception):
                zmq_endpoint.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: free the ports at once, let in-flight requests finish, run teardown.

        Idempotent: stopping a stopped thing does nothing.
        """
        with _serve_lock:
            if self.state in (State.STOPPED, State.CREATED, State.STOPPING):
                return
            self.state = State.STOPPING
            try:
                self._stop_sources()
                self._close_endpoints()
                if self.runtime.running:
                    with contextlib.suppress(Exception):
                        self.runtime.call(self._drain(self._gen, timeout), timeout=timeout + 1)
                with contextlib.suppress(Exception):
                    _teardown(self.node)
            finally:
                self.state = State.STOPPED
                if self.runtime.served.get(self.name) is self:
                    del self.runtime.served[self.name]

    def start(self) -> None:
        """Serve again after ``stop()``, on the same ports."""
        with _serve_lock:
            if self.state is State.RUNNING:
                raise StateError(f"{self.name!r} is already running; use .restart() to restart it.")
            if self.state is State.FAILED:
                self.restart()
                return
            if self.state is not State.STOPPED:
                raise StateError(f"{self.name!r} is {self.state.value}; wait for it, then start it.")
            other = self.runtime.served.get(self.name)
            if other is not None and other is not self:
                raise StateError(f"Another service is now served as {self.name!r}; stop it first.")
            if not self.runtime.running:
                self.runtime = runtime()
            self._open(self.http_port, self.zmq_port)

    def restart(self) -> None:
        """Teardown and set up again; a failed thing answers again. A stopped one is started."""
        with _serve_lock:
            if self.state is State.STOPPED:
                self.start()
                return
            if self.state not in (State.RUNNING, State.FAILED):
                raise StateError(f"{self.name!r} is {self.state.value}; wait for it, then restart it.")
            self.state = State.STARTING
            try:
                self._stop_sources()
                _teardown(self.node)
                _setup(self.node)
                self._start_sources()
            except BaseException:
                self.state = State.FAILED
                raise
            self.state = State.RUNNING

    def replace(
        self, node: Service, http: int | None, zmq: int | None, host: str, timeout: float | None, token: str | None
    ) -> None:
        """Swap in a new service or flow under the same name: same ports, nothing dropped."""
        actions = node.actions()
        if host != self.host:
            raise StateError(f"{self.name!r} is served on {self.host}; stop it before serving it on {host}.")
        # Refuse an action that clashes on the port before anything changes: the old flow serves on.
        moves = http is not None and http != 0 and http != self.http_port
        port = self.http_port if http is not None and not moves else http
        target = self.runtime.endpoints.get(("http", self.host, port)) if port else None
        if target is not None:
            target.check(self, [self.name, *actions])
        old_node, old_gen = self.node, self._gen
        _setup(node, skip={id(leaf) for leaf in old_node.leaves()})  # stages kept are set up already
        try:
            self._stop_sources()
            self._actions = actions
            # The runtime thread reads _gen, then node, without a lock: publish the new
            # generation's counter and node before the generation itself.
            self._inflight[old_gen + 1] = 0
            self.node = node
            self._gen = old_gen + 1
            self.timeout = timeout
            self.token = token
            if self._http is not None:
                if http is None or (http and http != self.http_port):
                    self._move_http(http)
                else:
                    self._http.attach(self)
            elif http is not None:
                self._move_http(http)
            if self._zmq is not None and (zmq is None or (zmq and zmq != self.zmq_port)):
                self._zmq.close()
                self._zmq, self.zmq_port = None, None
            if self._zmq is None and zmq is not None:
                from .transports import zmq as zmq_transport

                self._zmq = zmq_transport.open_endpoint(self, zmq)
                self.zmq_port = self._zmq.port
            self._start_sources()
            if self.state is State.FAILED:
                self.state = State.RUNNING
        finally:
            if self.runtime.running:
                with contextlib.suppress(Exception):
                    self.runtime.call(self._drain(old_gen, 30.0), timeout=31)
            kept = {id(leaf) for leaf in node.leaves()}
            with contextlib.suppress(Exception):
                _teardown(old_node, skip=kept)

    def _move_http(self, http: int | None) -> None:
        from .transports import http as http_transport

        new = None
        if http is not None:
            new = self.runtime.endpoints.get(("http", self.host, http)) if http else None
            if new is None:
                sock = bind_tcp(self.host, http, "HTTP")
                new = http_transport.HttpEndpoint(self.runtime, sock, self.host)
                self.runtime.call(new.open())
        old, self._http = self._http, None
        if old is not None and old.detach(self):
            self.runtime.call(old.close(), timeout=10)
        if new is not None:
            new.attach(self)
        self._http = new
        self.http_port = new.port if new is not None else None


def _setup(node: Service, skip: set[int] | None = None) -> None:
    done: set[int] = set(skip or ())
    for leaf in node.leaves():
        if id(leaf) in done:
            continue
        done.add(id(leaf))
        if inspect.iscoroutinefunction(leaf.setup):
            runtime().call(leaf.setup())
        else:
            leaf.setup()


def _teardown(node: Service, skip: set[int] | None = None) -> None:
    done: set[int] = set(skip or ())
    for leaf in node.leaves():
        if id(leaf) in done:
            continue
        done.add(id(leaf))
        try:
            if inspect.iscoroutinefunction(leaf.teardown):
                runtime().call(leaf.teardown())
            else:
                leaf.teardown()
        except Exception:
            logger.exception("teardown of %r failed", leaf.name)


def serve(
    x: Any,
    name: str | None = None,
    http: int | None = None,
    zmq: int | None = None,
    host: str = "127.0.0.1",
    *,
    timeout: float | None = 60.0,
    token: str | None = None,
    max_body: int = 1 << 20,
    keep: int = 1000,
) -> Served:
    """Serve a service or flow from the background runtime; returns at once.

    Parameters
    ----------
    x
        A service, a flow, or a plain function (wrapped as a service).
    name
        The name it is served under, and its action (``POST /name``); default: its own name.
        Serving again under a name already served replaces it in place on the same ports.
    http, zmq
        Port numbers; ``0`` picks a free one. With neither given, HTTP on a free port.
    host
        The interface to bind; ``127.0.0.1`` unless you mean to expose it.
    timeout
        Seconds a request may take before it is answered with ``ServiceTimeout`` (504).
    token
        When set, requests must carry ``Authorization: Bearer <token>``.
    max_body
        Largest request body accepted, in bytes (larger is answered 413).
    keep
        How many recent outputs and traffic rows to keep for ``.outputs``/``.traffic``.

    Examples
    --------
    >>> import svckit as sk
    >>> srv = sk.serve(sk.service(lambda text: text.upper(), name="shout"), http=0)
    >>> sk.Client(srv.url).call("shout", text="hi")["shout"]
    'HI'
    >>> srv.stop()
    """
    node = lift(x)
    assert node is not None
    name = check_name(name or node.name, "served name")
    http = _check_port(http, "http")
    zmq = _check_port(zmq, "zmq")
    if http is None and zmq is None and node.role != "source":
        http = 0
    if timeout is not None and timeout <= 0:
        raise WiringError(f"timeout={timeout!r}: give a positive number of seconds, or None for no limit.")
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body <= 0:
        raise WiringError(f"max_body={max_body!r}: give a positive number of bytes.")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise WiringError(f"keep={keep!r}: give how many recent outputs and traffic rows to keep (0 or more).")
    if not isinstance(host, str) or not host:
        raise WiringError(f"host={host!r}: give the interface to bind as a string, such as '127.0.0.1'.")
    rt = runtime()
    if rt.in_runtime():
        raise StateError("sk.serve() cannot be called from the runtime's own thread.")
    with _serve_lock:
        existing = rt.served.get(name)
        if existing is not None and existing.state in (State.RUNNING, State.FAILED):
            existing.replace(node, http, zmq, host, timeout, token)
            return existing
        served = Served(rt, node, name, host=host, timeout=timeout, token=token, max_body=max_body, keep=keep)
        served._open(http, zmq)
        return served
