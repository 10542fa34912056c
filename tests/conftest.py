"""Shared helpers: an outside HTTP client (``curl`` in a subprocess) and leak checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import svckit as sk
from svckit.testing import wait_for

CURL = shutil.which("curl")

_URLLIB = r"""
import sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
headers = dict(h.split(": ", 1) for h in sys.argv[3:])
req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        status, data = r.status, r.read()
except urllib.error.HTTPError as e:
    status, data = e.code, e.read()
sys.stdout.buffer.write(data + b"\n" + str(status).encode())
"""


def outside_request(
    method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One HTTP request from another process (``curl``; a ``urllib`` script when curl is missing).

    Returns the status code and the decoded JSON body (the raw text when it is not JSON).
    """
    data = body.encode() if isinstance(body, str) else body
    header_args = [f"{k}: {v}" for k, v in (headers or {}).items()]
    if CURL:
        cmd = [CURL, "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"]
        for h in header_args:
            cmd += ["-H", h]
        if data is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        cmd.append(url)
    else:
        cmd = [sys.executable, "-c", _URLLIB, method, url, *header_args]
    proc = subprocess.run(cmd, input=data or b"", capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, f"the outside client failed: {proc.stderr.decode(errors='replace')}"
    text, _, status = proc.stdout.decode().rpartition("\n")
    try:
        reply = json.loads(text)
    except ValueError:
        reply = text
    return int(status), reply


@pytest.fixture
def curl() -> Callable[..., tuple[int, Any]]:
    """``curl(method, url, body=None, headers=None)`` → ``(status, json)`` from another process."""
    return outside_request


@pytest.fixture(autouse=True)
def _no_runtime_left() -> Iterator[None]:
    """Every test leaves no svckit runtime thread behind, whatever it started."""
    yield
    sk.shutdown(timeout=10)
    wait_for(
        lambda: not any(t.name == "svckit-runtime" and t.is_alive() for t in threading.enumerate()),
        timeout=10,
        what="the svckit runtime thread to end",
    )


@pytest.fixture
def client_for() -> Iterator[Callable[..., sk.Client]]:
    """``client_for(url, **kw)`` makes an ``sk.Client`` that is closed when the test ends."""
    made: list[sk.Client] = []

    def make(url: str, **kw: Any) -> sk.Client:
        client = sk.Client(url, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
