"""nbval settings for the notebooks: leave widget views out of the comparison.

A displayed widget's output holds a random model id and, in JupyterLab, live values; its
``text/plain`` is compared (svckit keeps it deterministic), its widget view is not.

nbval 0.11 already leaves widget views out: they are in the ``skip_compare`` list of each
notebook it collects. This conftest puts them there itself, so the comparison does not
depend on what a given nbval version skips, and it stops the run with a clear error if
nbval no longer has that list, rather than silently comparing random model ids.
"""

from __future__ import annotations

import pytest

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def pytest_collection_modifyitems(session, config, items):
    for notebook in {item.parent for item in items if item.path.suffix == ".ipynb"}:
        skip = getattr(notebook, "skip_compare", None)
        if not isinstance(skip, tuple | list):
            raise pytest.UsageError(
                f"notebooks/conftest.py: nbval's {type(notebook).__name__} has no skip_compare list, "
                "so widget views cannot be left out of the comparison; update the conftest for this nbval."
            )
        if WIDGET_VIEW not in skip:
            notebook.skip_compare = (*skip, WIDGET_VIEW)
