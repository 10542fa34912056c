"""The JupyterLab experience in a real browser: Debian Chromium driven by playwright.

Starts JupyterLab headless on 127.0.0.1 (no token, temporary Jupyter dirs, a temporary
copy of notebooks/), opens 03-dashboard.ipynb, restarts the kernel and runs all cells,
and checks what a person would see: counters and the chart moving while traffic flows, an
error row opening to its traceback, the stop button, and a closed dashboard sending no
more updates (counted on the kernel's websocket). Then the model notebook, 08, runs to its
end with its chart drawn. Skipped only when ``SVCKIT_NO_BROWSER=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from chromium import SKIPPED, browser_page

from svckit.testing import holds, wait_for

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

if SKIPPED:
    pytest.skip("SVCKIT_NO_BROWSER=1: the browser test is skipped", allow_module_level=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, start_jupyter):
    """JupyterLab on 127.0.0.1 serving a temporary copy of notebooks/."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(NOTEBOOKS, root, dirs_exist_ok=True)
    extra = os.environ.get("SVCKIT_LAB_ARGS", "").split()  # e.g. to disable an extension when checking the test
    quiet = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with start_jupyter("lab", root, *quiet, *extra) as base:
        yield base, root


@pytest.fixture
def page(lab, tmp_path):
    with browser_page(tmp_path / "profile") as page:
        yield page


def _count(locator) -> int:
    return int(locator.inner_text().strip())


def _source_count(dash) -> int:
    """The count the flow picture inside the dashboard shows on its source (0 when none yet)."""
    note = dash.locator('svg.svckit-flow .svckit-stage[data-name="new_order"] text').nth(1)
    found = re.match(r"(\d+) msg", note.text_content() or "") if note.count() else None
    return int(found[1]) if found else 0


def _run_all(page, base: str, notebook: str) -> None:
    page.goto(f"{base}/lab/tree/{notebook}?reset", timeout=90_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    # the kernel must be connected before restarting it, or the restart can run nothing
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=90_000)

    # Kernel ▸ Restart Kernel and Run All Cells…, then confirm the dialog
    page.get_by_role("menuitem", name="Kernel", exact=True).click()
    page.get_by_text(re.compile(r"^Restart Kernel and Run All Cells")).click()
    page.locator(".jp-Dialog .jp-mod-accept").click()


def _chart_frames(page) -> list[int]:
    """A counter of the kernel's websocket frames that carry a dashboard chart update."""
    seen = [0]

    def on_frame(payload) -> None:
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        if b"svckit-chart" in data:
            seen[0] += 1

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return seen


def _pump(page, ms: int = 100) -> bool:
    """Let playwright deliver the page's events (the sync API does only inside its own calls)."""
    page.wait_for_timeout(ms)
    return True


def _rate_line(dash) -> str:
    line = dash.locator("svg.svckit-chart-rate path.svckit-rate-line")
    return (line.first.get_attribute("d") or "") if line.count() else ""


