"""nbval settings for the notebooks: leave widget views out of the comparison.

A displayed widget's output holds a random model id and, in JupyterLab, live values; its
``text/plain`` is compared (svckit keeps it deterministic), its widget view is not.
"""

from __future__ import annotations

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _without_widget_views(outputs):
    kept = []
    for out in outputs:
        data = out.get("data")
        if data and WIDGET_VIEW in data:
            data = {k: v for k, v in data.items() if k != WIDGET_VIEW}
            out = {**out, "data": data}
        kept.append(out)
    return kept


def pytest_collection_modifyitems(session, config, items):
    try:
        from nbval.plugin import NbCellItem
    except ImportError:
        return
    if getattr(NbCellItem, "_svckit_patched", False):
        return
    original = NbCellItem.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        return original(self, _without_widget_views(test), _without_widget_views(ref), skip_compare)

    NbCellItem.compare_outputs = compare_outputs
    NbCellItem._svckit_patched = True
