"""Served examples whose OpenAPI documents the tests check (test_openapi, test_schemathesis).

Each is what a notebook user would write: a word count, the normalize → translate →
filter flow of issue 13, a class service with ``@sk.handle`` actions (one without
parameters), a branch, pydantic models in and out, a GET-enabled service, a
streaming one and a token-protected one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pydantic

import svckit as sk

TOKEN = "s3cret-token"


@sk.service
def parse(text: str) -> dict:
    """Split text into words."""
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    """Count the words."""
    return {"n": len(words)}


WORDCOUNT = parse >> count


@sk.service(output="clean")
def normalize(text: str) -> str:
    """Trim and lower-case the text."""
    return " ".join(text.split()).lower()


class Translated(TypedDict):
    translated: str
    lang: str


@sk.service
def translate(clean: str, lang: str, formal: bool = False) -> Translated:
    """Translate the clean text (here: tag it with the language)."""
    return {"translated": f"[{lang}{'!' if formal else ''}] {clean}", "lang": lang}


@sk.service(name="filter")
def keep(translated: str, min_len: int = 3) -> dict[str, bool]:
    """Keep translations at least ``min_len`` characters long."""
    return {"kept": len(translated) >= min_len}


TRANSLATE = normalize >> translate >> keep


class Counter(sk.Service):
    """Count the messages it sees."""

    start: int = 0

    def setup(self) -> None:
        self._lock = threading.Lock()
        self.total = self.start

    def process(self, by: int = 1) -> dict:
        with self._lock:
            self.total += by
            return {"total": self.total}

    @sk.handle("reset")
    def reset(self) -> dict:
        """Start counting from zero again."""
        with self._lock:
            self.total = 0
        return {"total": 0}

    @sk.handle("peek")
    def peek(self, scale: Annotated[float, pydantic.Field(ge=-1e6, le=1e6)] = 1.0) -> float:
        """The total so far, times ``scale``."""
        with self._lock:
            return float(self.total) * scale


@sk.service
def shout(text: str, times: int = 1) -> dict:
    return {"out": text.upper() * max(0, min(times, 5))}


@sk.service
def whisper(text: str) -> dict:
    return {"out": text.lower()}


ROUTED = sk.branch("kind", {"shout": shout, "whisper": whisper})


class Point(pydantic.BaseModel):
    """A point in the plane."""

    x: float = pydantic.Field(ge=-1e6, le=1e6)
    y: float = pydantic.Field(ge=-1e6, le=1e6)


class Distance(pydantic.BaseModel):
    distance: float = pydantic.Field(description="From the origin.")
    quadrant: int


@sk.service
def measure(p: Point) -> Distance:
    """How far the point is from the origin, and its quadrant."""
    quadrant = (1 if p.y >= 0 else 4) if p.x >= 0 else (2 if p.y >= 0 else 3)
    return Distance(distance=(p.x**2 + p.y**2) ** 0.5, quadrant=quadrant)


@sk.service(methods=("GET", "POST"))
def add(a: int, b: int = 0) -> int:
    """Add two integers (GET /add?a=1&b=2 works too)."""
    return a + b


@sk.service
def words(text: str, limit: int = 20) -> Iterator[dict[str, str]]:
    """One message per word (a stream: NDJSON, or server-sent events)."""
    for word in text.split()[: max(0, limit)]:
        yield {"word": word}


@sk.service
def secret(word: str) -> dict:
    """Reverse a word, for those with the token."""
    return {"reversed": word[::-1]}


#: name → what is served under it, all on one port
PUBLIC: dict[str, Any] = {
    "wordcount": WORDCOUNT,
    "translate": TRANSLATE,
    "counter": Counter,
    "routed": ROUTED,
    "measure": measure,
    "add": add,
    "words": words,
}


def serve_public(sk_serve: Any) -> Any:
    """Serve every public example on one port; returns the first served thing (its ``url``)."""
    first = None
    for name, node in PUBLIC.items():
        node = node() if isinstance(node, type) else node
        srv = sk_serve(node, name=name, http=first.http_port if first is not None else 0)
        first = first or srv
    return first


def serve_secret(sk_serve: Any) -> Any:
    """The token-protected example on a port of its own."""
    return sk_serve(secret, name="secret", http=0, token=TOKEN)
