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


def _count_of(svg: str, name: str) -> int:
    found = re.search(rf'data-name="{name}">.*?>(\d+) msg<', svg)
    assert found is not None, f"no count on {name!r}"
    return int(found[1])


def test_picture_of_a_served_flow_counts_what_its_source_sent(sk_serve):
    from svckit.display import svg
    from svckit.testing import collect

    numbers = iter(range(1_000_000))

    def tick() -> dict:
        return {"n": next(numbers)}

    sink = collect()
    flow = sk.every(0.01, tick) >> sk.service(lambda n: n * 2, name="double") >> sink
    source = _names(svg(flow))[0]
    srv = sk_serve(flow, name="numbers", http=None)
    sink.wait(3)
    srv.stop()
    picture = svg(srv.bound)  # the served copy counts; the flow composed in the cell is left as it was
    assert "msg" not in svg(flow)
    sent = len(sink.items)
    # the source's box counts what it sent (not "0 msg"); a message cut short by stop() may lack a row
    assert _count_of(picture, source) >= _count_of(picture, "double") >= sent >= 3


def test_text_repr_stays_short_and_deterministic():
    flow = parse >> sk.parallel(sk.service(lambda words: 0, name="x"), sk.service(lambda words: 0, name="y"))
    assert repr(flow) == "<Flow parse >> parallel(x, y)>"
    flow(text="a b")
    assert repr(flow) == "<Flow parse >> parallel(x, y)>"
