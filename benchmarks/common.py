"""Shared helpers for the benchmarks: child processes, free ports, medians, ``wrk`` runs.

Every process started here lives in its own process group and is killed (group and
all) by ``Child.stop``; benchmarks use ``with Child(...)`` so nothing outlives a run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
POST_LUA = HERE / "post.lua"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class Child:
    """A child process in its own process group that prints ``READY <info>`` when it is ready.

    Used as a context manager: the whole group is killed on exit, whatever happened.
    """

    def __init__(self, args: list[str], *, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.timeout = timeout
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.info = ""

    def __enter__(self) -> Child:
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=self.env,
            cwd=ROOT,
        )
        try:
            self.info = self.expect("READY")
        except BaseException:
            self.stop()
            raise
        return self

    def expect(self, word: str) -> str:
        """Read lines until one starts with ``word``; return the rest of that line."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.args[1:3]} exited (code {self.proc.poll()}) before saying {word}")
            if line.startswith(word):
                return line[len(word) :].strip()
        raise TimeoutError(f"{self.args[1:3]} did not say {word} within {self.timeout} s")

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(3)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(3)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_json(args: list[str], timeout: float) -> dict[str, Any]:
    """Run a helper script in its own process group; its last stdout line is JSON."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(3)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[1:3]} failed with exit code {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    """POST load with ``wrk`` (one thread) and ``post.lua``; requests/s and p50/p99 latency in ms."""
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed (make bench installs it with apt-get)")
    duration = f"{max(1, round(seconds))}s"
    cmd = [exe, "-t1", f"-c{connections}", f"-d{duration}", "--timeout", "5s", "-s", str(POST_LUA), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    for line in out.splitlines():
        if line.startswith("JSON "):
            data = json.loads(line[5:])
            if data["errors"]:
                raise RuntimeError(f"wrk saw {data['errors']} errors/non-2xx replies against {url}")
            return {"rps": data["rps"], "p50_ms": data["p50_us"] / 1000.0, "p99_ms": data["p99_us"] / 1000.0}
    raise RuntimeError(f"wrk printed no result line:\n{out}")


def script(name: str) -> str:
    """The absolute path of a helper script in this folder."""
    return str(HERE / name)
