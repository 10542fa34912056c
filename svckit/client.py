"""Clients: ``Client`` calls served actions over HTTP (a reused ``requests.Session``), ``ZmqClient`` over ZMQ.

A remote error comes back as the svckit exception of the same name (a ``BadMessage``
stays a ``BadMessage``); errors of other types arrive as ``RemoteError``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

from .errors import BadMessage, ServiceTimeout, ServiceUnavailable, StateError, from_body
from .placement import crossed, on_loop, waits_here

__all__ = ["Client", "Subscription", "ZmqClient"]


def payload(data: Mapping[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """The message to send: ``data`` (a dict) updated with keyword ``fields``."""
    if data is None:
        return fields
    if not isinstance(data, Mapping):
        raise BadMessage(f"A message is a dict of fields, not a {type(data).__name__}; pass field=value.")
    message = dict(data)
    message.update(fields)
    return message


def _crossing(what: str) -> None:
    """Before a client waits for a reply: noted (a ``def`` stage that calls a client is never
    moved to the runtime loop). From a stage svckit had moved to the loop, where the reply
    could be the loop's own to give, refused: that stage runs in the worker pool again from
    its next call."""
    if on_loop() is not None:
        waits_here(f"it called {what} from the loop")
        raise StateError(
            f"{what} was called from a def stage running on the svckit runtime loop, where waiting for a "
            "reply could wait on the loop itself; the stage runs in the worker pool from its next call "
            "(mark it @sk.service(inline=False) to keep it there)."
        )
    crossed()


class Client:
    """Call a served thing over HTTP.

    Parameters
    ----------
    url
        The base URL, as ``Served.url`` gives it (``http://127.0.0.1:8000``).
    timeout
        Seconds to wait for each reply (``ServiceTimeout`` after that).
    token
        Sent as ``Authorization: Bearer <token>`` when the served thing needs one.

    Examples
    --------
    >>> import svckit as sk
    >>> srv = sk.serve(sk.service(lambda a, b: a + b, name="add"), http=0)
    >>> client = sk.Client(srv.url)
    >>> client.call("add", a=1, b=2)["add"]
    3
    >>> client.add(a=2, b=2)["add"]
    4
    >>> client.close(); srv.stop()
    """

    def __init__(self, url: str, *, timeout: float = 30.0, token: str | None = None) -> None:
        import requests

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"Client needs an http:// or https:// URL, got {url!r}.")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # proxy look-ups on every call cost half the throughput
        self._session.headers["Content-Type"] = "application/json"
        if token is not None:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def call(
        self, action: str, data: Mapping[str, Any] | None = None, /, *, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """``POST /{action}`` with the message; return the reply, or raise the remote error."""
        body = json.dumps(payload(data, fields)).encode()
        return self._request("POST", action, body, timeout)

    def stream(
        self, action: str, data: Mapping[str, Any] | None = None, /, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[dict[str, Any]]:
        """``POST /{action}`` to a streaming action: each message as it comes (the reply is
        read as newline-delimited JSON). An error the stream ends with is raised after the
        messages before it; ``timeout`` bounds the wait for each message. A plain action
        yields its one reply."""
        import requests

        body = json.dumps(payload(data, fields)).encode()
        url = f"{self.url}/{action}"
        wait = timeout or self.timeout
        headers = {"Accept": "application/x-ndjson"}
        _crossing("sk.Client.stream")
        try:
            r = self._session.post(url, data=body, timeout=wait, stream=True, headers=headers)
        except requests.Timeout as exc:
            raise ServiceTimeout(f"No reply from {url} within {wait} s.") from exc
        except requests.ConnectionError as exc:
            raise ServiceUnavailable(f"Cannot reach {url}: is it served? ({exc.__class__.__name__})") from exc
        with r:
            if not r.headers.get("content-type", "").startswith(_NDJSON):
                yield self._reply(r, url, (200,))
                return
            try:
                for line in r.iter_lines():
                    if line:
                        yield _line(line, url)
            except requests.RequestException as exc:
                raise ServiceUnavailable(f"The stream from {url} broke off: {exc.__class__.__name__}.") from exc

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return self._request("GET", "health", None, None, ok=(200, 503))

    def status(self) -> dict[str, Any]:
        """``GET /status``: state and counters of what is served on this port."""
        return self._request("GET", "status", None, None)

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        return self._request("GET", "openapi.json", None, None)

    def _request(
        self, method: str, path: str, body: bytes | None, timeout: float | None, ok: tuple[int, ...] = (200,)
    ) -> dict[str, Any]:
        import requests

        url = f"{self.url}/{path}"
        _crossing("sk.Client")
        try:
            r = self._session.request(method, url, data=body, timeout=timeout or self.timeout)
        except requests.Timeout as exc:
            raise ServiceTimeout(f"No reply from {url} within {timeout or self.timeout} s.") from exc
        except requests.ConnectionError as exc:
            raise ServiceUnavailable(f"Cannot reach {url}: is it served? ({exc.__class__.__name__})") from exc
        return self._reply(r, url, ok)

    @staticmethod
    def _reply(r: Any, url: str, ok: tuple[int, ...]) -> dict[str, Any]:
        if r.status_code == 200 and r.headers.get("content-type", "").startswith(_NDJSON):
            # a streaming action called with call(): every message, as a ZMQ request gets them
            return {"items": [_line(line, url) for line in r.content.splitlines() if line]}
        try:
            reply = r.json()
        except ValueError:
            reply = None
        if r.status_code in ok and isinstance(reply, dict):
            return reply
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            raise from_body(reply["error"], r.status_code)
        raise from_body({"type": "HTTPError", "message": f"{r.status_code} from {url}: {r.text[:200]}"}, r.status_code)

    def __getattr__(self, action: str) -> Callable[..., dict[str, Any]]:
        if action.startswith("_"):
            raise AttributeError(action)
        return self[action]

    def __getitem__(self, action: str) -> Callable[..., dict[str, Any]]:
        """``client["call"](x=1)``: the action of that name, also when it is named like one of
        the client's own methods (``call``, ``stream``, ``status``, ``close``, ...)."""
        return _action(self, action)

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"


class ZmqClient:
    """Call a served thing over ZeroMQ, or subscribe to a publisher; plain synchronous pyzmq.

    Calls go over a DEALER socket speaking the REQ framing (``[b"", action, json]``). A call
    that times out discards its socket and opens a fresh one, so a late reply can never be
    taken for the answer to the next call. Thread-safe: calls from several threads are
    serialised on one socket (use one client per thread to overlap them).

    Parameters
    ----------
    addr
        The ZMQ address, as ``Served.zmq_url`` gives it (``tcp://127.0.0.1:5555``).
    timeout
        Seconds to wait for each reply (``ServiceTimeout`` after that).
    token
        Sent as the frame after the JSON when the served thing needs one.
    connect_timeout
        Seconds to wait for a connection before ``ServiceUnavailable`` (nothing listens there).

    Each call sends a request id as its last frame (``last_request_id`` after the call).

    Examples
    --------
    >>> import svckit as sk
    >>> srv = sk.serve(sk.service(lambda a, b: a + b, name="add"), zmq=0)
    >>> client = sk.ZmqClient(srv.zmq_url)
    >>> client.call("add", a=1, b=2)["add"]
    3
    >>> client.add(a=2, b=2)["add"]
    4
    >>> client.add(a=1)
    Traceback (most recent call last):
    ...
    svckit.errors.BadMessage: Service 'add' needs field 'b', which the message lacks (it has: a).
    >>> client.close(); srv.stop()
    """

    def __init__(
        self, addr: str, *, timeout: float = 30.0, token: str | None = None, connect_timeout: float = 2.0
    ) -> None:
        import threading

        import zmq

        if not isinstance(addr, str) or "://" not in addr:
            raise ValueError(f"ZmqClient needs a ZMQ address like 'tcp://127.0.0.1:5555', got {addr!r}.")
        self.addr = addr
        self.timeout = timeout
        self.token = token
        self.connect_timeout = connect_timeout
        self.last_request_id: str | None = None
        self._context: Any = zmq.Context.instance()
        self._sock: Any = None
        self._lock = threading.Lock()

    def _socket(self, hwm: int | None = None) -> Any:
        import zmq

        if self._sock is None:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if hwm is not None:
                sock.setsockopt(zmq.RCVHWM, hwm)  # a stream's: what may wait here unread
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to a peer that is there: a dead address shows
            sock.connect(self.addr)
            self._sock = sock
        return self._sock

    def call(
        self, action: str, data: Mapping[str, Any] | None = None, /, *, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send ``[action, json]``; return the reply, or raise the remote error."""
        rid = f"{os.getpid():x}-{next(_ids):x}"
        frames = [b"", action.encode(), json.dumps(payload(data, fields)).encode()]
        if self.token is not None:
            frames.append(self.token.encode())
        frames.append(rid.encode())
        wait = self.timeout if timeout is None else timeout
        _crossing("sk.ZmqClient")
        with self._lock:
            sock = self._connected()
            sock.send_multipart(frames)
            reply = self._wait(sock, action, wait)
        self.last_request_id = rid
        if len(reply) >= 4 and reply[-1] == rid.encode():
            reply = reply[:-1]
        status, body = (reply[-2], reply[-1]) if len(reply) >= 2 else (b"error", b"")
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if status == b"ok" and isinstance(decoded, dict):
            return decoded
        self._raise(reply, body)

    def _wait(self, sock: Any, action: str, wait: float) -> list[bytes]:
        """The reply; ``ServiceUnavailable`` when the connection is gone for ``connect_timeout``
        (the server stopped), ``ServiceTimeout`` after ``wait`` seconds."""
        import zmq

        deadline = time.monotonic() + wait
        gone_since: float | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._drop_socket()  # a late reply must not answer the next call
                raise ServiceTimeout(f"No reply from {self.addr} to {action!r} within {wait} s.")
            if sock.poll(int(min(left, 0.1) * 1000) + 1, zmq.POLLIN):
                return sock.recv_multipart()  # type: ignore[no-any-return]
            connected = bool(sock.get(zmq.EVENTS) & zmq.POLLOUT)
            now = time.monotonic()
            gone_since = None if connected else (gone_since or now)
            if gone_since is not None and now - gone_since >= self.connect_timeout:
                self._drop_socket()
                raise ServiceUnavailable(
                    f"{self.addr} went away while {action!r} waited for its reply "
                    f"(no connection for {self.connect_timeout} s)."
                )

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def stream(
        self, action: str, data: Mapping[str, Any] | None = None, /, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[dict[str, Any]]:
        """Ask a streaming action for its messages as they come (the action frame
        ``stream:ACTION``): yields each, ends at the end frame; an error the stream ends with
        is raised after the messages before it. ``timeout`` bounds the wait for each message.
        Each stream has a socket of its own, so calls (and other streams) may go on while it
        is open; stopping early (``break``, ``close()``) closes it, and the server stops the
        stream when it finds nobody reads."""
        rid = f"{os.getpid():x}-{next(_ids):x}"
        frames = [b"", f"stream:{action}".encode(), json.dumps(payload(data, fields)).encode()]
        if self.token is not None:
            frames.append(self.token.encode())
        frames.append(rid.encode())
        wait = self.timeout if timeout is None else timeout
        _crossing("sk.ZmqClient.stream")
        own = ZmqClient(self.addr, timeout=wait, token=self.token, connect_timeout=self.connect_timeout)
        try:
            sock = own._connected(hwm=64)
            sock.send_multipart(frames)
            while True:
                reply = own._wait(sock, action, wait)
                if len(reply) >= 4 and reply[-1] == rid.encode():
                    reply = reply[:-1]
                status, body = (reply[-2], reply[-1]) if len(reply) >= 2 else (b"error", b"")
                if status == b"item":
                    yield _decoded(body, self.addr)
                elif status == b"end":
                    return
                elif status == b"ok":  # a plain action: its one reply
                    yield _decoded(body, self.addr)
                    return
                else:
                    own._raise(reply, body)
        finally:
            own.close()

    def _connected(self, hwm: int | None = None) -> Any:
        import zmq

        sock = self._socket(hwm)
        if not sock.poll(int(self.connect_timeout * 1000), zmq.POLLOUT):
            self._drop_socket()
            raise ServiceUnavailable(
                f"Nothing answers at {self.addr}: no connection within {self.connect_timeout} s. "
                "Is it served (and not stopped)?"
            )
        return sock

    def _raise(self, reply: list[bytes], body: bytes) -> NoReturn:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
            raise from_body(decoded["error"])
        raise from_body({"type": "ZMQError", "message": f"unreadable reply from {self.addr}: {reply!r:.200}"})

    def __getattr__(self, action: str) -> Callable[..., dict[str, Any]]:
        if action.startswith("_"):
            raise AttributeError(action)
        return self[action]

    def __getitem__(self, action: str) -> Callable[..., dict[str, Any]]:
        """``client["call"](x=1)``: the action of that name, also when it is named like one of
        the client's own methods (``call``, ``stream``, ``subscribe``, ``close``, ...)."""
        return _action(self, action)

    def subscribe(self, topic: str = "", *, timeout: float | None = 30.0) -> Subscription:
        """Subscribe to a publisher at this client's address: an iterator of messages.

        Each ``next()`` waits up to ``timeout`` s (None: for ever) and raises
        ``ServiceTimeout`` when nothing came. Close it (or use ``with``) when done.
        """
        return Subscription(self.addr, topic, timeout=timeout, context=self._context)

    def close(self) -> None:
        """Close the socket (the next call opens a new one)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None

    def __del__(self) -> None:
        # A client dropped without close() (a one-line call in a cell) must not leak or warn.
        sock = getattr(self, "_sock", None)
        if sock is not None and not sock.closed:
            sock.close(linger=0)

    def __enter__(self) -> ZmqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ZmqClient({self.addr!r})"


_ids = itertools.count(1)
_NDJSON = "application/x-ndjson"


def _action(client: Client | ZmqClient, action: str) -> Callable[..., dict[str, Any]]:
    def call(data: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        return client.call(action, data, **fields)

    call.__name__ = action
    return call


def _line(line: bytes, url: str) -> dict[str, Any]:
    """One message of a newline-delimited JSON stream; its error line raised."""
    try:
        item = json.loads(line)
    except ValueError:
        raise from_body({"type": "HTTPError", "message": f"unreadable line from {url}: {line[:200]!r}"}) from None
    if isinstance(item, dict) and isinstance(item.get("error"), dict) and len(item) == 1:
        raise from_body(item["error"])
    if not isinstance(item, dict):
        raise from_body({"type": "HTTPError", "message": f"a stream line from {url} is not an object: {line[:200]!r}"})
    return item


def _decoded(body: bytes, addr: str) -> dict[str, Any]:
    try:
        item = json.loads(body)
    except ValueError:
        item = None
    if not isinstance(item, dict):
        raise from_body({"type": "ZMQError", "message": f"unreadable message from {addr}: {body[:200]!r}"})
    return item


class Subscription:
    """Messages from a ZMQ publisher (frames ``[topic, json]``), as an iterator of dicts.

    Examples
    --------
    >>> import svckit as sk
    >>> with sk.ZmqClient("tcp://127.0.0.1:5556").subscribe("prices", timeout=0.01) as sub:
    ...     next(sub)
    Traceback (most recent call last):
    ...
    svckit.errors.ServiceTimeout: No message on 'prices' from tcp://127.0.0.1:5556 within 0.01 s.
    """

    def __init__(self, addr: str, topic: str = "", *, timeout: float | None = 30.0, context: Any = None) -> None:
        import zmq

        self.addr = addr
        self.topic = topic
        self.timeout = timeout
        ctx = context or zmq.Context.instance()
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sock.connect(addr)

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; ``ServiceTimeout`` after ``timeout`` s (default: the subscription's)."""
        wait = self.timeout if timeout is None else timeout
        if self._sock.closed:
            raise StopIteration
        if not self._sock.poll(None if wait is None else int(wait * 1000)):
            raise ServiceTimeout(f"No message on {self.topic!r} from {self.addr} within {wait} s.")
        frames = self._sock.recv_multipart()
        message = json.loads(frames[-1])
        return message if isinstance(message, dict) else {"value": message}

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> dict[str, Any]:
        return self.recv()

    def close(self) -> None:
        """Close the SUB socket."""
        self._sock.close(linger=0)

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None and not sock.closed:
            sock.close(linger=0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.topic!r} from {self.addr}>"
