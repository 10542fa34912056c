"""Serving: ``serve()``, the ``Served`` handle and its lifecycle, and the registry of served things.

``Served`` binds a copy of what it serves (``running.Binder``), hands the request path
(``request.RequestPath``) a new generation on every serve and re-serve, and opens the
transports and the pipeline of a source. Requests themselves never come here: the
transports give them to the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from html import escape
from typing import Any, ClassVar

from .access import browser_check
from .callables import is_async_callable
from .display import Picture
from .errors import StateError, WiringError
from .limits import DEFAULTS, Access, Limits
from .logs import watch_stages
from .metrics import Metrics
from .middleware import Middleware, body_limit, request_log, requests_log, token_check
from .net import bind_tcp, check_port, is_loopback, ports
from .params import Params, check_name
from .pipeline import Pipeline, open_pipeline
from .request import RequestPath
from .running import Binder, call_hook
from .runtime import Runtime, current, runtime
from .service import Action, Service, lift
from .state import State
from .transports import http as http_transport
from .transports import zmq as zmq_transport

__all__ = ["Served", "State", "pending", "registry", "serve"]

logger = logging.getLogger(__name__)

_serve_lock = threading.RLock()


def registry(rt: Runtime) -> dict[str, Served]:
    """The served things of runtime ``rt`` by name; each is stopped when ``rt`` shuts down."""
    table: dict[str, Served] = rt.local("served", dict, stop=_stop_at_shutdown, order=10)
    return table


def _stop_all(table: dict[str, Served], budget: float | None = None) -> None:
    """Stop every served thing at once: all stop accepting, then their requests in flight
    get one shared drain of ``budget`` s (at most each one's ``drain_timeout``) and are
    answered ``ServiceUnavailable`` after it, then all close."""
    with _serve_lock:
        stopping = [s for s in list(table.values()) if s._begin_stop()]
        if not stopping:
            return
        rt = stopping[0].runtime
        if rt.running:
            longest = max(s.path.limits.drain_timeout for s in stopping)
            budget = longest if budget is None else min(budget, longest)

            async def drain_all() -> None:
                await asyncio.gather(*(s._drain(budget) for s in stopping), return_exceptions=True)

            with contextlib.suppress(Exception):
                rt.call(drain_all(), timeout=budget + 2)
        for served in stopping:
            with contextlib.suppress(Exception):
                served._finish_stop()


def _stop_at_shutdown(table: dict[str, Served]) -> None:
    rt = next(iter(table.values())).runtime if table else None
    # half of what shutdown may take for draining, the rest for closing (atexit gives 2 s)
    _stop_all(table, None if rt is None or rt.stop_timeout is None else rt.stop_timeout / 2)


def _served_stages() -> list[tuple[str, Any]]:
    rt = current()
    if rt is None:
        return []
    return [(s.name, s.bound) for s in list(registry(rt).values()) if s.bound is not None]


watch_stages(_served_stages)


def _middleware(items: Sequence[Any]) -> list[Middleware]:
    out = []
    for item in items:
        if isinstance(item, Middleware):
            out.append(item)
        elif callable(item) and not isinstance(item, Service | type):
            out.append(Middleware(item))
        else:
            raise WiringError(
                f"middleware=[...]: {item!r} is not middleware; give functions taking (call, msg), "
                "@sk.middleware ones, or sk.throttle(...)."
            )
    return out


class Served:
    """A service or flow being served by the runtime; returned by ``sk.serve``.

    ``node`` is what you served; ``bound`` the copy of it that runs, with its own counters
    (``picture()`` draws them).

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

    #: ``sk.dashboard``, set by ``dashboard.py`` (serving imports no widgets).
    _dashboard: ClassVar[Callable[..., Any] | None] = None

    def __init__(
        self,
        rt: Runtime,
        node: Service,
        name: str,
        *,
        host: str,
        timeout: float | None,
        token: str | None,
        limits: Limits,
        access: Access,
        keep: int,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.runtime = rt
        self.node = node
        self.name = name
        self.host = host
        self.timeout = timeout
        self.middleware = list(middleware)
        self.metrics = Metrics(keep)
        self.path = RequestPath(name, rt, self.metrics)
        self._token = token  # the next generation's; the running one's is self.path.token
        self.path.limits = limits
        self.path.access = access
        self._retiring: list[Any] = []  # the teardowns of old generations, once drained
        self._draining: list[Any] = []  # old generations with requests still in flight
        self.bound: Service | None = None
        self.http_port: int | None = None
        self.zmq_port: int | None = None
        self._http: http_transport.HttpEndpoint | None = None
        self._zmq: zmq_transport.ZmqEndpoint | None = None
        self._pipeline: Pipeline | None = None
        self._actions: dict[str, tuple[Callable[..., Any], Params]] = {}
        self._memo: dict[int, tuple[Service, Service]] = {}

    def dashboard(self, **kwargs: Any) -> Any:
        """A live ipywidgets dashboard of this served thing (see ``sk.dashboard``)."""
        if Served._dashboard is None:
            raise StateError("The dashboard is not available: import svckit (it sets it up) first.")
        return Served._dashboard(self, **kwargs)

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

    @property
    def state(self) -> State:
        """Its lifecycle state (``sk.State``)."""
        return self.path.state

    @state.setter
    def state(self, value: State) -> None:
        self.path.state = value

    @property
    def token(self) -> str | None:
        """The token requests must carry, or None."""
        return self.path.token

    @property
    def max_body(self) -> int:
        """The largest request body accepted, in bytes."""
        return self.path.limits.max_body

    @property
    def limits(self) -> Limits:
        """Its bounds: ``max_body``, ``max_header``, ``limit_concurrency``, ``read_timeout``,
        ``drain_timeout`` (see ``sk.serve``)."""
        return self.path.limits

    @property
    def access(self) -> Access:
        """Who may call it from a browser (``allow_origins``, ``allow_hosts``) and ``expose_errors``."""
        return self.path.access

    def methods_for(self, action: str) -> tuple[str, ...]:
        """The HTTP methods ``action`` answers: ``("POST",)`` unless its service or
        ``@sk.handle`` says ``methods=``."""
        if action == self.name:
            return self.node.methods
        fn = self._actions[action][0]
        return getattr(fn, "_svckit_methods", ("POST",))

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
            "warnings": self.warnings(),
            "zmq_connections": self._zmq.connections if self._zmq is not None else 0,
            **self.metrics.counters(),
            "pool": self.runtime.pool.stats(),  # the runtime's, shared by everything it serves
            "stalls": self._stalls(),
            "placement": self._placement(),
            **self._stages(),
        }

    def _placement(self) -> dict[str, Any]:
        """Where each bound plain ``def`` stage runs now, and why (``svckit.placement``): on the
        loop once proven quick, or in the worker pool (not yet proven, moved back, or forced)."""
        out: dict[str, Any] = {}
        for leaf in self._bound_leaves():
            place = leaf._place
            if place is not None:
                out[leaf.name if leaf.name not in out else f"{leaf.name}#{len(out) + 1}"] = place.stats()
        return out

    def _stages(self) -> dict[str, Any]:
        """``{"stages": {name: ...}}`` of the bound leaves that report more of themselves
        (a ``status_extra()`` method, as ``sk.program``'s running calls); empty when none do."""
        stages: dict[str, Any] = {}
        for leaf in self._bound_leaves():
            extra = getattr(leaf, "status_extra", None)
            if callable(extra):
                stages[leaf.name if leaf.name not in stages else f"{leaf.name}#{len(stages) + 1}"] = extra()
        return {"stages": stages} if stages else {}

    def _stalls(self) -> dict[str, Any]:
        """The runtime loop's stalls (they hold up everything it serves); the latest one's
        stage and place only when it was this served thing's (another's are not for its readers)."""
        stats: dict[str, Any] = self.runtime.watchdog.stats(redact=not self.path.access.expose_errors)
        last = stats.get("last")
        if last is not None and last.get("service") != self.name:
            stats["last"] = None
        return stats

    def warnings(self) -> list[str]:
        """What about how it is served is unsafe or degraded (also logged when it happens)."""
        out = []
        if self.token is None and not is_loopback(self.host):
            out.append(
                f"served on {self.host} without a token: anyone who can reach this machine can call it; "
                "pass token=True (or a token of your own)"
            )
        return out

    @property
    def outputs(self) -> Any:
        """Recent messages that came out of the end of the flow (pandas DataFrame, oldest first)."""
        return self.metrics.outputs_frame()

    @property
    def traffic(self) -> Any:
        """Recent messages in and out (pandas DataFrame: time in UTC, endpoint, direction, action, ...)."""
        return self.metrics.traffic_frame()

    @property
    def errors(self) -> Any:
        """Recent error replies, oldest first (pandas DataFrame): ``time`` (UTC), ``service``
        (the stage that raised), ``type``, ``message``, ``status``, ``request_id`` (as in
        ``traffic``), ``excerpt`` (the start of the message that caused it) and ``traceback``
        (for errors the caller did not cause, 5xx; None for refused input). The last
        ``ERRORS_KEPT`` (100) are kept, each traceback cut to 8000 characters."""
        return self.metrics.errors_frame()

    def last_traceback(self, file: Any = None) -> None:
        """Print the newest error's traceback (to ``file``, default ``sys.stdout``); the text
        itself is ``srv.errors.traceback.iloc[-1]``.

        Examples
        --------
        >>> import svckit as sk
        >>> srv = sk.serve(sk.service(lambda x: 1 / x, name="inv"), http=0)
        >>> try:
        ...     sk.Client(srv.url).inv(x=0)
        ... except sk.RemoteError as error:
        ...     print(error.type)
        ZeroDivisionError
        >>> import io
        >>> printed = io.StringIO()
        >>> srv.settle().last_traceback(file=printed)  # in a cell: srv.last_traceback()
        >>> printed.getvalue().splitlines()[-1]
        'ZeroDivisionError: division by zero'
        >>> srv.stop()
        """
        import sys

        for entry in reversed(self.metrics.errors_log.copy()):
            text = entry.get("traceback")
            if text:
                print(text.rstrip(), file=file or sys.stdout)
                return
        last = self.metrics.last_error
        note = (
            f"No traceback kept: the last error ({last['type']}: {last['message']}) was refused input, not raised code."
            if last
            else f"{self.name!r} has had no errors."
        )
        print(note, file=file or sys.stdout)

    def settle(self, timeout: float = 10.0, quiet: float = 0.05) -> Served:
        """Wait until what was sent has been handled; return ``self``.

        Settled means: every request received has been answered, a pipeline's queue is
        empty, and the counters did not move for ``quiet`` seconds. Use it before printing
        counts in a notebook, so they do not depend on timing. A source that ticks faster
        than ``quiet`` never settles: wait for a condition with ``svckit.testing.wait_for``.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        metrics = self.metrics
        pending = self._pending
        deadline = time.monotonic() + timeout
        last: tuple[int, ...] = ()
        since = time.monotonic()
        while True:
            now = time.monotonic()
            snapshot = (metrics.received, metrics.replied, metrics.errors, metrics.dropped)
            idle = metrics.received == metrics.replied + metrics.disconnected and not pending()
            if not idle or snapshot != last:
                last, since = snapshot, now
            elif now - since >= quiet:
                return self
            if now > deadline:
                busy = metrics.received - metrics.replied - metrics.disconnected + pending()
                raise TimeoutError(f"{self.name!r} did not settle within {timeout} s ({busy} messages in flight).")
            time.sleep(0.005)

    def _pending(self) -> int:
        pipe = self._pipeline
        return pipe.pending() if pipe is not None else 0

    def picture(self, timing: bool = False) -> Picture:
        """The picture of what it serves, with the counts of each stage in this served thing
        (serving runs a copy of the flow: the flow you composed keeps its own counts); with
        ``timing``, each stage's recent mean and p99 time too, the slowest marked."""
        return Picture(self.bound if self.bound is not None else self.node, counts=True, title=self.name, timing=timing)

    def __enter__(self) -> Served:
        """``with sk.serve(...) as srv:``: stopped when the block ends, however it ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Served {self.name}: {self.state.value}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        """Its state and the addresses to reach it; inside JupyterHub or Binder the proxied
        link a browser can open comes first, beside the local one."""
        parts = [f"<b>{escape(self.name)}</b>: {escape(self.state.value)}"]
        if self.proxy_url:
            link = escape(self.proxy_url)
            parts.append(f'<a href="{link}" target="_blank">{link}</a> (through the Jupyter server)')
        if self.url:
            parts.append(f"<code>{escape(self.url)}</code>")
            docs = escape(f"{self.proxy_url}docs" if self.proxy_url else f"{self.url}/docs")
            parts.append(f'<a href="{docs}" target="_blank">API docs</a>')
        if self.zmq_url:
            parts.append(f"<code>{escape(self.zmq_url)}</code>")
        return '<span class="svckit-served">' + " · ".join(parts) + "</span>"

    # -- generations ---------------------------------------------------------------
    def _bind(self, node: Service, kept: dict[int, tuple[Service, Service]]) -> tuple[Binder, Any]:
        """Bind ``node`` (keeping the copies in ``kept``) and make its request-path generation."""
        binder = Binder(self.name, self.metrics, kept)
        bound = binder.bind(node)
        chosen = [binder.bind(m) for m in self.middleware]
        assert all(isinstance(m, Middleware) for m in chosen)
        own: list[Middleware] = []
        if requests_log.isEnabledFor(logging.DEBUG):
            own.append(request_log(self.name))
        # Host, Origin and Content-Type of HTTP requests, before the token: a web page is refused
        own.append(
            browser_check(self.name, self.path.access, self.host, lambda: self.http_port, self._token is not None)
        )
        if self._token is not None:
            own.append(token_check(self.name, self._token))
        own.append(body_limit(self.path.limits.max_body))
        request_mw = own + [m for m in chosen if m.scope == "request"]  # type: ignore[attr-defined]
        message_mw = [m for m in chosen if m.scope == "message"]  # type: ignore[attr-defined]
        actions = {a: Action(a, fn, params) for a, (fn, params) in bound.actions().items()}
        gen = self.path.generation(
            bound,
            actions,
            self.timeout,
            request_mw,  # type: ignore[arg-type]
            message_mw,  # type: ignore[arg-type]
            token=self._token,
        )
        return binder, (bound, gen)

    def _start_leaves(self, leaves: list[Service], binder: Binder) -> None:
        """``setup()`` then svckit's ``open`` for each new bound leaf; undone if one fails."""
        started: list[Service] = []
        try:
            for leaf in leaves:
                call_hook(leaf.setup)
                started.append(leaf)
                self.runtime.call(leaf.open(binder, self.runtime), timeout=10)
        except BaseException:
            self._stop_leaves(started)
            raise

    def _stop_leaves(self, leaves: list[Service]) -> None:
        for leaf in leaves:
            if self.runtime.running:
                with contextlib.suppress(Exception):
                    self.runtime.call(leaf.close(), timeout=10)
            try:
                call_hook(leaf.teardown)
            except Exception:
                logger.exception("teardown of %r failed", leaf.name)

    def _bound_leaves(self) -> list[Service]:
        return [bound for _, bound in self._memo.values() if not bound._composite]

    # -- lifecycle -------------------------------------------------------------
    def _open(self, http: int | None, zmq: int | None) -> None:
        """Bind ports here (errors surface in the caller), then start the endpoints on the runtime."""
        rt = self.runtime
        self.state = State.STARTING
        endpoint, sock = self._claim_http(http) if http is not None else (None, None)
        leaves: list[Service] = []  # set up and open: undone if what follows fails
        try:
            # after a stop, the same copies serve again (a sink keeps the port it got)
            binder, (bound, gen) = self._bind(self.node, self._memo)
            self._start_leaves([b for _, b in binder.memo.values() if not b._composite], binder)
            leaves = [b for _, b in binder.memo.values() if not b._composite]
            self.bound, self._memo, self._actions = bound, binder.memo, self.node.actions()
            self.path.gen = gen
            if http is not None:
                self._http = self._start_http(endpoint, sock)
                sock = None
            if zmq is not None:
                self._zmq = zmq_transport.open_endpoint(self, zmq)
                self.zmq_port = self._zmq.port
            self._start_pipeline()
        except BaseException:
            if sock is not None:
                sock.close()
            self._close_endpoints(park=False)
            self.state = State.STOPPED
            self._stop_leaves(leaves)
            raise
        self.state = State.RUNNING
        registry(rt)[self.name] = self
        for warning in self.warnings():
            logger.warning("%r is %s.", self.name, warning)

    def _claim_http(self, port: int) -> tuple[http_transport.HttpEndpoint | None, Any]:
        """The open endpoint on ``port``, or a socket bound for a new one (port 0: a free port)."""
        existing = ports(self.runtime).get(("http", self.host, port)) if port else None
        if existing is not None and not existing.closed:
            return existing, None
        return None, bind_tcp(self.host, port, "HTTP")

    def _start_http(self, endpoint: http_transport.HttpEndpoint | None, sock: Any) -> http_transport.HttpEndpoint:
        if endpoint is None:
            endpoint = http_transport.HttpEndpoint(self.runtime, sock, self.host, self.path.limits)
            self.runtime.call(endpoint.open())
        endpoint.attach(self)
        self.http_port = endpoint.port
        return endpoint

    def _start_pipeline(self) -> None:
        previous, self._pipeline = self._pipeline, None  # one _stop_pipeline paused for a hand-over
        if self.bound is not None and self.bound.role == "source":
            start = open_pipeline(self.path, self.bound, self.runtime, previous)
            self._pipeline = self.runtime.call(start, timeout=10)
        elif previous is not None and self.runtime.running:
            self.runtime.call(previous.stop(drain=False, timeout=1.0), timeout=10)

    def _stop_pipeline(self, drain: bool, timeout: float = 5.0, successor: Service | None = None) -> None:
        """Stop the pipeline; with ``successor`` (the node served next) whose source can take
        over its socket, it is only paused and kept for ``_start_pipeline`` to hand on."""
        pipe, self._pipeline = self._pipeline, None
        if pipe is not None and self.runtime.running:
            paused = self.runtime.call(pipe.stop(drain, timeout, successor), timeout=2 * timeout + 5)
            self._pipeline = pipe if paused else None

    def _close_endpoints(self, park: bool, grace: float = 5.0) -> None:
        """Close the ZMQ endpoint; leave the HTTP port answering 503 for this while others
        serve on it (``park``), else detach, closing the port when nothing else runs there."""
        endpoint = self._http
        if endpoint is not None:
            last = endpoint.park(self) if park else endpoint.detach(self)
            if last:
                self._http = None
                with contextlib.suppress(Exception):
                    self.runtime.call(endpoint.close(), timeout=10)
            elif not park:
                self._http = None
        if self._zmq is not None:
            zmq_endpoint, self._zmq = self._zmq, None
            with contextlib.suppress(Exception):
                zmq_endpoint.close(grace)

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving: stop accepting, let in-flight requests finish, run teardown.

        New requests are answered ``ServiceUnavailable`` (503) at once; those in flight get
        ``timeout`` s (default: its ``drain_timeout``) to finish, then they are answered 503
        too, over their own connection, and what they ran is cancelled. Its ZMQ port is then
        freed; its HTTP port too, unless other served things still serve on it: then its
        actions answer 503 until it is started again or another served thing takes them
        over. Idempotent.
        """
        with _serve_lock:
            if not self._begin_stop():
                return
            wait = self.path.limits.drain_timeout if timeout is None else timeout
            try:
                if self.runtime.running:
                    with contextlib.suppress(Exception):
                        self.runtime.call(self._drain(wait), timeout=wait + 2)
            finally:
                self._finish_stop()

    def _begin_stop(self) -> bool:
        """Stop accepting (requests are answered 503 from now on); False when not serving."""
        if self.state in (State.STOPPED, State.CREATED, State.STOPPING):
            return False
        self.state = State.STOPPING
        with contextlib.suppress(Exception):
            self._stop_pipeline(drain=False)
        return True

    async def _drain(self, timeout: float) -> None:
        """Wait ``timeout`` s at most for the requests in flight (of every generation still
        draining), then answer the rest 503 and give them a moment to send it. On the loop."""
        gens = [self.path.gen, *self._draining]
        deadline = asyncio.get_running_loop().time() + timeout
        for gen in gens:
            await gen.drain(max(0.0, deadline - asyncio.get_running_loop().time()))
        if sum(self.path.expire(gen) for gen in gens):
            for gen in gens:
                await gen.drain(1.0)

    def _finish_stop(self) -> None:
        """Close the transports, tear down, and leave the registry (after ``_drain``)."""
        try:
            self._close_endpoints(park=True, grace=0.5)
            self._wait_retired(2.0)
            self._stop_leaves(self._bound_leaves())
        finally:
            self.state = State.STOPPED
            table = registry(self.runtime)
            if table.get(self.name) is self:
                del table[self.name]

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
            if not self.runtime.running:
                self.runtime = runtime()
                self.path.runtime = self.runtime
                self._http = None
            other = registry(self.runtime).get(self.name)
            if other is not None and other is not self:
                raise StateError(f"Another service is now served as {self.name!r}; stop it first.")
            parked, self._http = self._http, None
            if parked is not None and parked.closed:
                parked = None
            self._open(self.http_port if parked is None else parked.port, self.zmq_port)

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
                self._stop_pipeline(drain=True)
                for leaf in self._bound_leaves():
                    call_hook(leaf.teardown)
                for leaf in self._bound_leaves():
                    call_hook(leaf.setup)
                self._start_pipeline()
            except BaseException:
                self.state = State.FAILED
                raise
            self.state = State.RUNNING

    def replace(
        self,
        node: Service,
        http: int | None,
        zmq: int | None,
        host: str,
        timeout: float | None,
        token: str | None,
        limits: Limits | None = None,
        access: Access | None = None,
        keep: int | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        """Swap in a new service or flow under the same name: same ports, nothing dropped.

        Returns at once: requests in flight finish on the old generation in the background,
        then the stages it no longer serves are torn down. The new ``timeout``, ``token``,
        limits, access rules, ``keep`` and ``middleware`` apply to every request from now on.
        """
        actions = node.actions()
        if host != self.host:
            raise StateError(f"{self.name!r} is served on {self.host}; stop it before serving it on {host}.")
        # Refuse an action that clashes on the port before anything changes: the old flow serves on.
        moves = http is not None and http != 0 and http != self.http_port
        port = self.http_port if http is not None and not moves else http
        target = ports(self.runtime).get(("http", self.host, port)) if port else None
        if target is not None:
            target.check(self, [self.name, *actions])
        if self._token is not None and token is None:
            logger.warning(
                "%r is served again without token=: it no longer asks for one (pass token= to keep it).", self.name
            )
        old_gen, old_memo = self.path.gen, self._memo
        before = (self.timeout, self._token, self.path.limits, self.path.access, self.middleware)
        self.timeout, self._token = timeout, token
        self.path.limits = limits if limits is not None else self.path.limits
        self.path.access = access if access is not None else self.path.access
        self.middleware = list(middleware) if middleware is not None else self.middleware
        try:
            binder, (bound, gen) = self._bind(node, old_memo)  # stages kept keep their bound copy
            self._start_leaves(binder.made, binder)
        except BaseException:
            self.timeout, self._token, self.path.limits, self.path.access, self.middleware = before
            raise
        try:
            self._stop_pipeline(drain=True, successor=bound)  # a source on the same socket takes it over
            self.node, self.bound, self._memo, self._actions = node, bound, binder.memo, actions
            self.path.gen = gen
            if keep is not None:
                self.metrics.resize(keep)
            self._move_transports(http, zmq)
            self._start_pipeline()
            if self.state is State.FAILED:
                self.state = State.RUNNING
        except BaseException as exc:
            self.path.fail(exc)  # half swapped (a port taken, a source that would not open): say so
            raise
        finally:
            kept = {id(b) for _, b in binder.memo.values()}
            retired = [b for _, b in old_memo.values() if id(b) not in kept and not b._composite]
            self._retire(old_gen, retired)

    def _retire(self, gen: Any, leaves: list[Service]) -> None:
        """Tear down what an old generation alone used: now when nothing of it is in flight
        (looked at on the loop, where requests enter), else in the background once it has
        drained (its requests get ``drain_timeout`` s, then they are answered 503);
        ``stop()`` and shutdown wait for that."""
        self._draining = [g for g in self._draining if g.inflight] + [gen]
        rt = self.runtime
        if not rt.running:
            self._stop_leaves(leaves)
            return

        async def idle() -> bool:
            return bool(gen.inflight == 0)

        if rt.call(idle(), timeout=10):
            self._stop_leaves(leaves)
            return

        drain = self.path.limits.drain_timeout

        async def later() -> None:
            if not await gen.drain(drain):
                self.path.expire(gen)  # past the drain timeout: answered 503
                await gen.drain(1.0)
            for leaf in leaves:
                with contextlib.suppress(Exception):
                    await leaf.close()
                try:
                    hook = leaf.teardown
                    if is_async_callable(hook):
                        await hook()  # type: ignore[func-returns-value,misc]
                    else:
                        await rt.blocking(hook)
                except Exception:
                    logger.exception("teardown of %r failed", leaf.name)

        future = rt.submit(later())
        self._retiring = [f for f in self._retiring if not f.done()] + [future]

    def _wait_retired(self, timeout: float) -> None:
        """Let old generations still draining finish their teardown (at most ``timeout`` s)."""
        retiring, self._retiring = self._retiring, []
        for future in retiring:
            with contextlib.suppress(Exception):
                future.result(timeout)

    def _move_transports(self, http: int | None, zmq: int | None) -> None:
        if self._http is not None:
            if http is None or (http and http != self.http_port):
                self._move_http(http)
            else:
                self._http.attach(self)
        elif http is not None:
            self._move_http(http)
        if self._zmq is not None and (zmq is None or (zmq and zmq != self.zmq_port)):
            self._zmq.close(30.0)  # moved: its requests in flight finish, as on a re-serve
            self._zmq, self.zmq_port = None, None
        if self._zmq is None and zmq is not None:
            self._zmq = zmq_transport.open_endpoint(self, zmq)
            self.zmq_port = self._zmq.port

    def _move_http(self, http: int | None) -> None:
        new = None
        if http is not None:
            endpoint, sock = self._claim_http(http)
            new = endpoint
            if new is None:
                new = http_transport.HttpEndpoint(self.runtime, sock, self.host, self.path.limits)
                self.runtime.call(new.open())
        old, self._http = self._http, None
        if old is not None and old.detach(self):
            self.runtime.call(old.close(), timeout=10)
        if new is not None:
            new.attach(self)
        self._http = new
        self.http_port = new.port if new is not None else None


def pending(served: Served) -> int:
    """Messages a served pipeline has taken in but not finished: queued or being handled."""
    return served._pending()


def serve(
    x: Any,
    name: str | None = None,
    http: int | None = None,
    zmq: int | None = None,
    host: str = "127.0.0.1",
    *,
    timeout: float | None = 60.0,
    token: str | bool | None = None,
    max_body: int = DEFAULTS.max_body,
    max_header: int = DEFAULTS.max_header,
    limit_concurrency: int = DEFAULTS.limit_concurrency,
    read_timeout: float = DEFAULTS.read_timeout,
    drain_timeout: float = DEFAULTS.drain_timeout,
    allow_origins: Sequence[str] = (),
    allow_hosts: Sequence[str] = (),
    expose_errors: bool = False,
    keep: int = 1000,
    middleware: Sequence[Any] = (),
    debug: bool = False,
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
        The interface to bind; ``127.0.0.1`` unless you mean to expose it. Another host
        without a token logs a warning and shows it in ``status()["warnings"]``.
    timeout
        Seconds a request may take before it is answered with ``ServiceTimeout`` (504).
    token
        When set, requests must carry ``Authorization: Bearer <token>`` (over ZMQ, a token
        frame); ``token=True`` makes a random one (read it from ``.token``).
    max_body
        Largest request body (HTTP) or frame (ZMQ) accepted, in bytes: larger is answered 413.
    max_header
        Largest HTTP request line and headers, in bytes: larger is answered 431.
    limit_concurrency
        HTTP connections open at once on the port (past it: 503) and ZMQ requests in flight
        (past it, reading waits).
    read_timeout
        Seconds a client has to send its headers, then its body; the connection is closed after.
    drain_timeout
        Seconds ``stop()``, re-serving and shutdown give requests in flight; they are answered
        ``ServiceUnavailable`` (503) after.
    allow_origins
        Web origins (``"https://app.example"``, or ``"*"``) whose pages may POST here; any
        other ``Origin`` than the server's own is refused with 403.
    allow_hosts
        Host names a request's ``Host`` header may name besides this machine's loopback names
        (DNS rebinding is refused with 403).
    expose_errors
        Error replies carry exception messages verbatim; by default file paths outside the
        working directory are shortened to their last part.
    keep
        How many recent outputs and traffic rows to keep for ``.outputs``/``.traffic``.
    middleware
        Functions ``mw(call, msg)`` (or ``@sk.middleware`` ones, ``sk.throttle(...)``) around
        every call of every transport, outermost first (see ``sk.middleware``).
    debug
        Error replies of raised code (5xx) carry its traceback (``"traceback"`` in the error
        body; paths shortened unless ``expose_errors``). Off by default: tracebacks stay in
        the kernel, in ``Served.errors`` and the dashboard.

    Notes
    -----
    Serving again under the same name applies every argument given anew; ``token``,
    ``timeout``, the limits, ``keep`` and ``debug`` take their defaults when left out, so
    serving again without ``token=`` stops asking for one (a warning is logged).

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
    http = check_port(http, "http")
    zmq = check_port(zmq, "zmq")
    if http is None and zmq is None and node.role != "source":
        http = 0
    http, zmq = _pinned(name, http, zmq)
    if timeout is not None and timeout <= 0:
        raise WiringError(f"timeout={timeout!r}: give a positive number of seconds, or None for no limit.")
    limits = Limits(max_body, max_header, limit_concurrency, read_timeout, drain_timeout)
    access = Access(allow_origins, allow_hosts, expose_errors)  # type: ignore[arg-type]
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise WiringError(f"keep={keep!r}: give how many recent outputs and traffic rows to keep (0 or more).")
    if not isinstance(host, str) or not host:
        raise WiringError(f"host={host!r}: give the interface to bind as a string, such as '127.0.0.1'.")
    token = _token(token)
    chosen = _middleware(middleware)
    rt = runtime()
    if rt.in_runtime():
        raise StateError("sk.serve() cannot be called from the runtime's own thread.")
    with _serve_lock:
        existing = registry(rt).get(name)
        if existing is not None and existing.state in (State.RUNNING, State.FAILED):
            existing.replace(node, http, zmq, host, timeout, token, limits, access, keep, chosen)
            existing.path.debug = bool(debug)
            return existing
        served = Served(
            rt,
            node,
            name,
            host=host,
            timeout=timeout,
            token=token,
            limits=limits,
            access=access,
            keep=keep,
            middleware=chosen,
        )
        served.path.debug = bool(debug)
        served._open(http, zmq)
        return served


def _pinned(name: str, http: int | None, zmq: int | None) -> tuple[int | None, int | None]:
    """Ports pinned from outside (``svckit run --http NAME=PORT``): ``SVCKIT_PORTS`` holds
    ``{"name": {"http": 8000, "zmq": 5555}}``: a pin wins over the call's port, and adds the
    transport when the call had none; under ``"*"``, it replaces the port of every call that has one."""
    raw = os.environ.get("SVCKIT_PORTS")
    if not raw:
        return http, zmq
    try:
        table = json.loads(raw)
    except ValueError:
        logger.warning("SVCKIT_PORTS=%r is not JSON: no ports are pinned.", raw)
        return http, zmq
    for key in ("*", name):
        entry = table.get(key) if isinstance(table, dict) else None
        if isinstance(entry, dict):
            anyone = key == "*"
            http = http if anyone and http is None else entry.get("http", http)
            zmq = zmq if anyone and zmq is None else entry.get("zmq", zmq)
    return http, zmq


def _token(token: Any) -> str | None:
    """The token to ask for: ``True`` makes a random one; a string must not be empty."""
    if token is None or token is False:
        return None
    if token is True:
        return secrets.token_urlsafe(24)
    if not isinstance(token, str) or not token.strip() or token != token.strip():
        raise WiringError(f"token={token!r}: give a non-empty string without surrounding spaces, or True to make one.")
    return token
