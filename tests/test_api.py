"""The public surface: ``svckit.__all__`` lists exactly the public names, and importing is light."""

from __future__ import annotations
import __future__

import subprocess
import sys
import types

import svckit as sk


def _public_names() -> set[str]:
    return {
        name
        for name, value in vars(sk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType | __future__._Feature)
    }


def test_all_is_sorted_and_lists_exactly_the_public_names():
    assert sk.__all__ == sorted(sk.__all__)
    assert len(set(sk.__all__)) == len(sk.__all__)
    assert set(sk.__all__) == _public_names()


def test_star_import_gives_the_public_api():
    namespace: dict[str, object] = {}
    exec("from svckit import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(sk.__all__)


def test_design_names_are_there():
    for name in [
        "service", "Service", "handle", "Flow", "branch", "parallel", "serve", "Served", "Client",
        "runtime", "shutdown", "StopFlow", "Retry", "Fatal", "BadMessage", "RemoteError", "SvckitError",
    ]:  # fmt: skip
        assert name in sk.__all__, name


def test_every_error_has_one_root():
    errors = [getattr(sk, n) for n in sk.__all__ if isinstance(getattr(sk, n), type)]
    errors = [e for e in errors if issubclass(e, BaseException)]
    assert errors and all(issubclass(e, sk.SvckitError) for e in errors)


def test_import_is_light():
    code = (
        "import sys, svckit\n"
        "heavy = ['ipywidgets', 'uvicorn', 'IPython']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = proc.stdout.strip()
    assert loaded == "[]", f"import svckit loaded {loaded}"
    assert proc.stderr == ""
