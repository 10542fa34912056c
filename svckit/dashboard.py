"""Live dashboards: ipywidgets that show what served things are doing.

A dashboard only reads snapshots (``Metrics``, the ``LogBuffer``) and is refreshed by one
background thread at most ``1/interval`` times a second; a refresh sends nothing when
nothing changed. A dashboard that is closed, or whose every view in the frontend went
away, is dropped by the refresher (shown again, it is refreshed again).

Per served thing it shows: the state and counters (one ``counters()`` snapshot per
refresh, the numbers ``status()`` gives), charts of replies and errors per second and of
latency p50/p99 over the last minutes (SVG in an ``HTML`` widget: standard ipywidgets
only, so JupyterLab, Notebook 7, VS Code and Binder draw it; it changes once a second at
most, and not at all while idle), the flow's picture with each stage's mean and p99 time
and the slowest marked, error rows that open to their traceback (an ``Accordion``: an
opened row stays open across refreshes), the traffic log and the newest outputs, all
times in local time.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from .logs import LogLine, log_buffer
from .runtime import current
from .served import Served, registry

__all__ = ["Dashboard", "chart_svg", "dashboard"]

#: Error rows a card shows (newest first); ``Served.errors`` has up to 100.
ERROR_ROWS = 5

logger = logging.getLogger(__name__)

_COLORS = {
    "created": "#888",
    "starting": "#e09a2b",
    "running": "#2e9e49",
    "stopping": "#e09a2b",
    "stopped": "#888",
    "failed": "#d2433b",
}
_CSS = (
    "<style>.svckit-dash table{border-collapse:collapse;font-size:12px;margin:2px 0}"
    ".svckit-dash td,.svckit-dash th{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left}"
    ".svckit-dash th{color:#555;font-weight:600}.svckit-dash .err td{color:#b02a22}"
    ".svckit-badge{color:#fff;border-radius:9px;padding:1px 9px;font-size:12px;font-weight:600}"
    ".svckit-num{font-variant-numeric:tabular-nums}"
    # the widget's HTML has the 28 px line height of an inline control: a log line needs less
    ".svckit-log{line-height:1.35}.svckit-log table{border-collapse:collapse;font-size:11px;margin:2px 0}"
    ".svckit-log td{padding:1px 8px;border-bottom:1px solid #f0f0f0;white-space:nowrap}"
    ".svckit-log td.msg{font-family:monospace;max-width:720px;overflow:hidden;text-overflow:ellipsis}"
    ".svckit-log .warn td{color:#b02a22}"
    ".svckit-error-detail{line-height:1.35;font-size:12px}"
    ".svckit-error-detail pre{font-size:11px;line-height:1.3;background:#fafafa;border:1px solid #eee;"
    "padding:4px 6px;max-height:320px;overflow:auto;white-space:pre-wrap;margin:3px 0}"
    ".svckit-charts{line-height:1}</style>"
)


def _fmt_time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


def _table(header: list[str], rows: list[list[str]], row_class: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    cls = f' class="{row_class}"' if row_class else ""
    body = "".join(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Card:
    """The widgets of one served thing inside a dashboard."""

    def __init__(self, served: Served, rows: int, chart_seconds: int = 120) -> None:
        import ipywidgets as w

        self.served = served
        self.rows = rows
        self.chart_seconds = chart_seconds
        self.header = w.HTML()
        self.stats = w.HTML()
        self.chart = w.HTML()
        self.chart.add_class("svckit-charts")
        self._chart_at = -1
        self._chart_value = ""
        self.picture = w.HTML()
        self.errors = _ErrorRows()
        self.progress = w.HTML()  # stages that report running work (sk.program's calls)
        self.traffic = w.HTML()
        self.outputs = w.HTML()
        self.buttons = {}
        for label, tip in (("stop", "srv.stop()"), ("start", "srv.start()"), ("restart", "srv.restart()")):
            button = w.Button(description=label, tooltip=tip, layout=w.Layout(width="80px"))
            button.on_click(self._act)
            self.buttons[label] = button
        self.box = w.VBox(
            [
                w.HBox([self.header, *self.buttons.values()]),
                self.stats,
                self.chart,
                self.picture,
                self.progress,
                self.errors.box,
                w.HBox(
                    [
                        w.VBox([w.HTML("<b>traffic</b>"), self.traffic], layout=w.Layout(margin="0 24px 0 0")),
                        w.VBox([w.HTML("<b>outputs</b>"), self.outputs]),
                    ]
                ),
            ],
            layout=w.Layout(border="1px solid #ddd", padding="4px 8px", margin="4px 0"),
        )
        self.box.add_class("svckit-dash")

    def close(self) -> None:
        for widget in (
            self.header,
            self.stats,
            self.chart,
            self.picture,
            self.progress,
            self.traffic,
            self.outputs,
            *self.buttons.values(),
        ):
            widget.close()
        self.errors.close()
        stack = list(self.box.children)
        while stack:
            child = stack.pop()
            stack.extend(getattr(child, "children", ()))
            child.close()
        self.box.close()

    def _act(self, button: Any) -> None:
        action = button.description
        served = self.served
        try:
            getattr(served, action)()
        except Exception as exc:  # shown in the dashboard's log, never raised into a cell
            logger.warning("%s of %r failed: %s", action, served.name, exc, extra={"svckit_service": served.name})
        _refresher.poke()

    def render(self) -> dict[str, Any]:
        from .display import html as picture

        s = self.served
        m = s.metrics
        counts = m.counters()  # one snapshot: what status() says, for every number on the card
        state = s.state.value
        links = " ".join(f'<a href="{html.escape(u)}" target="_blank">{html.escape(u)}</a>' for u in _links(s) if u)
        header = (
            f'{_CSS}<span class="svckit-badge" style="background:{_COLORS.get(state, "#888")}">{state}</span> '
            f"<b>{html.escape(s.name)}</b> <small>{links}</small>"
        )
        last = counts["last_error"]
        last_text = html.escape(f"{last['type']}: {last['message']}") if last else "-"
        stats = _table(
            ["loop iterations", "in", "out", "rate /s", "errors", "last error"],
            [
                [
                    f'<span class="svckit-num svckit-iterations">{counts["iterations"]}</span>',
                    f'<span class="svckit-num svckit-in">{counts["received"]}</span>',
                    f'<span class="svckit-num svckit-out">{counts["replied"]}</span>',
                    f'<span class="svckit-num">{counts["rate"]:.1f}</span>',
                    f'<span class="svckit-num svckit-errors">{counts["errors"]}</span>',
                    last_text,
                ]
            ],
        )
        traffic_rows = []
        for t, endpoint, direction, action, size, latency, status, _ in list(m.traffic.copy())[-self.rows :][::-1]:
            traffic_rows.append(
                [
                    _fmt_time(t),
                    endpoint,
                    "→ in" if direction == "in" else "← out",
                    html.escape(str(action)),
                    f"{size} B",
                    "" if latency is None else f"{latency:.2f} ms",
                    "" if status is None else str(status),
                ]
            )
        traffic = _table(["time", "endpoint", "dir", "action", "size", "latency", "status"], traffic_rows)
        return {
            "header": header,
            "stats": stats,
            "chart": self._chart(m),
            "picture": picture(s.bound if s.bound is not None else s.node, counts=True, timing=True),
            "progress": _progress_html(s),
            "errors": (list(m.errors_log.copy())[-ERROR_ROWS:][::-1], counts["errors"]),
            "traffic": traffic,
            "outputs": _outputs_html(m, self.rows),
        }

    def _chart(self, m: Any) -> str:
        """The charts, drawn again once a second at most: they show whole seconds only."""
        second = int(time.time())
        if self._chart_at != second:
            self._chart_at = second
            self._chart_value = chart_svg(m.recent(self.chart_seconds))
        return self._chart_value

    def apply(self, values: dict[str, Any]) -> int:
        """Set the widgets whose text changed; return how many were sent."""
        sent = 0
        for key, value in values.items():
            if key == "errors":
                sent += self.errors.show(*value)
                continue
            widget = getattr(self, key)
            if widget.value != value:
                widget.value = value
                sent += 1
        state = self.served.state.value
        running = state in ("running", "failed")
        moving = state in ("starting", "stopping")
        for label, button in self.buttons.items():
            disabled = {"start": running, "stop": not running, "restart": moving}[label] or moving
            if button.disabled != disabled:
                button.disabled = disabled
                sent += 1
        return sent


def _outputs_html(m: Any, rows: int) -> str:
    """The newest outputs, newest last, with the local time each came out (one snapshot)."""
    import pandas as pd

    kept = list(m.outputs.copy())[-rows:]
    if not kept:
        return "-"
    frame = pd.DataFrame.from_records([message for _, _, message in kept])
    frame.insert(0, "_time" if "time" in frame.columns else "time", [_fmt_time(t) for t, _, _ in kept])
    return str(frame.to_html(max_rows=rows, max_cols=12, border=0, index=False))


class _ErrorRows:
    """The newest errors as accordion rows: a title line each (local time, stage, type and
    message), opening to the request id, the start of the message that caused it and the
    traceback. The row a person opened stays open while newer errors push it down."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.details = [w.HTML() for _ in range(ERROR_ROWS)]
        self.accordion = w.Accordion(children=[], selected_index=None)
        self.accordion.add_class("svckit-error-rows")
        self.title = w.HTML()
        self.box = w.VBox([self.title, self.accordion], layout=w.Layout(display="none"))
        self.keys: list[tuple[Any, ...]] = []  # the error shown in each row
        self.opened: tuple[Any, ...] | None = None
        self._showing = False
        self.accordion.observe(self._selected, names="selected_index")

    def _selected(self, change: dict[str, Any]) -> None:
        if self._showing:
            return  # moved by show(), not by a person
        index = change["new"]
        self.opened = self.keys[index] if index is not None and index < len(self.keys) else None

    def show(self, entries: list[dict[str, Any]], total: int) -> int:
        """Show ``entries`` (newest first); return how many widget values were sent."""
        keys = [(e["time"], e.get("request_id"), e["type"]) for e in entries]
        if keys == self.keys:
            return 0
        sent = 0
        self._showing = True
        try:
            titles = []
            for i, entry in enumerate(entries):
                titles.append(
                    f"{_fmt_time(entry['time'])}  {entry.get('service') or ''}  {entry['type']}: "
                    + _cut(entry["message"], 110)
                )
                value = _error_detail(entry)
                if self.details[i].value != value:
                    self.details[i].value = value
                    sent += 1
            children = tuple(self.details[: len(entries)])
            if self.accordion.children != children:
                self.accordion.children = children
                sent += 1
            self.accordion.titles = tuple(titles)
            opened = keys.index(self.opened) if self.opened in keys else None
            if self.accordion.selected_index != opened:
                self.accordion.selected_index = opened
            if self.opened not in keys:
                self.opened = None
            title = (
                f"{_CSS}<b>errors</b> <small>(the newest {len(entries)} of {total}: "
                "open a row for its traceback)</small>"
            )
            if self.title.value != title:
                self.title.value = title
            display = "" if entries else "none"
            if self.box.layout.display != display:
                self.box.layout.display = display
            self.keys = keys
            sent += 2
        finally:
            self._showing = False
        return sent

    def close(self) -> None:
        for widget in (*self.details, self.accordion, self.title, self.box):
            widget.close()


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _error_detail(entry: dict[str, Any]) -> str:
    from .ids import format_request_id

    rid = format_request_id(entry.get("request_id"))
    facts = [
        f"<b>{html.escape(entry['type'])}</b>",
        f"status {entry['status']}" if entry.get("status") is not None else "",
        f"in stage <code>{html.escape(str(entry.get('service') or ''))}</code>",
        f"request <code>{html.escape(str(rid))}</code>" if rid else "",
    ]
    out = [f'<div class="svckit-error-detail svckit-error-row">{" · ".join(f for f in facts if f)}']
    out.append(f"<div>{html.escape(entry['message'])}</div>")
    if entry.get("excerpt"):
        out.append(f"<div><small>the message that caused it:</small><pre>{html.escape(entry['excerpt'])}</pre></div>")
    if entry.get("traceback"):
        out.append(f'<pre class="svckit-traceback">{html.escape(entry["traceback"])}</pre>')
    else:
        out.append("<div><small>no traceback: the request was refused before any stage ran it wrong.</small></div>")
    return "".join(out) + "</div>"


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * 10**exp >= value:
            return float(step * 10**exp)
    return float(10 ** (exp + 1))


