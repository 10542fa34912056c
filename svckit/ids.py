"""Request ids: a random prefix per process and a counter (a uuid4 costs ~2 us a request).

An id is kept as its number until someone reads it (``format_request_id``), so a request
whose id nobody asks for (a pipeline message, a reply without an id frame) never formats one.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["accepted_id", "format_request_id", "next_number"]

_PREFIX = os.urandom(4).hex()

#: The next request number of this process.
next_number = itertools.count(1).__next__


def format_request_id(number: int | str | None) -> str | None:
    """The text of a request id kept as its number (``<8 hex>-<counter in hex>``), or the id itself."""
    if number is None or isinstance(number, str):
        return number
    return f"{_PREFIX}-{number:x}"


def accepted_id(value: str | None) -> str | None:
    """A request id a client sent, if it is a short printable token (else one is made)."""
    if value and len(value) <= 128 and value.isprintable() and value.isascii() and " " not in value:
        return value
    return None
