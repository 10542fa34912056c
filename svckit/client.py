"""Clients: ``Client`` calls served actions over HTTP with a reused ``requests.Session``.

A remote error comes back as the svckit exception of the same name (a ``BadMessage``
stays a ``BadMessage``); errors of other types arrive as ``RemoteError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .errors import BadMessage, ServiceTimeout, ServiceUnavailable, from_body

__all__ = ["Client"]


def payload(data: Mapping[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """The message to send: ``data`` (a dict) updated with keyword ``fields``."""
    if data is None:
        return fields
    if not isinstance(data, Mapping):
        raise BadMessage(f"A message is a dict of fields, not a {type(data).__name__}; pass field=value.")
    message = dict(data)
    message.update(fields)
    return message


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
        try:
            r = self._session.request(method, url, data=body, timeout=timeout or self.timeout)
        except requests.Timeout as exc:
            raise ServiceTimeout(f"No reply from {url} within {timeout or self.timeout} s.") from exc
        except requests.ConnectionError as exc:
            raise ServiceUnavailable(f"Cannot reach {url}: is it served? ({exc.__class__.__name__})") from exc
        try:
            reply = r.json()
        except ValueError:
            reply = None
        if r.status_code in ok and isinstance(reply, dict):
            return reply
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            raise from_body(reply["error"], r.status_code)
        raise from_body({"type": "HTTPError", "message": f"{r.status_code} from {url}: {r.text[:200]}"})

    def __getattr__(self, action: str) -> Callable[..., dict[str, Any]]:
        if action.startswith("_"):
            raise AttributeError(action)

        def call(data: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
            return self.call(action, data, **fields)

        call.__name__ = action
        return call

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"