def _number(v: float) -> str:
    return f"{v:.0f}" if v >= 100 or v == int(v) else f"{v:.1f}" if v >= 10 else f"{v:.2g}"


def _paths(values: Sequence[float | None], x0: float, dx: float, y0: float, scale: float) -> str:
    """An SVG path through ``values`` (None breaks the line)."""
    parts: list[str] = []
    pen_down = False
    for i, v in enumerate(values):
        if v is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x0 + i * dx:.1f},{y0 - v * scale:.1f}")
        pen_down = True
    return "".join(parts)


def chart_svg(
    series: list[tuple[int, int, int, float | None, float | None]], width: int = 330, height: int = 96
) -> str:
    """Two small charts side by side: replies and errors per second, and latency p50/p99
    (ms), of ``series`` (``Metrics.recent``: one tuple per second, oldest first)."""
    n = len(series)
    replies = [float(r) for _, r, _, _, _ in series]
    errors = [float(e) for _, _, e, _, _ in series]
    p50 = [p for *_, p, _ in series]
    p99 = [p for *_, p in series]
    busy = [r for r in replies if r]
    minutes = n / 60
    span = f"-{minutes:g} min" if minutes >= 1 else f"-{n} s"
    left, top, bottom = 34.0, 18.0, 14.0
    plot_w, plot_h = width - left - 6, height - top - bottom
    dx = plot_w / max(n - 1, 1)
    y0 = top + plot_h
    last = next(((r, e, a, b) for _, r, e, a, b in reversed(series) if r), None)

    def frame(kind: str, title: str, peak: float, unit: str, lines: str) -> str:
        grid = "".join(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y0 - plot_h * f:.1f}" y2="{y0 - plot_h * f:.1f}" '
            'stroke="#eee"/>'
            for f in (0.5, 1.0)
        )
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="svckit-chart svckit-chart-{kind}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10.5">'
            f'<text x="{left}" y="11" font-weight="600" fill="#333">{title}</text>{grid}'
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y0}" y2="{y0}" stroke="#bbb"/>'
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="#777">{_number(peak)}</text>'
            f'<text x="{left - 4}" y="{y0}" text-anchor="end" fill="#777">0</text>'
            f'<text x="{left - 4}" y="{top + plot_h / 2 + 4}" text-anchor="end" fill="#999">{unit}</text>'
            f'<text x="{left}" y="{height - 2}" fill="#999">{span}</text>'
            f'<text x="{left + plot_w}" y="{height - 2}" text-anchor="end" fill="#999">now</text>'
            f"{lines}</svg>"
        )

    if not busy:
        quiet = f"no requests in the last {span.lstrip('-')}"
        empty = (
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2 + 4}" text-anchor="middle" fill="#999">{quiet}</text>'
        )
        return (
            '<div class="svckit-chart-box" data-total="0">'
            + frame("rate", "replies /s", 1, "/s", empty)
            + frame("latency", "latency", 1, "ms", "")
            + "</div>"
        )
    peak_rate = _nice(max(max(replies), max(errors)))
    rate_scale = plot_h / peak_rate
    rate_path = _paths(replies, left, dx, y0, rate_scale)
    area = f"{rate_path}L{left + (n - 1) * dx:.1f},{y0}L{left},{y0}Z" if rate_path.startswith("M") else ""
    rate_lines = (
        f'<path d="{area}" fill="#dbe7f8" stroke="none"/>'
        f'<path class="svckit-rate-line" d="{rate_path}" fill="none" stroke="#4a78c2" stroke-width="1.4"/>'
    )
    if any(errors):
        rate_lines += (
            f'<path class="svckit-error-line" d="{_paths(errors, left, dx, y0, rate_scale)}" fill="none" '
            'stroke="#d2433b" stroke-width="1.4"/>'
        )
    peak_ms = _nice(max((p for p in p99 if p is not None), default=1.0))
    ms_scale = plot_h / peak_ms
    latency_lines = (
        f'<path class="svckit-p99-line" d="{_paths(p99, left, dx, y0, ms_scale)}" fill="none" stroke="#e09a2b" '
        'stroke-width="1.4"/>'
        f'<path class="svckit-p50-line" d="{_paths(p50, left, dx, y0, ms_scale)}" fill="none" stroke="#4a78c2" '
        'stroke-width="1.4"/>'
    )
    assert last is not None
    rate_title = f"replies /s: {_number(last[0])}" + (
        f' · <tspan fill="#d2433b">errors /s: {_number(last[1])}</tspan>' if any(errors) else ""
    )
    p50_now = f"{last[2]:.2g}" if last[2] is not None else "-"
    p99_now = f"{last[3]:.2g}" if last[3] is not None else "-"
    latency_title = (
        f'latency <tspan fill="#4a78c2">p50 {p50_now} ms</tspan> · <tspan fill="#c07a10">p99 {p99_now} ms</tspan>'
    )
    total = int(sum(replies))
    return (
        f'<div class="svckit-chart-box" data-total="{total}" data-last="{series[-1][0]}">'
        + frame("rate", rate_title, peak_rate, "/s", rate_lines)
        + frame("latency", latency_title, peak_ms, "ms", latency_lines)
        + "</div>"
    )


