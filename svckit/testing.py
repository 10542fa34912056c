"""Test helpers shipped with svckit, registered as a pytest plugin (``pytest11``).

Fixtures
--------
``sk_runtime``
    A fresh runtime for the test, shut down afterwards (every port released).
``sk_serve``
    ``sk_serve(x, **kw)`` serves like ``sk.serve`` with ``http=0`` by default, and stops
    whatever it served when the test ends, under a timeout.

Helpers
-------
``collect()`` is the easy test end of any flow (like Streamz's ``sink_to_list``),
``wait_for(condition, timeout)`` polls a condition with a deadline, and ``holds`` checks
that a condition stays true.

The helpers need no pytest: a notebook installed with ``svckit[lab]`` imports them as
they are. pytest is imported only to define the fixtures, and only when it is installed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .service import Service

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["Collector", "collect", "holds", "sk_runtime", "sk_serve", "wait_for"]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005, what: str = "") -> Any:
    """Poll ``condition()`` until it is truthy and return its value; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what or getattr(condition, '__name__', 'a condition')}")
        time.sleep(interval)


def holds(condition: Callable[[], Any], seconds: float, interval: float = 0.005, what: str = "") -> None:
    """Check that ``condition()`` stays truthy for ``seconds``; ``AssertionError`` the moment it fails.

    For asserting that something does *not* happen (a stopped loop stays quiet), where a
    bare ``sleep`` followed by one check would miss a change that came and went.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not condition():
            raise AssertionError(f"{what or getattr(condition, '__name__', 'the condition')} stopped holding")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


class Collector(Service):
    """A sink stage that keeps a copy of every message reaching it, in ``.items``.

    Examples
    --------
    >>> import svckit as sk
    >>> from svckit.testing import collect
    >>> sink = collect()
    >>> flow = sk.service(lambda x: x * 2, name="double") >> sink
    >>> _ = flow(x=2)
    >>> sink.items
    [{'x': 2, 'double': 4}]
    """

    role = "stage"

    def __init__(self, name: str = "collect") -> None:
        super().__init__(name=name)
        self.items: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def process(self, **message: Any) -> None:
        with self._cond:
            self.items.append(dict(message))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name!r} got {len(self.items)} of {count} messages in {timeout} s")
                self._cond.wait(left)
            return list(self.items)

    def clear(self) -> None:
        with self._cond:
            self.items.clear()


def collect(name: str = "collect") -> Collector:
    """A new ``Collector``: put it at the end of a flow and read ``.items``."""
    return Collector(name)


def _fixture(fn: _F) -> _F:
    """``pytest.fixture(fn)`` when pytest is installed; otherwise ``fn`` as it is."""
    try:
        import pytest
    except ImportError:  # svckit[lab] without pytest: the helpers above still work
        return fn
    return pytest.fixture(fn)  # type: ignore[return-value]  # a FixtureFunctionDefinition in pytest 8.4+


@_fixture
def sk_runtime() -> Iterator[Any]:
    """A fresh svckit runtime, shut down when the test ends."""
    from .runtime import runtime, shutdown

    shutdown()
    rt = runtime()
    try:
        yield rt
    finally:
        shutdown(timeout=10)
        rt.thread.join(10)
        assert not rt.thread.is_alive(), "the svckit runtime thread did not stop"


@_fixture
def sk_serve(sk_runtime: Any) -> Iterator[Callable[..., Any]]:
    """Serve for a test: ``sk_serve(flow, name=..., http=0)``; everything is stopped afterwards."""
    from .served import serve

    made: list[Any] = []

    def factory(x: Any, name: str | None = None, **kw: Any) -> Any:
        if "http" not in kw and "zmq" not in kw:
            kw["http"] = 0
        served = serve(x, name=name, **kw)
        made.append(served)
        return served

    try:
        yield factory
    finally:
        for served in reversed(made):
            served.stop(timeout=10)
