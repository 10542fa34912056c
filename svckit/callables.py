"""What kind of callable a thing is: the one place svckit tells ``async def`` from ``def``."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["generator_kind", "is_async_callable", "unwrap"]


def unwrap(obj: Any) -> Any:
    """``obj`` without its ``functools.partial`` layers."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return obj


def is_async_callable(obj: Any) -> bool:
    """True for an ``async def`` function or method, a ``functools.partial`` of one, or an
    object whose ``__call__`` is ``async def`` (as Starlette's ``is_async_callable``).

    Examples
    --------
    >>> import functools
    >>> async def fetch(url, timeout): ...
    >>> is_async_callable(functools.partial(fetch, timeout=1))
    True
    >>> is_async_callable(len)
    False
    """
    obj = unwrap(obj)
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None) if not inspect.isroutine(obj) else None  # noqa: B004 - inherited too
    return call is not None and inspect.iscoroutinefunction(unwrap(call))


def generator_kind(obj: Any) -> str | None:
    """``"sync"`` for a generator function (or a partial of one, or an object whose
    ``__call__`` is one), ``"async"`` for an async generator function, else None.

    Examples
    --------
    >>> def count(n):
    ...     yield from range(n)
    >>> async def ticks(n):
    ...     yield n
    >>> generator_kind(count), generator_kind(ticks), generator_kind(len)
    ('sync', 'async', None)
    """
    obj = unwrap(obj)
    if not inspect.isroutine(obj) and not inspect.isclass(obj):
        call = getattr(type(obj), "__call__", None)  # noqa: B004 - inherited too
        obj = unwrap(call) if call is not None else obj
    if inspect.isasyncgenfunction(obj):
        return "async"
    if inspect.isgeneratorfunction(obj):
        return "sync"
    return None
