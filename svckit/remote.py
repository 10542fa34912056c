"""Remote stages: ``sk.remote(addr, action)`` is another process's served action, usable in ``>>``.

The stage sends the whole current message to the action and merges the reply (a dict)
into it, so ``parse >> sk.remote("tcp://gpu-box:5555", "embed") >> store`` runs its middle
stage wherever ``svckit run`` serves it. An error the remote side answers arrives under its
own name (``from_body``: a ``BadMessage`` stays one, unknown types are ``RemoteError``); a
connection that is lost or never made is ``ServiceUnavailable``, and the next message
connects again (a restarted server on the same port heals the flow).

Over ZMQ (``tcp://``, ``ipc://``) the stage keeps one asynchronous DEALER socket on the
runtime loop per served copy and has many requests in flight on it, told apart by the
request-id frame the ROUTER endpoint echoes. A socket monitor hears a disconnect and fails
every request still waiting at once (no reply can come from a process that went away).

Over HTTP (``http://``, ``https://``) the call is ``sk.Client.call`` in the runtime's worker
pool (one ``requests.Session`` per pool thread): svckit has no asynchronous HTTP client, and
a pool hop costs tens of microseconds against the ~1 ms of an HTTP round trip. Measured here
(``benchmarks/bench_scale.py``): the ZMQ path moved several times the HTTP path's messages per
second at 8 in flight; choose ZMQ between your own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .client import Client
from .errors import BadResult, ServiceTimeout, ServiceUnavailable, WiringError, from_body
from .params import Params, check_name
from .running import Binder
from .service import Service

__all__ = ["Remote", "remote"]

_ids = itertools.count(1)


def _any_message(**message: Any) -> dict[str, Any]:
    """Stands for the remote action: it reads the whole message, and answers a dict."""
    return message


class Remote(Service):
    """A served action of another process, as a stage; made by ``sk.remote``.

    Examples
    --------
    >>> import svckit as sk
    >>> sk.remote("tcp://127.0.0.1:5555", "wordcount")
    <Service wordcount: remote tcp://127.0.0.1:5555>
    >>> sk.remote("ftp://box", "wordcount")
    Traceback (most recent call last):
    ...
    svckit.errors.WiringError: sk.remote('ftp://box', 'wordcount'): give a ZMQ address (tcp://host:port) or an HTTP URL (http://host:port).
    """

    def __init__(
        self,
        addr: str,
        action: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        name: str | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        if not isinstance(addr, str) or not addr.startswith(("tcp://", "ipc://", "http://", "https://")):
            raise WiringError(
                f"sk.remote({addr!r}, {action!r}): give a ZMQ address (tcp://host:port) or an HTTP URL "
                "(http://host:port)."
            )
        if not isinstance(action, str) or not action:
            raise WiringError(f"sk.remote({addr!r}, {action!r}): name the remote action, as it is served.")
        for key, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise WiringError(
                    f"sk.remote({addr!r}, {action!r}): {key}={value!r}; give a positive number of seconds."
                )
        self.addr = addr.rstrip("/") if addr.startswith("http") else addr
        self.action = action
        self.http = addr.startswith("http")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.token = token
        self.name = check_name(name or action, "remote stage name")
        self.output = self.name
        self.config = {}
        self._actions = {}
        self._params = Params(_any_message, self.name)
        self.is_async = True
        self.concurrent = True
        self._link: _Link | None = None
        self.sent = 0
        self.unavailable = 0

    def _target(self) -> Callable[..., Any]:
        return _any_message

    def describe(self) -> str:
        return f"{self.name}: remote {self.addr}"

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"

    def status_extra(self) -> dict[str, Any]:
        """What ``Served.status()`` shows of it: where it calls, requests waiting for their
        replies, and how many were sent and found nobody answering."""
        link = self._link
        return {
            "kind": "remote",
            "address": self.addr,
            "action": self.action,
            "waiting": link.waiting if link is not None else 0,
            "sent": self.sent,
            "unavailable": self.unavailable,
        }

    # -- serving ---------------------------------------------------------------------
    def _bound(self, binder: Binder) -> None:
        self._link = None  # a served copy has its own socket (or sessions)
        self.sent = self.unavailable = 0

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()

    def _linked(self, rt: Any) -> _Link:
        link = self._link
        if link is None or link.closed or link.rt is not rt:
            link = self._link = _HttpLink(self, rt) if self.http else _ZmqLink(self, rt)
            if self._origin is None:  # called in a cell: closed at sk.shutdown()
                rt.local("svckit.remote.links", _Links, _Links.aclose).add(link)
        return link

    # -- running -------------------------------------------------------------------
    def run(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        from .runtime import run_here

        run_here(lambda rt: self.arun(msg, rt))

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        self.calls += 1
        try:
            reply = await self._linked(rt).call(msg)
        except Exception as exc:
            if isinstance(exc, ServiceUnavailable):
                self.unavailable += 1
            self._failed(exc)
            raise
        finally:
            self.sent += 1
        msg.update(reply)


class _Link:
    closed = False

    @property
    def waiting(self) -> int:
        """Requests sent and not answered yet."""
        return self._waiting

    def __init__(self, stage: Remote, rt: Any) -> None:
        self.stage = stage
        self.rt = rt
        self._waiting = 0

    async def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


class _Links:
    """The links of remote stages called in cells, closed at ``sk.shutdown()``."""

    def __init__(self) -> None:
        self.links: list[_Link] = []

    def add(self, link: _Link) -> None:
        self.links = [k for k in self.links if not k.closed]
        self.links.append(link)

    async def aclose(self) -> None:
        for link in self.links:
            await link.aclose()
        self.links.clear()


class _HttpLink(_Link):
    """``sk.Client.call`` in the worker pool, a client (a ``requests.Session``) per thread."""

    def __init__(self, stage: Remote, rt: Any) -> None:
        super().__init__(stage, rt)
        self._waiting = 0
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            stage = self.stage
            client = self._local.client = Client(stage.addr, timeout=stage.timeout, token=stage.token)
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise ServiceUnavailable(f"Remote stage {self.stage.name!r} is closed (its served thing stopped).")
        return self._client().call(self.stage.action, msg)

    async def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._waiting += 1
        try:
            return await self.rt.blocking(self._call, dict(msg))
        finally:
            self._waiting -= 1

    async def aclose(self) -> None:
        self.closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


class _ZmqLink(_Link):
    """One DEALER socket with many requests in flight, matched to replies by request id."""

    def __init__(self, stage: Remote, rt: Any) -> None:
        import zmq

        from .zmqnet import Reader, connect, make_socket

        super().__init__(stage, rt)
        self._asock, self.sock = make_socket(rt, zmq.DEALER)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to a peer that is there: a dead address shows
        # the monitor before connecting: it must hear the first "connected"
        where = f"inproc://svckit-remote-{id(self)}-{next(_ids)}"
        self.sock.monitor(where, int(zmq.EVENT_DISCONNECTED))
        self._amon, self._mon = make_socket(rt, zmq.PAIR)
        self._mon.connect(where)
        connect(self.sock, stage.addr, f"sk.remote({stage.addr!r})")
        self._pending: dict[bytes, tuple[asyncio.Future[list[bytes]], str]] = {}
        self._reader = Reader(self.sock)
        self._mon_reader = Reader(self._mon)
        self._prefix = f"{os.getpid():x}-{id(self):x}-"
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._watch())]

    @property
    def waiting(self) -> int:
        return len(self._pending)

    async def _read(self) -> None:
        async for frames in self._reader:
            if len(frames) < 3:
                continue
            found = self._pending.pop(frames[-1], None)
            if found is None and len(frames) == 3 and self._pending:
                # no id came back: a request refused before its frames were read (a token was
                # expected, so the id was taken for one); such refusals come at once, in order
                found = self._pending.pop(next(iter(self._pending)))
            if found is not None and not found[0].done():
                found[0].set_result(frames)

    async def _watch(self) -> None:
        """Follow the connection with the socket monitor: fail every waiting request when it drops."""
        import zmq

        from .zmqnet import _event

        disconnected = int(zmq.EVENT_DISCONNECTED)
        async for frames in self._mon_reader:
            event = _event(frames)
            if event == disconnected:
                self._fail_all("the connection was lost while it waited for its reply")

    async def _writable(self) -> None:
        """Wait (up to ``connect_timeout``) until the socket has a peer to send to: with
        ``ZMQ_IMMEDIATE`` that is once a connection finished its handshake. Looked at every
        few milliseconds, only while there is none (``poll`` would take the FD from the reader)."""
        import zmq

        sock, stage = self.sock, self.stage
        if int(sock.get(zmq.EVENTS)) & int(zmq.POLLOUT):
            return
        deadline = time.monotonic() + stage.connect_timeout
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.005)
                if int(sock.get(zmq.EVENTS)) & int(zmq.POLLOUT):
                    return
        finally:
            self._reader.sent()  # reading EVENTS may have taken the reader's edge
        raise self._unavailable(
            f"nothing answers there (no connection within {stage.connect_timeout:g} s)", stage.action
        )

    def _fail_all(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future, action in pending.values():
            if not future.done():
                future.set_exception(self._unavailable(why, action))

    def _unavailable(self, why: str, action: str) -> ServiceUnavailable:
        stage = self.stage
        return ServiceUnavailable(
            f"Remote stage {stage.name!r} got no reply from {stage.addr} for {action!r}: {why}. "
            "Is it served there (svckit run ...)? The next message connects again.",
            service=stage.name,
        )

    async def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        import zmq

        from .zmqnet import MORE_NOBLOCK, NOBLOCK

        stage = self.stage
        if self.closed:
            raise ServiceUnavailable(f"Remote stage {stage.name!r} is closed (its served thing stopped).")
        try:
            body = json.dumps(msg, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise BadResult(
                f"Remote stage {stage.name!r} cannot send the message: it is not JSON ({exc}).", service=stage.name
            ) from None
        rid = (self._prefix + f"{next(_ids):x}").encode()
        frames = [b"", stage.action.encode(), body]
        if stage.token is not None:
            frames.append(stage.token.encode())
        frames.append(rid)
        deadline = time.monotonic() + stage.timeout
        await self._writable()
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, stage.action)
        try:
            try:
                for frame in frames[:-1]:
                    self.sock.send(frame, MORE_NOBLOCK)
                self.sock.send(frames[-1], NOBLOCK)
            except zmq.Again:
                raise self._unavailable("the connection is gone or full", stage.action) from None
            finally:
                self._reader.sent()
            try:
                reply = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise ServiceTimeout(
                    f"Remote stage {stage.name!r}: no reply from {stage.addr} for {stage.action!r} within "
                    f"{stage.timeout:g} s.",
                    service=stage.name,
                ) from None
        finally:
            self._pending.pop(rid, None)
        return _decoded(stage, *(reply[-3:-1] if reply[-1] == rid else reply[-2:]))

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._fail_all("its served thing stopped")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reader.close()
        self._mon_reader.close()
        with contextlib.suppress(Exception):
            self.sock.disable_monitor()
        self._amon.close(linger=0)
        self._asock.close(linger=0)


def _decoded(stage: Remote, status: bytes, body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if status == b"ok" and isinstance(decoded, dict):
        return decoded
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        raise from_body(decoded["error"])
    raise from_body(
        {"type": "RemoteError", "message": f"Remote stage {stage.name!r}: unreadable reply from {stage.addr}."}
    )


def remote(
    addr: str,
    action: str,
    *,
    timeout: float = 30.0,
    token: str | None = None,
    name: str | None = None,
    connect_timeout: float = 2.0,
) -> Remote:
    """Another process's served action as a stage: ``a >> sk.remote("tcp://host:5555", "embed") >> b``.

    Parameters
    ----------
    addr
        Where it is served: a ZMQ address (``tcp://host:port``, ``Served.zmq_url``) or an HTTP
        URL (``http://host:port``, ``Served.url``).
    action
        The action's name there (the served thing's name, or one of its ``@sk.handle`` actions).
    timeout
        Seconds to wait for each reply (then ``ServiceTimeout``).
    token
        The token the remote side asks for, if any.
    name
        The stage's name here (default: the action's).
    connect_timeout
        Seconds to wait for a ZMQ connection before ``ServiceUnavailable``.

    Notes
    -----
    The whole current message is sent; the reply (a dict) is merged into it. A remote error
    is raised here under its own name; a remote side that is down or goes away answers
    ``ServiceUnavailable``, and the next message connects again.
    """
    return Remote(addr, action, timeout=timeout, token=token, name=name, connect_timeout=connect_timeout)