def test_dashboard_notebook_in_jupyterlab(lab, page):
    base, _ = lab
    frames = _chart_frames(page)
    _run_all(page, base, "03-dashboard.ipynb")

    # the dashboard renders as a widget, not as "Loading widget..." nor as its text repr
    dash = page.locator(".svckit-dash")
    dash.wait_for(timeout=90_000)
    counter = dash.locator(".svckit-in")
    wait_for(lambda: counter.count() == 1 and _count(counter) > 0, timeout=30, what="the message counter to show")
    assert page.get_by_text("Loading widget").count() == 0
    assert page.get_by_text("Dashboard(orders)").count() == 0

    # its message counter grows between two reads seconds apart
    first = _count(counter)
    deadline = time.monotonic() + 2.0
    wait_for(lambda: time.monotonic() > deadline, timeout=5)
    second = _count(counter)
    assert second > first, f"the counter did not move: {first} then {second}"

    # the rate chart moves while traffic flows (one point a second)
    wait_for(lambda: _rate_line(dash) != "", timeout=20, what="the rate chart to draw")
    drawn = _rate_line(dash)
    wait_for(lambda: _rate_line(dash) != drawn, timeout=10, what="the rate chart to move")
    assert dash.locator("svg.svckit-chart-latency path.svckit-p99-line").count() == 1

    # a service error shows as an error row, which opens to its traceback
    errors = dash.locator(".svckit-error-rows")
    wait_for(lambda: "an order of zero items" in errors.inner_text(), timeout=20, what="an error row")
    errors.get_by_text("an order of zero items").first.click()
    traceback = dash.locator(".svckit-error-rows pre.svckit-traceback").first
    traceback.wait_for(state="visible", timeout=10_000)
    text = traceback.inner_text()
    assert "Traceback (most recent call last)" in text and "ValueError: an order of zero items" in text
    assert 'raise ValueError("an order of zero items")' in text  # the user's own line
    # newer errors push the opened row down (an order of zero items every 1.4 s): it stays open
    opened = dash.locator(".svckit-error-rows pre.svckit-traceback:visible")
    holds(lambda: opened.count() == 1, 3.0, interval=0.1, what="the opened row staying open across refreshes")

    # the flow picture is drawn: in the flow cell's output and inside the dashboard, with live counts
    assert page.locator(".jp-OutputArea svg.svckit-flow").count() >= 2
    assert dash.locator("svg.svckit-flow .svckit-stage").count() == 3
    assert page.locator("svg.svckit-flow").first.bounding_box()["width"] > 100
    wait_for(lambda: _source_count(dash) > 0, timeout=10, what="the source's count on the picture")

    # the dashboard's log shows what svckit logged about the service: here, the failed orders
    board = page.locator(".svckit-dashboard")
    log_lines = board.locator(".svckit-log .svckit-log-line")
    wait_for(lambda: log_lines.count() >= 1, timeout=10, what="a line in the dashboard's log")
    assert "an order of zero items" in board.locator(".svckit-log").inner_text()

    shot = os.environ.get("SVCKIT_SCREENSHOT")
    if shot:  # `make screenshots`: the picture in the README
        no_news = page.get_by_role("button", name="No", exact=True)
        if no_news.count():
            no_news.click()
        board.scroll_into_view_if_needed()
        shown = _count(counter)  # let a refresh land after scrolling, so the picture is current
        wait_for(lambda: _count(counter) != shown, timeout=10, what="a refresh after scrolling")
        board.screenshot(path=shot)

    # pressing stop stops the service: the badge says stopped and the counter stops
    dash.get_by_role("button", name="stop", exact=True).click()
    badge = dash.locator(".svckit-badge")
    wait_for(lambda: badge.inner_text().strip() == "stopped", timeout=20, what="the badge to say stopped")
    stopped_at = _count(counter)
    holds(lambda: _count(counter) == stopped_at, 1.5, interval=0.1, what="the counter staying still after stop")
    start = dash.get_by_role("button", name="start", exact=True)
    assert start.is_enabled()

    # started again, traffic flows and the chart updates; closed, the dashboard sends nothing more
    start.click()
    wait_for(lambda: _count(counter) > stopped_at, timeout=20, what="the counter to move after start")
    moving = frames[0]
    wait_for(lambda: _pump(page) and frames[0] > moving, timeout=10, what="chart updates on the websocket")
    closer = board.locator("button.svckit-close")
    assert closer.count() == 1, [b.inner_text() for b in board.locator("button").all()]
    closer.click()
    wait_for(lambda: page.locator(".svckit-dash").count() == 0, timeout=10, what="the closed dashboard to go")
    _pump(page, 500)
    closed_at = frames[0]
    holds(lambda: _pump(page) and frames[0] == closed_at, 2.5, interval=0.1, what="no chart update after close")


@pytest.mark.timeout(300)  # trains two models, loads the service for 6 s and runs pytest inside
def test_model_notebook_in_jupyterlab(lab, page):
    base, _ = lab
    _run_all(page, base, "08-serve-a-model.ipynb")
    # it runs (busy), then it is idle again: the committed outputs showed until each cell ran again
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Busy")).wait_for(timeout=90_000)
    idle = page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))

    def settled() -> bool:  # idle for 3 s on end: not between two cells
        try:
            holds(lambda: idle.count() == 1, 3.0, interval=0.2)
            return True
        except AssertionError:
            return False

    wait_for(settled, timeout=180, interval=0.5, what="the notebook to finish")
    # JupyterLab draws only the cells in view: scroll back up to the dashboard
    board = page.locator(".svckit-dashboard")
    page.locator(".jp-Notebook").first.hover()
    for _ in range(80):
        if board.count() and board.first.is_visible():
            break
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(150)
    board.first.scroll_into_view_if_needed()
    rows = board.locator(".svckit-error-rows")
    wait_for(lambda: "X has 3 features" in (rows.inner_text() if rows.count() else ""), timeout=20, what="v3's error")
    box = board.locator(".svckit-chart-box").first
    wait_for(lambda: int(box.get_attribute("data-total") or 0) > 100, timeout=20, what="the load on the chart")
    assert board.locator("svg.svckit-flow .svckit-stage-time").count() == 1  # the stage's time
    shot = os.environ.get("SVCKIT_SCREENSHOT")
    if shot:  # `make screenshots`: the model notebook's dashboard, next to the other picture
        board.scroll_into_view_if_needed()
        board.screenshot(path=str(Path(shot).with_name("model-dashboard.png")))
