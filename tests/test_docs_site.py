"""The documentation site: built with mkdocs (the ``docs`` extra), it has an API entry for
every public name in ``svckit.__all__``, a page for every committed notebook (with its
outputs, not executed again), the guide pages, and no asset from a CDN. ``make docs`` builds
it with ``--strict``; this builds it without, so a docstring another change broke is
reported there, and what is checked here is what the site holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import svckit

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).with_name("mkdocs")

pytestmark = pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed (the docs extra)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [str(MKDOCS), "build", "--quiet", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HOME": str(out)},
    )
    assert run.returncode == 0, run.stderr
    return out


def _anchors(site: Path) -> set[str]:
    found: set[str] = set()
    for page in (site / "api").rglob("index.html"):
        found |= set(re.findall(r'id="(svckit\.[A-Za-z_][\w.]*)"', page.read_text(encoding="utf-8")))
    return found


def test_every_public_name_has_an_api_entry(site):
    anchors = _anchors(site)
    missing = sorted(name for name in svckit.__all__ if f"svckit.{name}" not in anchors)
    assert not missing, f"no API entry on the site for: {', '.join(missing)}"
    listed = {a.split(".")[1] for a in anchors if a.count(".") == 1}
    assert listed <= set(svckit.__all__), (
        f"API entries for names not in __all__: {sorted(listed - set(svckit.__all__))}"
    )


def test_the_api_entries_come_from_the_docstrings(site):
    page = (site / "api" / "served" / "index.html").read_text(encoding="utf-8")
    assert 'id="svckit.serve"' in page and "Serve a service or flow from the background runtime" in page
    assert "drain_timeout" in page  # a parameter of the numpydoc Parameters section


def test_every_notebook_is_a_page_with_its_committed_outputs(site):
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        page = site / "notebooks" / notebook.stem / "index.html"
        assert page.exists(), f"{notebook.name} has no page"
    model = (site / "notebooks" / "08-serve-a-model" / "index.html").read_text(encoding="utf-8")
    assert "failed calls: 0" in model  # an output as committed


def test_the_guide_pages_are_there_and_need_no_cdn(site):
    for page in ("wire-protocol", "security", "cli", "coming-from", "architecture", "dashboards", "concepts"):
        assert (site / page / "index.html").exists(), page
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "svckit makes the Jupyter notebook a place" in home  # README's opening
    assert "fonts.googleapis.com" not in home
    coming = (site / "coming-from" / "index.html").read_text(encoding="utf-8")
    for library in ("FastAPI", "Streamz", "Nameko", "Kernel Gateway"):
        assert library in coming
