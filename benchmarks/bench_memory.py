"""Memory: RSS growth from 10 000 to 1 000 000 messages through a served flow (see ``memory_worker.py``)."""

from __future__ import annotations

from typing import Any

from common import PYTHON, run_json, script


def run(smoke: bool = False) -> dict[str, Any]:
    total, first = (2000, 200) if smoke else (1_000_000, 10_000)
    return run_json([PYTHON, script("memory_worker.py"), str(total), str(first)], 400)
