"""Flow pictures: an SVG drawing of a service or flow, with live counts while served.

Stages are boxes left to right; ``branch`` and ``parallel`` fan out vertically and join
again; sources, sinks and middleware get their own colours. Counts come from the services'
own counters (``calls``/``failures``), so drawing never touches the runtime. With
``timing``, a served stage's recent mean and p99 time (its ``_timer``, a
``metrics.StageTimer``) are written under its box, and the slowest stage (by mean) is
outlined in orange and marked "slowest".

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
_TIME_H = 18  # the line of a stage's time under its box
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


def _ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    if value >= 0.1:
        return f"{value:.2f} ms"
    return f"{value * 1000:.0f} µs"


def _timing(svc: Node) -> dict[str, Any] | None:
    timer = getattr(svc, "_timer", None)
    stats = timer.stats() if timer is not None else None
    return stats if stats and stats.get("mean_ms") is not None else None


def _leaf(svc: Node, counts: bool, times: dict[int, dict[str, Any]] | None = None, slowest: int | None = None) -> _Box:
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
    timed = times.get(id(svc)) if times is not None else None
    time_note = f"mean {_ms(timed['mean_ms'])} · p99 {_ms(timed['p99_ms'])}" if timed else ""
    # a served def stage: where it runs (svckit.placement), when svckit moved it
    place = getattr(svc, "_place", None) if counts else None
    where = why = ""
    if place is not None and place.forced is None and (place.loop or place.moved_at is not None):
        where, why = ("on loop" if place.loop else "back in pool"), place.why
        time_note = f"{time_note} · {where}" if time_note else where
    is_slowest = timed is not None and slowest == id(svc)
    w = max(84.0, _text_width(label) + 24, _text_width(note) + 24, _text_width(time_note) * 0.85 + 16)
    describe = getattr(svc, "describe", None)
    title = escape((describe() if callable(describe) else label) + (f" ({where}: {why})" if where else ""))
    fail = counts and bool(getattr(svc, "failures", 0))
    stroke = "#c0392b" if fail else ("#e67e22" if is_slowest else _STROKE[role])
    cls = "svckit-stage svckit-slowest" if is_slowest else "svckit-stage"
    body = (
        f'<g class="{cls}" data-name="{escape(label)}"><title>{title}</title>'
        f'<rect width="{w:g}" height="{_H}" rx="8" fill="{_FILL[role]}" stroke="{stroke}" '
        f'stroke-width="{2.5 if is_slowest else 1.5}"/>'
        f'<text x="{w / 2:g}" y="{19 if note else 28}" text-anchor="middle" font-weight="600">{escape(label)}</text>'
    )
    if note:
        body += f'<text x="{w / 2:g}" y="36" text-anchor="middle" font-size="11" fill="#555">{escape(note)}</text>'
    h = float(_H)
    if times is not None:  # a line under every box (blank while a stage has no time), so boxes line up
        h += _TIME_H
        if timed:
            color = "#b35900" if is_slowest else "#555"
            body += (
                f'<text class="svckit-stage-time" x="{w / 2:g}" y="{_H + 13}" text-anchor="middle" font-size="10.5" '
                f'fill="{color}">{escape(time_note)}</text>'
            )
            if is_slowest:
                body += (
                    f'<text x="{w - 6:g}" y="-3" text-anchor="end" font-size="10" font-weight="600" '
                    'fill="#b35900">slowest</text>'
                )
    return _Box(w, h, [(body + "</g>", 0, 0)])


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


def _layout(
    node: Node, counts: bool, times: dict[int, dict[str, Any]] | None = None, slowest: int | None = None
) -> _Box:
    kind, parts = node.children()
    if kind == "sequence":
        return _sequence([_layout(part, counts, times, slowest) for _, part in parts])
    if kind == "parallel":
        return _fan([_layout(part, counts, times, slowest) for _, part in parts], [""] * len(parts), None, "parallel")
    if kind.startswith("branch:"):
        labels = [label for label, _ in parts]
        boxes = [_layout(part, counts, times, slowest) for _, part in parts]
        return _fan(boxes, labels, kind[len("branch:") :], "branch")
    return _leaf(node, counts, times, slowest)


def svg(node: Node, counts: bool | None = None, timing: bool = False) -> str:
    """The SVG picture of ``node``; ``counts`` shows per-stage message counts (default: once any ran);
    ``timing`` each served stage's recent mean and p99 time, the slowest marked."""
    if counts is None:
        counts = any(getattr(leaf, "calls", 0) for leaf in node.leaves())
    times: dict[int, dict[str, Any]] | None = None
    slowest = None
    if timing:
        times = {}
        for leaf in node.leaves():
            stats = _timing(leaf)
            if stats is not None:
                times[id(leaf)] = stats
        if len(times) > 1:
            slowest = max(times, key=lambda k: times[k]["mean_ms"])  # type: ignore[index]
    box = _layout(node, counts, times, slowest)
    pad = 8 + (10 if slowest is not None else 0)
    w, h = box.w + 2 * pad, box.h + 2 * pad
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="svckit-flow" width="{w:g}" height="{h:g}" '
        f'viewBox="0 0 {w:g} {h:g}" font-family="sans-serif" font-size="13">'
        '<defs><marker id="svckit-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>'
        f"{box.place(pad, pad)}</svg>"
    )


def html(node: Node, counts: bool | None = None, timing: bool = False) -> str:
    """``svg`` wrapped for notebook display."""
    return f'<div class="svckit-flow-picture">{svg(node, counts, timing)}</div>'


class Picture:
    """A drawing that shows itself in a notebook (``Served.picture()``); its text form is short."""

    def __init__(self, node: Node, counts: bool | None = None, title: str | None = None, timing: bool = False) -> None:
        self.node = node
        self.counts = counts
        self.timing = timing
        self.title = title or node.name

    def _repr_html_(self) -> str:
        return html(self.node, self.counts, self.timing)

    def __repr__(self) -> str:
        return f"<Picture of {self.title}>"
