"""Smoke test of the benchmark suite: every benchmark runs once with tiny counts.

Benchmarks are not timed tests: this asserts only that ``benchmarks/run.py --smoke``
completes and writes JSON with every row of the table. Timing is never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


@pytest.mark.timeout(300)
def test_benchmarks_smoke(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    spec = importlib.util.spec_from_file_location("svckit_benchmarks_run", RUN)
    assert spec is not None and spec.loader is not None
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    rows = report["rows"]
    assert list(rows) == [row_id for row_id, _, _ in bench_run.ROWS]
    for section, result in report["results"].items():
        assert "error" not in result, f"{section}: {result['error']}"
    if shutil.which("wrk") is None:
        # Without wrk the HTTP rows are skipped, and say so.
        assert "wrk" in report["results"]["http"]["skipped"]
    for row_id, row in rows.items():
        assert row["svckit"], row_id
