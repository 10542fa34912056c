"""Flow pictures: an SVG drawing of a service or flow, with live counts while served.

Stages are boxes left to right; ``branch`` and ``parallel`` fan out vertically and join
again; sources, sinks and middleware get their own colours. Counts come from the services'
own counters (``calls``/``failures``), so drawing never touches the runtime.

A node is drawn from a small protocol, so this module imports nothing of svckit: ``name``,
``role``, ``describe()``, ``leaves()``, the counters, and ``children()``, which returns
``("leaf", [])``, ``("sequence", parts)``, ``("parallel", parts)`` or
``("branch:<key>", parts)`` with ``parts`` a list of ``(label, node)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Protocol


class Node(Protocol):
    name: str

    def describe(self) -> str: ...
    def children(self) -> tuple[str, list[tuple[str, Any]]]: ...
    def leaves(self) -> Any: ...


__all__ = ["Picture", "html", "svg"]

_H = 46  # leaf box height
_GAP = 28  # horizontal gap between boxes (room for an arrow)
_VGAP = 10  # vertical gap between stacked branches
_FILL = {"source": "#e3f4e6", "sink": "#efe6f7", "stage": "#e8f0fb", "branch": "#fff4dc", "middleware": "#f1f1f1"}
_STROKE = {"source": "#3f9a52", "sink": "#8356ad", "stage": "#4a78c2", "branch": "#c8901e", "middleware": "#777777"}


@dataclass
class _Box:
    w: float
    h: float
    parts: list[tuple[str, float, float]] = field(default_factory=list)  # (svg snippet, dx, dy)

    def place(self, x: float, y: float) -> str:
        return "".join(_shift(s, x + dx, y + dy) for s, dx, dy in self.parts)


def _shift(snippet: str, x: float, y: float) -> str:
    if x == 0 and y == 0:
        return snippet
    return f'<g transform="translate({x:g},{y:g})">{snippet}</g>'


def _text_width(text: str) -> float:
    return 7.2 * len(text)


def _leaf(svc: Node, counts: bool) -> _Box:
    role = getattr(svc, "role", "stage")
    if role not in _FILL:
        role = "stage"
    label = svc.name
    note = ""
    if counts:
        calls = getattr(svc, "calls", 0)
        fails = getattr(svc, "failures", 0)
        note = f"{calls} msg" + (f" · {fails} err" if fails else "")
    elif role != "stage":
        note = role
    w = max(84.0, _text_width(label) + 24, _text_width(note) + 24)
    describe = getattr(svc, "describe", None)
    title = escape(describe() if callable(describe) else label)
    fail = counts and bool(getattr(svc, "failures", 0))
    stroke = "#c0392b" if fail else _STROKE[role]
    body = (
        f'<g class="svckit-stage" data-name="{escape(label)}"><title>{title}</title>'
        f'<rect width="{w:g}" height="{_H}" rx="8" fill="{_FILL[role]}" stroke="{stroke}" stroke-width="1.5"/>'
        f'<text x="{w / 2:g}" y="{19 if note else 28}" text-anchor="middle" font-weight="600">{escape(label)}</text>'
    )
    if note:
        body += f'<text x="{w / 2:g}" y="36" text-anchor="middle" font-size="11" fill="#555">{escape(note)}</text>'
    return _Box(w, _H, [(body + "</g>", 0, 0)])


def _arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f'<path d="M{x1:g},{y1:g} C{(x1 + x2) / 2:g},{y1:g} {(x1 + x2) / 2:g},{y2:g} {x2:g},{y2:g}" '
        'fill="none" stroke="#777" stroke-width="1.3" marker-end="url(#svckit-arrow)"/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f'<path d="M{x1:g},{y1:g} C{(x1 + x2) / 2:g},{y1:g} {(x1 + x2) / 2:g},{y2:g} {x2:g},{y2:g}" '
        'fill="none" stroke="#777" stroke-width="1.3"/>'
    )


def _sequence(boxes: list[_Box]) -> _Box:
    h = max(b.h for b in boxes)
    parts: list[tuple[str, float, float]] = []
    x = 0.0
    for i, b in enumerate(boxes):
        y = (h - b.h) / 2
        if i:
            parts.append((_arrow(x - _GAP, h / 2, x - 2, h / 2), 0, 0))
        parts.append((b.place(0, 0), x, y))
        x += b.w + _GAP
    return _Box(x - _GAP, h, parts)


def _fan(boxes: list[_Box], labels: list[str], head: str | None, role: str) -> _Box:
    margin = 44.0 if head is None else 64.0
    inner_w = max(b.w for b in boxes)
    total_h = sum(b.h for b in boxes) + _VGAP * (len(boxes) - 1)
    head_w = 0.0
    parts: list[tuple[str, float, float]] = []
    if head is not None:
        head_w = max(70.0, _text_width(head) + 20)
        diamond = (
            f'<g class="svckit-{role}"><rect width="{head_w:g}" height="30" rx="15" fill="{_FILL["branch"]}" '
            f'stroke="{_STROKE["branch"]}" stroke-width="1.5"/><text x="{head_w / 2:g}" y="20" '
            f'text-anchor="middle" font-style="italic">{escape(head)}</text></g>'
        )
        parts.append((diamond, 0, total_h / 2 - 15))
    x0 = head_w + margin
    y = 0.0
    mid = total_h / 2
    for b, label in zip(boxes, labels, strict=True):
        cy = y + b.h / 2
        parts.append((_arrow(head_w, mid, x0 - 2, cy), 0, 0))
        if label:
            parts.append(
                (
                    f'<text x="{x0 - 6:g}" y="{cy - 5:g}" text-anchor="end" font-size="11" '
                    f'fill="#8a6414">{escape(label)}</text>',
                    0,
                    0,
                )
            )
        parts.append((b.place(0, 0), x0 + (inner_w - b.w) / 2, y))
        parts.append((_line(x0 + (inner_w + b.w) / 2, cy, x0 + inner_w + margin, mid), 0, 0))
        y += b.h + _VGAP
    w = x0 + inner_w + margin
    parts.append((f'<circle cx="{w:g}" cy="{mid:g}" r="3.5" fill="#777"/>', 0, 0))
    return _Box(w, total_h, parts)


def _layout(node: Node, counts: bool) -> _Box:
    kind, parts = node.children()
    if kind == "sequence":
        return _sequence([_layout(part, counts) for _, part in parts])
    if kind == "parallel":
        return _fan([_layout(part, counts) for _, part in parts], [""] * len(parts), None, "parallel")
    if kind.startswith("branch:"):
        labels = [label for label, _ in parts]
        return _fan([_layout(part, counts) for _, part in parts], labels, kind[len("branch:") :], "branch")
    return _leaf(node, counts)


def svg(node: Node, counts: bool | None = None) -> str:
    """The SVG picture of ``node``; ``counts`` shows per-stage message counts (default: once any ran)."""
    if counts is None:
        counts = any(getattr(leaf, "calls", 0) for leaf in node.leaves())
    box = _layout(node, counts)
    pad = 8
    w, h = box.w + 2 * pad, box.h + 2 * pad
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="svckit-flow" width="{w:g}" height="{h:g}" '
        f'viewBox="0 0 {w:g} {h:g}" font-family="sans-serif" font-size="13">'
        '<defs><marker id="svckit-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>'
        f"{box.place(pad, pad)}</svg>"
    )


def html(node: Node, counts: bool | None = None) -> str:
    """``svg`` wrapped for notebook display."""
    return f'<div class="svckit-flow-picture">{svg(node, counts)}</div>'


class Picture:
    """A drawing that shows itself in a notebook (``Served.picture()``); its text form is short."""

    def __init__(self, node: Node, counts: bool | None = None, title: str | None = None) -> None:
        self.node = node
        self.counts = counts
        self.title = title or node.name

    def _repr_html_(self) -> str:
        return html(self.node, self.counts)

    def __repr__(self) -> str:
        return f"<Picture of {self.title}>"
