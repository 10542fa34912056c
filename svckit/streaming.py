"""Streams of messages: a plain ``def`` generator run in the worker pool, read on the loop.

A generator stage yields several messages for one. An ``async def`` generator runs on the
runtime loop like any async stage; a plain ``def`` generator may block between items, so
``pump`` runs it in the worker pool ``ROOM`` items at a time, as Starlette runs a sync
iterator in its thread pool (there, one ``next()`` a hop): each item goes to the reader as it
comes, a slow reader slows it down, nothing piles up, no worker waits for a reader, and it
is closed once the reader has gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

__all__ = ["ROOM", "collect", "pump"]

logger = logging.getLogger(__name__)

#: Items a ``def`` generator may run ahead of its reader: it makes this many in a worker,
#: each handed over as it comes, then leaves the worker until the reader has taken them.
ROOM = 16
_ITEM, _ERROR, _END, _PAUSE = 0, 1, 2, 3


async def pump(start: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop, pool: Any) -> AsyncIterator[Any]:
    """The items of the generator ``start()`` makes, made in workers of ``pool``.

    A worker runs the generator for up to ``ROOM`` items, handing each to the loop as it
    comes, and then returns: the next worker job starts once the reader has taken them. So
    a slow reader slows the generator down, nothing piles up, and a reader that does not
    read (a client gone quiet) holds no worker. ``start`` is called in the first job. An
    exception the generator raises is raised here, after the items before it. Closing
    this iterator early (the reader left) closes the generator in a worker, once the job
    that runs it is done.
    """
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    state: dict[str, Any] = {"gone": False}

    def hand(kind: int, value: Any = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed: nobody reads any more
            state["gone"] = True

    def produce() -> None:
        try:
            items = state.get("items")
            if items is None:
                items = state["items"] = iter(start())
            for _ in range(ROOM):
                if state["gone"]:
                    return
                try:
                    item = next(items)
                except StopIteration:
                    hand(_END)
                    return
                hand(_ITEM, item)
        except BaseException as exc:  # the stage's error is the stream's, raised on the loop
            hand(_ERROR, exc)
            return
        hand(_PAUSE)

    def close() -> None:
        closing = getattr(state.get("items"), "close", None)
        if closing is not None:
            try:
                closing()
            except Exception:  # its own finally failed: nobody is left to tell but the log
                logger.exception("closing a generator stage failed")

    job = pool.run(loop, produce)
    ended = False
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _PAUSE:
                job = pool.run(loop, produce)  # the reader took them all: the next ROOM
            elif kind == _ERROR:
                ended = True
                raise value
            else:
                ended = True
                return
    finally:
        state["gone"] = True
        if not ended:
            if job.done():
                _quietly(pool.run(loop, close))
            else:  # the generator is running in a worker: closed once it stops there
                job.add_done_callback(lambda _: _quietly(pool.run(loop, close)))


def _quietly(future: asyncio.Future[Any]) -> None:
    """Nobody awaits ``future``: take its outcome when it comes, so none is reported unread."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


async def collect(items: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every message of a stream, in order (what calling a streaming service in a cell gives)."""
    return [item async for item in items]
