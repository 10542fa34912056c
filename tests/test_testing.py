"""svckit.testing: its helpers work without pytest; with pytest its fixtures are registered."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from svckit.testing import collect, holds, wait_for

WITHOUT_PYTEST = textwrap.dedent(
    """
    import sys

    sys.modules["pytest"] = None  # as if only svckit[lab] were installed: `import pytest` fails

    import svckit as sk
    from svckit.testing import collect, holds, sk_serve, wait_for

    sink = collect()
    (sk.service(lambda x: x + 1, name="inc") >> sink)(x=1)
    assert wait_for(lambda: sink.items) == [{"x": 1, "inc": 2}]
    holds(lambda: len(sink.items) == 1, seconds=0.01)
    assert callable(sk_serve)
    print("helpers ok")
    """
)


def test_helpers_import_and_work_without_pytest():
    run = subprocess.run([sys.executable, "-c", WITHOUT_PYTEST], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "helpers ok"


def test_fixtures_are_registered_by_the_plugin(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("svckit")
    assert plugin is not None and plugin.__name__ == "svckit.testing"


def test_wait_for_returns_the_value_or_times_out():
    assert wait_for(lambda: 42, timeout=1) == 42
    with pytest.raises(TimeoutError, match="never"):
        wait_for(lambda: 0, timeout=0.02, what="never")


def test_holds_fails_the_moment_the_condition_does():
    values = iter([True, True, False])
    with pytest.raises(AssertionError, match="flag stopped holding"):
        holds(lambda: next(values), seconds=5, what="flag")


def test_collect_waits_for_messages():
    sink = collect()
    sink.process(a=1)
    assert sink.wait(1, timeout=1) == [{"a": 1}]
    with pytest.raises(TimeoutError, match="got 1 of 2"):
        sink.wait(2, timeout=0.02)