def _progress_html(served: Served) -> str:
    """The calls running in stages that report them (``status_extra()``, as ``sk.program``
    has): a row per call with its percent and last line, and what each keeps on disk."""
    bound = served.bound
    if bound is None:
        return ""
    rows, notes = [], []
    for leaf in bound.leaves():
        extra = getattr(leaf, "status_extra", None)
        if not callable(extra):
            continue
        info = extra()
        for call in info.get("running", []):
            percent = call.get("percent")
            bar = f'<progress max="100" value="{percent:.0f}"></progress> {percent:.0f}%' if percent is not None else ""
            line = html.escape(str(call.get("line", ""))[:160])
            rows.append(
                [html.escape(leaf.name), str(call.get("call", "")), f"{call.get('seconds', 0):.1f} s", bar, line]
            )
        kept = info.get("kept_bytes")
        notes.append(
            f"{html.escape(leaf.name)}: {len(info.get('running', []))} running"
            + (f", {info['waiting']} waiting" if info.get("waiting") else "")
            + (f", {info.get('kept_dirs', 0)} work directories kept ({_bytes(kept)})" if kept is not None else "")
        )
    if not notes:
        return ""
    table = _table(["stage", "call", "running for", "progress", "last line"], rows) if rows else ""
    return f'<div class="svckit-progress"><b>running</b> <small>{"; ".join(notes)}</small>{table}</div>'


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


