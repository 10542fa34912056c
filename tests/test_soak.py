"""The short soak: 5 s of HTTP, ZMQ and pipeline traffic while the flow is served again every second.

Runs ``benchmarks/soak.py`` in its own process (its RSS and descriptors are its own) and asserts
the soak's properties: no failed request, every numbered message delivered or counted, re-serves
without errors, RSS and descriptors flat. Timings and throughput are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "benchmarks" / "soak.py"


@pytest.mark.timeout(90)
def test_short_soak_keeps_its_properties(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "5", "--reserve-every", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["reserves"]["count"] >= 3, result["reserves"]
    assert result["http"]["ok"] > 0 and result["zmq"]["ok"] > 0 and result["pipeline"]["sent"] > 0, result
    assert result["http"]["failed"] == 0, result["http"]
    assert result["zmq"]["failed"] == 0, result["zmq"]
    pipe = result["pipeline"]
    assert pipe["delivered"] + pipe["dropped"] == pipe["sent"], pipe
    assert pipe["duplicates"] == 0, pipe
    assert not result["reserves"]["errors"], result["reserves"]
    assert result["failed"] == [], result["failed"]  # RSS and descriptors flat, as soak.py judges them
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
