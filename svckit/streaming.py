"""Streams of messages: a plain ``def`` generator run in the worker pool, read on the loop.

A generator stage yields several messages for one. An ``async def`` generator runs on the
runtime loop like any async stage; a plain ``def`` generator may block between items, so
``pump`` runs it in a worker thread and hands its items to the loop through a bounded
hand-over: the generator waits while ``ROOM`` items are unread (a slow reader slows it
down, nothing piles up), and stops at its next item once the reader has gone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

__all__ = ["ROOM", "collect", "pump"]

#: Items a ``def`` generator may run ahead of its reader.
ROOM = 16
_ITEM, _ERROR, _END = 0, 1, 2


async def pump(start: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop, pool: Any) -> AsyncIterator[Any]:
    """The items of the generator ``start()`` makes, iterated in a worker of ``pool``.

    ``start`` is called in the worker (a generator function's body runs only when it is
    iterated, but a callable object may do work when called). An exception the generator
    raises is raised here, after the items before it. Closing this iterator early (the
    reader left) stops the generator at its next ``yield`` and closes it in its thread.
    """
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    room = threading.Semaphore(ROOM)
    gone = threading.Event()

    def hand(kind: int, value: Any) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed: nobody reads any more
            return False
        return True

    def produce() -> None:
        try:
            items = start()
            try:
                for item in items:
                    while not room.acquire(timeout=0.1):
                        if gone.is_set():
                            return
                    if gone.is_set() or not hand(_ITEM, item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # the stage's error is the stream's, raised on the loop
            hand(_ERROR, exc)
        else:
            hand(_END, None)

    job = pool.run(loop, produce)
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                room.release()
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        gone.set()
        room.release()  # a producer waiting for room wakes up and sees it is gone
        if not job.done():
            job.cancel()  # stops waiting for it here; the thread ends at its next item


async def collect(items: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every message of a stream, in order (what calling a streaming service in a cell gives)."""
    return [item async for item in items]