_WARN_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL", "stderr"})


def _log_html(lines: list[LogLine]) -> str:
    """The log section: one compact row per line, newest last; a long message is cut (its full text in the tooltip)."""
    if not lines:
        return f'{_CSS}<div class="svckit-log"><b>log</b> <small>-</small></div>'
    rows = []
    for line in lines:
        text = line.message.strip()
        first, _, more = text.partition("\n")
        if more:  # a traceback: its first and last lines tell the story
            last = more.rstrip().rsplit("\n", 1)[-1]
            first = f"{first} … {last}"
        if len(first) > 240:
            first = first[:239] + "…"
        warn = " warn" if line.level in _WARN_LEVELS else ""
        rows.append(
            f'<tr class="svckit-log-line{warn}" title="{html.escape(line.source)}">'
            f"<td>{_fmt_time(line.time)}</td><td>{html.escape(line.service or '')}</td>"
            f"<td>{html.escape(line.level.lower())}</td>"
            f'<td class="msg" title="{html.escape(text[:2000])}">{html.escape(first)}</td></tr>'
        )
    return f'{_CSS}<div class="svckit-log"><b>log</b><table><tbody>{"".join(rows)}</tbody></table></div>'


def _runtime_html() -> str:
    """One line on the runtime all served things share: its worker pool and its loop stalls."""
    rt = current()
    if rt is None:
        return ""
    pool = rt.pool.stats()
    stalls = rt.watchdog.stats()
    full = pool["busy"] >= pool["max"]
    text = (
        f'worker pool: <span class="svckit-num svckit-pool-busy">{pool["busy"]}</span> of {pool["threads"]} '
        f'threads busy (at most {pool["max"]}), <span class="svckit-num">{pool["queued"]}</span> calls queued, '
        f'<span class="svckit-num">{pool["dropped"]}</span> dropped unrun (caller gone)'
        + (" <b>full: blocking stages wait</b>" if full else "")
        + f' · loop stalls: <span class="svckit-num svckit-stalls">{stalls["count"]}</span>'
    )
    last = stalls["last"]
    if last is not None:
        held = last["stage"] + (f" of {last['service']}" if last["service"] else "")
        text += html.escape(f" (last: {held}, {last['seconds']:.1f} s, at {last['where']})")
    warn = ' style="color:#b02a22"' if full or last is not None else ""
    return f'{_CSS}<div class="svckit-runtime"{warn}><small>{text}</small></div>'


