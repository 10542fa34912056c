"""``GET /docs`` in a real browser: Debian Chromium driven by playwright, no network but loopback.

Opens the page of served examples, expands an operation, "Try it out", Execute, and reads
the 200 reply in the page; then a token-protected service, whose page asks for the token.
Skipped only when ``SVCKIT_NO_BROWSER=1``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the served examples

from api_examples import TOKEN, serve_public, serve_secret
from chromium import SKIPPED, browser_page

if SKIPPED:
    pytest.skip("SVCKIT_NO_BROWSER=1: the browser test is skipped", allow_module_level=True)


@pytest.fixture
def page(tmp_path):
    with browser_page(tmp_path / "profile") as page:
        failed: list[str] = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.failed = failed  # type: ignore[attr-defined]
        yield page


def _execute(page, path: str) -> str:
    """Expand ``POST path``, "Try it out", Execute; the reply's status and body as the page shows them."""
    op = page.locator(f'.opblock-post:has(.opblock-summary-path[data-path="{path}"])')
    op.locator(".opblock-summary").first.click()
    op.get_by_role("button", name="Try it out").click()
    op.get_by_role("button", name="Execute").click()
    live = op.locator(".live-responses-table .response")
    live.first.wait_for(timeout=20_000)
    status = live.locator(".response-col_status").first.inner_text().strip()
    body = op.locator(".live-responses-table .response-col_description pre").first.inner_text()
    assert status == "200", body
    return body


@pytest.mark.parametrize("slash", ["", "/"])
def test_docs_lists_the_operations_and_tries_one(sk_serve, page, slash):
    srv = serve_public(sk_serve)
    page.goto(f"{srv.url}/docs{slash}", timeout=30_000)
    page.locator(".opblock").first.wait_for(timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/wordcount", "/translate", "/reset", "/add", "/health"} <= {p.strip().replace("\u200b", "") for p in paths}
    body = _execute(page, "/wordcount")
    assert '"n"' in body and '"words"' in body  # the schema's example text, split and counted
    assert page.failed == []  # type: ignore[attr-defined]  # every asset came from the server itself


def test_docs_asks_for_the_token_and_then_works(sk_serve, page):
    srv = serve_secret(sk_serve)
    page.goto(f"{srv.url}/docs", timeout=30_000)
    form = page.locator("#svckit-token")
    form.wait_for(state="visible", timeout=30_000)
    assert "needs its token" in page.locator("#svckit-note").inner_text()
    form.locator("input[name=token]").fill("wrong")
    form.get_by_role("button", name="Use token").click()
    page.get_by_text("That token was refused").wait_for(timeout=10_000)
    form.locator("input[name=token]").fill(TOKEN)
    form.get_by_role("button", name="Use token").click()
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert form.is_hidden()
    body = _execute(page, "/secret")
    assert '"reversed"' in body
    # kept for the tab: a reload needs no token again
    page.reload()
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert form.is_hidden()


def test_docs_takes_the_token_from_the_fragment(sk_serve, page):
    srv = serve_secret(sk_serve)
    page.goto(f"{srv.url}/docs#token={TOKEN}", timeout=30_000)
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert "token" not in page.url  # not left in the address bar
    assert '"reversed"' in _execute(page, "/secret")
