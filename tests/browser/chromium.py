"""Debian Chromium for the browser tests: its path, its flags, and a page in a fresh profile."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SKIPPED = os.environ.get("SVCKIT_NO_BROWSER") == "1"


@contextlib.contextmanager
def browser_page(profile: Path) -> Iterator[Any]:
    """A playwright page of Debian Chromium (never a test tool's own browser download)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1500},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