def _links(served: Served) -> list[str | None]:
    proxied = getattr(served, "proxy_url", None)
    return [served.url, proxied, served.zmq_url]


def _make_box_class() -> type:
    import ipywidgets as w

    class DashboardBox(w.VBox):  # type: ignore[misc]
        """The VBox a dashboard shows; its text repr is short and holds no live numbers."""

        _svckit_label = ""

        def __repr__(self) -> str:
            return f"Dashboard({self._svckit_label})"

    return DashboardBox


_box_class: type | None = None


class Dashboard:
    """A live view of served things: state, counters, errors, traffic, outputs and a picture.

    Parameters
    ----------
    served
        The served things to show; ``None`` shows every one served by the runtime,
        following new ones as they are served.
    interval
        Seconds between refreshes (0.25 at least: at most 4 a second).
    rows
        How many traffic and output rows to show.
    log_lines
        How many of the newest log lines to show: what svckit logged about these served
        things, and what their stages printed.
    chart_seconds
        How many seconds of history the rate and latency charts show (at most 300).

    Examples
    --------
    >>> import svckit as sk
    >>> srv = sk.serve(sk.service(lambda x: x, name="echo"), http=0)
    >>> dash = srv.dashboard()
    >>> dash
    Dashboard(echo)
    >>> dash.close(); srv.stop()
    """

    def __init__(
        self,
        served: list[Served] | None = None,
        *,
        interval: float = 0.25,
        rows: int = 6,
        log_lines: int = 8,
        chart_seconds: int = 120,
    ) -> None:
        import ipywidgets as w

        global _box_class
        if interval < 0.25:
            raise ValueError(f"interval={interval}: a dashboard refreshes at most 4 times a second (0.25 s).")
        if _box_class is None:
            _box_class = _make_box_class()
        if not 10 <= chart_seconds <= 300:
            raise ValueError(f"chart_seconds={chart_seconds}: give 10 to 300 seconds of history (300 are kept).")
        self.follow = served is None
        self.chart_seconds = chart_seconds
        self.interval = interval
        self.rows = rows
        self.log_lines = log_lines
        self.cards: list[_Card] = []
        self.log = w.HTML(layout=w.Layout(border="1px solid #ddd", padding="2px 8px", margin="4px 0"))
        self.runtime_info = w.HTML()  # the worker pool and loop stalls, shared by every served thing
        self.close_button = w.Button(
            description="close",
            tooltip="dash.close(): stop updating and remove the dashboard",
            icon="times",
            layout=w.Layout(width="80px"),
        )
        self.close_button.add_class("svckit-close")
        self.close_button.on_click(lambda _: self.close())
        self.footer = w.HBox([self.close_button, self.runtime_info])
        self._logs = log_buffer()
        self._log_seen: tuple[int, tuple[str, ...] | None] | None = None
        # _view_count=0 asks the frontend to report its views: once shown, a dashboard
        # whose views are all gone (output cleared, cell re-run, tab closed) stops updating
        self.box = _box_class(_view_count=0, _dom_classes=["svckit-dashboard"])
        self.closed = False
        self.hidden = False  # it was shown, and no view of it is left
        self._shown = False
        self.updates = 0  # widget values sent, for tests and curiosity
        self._lock = threading.Lock()
        self._last = 0.0
        self._set_cards(list(served) if served is not None else _all_served())
        me = weakref.ref(self)  # the widget must not keep its dashboard alive

        def views_changed(change: dict[str, Any]) -> None:
            dash = me()
            if dash is not None:
                dash._views_changed(change["new"])

        self.box.observe(views_changed, names="_view_count")
        self.refresh()
        _refresher.add(self)

    def _set_cards(self, served: list[Served]) -> None:
        for card in self.cards:
            card.close()
        self.cards = [_Card(s, self.rows, self.chart_seconds) for s in served]
        self.box._svckit_label = ", ".join(s.name for s in served) or "nothing served"
        self.box.children = [*([c.box for c in self.cards] or [_empty()]), self.footer, self.log]

    def _views_changed(self, count: int | None) -> None:
        """The frontend reported how many views of the dashboard it shows."""
        if count is None:
            return
        if count > 0:
            self._shown = True
            if self.hidden:  # shown again: refresh again
                self.hidden = False
                _refresher.add(self)
        elif self._shown:
            self.hidden = True
        _refresher.poke()

    def refresh(self) -> int:
        """Bring the widgets up to date now; return how many values were sent."""
        with self._lock:
            if self.closed:
                return 0
            if self.follow:
                now_served = _all_served()
                if [c.served for c in self.cards] != now_served:
                    self._set_cards(now_served)
            sent = 0
            for card in self.cards:
                sent += card.apply(card.render())
            sent += self._refresh_log()
            info = _runtime_html()
            if self.runtime_info.value != info:
                self.runtime_info.value = info
                sent += 1
            self.updates += sent
            self._last = time.monotonic()
            return sent

    def _refresh_log(self) -> int:
        logs = self._logs
        logs.settle()
        services = None if self.follow else tuple(c.served.name for c in self.cards)
        seen = (logs.version, services)
        if seen == self._log_seen:
            return 0
        self._log_seen = seen
        value = _log_html(logs.tail(self.log_lines, services))
        if self.log.value == value:
            return 0
        self.log.value = value
        return 1

    @property
    def alive(self) -> bool:
        """False once closed (``close()``, or its widget closed from the frontend), and
        while hidden: it was shown and the frontend has no view of it left."""
        return not self.closed and not self.hidden and getattr(self.box, "comm", None) is not None

    def close(self) -> None:
        """Close the widgets and stop refreshing."""
        with self._lock:
            self.closed = True
            for card in self.cards:
                card.close()
            self.log.close()
            self.runtime_info.close()
            self.close_button.close()
            self.footer.close()
            self.box.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return repr(self.box)


