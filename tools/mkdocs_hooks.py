"""mkdocs hooks for svckit's documentation site (``mkdocs.yml`` names this file).

One source for every text: the home page and the guide pages are sections of README.md,
cut out when the site is built; the notebooks are the committed ones (``docs/notebooks`` is
a link to ``notebooks/``), listed in the navigation as they are found; the API reference
has one page per svckit module that defines public names, an entry for every name in
``svckit.__all__`` (``tests/test_docs_site.py`` checks the built site against it).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: page -> (the README heading it starts at, the heading it stops before; None: to the end of
#: the section at that level). The home page is README's opening, up to its "Concepts".
README_PAGES: dict[str, tuple[str | None, str | None, str]] = {
    "index.md": (None, "Concepts", "svckit"),
    "concepts.md": ("Concepts", None, "Concepts"),
    "dashboards.md": ("Dashboards and pictures", None, "Dashboards and errors"),
    "wire-protocol.md": ("Wire protocol", None, "Wire protocol"),
    "security.md": ("Reliability and security", None, "Limits and security"),
    "cli.md": ("Command line", None, "Command line"),
    "programs.md": ("Wrapping programs", None, "Wrapping programs"),
    "testing.md": ("Testing your services", None, "Testing your services"),
    "performance.md": ("Performance", None, "Performance"),
}

#: README section titles -> the page that now holds them, for README's own "#anchor" links.
_SECTION_PAGE = {start: page for page, (start, _, _) in README_PAGES.items() if start}

#: The title of each API page, by the module that defines its names (others: the module name).
API_TITLES = {
    "service": "Services",
    "flow": "Flows",
    "served": "Serving",
    "client": "Clients",
    "sources": "Sources",
    "sinks": "Sinks",
    "middleware": "Middleware",
    "program": "External programs",
    "dashboard": "Dashboards",
    "runtime": "The runtime",
    "errors": "Errors",
    "state": "Lifecycle states",
}


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def readme_section(start: str | None, stop: str | None) -> str:
    """README.md from the ``## start`` heading (None: its beginning) to the next heading of
    the same level (or ``## stop``)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    begin = 0
    if start is not None:
        begin = next(i for i, line in enumerate(lines) if line.strip() == f"## {start}")
    out: list[str] = []
    fence = False
    for i, line in enumerate(lines[begin:], begin):
        if line.startswith("```"):
            fence = not fence
        if not fence and i > begin and line.startswith("## ") and (stop is None or line.strip() == f"## {stop}"):
            break
        out.append(line)
    return "\n".join(out) + "\n"


def _rewrite(text: str, page: str) -> str:
    """README's links made to work on the site: docs/ files are next to the page, a
    notebook named in a table links to its page, a ``#section`` moved elsewhere points there."""
    text = text.replace("](docs/", "](")

    def notebook(match: re.Match[str]) -> str:
        name = match.group(1)
        if (ROOT / "notebooks" / name).exists():
            return f"[`{name}`](notebooks/{name})"
        return match.group(0)

    text = re.sub(r"^\| `(\d\d-[\w-]+\.ipynb)`", lambda m: "| " + notebook(m), text, flags=re.M)

    def anchor(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        for section, where in _SECTION_PAGE.items():
            if _slug(section) == target and where != page:
                return f"[{label}]({where})"
        return match.group(0)

    return re.sub(r"\[([^\]]+)\]\(#([\w-]+)\)", anchor, text)


def _api_groups() -> dict[str, list[str]]:
    """The public names of svckit by the module that defines them, in ``__all__`` order."""
    import svckit

    groups: dict[str, list[str]] = {}
    for name in svckit.__all__:
        obj = getattr(svckit, name)
        module = getattr(obj, "__module__", None) or "svckit"
        if not module.startswith("svckit.") or isinstance(obj, str | int | float):
            module = "svckit.other"
        groups.setdefault(module.split(".")[1], []).append(name)
    return groups


def api_pages() -> dict[str, tuple[str, str]]:
    """``api/<module>.md`` -> (title, markdown with a ``::: svckit.Name`` entry per name)."""
    pages = {}
    for module, names in sorted(
        _api_groups().items(), key=lambda kv: list(API_TITLES).index(kv[0]) if kv[0] in API_TITLES else len(API_TITLES)
    ):
        title = API_TITLES.get(module, module.capitalize())
        doc = (importlib.import_module(f"svckit.{module}").__doc__ or "").strip().split("\n\n")[0]
        body = [f"# {title}", "", f"`svckit.{module}`: {doc}" if doc else "", ""]
        body += [f"::: svckit.{name}\n" for name in names]
        pages[f"api/{module}.md"] = (title, "\n".join(body))
    return pages


def on_config(config: Any) -> Any:
    """Fill the navigation: every committed notebook, then the API pages."""
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    nav = config["nav"] or []
    for entry in nav:
        if isinstance(entry, dict) and "Notebooks" in entry:
            entry["Notebooks"] = [f"notebooks/{name}" for name in notebooks]
    nav.append({"API reference": [{title: path} for path, (title, _) in api_pages().items()]})
    config["nav"] = nav
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the pages made from README.md and the API pages (nothing of them is on disk)."""
    from mkdocs.structure.files import File

    for page, (start, stop, title) in README_PAGES.items():
        text = _rewrite(readme_section(start, stop), page)
        if start is not None:
            text = re.sub(r"^## .*$", f"# {title}", text, count=1, flags=re.M)
        files.append(File.generated(config, page, content=text))
    for page, (_, text) in api_pages().items():
        files.append(File.generated(config, page, content=text))
    return files
