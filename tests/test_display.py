"""Flow pictures: structure, names, live counts, deterministic text."""

from __future__ import annotations

import re

import svckit as sk


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split(), "kind": "a" if text.startswith("a") else "b"}


def _names(svg: str) -> list[str]:
    return re.findall(r'class="svckit-stage" data-name="([^"]+)"', svg)


def test_picture_draws_every_stage_in_order():
    flow = parse >> sk.service(lambda words: len(words), name="count")
    html = flow._repr_html_()
    assert html.startswith('<div class="svckit-flow-picture"><svg')
    assert _names(html) == ["parse", "count"]
    assert "msg" not in html  # no counts before anything ran


def test_picture_draws_branches_and_parallels():
    a = sk.service(lambda words: 1, name="on_a")
    b = sk.service(lambda words: 2, name="on_b")
    other = sk.service(lambda: None, name="other")
    flow = (
        parse
        >> sk.branch("kind", {"a": a, "b": b}, default=other)
        >> sk.parallel(sk.service(lambda words: 0, name="left"), sk.service(lambda words: 0, name="right"))
    )
    from svckit.display import svg as draw

    svg = draw(flow)
    assert _names(svg) == ["parse", "on_a", "on_b", "other", "left", "right"]
    assert ">kind<" in svg and "&#x27;a&#x27;" in svg and ">default<" in svg


def test_picture_counts_messages_and_failures_per_stage():
    def fail_on_b(kind: str) -> None:
        if kind == "b":
            raise ValueError("b is bad")

    flow = parse >> sk.service(fail_on_b, name="check")
    flow(text="a x")
    flow(text="a y")
    try:
        flow(text="b z")
    except ValueError:
        pass
    from svckit.display import svg

    picture = svg(flow)
    assert ">3 msg<" in picture  # parse saw three
    assert "3 msg · 1 err" in picture  # check saw three, one failed
    assert 'stroke="#c0392b"' in picture  # the failing stage is outlined red


def test_text_repr_stays_short_and_deterministic():
    flow = parse >> sk.parallel(sk.service(lambda words: 0, name="x"), sk.service(lambda words: 0, name="y"))
    assert repr(flow) == "<Flow parse >> parallel(x, y)>"
    flow(text="a b")
    assert repr(flow) == "<Flow parse >> parallel(x, y)>"
