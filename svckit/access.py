"""Browser checks for HTTP: who may call a served thing from a web page.

A service on 127.0.0.1 is reachable from every page the user's browser opens, so a request
that comes from a browser must pass three checks (``Guard.check``), cheapest first:

- ``Host`` names this server: on a loopback address, ``localhost``, ``*.localhost``,
  ``127.x.x.x``, ``[::1]``, the bound address or one of ``allow_hosts`` (``"*"``: any).
  A DNS-rebinding page reaches 127.0.0.1 under its own name, and the browser puts that name
  in ``Host``, so this refuses it (403 ``Forbidden``), as Jupyter Server does. Bound to
  another address (``0.0.0.0``, a LAN address) without a token, ``Host`` may also be any
  IP address (a rebinding page's ``Host`` is always a name), this machine's
  ``socket.gethostname()`` or ``socket.getfqdn()``; another name needs ``allow_hosts``.
  Bound there with a token, ``Host`` is checked only when ``allow_hosts`` is given: the
  names a machine is reached by are not all known here, and a rebinding page has no token.
- ``Origin``, when sent (browsers send it on every cross-site request and every POST), is
  the server's own (the same host and port as ``Host``; the scheme is not compared, as
  Jupyter Server does not, so a TLS proxy in front keeps working) or one of
  ``allow_origins`` (``"*"``: any); another gets 403.
- a POST with a body is ``Content-Type: application/json`` (parameters such as ``charset``
  allowed), else 415 ``UnsupportedMediaType``: a cross-site page can send only
  ``text/plain``, form or multipart bodies without asking first (a CORS preflight, which
  only ``allow_origins`` answers), so its "simple" POSTs never reach a stage. An empty
  POST is the empty message ``{}``; from a foreign page the ``Origin`` check refuses it.

Every browser sends ``Host``: a request without one (an HTTP/1.0 client) is not a browser's,
and only its ``Content-Type`` is checked. A ``Request`` built by hand with no headers at all
(as benchmarks and tests call ``RequestPath.handle``) is not checked.

Behind jupyter-server-proxy (JupyterHub, Binder) the proxied request keeps the ``Host`` and
``Origin`` the browser sent to the Jupyter server. On one machine that ``Host`` is a loopback
name and passes. Inside a hub it is the hub's public name: see ``Guard._proxied``.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Mapping

from .errors import Forbidden, UnsupportedMediaType
from .limits import Access
from .middleware import Middleware, Request, _own_check
from .net import is_loopback

__all__ = ["Guard", "browser_check", "proxy_context"]

_JSON = "application/json"
_CACHED = 256  # Host values remembered (a client may send as many as it likes: bounded)
_DEFAULT_PORT = {"http": "80", "https": "443"}


def proxy_context() -> str | None:
    """The path jupyter-server-proxy serves this machine's ports under inside a hub:
    ``{JUPYTERHUB_SERVICE_PREFIX}proxy/`` (``SVCKIT_PROXY_PREFIX`` for another Jupyter
    server's base URL), without its trailing port; None outside a hub."""
    prefix = os.environ.get("SVCKIT_PROXY_PREFIX") or os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    return f"{prefix.rstrip('/')}/proxy/" if prefix else None


@functools.cache
def machine_names() -> frozenset[str]:
    """This machine's own names (``gethostname``, ``getfqdn``) in lower case, looked up once."""
    names = {socket.gethostname(), socket.getfqdn()}
    return frozenset(n.lower() for n in names if n)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _split(host: str) -> tuple[str, str | None]:
    """``(name, port)`` of a ``Host`` value (``[v6]:port`` too); the name in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        port = host[end + 2 :] if host[end + 1 : end + 2] == ":" else None
        return host[: end + 1], port or None
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        return host, None
    return name, port


def _netloc(value: str, scheme: str) -> str:
    """``host[:port]`` without the scheme's default port, so ``x:443`` and ``x`` compare equal."""
    name, port = _split(value)
    return name if port is None or port == _DEFAULT_PORT.get(scheme) else f"{name}:{port}"


class Guard:
    """The browser checks of one HTTP face (see the module docstring): a served thing's
    (its ``Access``), or a port's for the pages it serves itself (every served thing's
    ``allow_hosts`` and ``allow_origins`` together).

    ``bound`` is the address the port is bound to; ``port()`` its number (read when needed:
    a re-serve may move it); ``token``: the served thing asks for one (then ``Host`` is not
    checked off loopback unless ``allow_hosts`` is given).

    Examples
    --------
    >>> from svckit.limits import Access
    >>> guard = Guard([Access()], "127.0.0.1", lambda: 8000)
    >>> guard.check({"host": "localhost:8000", "content-type": "application/json"}, None, post=True)
    >>> try:
    ...     guard.check({"host": "attacker.example:8000"}, None, post=False)
    ... except Forbidden as exc:
    ...     print(exc.status, type(exc).__name__)
    403 Forbidden
    """

    __slots__ = (
        "_hosts",
        "any_origin",
        "bound",
        "context",
        "hosts",
        "machine",
        "origins",
        "owner",
        "port",
        "verify_host",
    )

    def __init__(
        self,
        access: Iterable[Access],
        bound: str,
        port: Callable[[], int | None],
        owner: str | None = None,
        token: bool = False,
    ) -> None:
        rules = list(access)
        self.bound = bound.strip("[]").lower()
        self.port = port
        self.owner = owner
        self.hosts = frozenset(h for a in rules for h in a.allow_hosts)
        self.origins = frozenset(o.lower() for a in rules for o in a.allow_origins)
        self.any_origin = "*" in self.origins
        loopback = is_loopback(self.bound)
        # Bound to loopback: always checked. Elsewhere with a token only when allow_hosts
        # names the names; without one also IP addresses and this machine's names pass.
        self.verify_host = "*" not in self.hosts and (loopback or bool(self.hosts) or not token)
        self.machine = not loopback and not token
        if self.machine:
            machine_names()  # looked up now (a getfqdn may ask DNS), not on the loop on a request
        self.context = proxy_context()
        self._hosts: dict[str, bool] = {}  # Host value -> it names this server

    def check(self, headers: Mapping[str, str], peer: str | None, post: bool) -> None:
        """Raise ``Forbidden`` (403) or ``UnsupportedMediaType`` (415) for a request a web page
        must not make (``post``: it is a POST). Plain dict look-ups: a ``Host`` judged once is
        remembered."""
        host = headers.get("host")
        if host is not None:
            if self.verify_host:
                known = self._hosts.get(host)
                if known is None:
                    known = self._names_this_server(host)
                    if len(self._hosts) < _CACHED:
                        self._hosts[host] = known
                if not known and not self._proxied(host, headers, peer):
                    raise Forbidden(
                        f"The Host header {host!r} does not name this server, as a DNS-rebinding web page "
                        f"would send; call it as 127.0.0.1 or localhost, or pass allow_hosts="
                        f"[{_split(host)[0]!r}] to sk.serve to accept that name.",
                        service=self.owner,
                    )
            origin = headers.get("origin")
            if origin is not None and not self.any_origin and not self._same_or_allowed(origin, host):
                raise Forbidden(
                    f"Requests from web pages of {origin!r} are refused (a cross-site request); pass "
                    f"allow_origins=[{origin!r}] to sk.serve to let that origin call it.",
                    service=self.owner,
                )
        elif not headers:
            return  # a Request built by hand, not read off the wire: no browser sent it
        if post and (headers.get("content-length", "0") != "0" or "transfer-encoding" in headers):
            kind = headers.get("content-type")
            if kind != _JSON and (kind is None or kind.partition(";")[0].strip().lower() != _JSON):
                raise UnsupportedMediaType(
                    f"A POST must carry 'Content-Type: application/json' (this one has {kind!r}): "
                    "a web page of another site cannot send that without asking first.",
                    service=self.owner,
                )

    def allows_origin(self, origin: str) -> bool:
        """``origin`` is one of ``allow_origins`` (for CORS: a page there may read replies)."""
        return self.any_origin or origin.lower().rstrip("/") in self.origins

    def _names_this_server(self, host: str) -> bool:
        name = _split(host)[0]
        bare = name.strip("[]")
        if name in self.hosts or host.lower() in self.hosts or bare == self.bound or is_loopback(bare):
            return True
        return self.machine and (_is_ip(bare) or bare in machine_names())

    def _same_or_allowed(self, origin: str, host: str) -> bool:
        value = origin.strip().lower().rstrip("/")
        if value in self.origins:
            return True
        scheme, sep, netloc = value.partition("://")
        if not sep or scheme not in _DEFAULT_PORT:
            return False  # "null" (a sandboxed frame, a file) and other schemes are foreign
        return _netloc(netloc, scheme) == _netloc(host, scheme)

    def _proxied(self, host: str, headers: Mapping[str, str], peer: str | None) -> bool:
        """A request that jupyter-server-proxy forwarded from inside a hub, whose ``Host`` is
        the hub's public name.

        Passes when a hub prefix is set (``proxy_context``), the peer is on this machine
        (the proxy runs beside the kernel), the proxy's context header names this port, and
        the ``Host`` port is another than this port. The first three a DNS-rebinding page
        could forge (a same-origin fetch may set X-Forwarded-Context, and its browser is a
        local peer), but not the last: a browser always writes the port it connects to into
        ``Host``, and the rebinding page connects to this port (``Host: evil.example:PORT``,
        or no port when this port is 80, the default of plain HTTP: then nothing passes),
        while the hub's ``Host`` names the hub's public port. A page that instead rebinds to
        the Jupyter server's port goes through the Jupyter server's own checks: its Host
        check on a loopback server, the hub's login cookie inside a hub (the page's site has
        none). Inside a real hub the browser is not on this machine at all.
        """
        context = self.context
        if context is None or peer is None:
            return False
        port = self.port()
        if port is None:
            return False
        given = headers.get("x-forwarded-context") or headers.get("x-proxycontextpath")
        if given is None or given.rstrip("/") != f"{context}{port}":
            return False
        if not is_loopback(peer.rpartition(":")[0] if peer.count(":") else peer):
            return False
        host_port = _split(host)[1] or "80"
        return host_port != str(port)


def browser_check(
    owner: str, access: Access, bound: str, port: Callable[[], int | None], token: bool = False
) -> Middleware:
    """svckit's browser checks for a served thing's HTTP requests (``Guard.check``), run
    before its token check (``token``: it has one); ZMQ requests and pipeline messages are
    not checked."""
    guard = Guard([access], bound, port, owner, token)
    check = guard.check

    def check_browser(request: Request) -> None:
        if request.transport == "http":
            check(request.headers, request.peer, request.method != "GET")

    return _own_check(check_browser, "browser_check")
