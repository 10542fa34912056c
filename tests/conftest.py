"""Shared helpers: an outside HTTP client (``curl`` in a subprocess) and leak checks."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import svckit as sk
from svckit.testing import wait_for

CURL = shutil.which("curl")

_URLLIB = r"""
import sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
headers = dict(h.split(": ", 1) for h in sys.argv[3:])
if method == "POST":
    headers.setdefault("Content-Type", "application/json")  # as curl is told below
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
    """Every test leaves no svckit runtime or worker thread behind, whatever it started."""
    yield
    sk.shutdown(timeout=10)
    wait_for(
        lambda: not any(t.name == "svckit-runtime" and t.is_alive() for t in threading.enumerate()),
        timeout=10,
        what="the svckit runtime thread to end",
    )
    wait_for(  # a stage still blocked when the test ended may keep its worker a few seconds
        lambda: not any(t.name.startswith("svckit-worker") for t in threading.enumerate()),
        timeout=15,
        what="the svckit worker threads to end",
    )


@pytest.fixture
def http() -> Iterator[Any]:
    """A ``requests.Session`` that ignores proxy settings, closed after the test."""
    import requests

    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


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


@pytest.fixture
def zsock() -> Iterator[Callable[[int], Any]]:
    """``zsock(kind)``: a raw pyzmq socket (linger 0), every one closed when the test ends."""
    import zmq

    ctx = zmq.Context()
    made: list[Any] = []

    def make(kind: int) -> Any:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close(linger=0)
    ctx.term()


@contextlib.contextmanager
def running_jupyter(app: str, root: Path, *extra: str) -> Iterator[str]:
    """A real ``jupyter server`` or ``jupyter lab`` on 127.0.0.1 serving ``root``; yields its URL.

    No token, temporary Jupyter config/data/runtime dirs, its own process group (killed
    afterwards). Its log is ``root / "jupyter.log"``.
    """
    import os
    import signal
    import socket

    import requests

    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[var] = str(root / ".jupyter" / var.lower())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "jupyter", app, "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root}", "--allow-root", *extra,
    ]  # fmt: skip
    log_path = root / "jupyter.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited:\n{log_path.read_text()[-3000:]}")
            try:
                return requests.get(f"{base}/api/status", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        try:
            wait_for(up, timeout=90, what=f"jupyter {app} to answer")
            yield base
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


@pytest.fixture(scope="session")
def start_jupyter() -> Callable[..., Any]:
    """``with start_jupyter("lab" | "server", root, *args) as url``: see ``running_jupyter``."""
    return running_jupyter
