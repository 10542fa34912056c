"""Dashboard: served throughput with ``srv.dashboard()`` attached against without.

Placeholder: the dashboard issue fills ``run`` in (target: attached >= 0.9x of without).
Until then it measures nothing and the table shows "n/a (dashboard not built yet)".
"""

from __future__ import annotations

from typing import Any

NOT_BUILT = "n/a (dashboard not built yet)"


def run(smoke: bool = False) -> dict[str, Any]:
    """To be written by the dashboard work; returns no figures until then."""
    return {"skipped": NOT_BUILT}
