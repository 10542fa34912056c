"""Schemathesis against served examples: every check, stateless, on what ``/openapi.json`` says.

Schemathesis reads the document, sends requests that follow it (and ones that break it)
and checks the replies: no 5xx, status codes, content types and bodies as documented,
bad input refused, good input accepted, unsupported methods answered 405, the token
enforced. It runs as its own process (its CLI), against servers bound to port 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from api_examples import TOKEN, serve_public, serve_secret

pytestmark = pytest.mark.timeout(240)

#: Its CLI, run with this Python (``st`` is the same entry point).
ST = [sys.executable, "-m", "schemathesis.cli"]
#: Cases per operation: a few hundred in all over the examples' operations.
EXAMPLES = int(os.environ.get("SVCKIT_SCHEMATHESIS_EXAMPLES", "25"))


def _schemathesis(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        *ST, "run", f"{url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES),
        "--seed", "13",
        "--generation-database", "none",
        "--workers", "1",
        "--request-timeout", "10",
        "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env, check=False)


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Loaded specification" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, f"schemathesis found failures:\n{proc.stdout[-20000:]}\n{proc.stderr[-2000:]}"


def test_schemathesis_finds_nothing_on_the_public_examples(sk_serve, tmp_path):
    srv = serve_public(sk_serve)
    _check(_schemathesis(srv.url, tmp_path))


def test_schemathesis_finds_nothing_on_a_token_protected_service(sk_serve, tmp_path):
    srv = serve_secret(sk_serve)
    _check(_schemathesis(srv.url, tmp_path, "--header", f"Authorization: Bearer {TOKEN}"))