def _empty() -> Any:
    import ipywidgets as w

    return w.HTML("<i>nothing served yet</i>")


def _all_served() -> list[Served]:
    rt = current()
    return list(registry(rt).values()) if rt is not None else []


class _Refresher:
    """One daemon thread that refreshes every live dashboard, throttled."""

    def __init__(self) -> None:
        self._dashboards: weakref.WeakSet[Dashboard] = weakref.WeakSet()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, dash: Dashboard) -> None:
        with self._lock:
            self._dashboards.add(dash)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._main, name="svckit-dashboard", daemon=True)
                self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _main(self) -> None:
        while True:
            with self._lock:
                dashboards = list(self._dashboards)
                if not dashboards:
                    self._thread = None
                    return
            due = math.inf
            for dash in dashboards:
                if not dash.alive:
                    with self._lock:
                        self._dashboards.discard(dash)
                    continue
                # a refresh waits ``interval`` from the end of the one before (or of a direct
                # refresh()), so no window of one second ever holds more than 1/interval of them
                if time.monotonic() >= dash._last + dash.interval:
                    try:
                        dash.refresh()
                    except Exception:  # never let one broken dashboard stop the others
                        dash._last = time.monotonic()
                        logger.exception("dashboard refresh failed")
                due = min(due, dash._last + dash.interval)
            del dashboards
            if due < math.inf:
                self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()


_refresher = _Refresher()


def dashboard(served: Served | list[Served] | None = None, **kwargs: Any) -> Dashboard:
    """A live dashboard of ``served`` (one or a list), or of everything the runtime serves."""
    if served is None:
        return Dashboard(None, **kwargs)
    if not isinstance(served, list):
        served = [served]
    return Dashboard(served, **kwargs)


Served._dashboard = dashboard
