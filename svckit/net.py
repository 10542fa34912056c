"""TCP helpers: port checks, binding a listening socket in the caller's thread, and the
per-runtime table of bound ports that endpoints and shared sockets register in."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Protocol

from .errors import PortInUse, WiringError

__all__ = ["Closable", "bind_tcp", "bindable", "check_port", "is_loopback", "ports", "raise_fd_limit"]

#: The most file descriptors ``raise_fd_limit`` asks for.
FD_LIMIT = 65536


def raise_fd_limit(want: int = FD_LIMIT) -> int:
    """Raise this process's soft limit of open files towards ``want`` (never past the hard
    limit, never down), as servers do: the common soft default of 1,024 is less than what
    the connection limits of a few ports allow. The soft limit now in force."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


class Closable(Protocol):
    async def close(self) -> None: ...


def check_port(value: Any, what: str) -> int | None:
    """``value`` when it is a port number (0 picks a free one) or None; else ``WiringError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise WiringError(f"{what}={value!r}: give a port number from 0 to 65535 (0 picks a free one), or None.")
    return value


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _tcp_socket(host: str) -> socket.socket:
    # With the TCP protocol number, not 0: asyncio sets TCP_NODELAY only then (DESIGN §3).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """Bind a listening TCP socket in the caller's thread, so "in use" is raised right here."""
    sock = _tcp_socket(host)
    try:
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


def bindable(host: str, port: int) -> bool:
    """True when a TCP socket could bind ``host:port`` now (the port is really free)."""
    try:
        probe = _tcp_socket(host)
    except OSError:
        return False
    try:
        probe.bind((host, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def ports(rt: Any) -> dict[tuple[str, str, int], Any]:
    """The runtime's bound ports, ``(kind, host, port) -> endpoint``; closed at its shutdown.

    HTTP endpoints and shared ZMQ sockets register here, so serving again on a port that is
    already bound takes the endpoint over instead of failing with "port in use".
    """
    table: dict[tuple[str, str, int], Any] = rt.local("ports", dict, _close_all, order=0)
    return table


async def _close_all(table: dict[tuple[str, str, int], Any]) -> None:
    for endpoint in list(table.values()):
        try:
            await endpoint.close()
        except Exception:  # one broken endpoint must not keep the others' ports bound
            pass
    table.clear()
