"""Dashboards driven with no frontend: widget state, error rows, stop buttons, throttling, logs."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, ClassVar

import comm
import pytest

import svckit as sk
from svckit import logs
from svckit.dashboard import Dashboard, _refresher
from svckit.testing import holds, wait_for


class RecordingComm(comm.DummyComm):
    """A comm that keeps every message a widget sends, with the time it was sent."""

    log: ClassVar[list[tuple[float, str, Any]]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any):
        RecordingComm.log.append((time.monotonic(), msg_type, data))


@pytest.fixture
def comms(monkeypatch):
    RecordingComm.log = []
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))
    yield RecordingComm.log


@pytest.fixture
def wordcount(sk_serve):
    @sk.service
    def parse(text: str) -> dict:
        if text == "boom":
            raise ValueError("boom is not a sentence")
        return {"words": text.split()}

    @sk.service
    def count(words: list[str]) -> dict:
        return {"n": len(words)}

    return sk_serve(parse >> count, name="wordcount")


def test_dashboard_shows_counts_after_messages(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        client = sk.Client(wordcount.url)
        for i in range(7):
            client.wordcount(text=f"a b {i}")
        dash.refresh()
        card = dash.cards[0]
        assert '<span class="svckit-num svckit-in">7</span>' in card.stats.value
        assert '<span class="svckit-num svckit-out">7</span>' in card.stats.value
        assert '<span class="svckit-num svckit-errors">0</span>' in card.stats.value
        assert "running" in card.header.value and "wordcount" in card.header.value
        assert card.traffic.value.count("wordcount") == 6  # the newest rows of in and out
        assert "a b 6" in card.outputs.value  # newest output row
        assert ">7 msg<" in card.picture.value
        status = wordcount.status()  # every count on the card is status()'s
        assert f'svckit-in">{status["received"]}<' in card.stats.value
        assert f'svckit-out">{status["replied"]}<' in card.stats.value
        client.close()
    finally:
        dash.close()


def test_dashboard_shows_an_error_row(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        client = sk.Client(wordcount.url)
        with pytest.raises(sk.RemoteError):
            client.wordcount(text="boom")
        with pytest.raises(sk.BadMessage):
            client.wordcount(txt="x")
        dash.refresh()
        card = dash.cards[0]
        rows = card.errors.accordion
        assert len(rows.children) == 2
        assert "BadMessage" in rows.titles[0] and "ValueError: boom is not a sentence" in rows.titles[1]
        assert "parse" in rows.titles[1]  # the stage that raised
        assert "BadMessage" in card.stats.value  # the last error
        assert '<span class="svckit-num svckit-errors">2</span>' in card.stats.value
        assert "newest 2 of 2" in card.errors.title.value
        client.close()
    finally:
        dash.close()


def test_an_error_row_opens_to_its_traceback_and_stays_open(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        client = sk.Client(wordcount.url)
        with pytest.raises(sk.RemoteError) as raised:
            client.wordcount(text="boom")
        assert "traceback" not in raised.value.to_dict()  # never on the wire without debug=True
        dash.refresh()
        errors = dash.cards[0].errors
        detail = errors.details[0].value
        assert 'class="svckit-traceback"' in detail and "Traceback (most recent call last)" in detail
        assert "raise ValueError(&quot;boom is not a sentence&quot;)" in detail  # the user's line
        assert "svckit/request.py" not in detail  # svckit's own frames are left out
        assert "&quot;text&quot;: &quot;boom&quot;" in detail  # the message that caused it
        assert wordcount.errors["request_id"].iloc[-1] in detail
        frontend_says(errors.accordion, selected_index=0)  # a person opens the row
        for i in range(3):  # newer errors push it down: it stays open
            with pytest.raises(sk.BadMessage):
                client.wordcount(txt=str(i))
            dash.refresh()
            assert errors.accordion.selected_index == i + 1
            assert "ValueError" in errors.accordion.titles[i + 1]
        assert "no traceback" in errors.details[0].value  # refused input has none
        client.close()
    finally:
        dash.close()


def test_the_chart_shows_replies_and_latency_per_second(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        card = dash.cards[0]
        assert "no requests in the last 2 min" in card.chart.value
        client = sk.Client(wordcount.url)
        start = time.time()
        while time.time() < int(start) + 2.05:  # two whole seconds of traffic
            client.wordcount(text="a b")
        with pytest.raises(sk.RemoteError):
            client.wordcount(text="boom")
        wait_for(lambda: time.time() >= int(start) + 3.0)
        dash.refresh()
        chart = card.chart.value
        assert chart.count("<svg") == 2 and "svckit-rate-line" in chart and "svckit-p99-line" in chart
        assert "svckit-error-line" in chart and "errors /s" in chart
        status = wordcount.settle().status()
        # the chart's replies add up to status()'s: every reply is in one second of the chart
        total = int(chart.split('data-total="')[1].split('"')[0])
        assert total == status["replied"]
        client.close()
    finally:
        dash.close()


def test_the_picture_in_the_dashboard_times_each_stage_and_marks_the_slowest(comms, sk_serve):
    @sk.service
    def quick(x: int) -> dict:
        return {"y": x}

    @sk.service
    def slow(y: int) -> dict:
        time.sleep(0.02)
        return {"z": y}

    srv = sk_serve(quick >> slow, name="timed")
    dash = srv.dashboard()
    try:
        client = sk.Client(srv.url)
        for i in range(5):
            client.timed(x=i)
        client.close()
        dash.refresh()
        picture = dash.cards[0].picture.value
        assert picture.count("svckit-stage-time") == 2
        assert 'class="svckit-stage svckit-slowest" data-name="slow"' in picture
        assert ">slowest<" in picture
        mean = float(picture.split('data-name="slow"')[1].split("mean ")[1].split(" ms")[0])
        assert 19 <= mean < 200
        assert "svckit-stage-time" not in srv.picture()._repr_html_()  # a plain picture stays stable
        assert "svckit-slowest" in srv.picture(timing=True)._repr_html_()
        assert "svckit-stage-time" not in (quick >> slow)._repr_html_()  # the user's flow is not timed
    finally:
        dash.close()


def test_the_close_button_closes_the_dashboard(comms, wordcount):
    dash = wordcount.dashboard()
    dash.close_button.click()
    assert dash.closed and not dash.alive
    before = len(comms)
    sk.Client(wordcount.url).wordcount(text="a")
    assert dash.refresh() == 0 and len(comms) == before


def test_stop_and_start_buttons_act_like_python_calls(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        card = dash.cards[0]
        assert card.buttons["start"].disabled and not card.buttons["stop"].disabled
        card.buttons["stop"].click()
        assert wordcount.state is sk.State.STOPPED
        dash.refresh()
        assert "stopped" in card.header.value
        assert card.buttons["start"].disabled is False and card.buttons["stop"].disabled
        card.buttons["start"].click()
        assert wordcount.state is sk.State.RUNNING
        assert sk.Client(wordcount.url).wordcount(text="x")["n"] == 1
    finally:
        dash.close()


def test_refresh_sends_nothing_when_nothing_changed(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        wait_for(lambda: time.time() % 1 < 0.5)  # keep the rate window from sliding under us
        dash.refresh()
        before = len(comms)
        assert dash.refresh() == 0
        assert len(comms) == before
    finally:
        dash.close()


def test_background_refresh_is_throttled(comms, wordcount, monkeypatch):
    bursts: list[list[tuple[float, str, Any]]] = []  # the comm messages of each refresh that sent any
    refresh = Dashboard.refresh

    def recording(self: Dashboard) -> int:
        mark = len(comms)
        sent = refresh(self)
        if len(comms) > mark:
            bursts.append(comms[mark:])
        return sent

    monkeypatch.setattr(Dashboard, "refresh", recording)
    dash = wordcount.dashboard()
    try:
        client = sk.Client(wordcount.url)
        start = time.monotonic()
        while time.monotonic() - start < 2.5:
            client.wordcount(text="a b c")
        client.close()
    finally:
        dash.close()
    # updates keep coming under load, and no one-second window holds more than 4 refreshes
    assert len(bursts) >= 6
    assert all(msg_type == "comm_msg" and data["method"] == "update" for b in bursts for _, msg_type, data in b)
    starts = [b[0][0] for b in bursts]
    for t in starts:
        in_window = [s for s in starts if t <= s < t + 1.0]
        assert len(in_window) <= 4, f"{len(in_window)} refreshes within 1 s from {t - starts[0]:.3f} s"


def test_closed_dashboard_stops_updating(comms, wordcount):
    dash = wordcount.dashboard()
    dash.close()
    assert not dash.alive
    before = len(comms)
    client = sk.Client(wordcount.url)
    client.wordcount(text="a")
    assert dash.refresh() == 0
    from svckit.dashboard import _refresher

    wait_for(lambda: dash not in set(_refresher._dashboards), timeout=5)
    assert len(comms) == before
    client.close()


def frontend_says(widget: Any, **state: Any) -> None:
    """Deliver the comm message a frontend sends when ``state`` changed on its side."""
    widget.comm.handle_msg(
        {"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []}
    )


def test_dashboard_stops_updating_once_its_last_view_is_gone(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        updater = _refresher._thread
        assert updater is not None and dash.box._view_count == 0  # the frontend is asked to count its views
        # no frontend (nbclient, nbval): 0 views from the start is no reason to stop
        holds(lambda: dash.alive and updater.is_alive(), 0.6, interval=0.05, what="the dashboard staying live")
        frontend_says(dash.box, _view_count=1)
        frontend_says(dash.box, _view_count=2)
        frontend_says(dash.box, _view_count=1)  # one of two outputs cleared: still shown
        assert dash.alive
        frontend_says(dash.box, _view_count=0)  # the last view went (cell re-run, output cleared, tab closed)
        assert not dash.alive
        updater.join(5)
        assert not updater.is_alive(), "the updater thread kept running for a dashboard nobody sees"
        before = len(comms)
        client = sk.Client(wordcount.url)
        client.wordcount(text="a")
        assert len(comms) == before
        # shown again: it is refreshed again
        frontend_says(dash.box, _view_count=1)
        wait_for(lambda: 'svckit-in">1<' in dash.cards[0].stats.value, timeout=5, what="a refresh after re-display")
        client.close()
    finally:
        dash.close()


@pytest.fixture
def in_kernel(request):
    """As inside a Jupyter kernel: capture() around the streams of capsys or capfd (set up first)."""
    cap = request.getfixturevalue(request.param)
    try:
        yield cap
    finally:
        logs.release()


@pytest.mark.parametrize("in_kernel", ["capsys", "capfd"], indirect=True)
def test_what_stages_print_and_log_shows_in_the_dashboard_log_not_in_the_cell(in_kernel, comms, sk_serve):
    logs.capture()
    shop = logging.getLogger("test.shop")
    shop.propagate = False  # no handler anywhere, as in a kernel: Python's last-resort handler prints it

    @sk.service
    def noisy(text: str) -> dict:  # runs on a svckit worker thread
        print("printed by noisy:", text)
        print("noisy to stderr:", text, file=sys.stderr)
        shop.warning("logged by noisy: %s", text)
        if text == "boom":
            raise ValueError("boom is not a sentence")
        return {"text": text.upper()}

    @sk.service
    async def shout(text: str) -> None:  # runs on the runtime thread
        print("printed on the loop:", text)

    srv = sk_serve(noisy >> shout, name="noisy")
    dash = srv.dashboard()
    try:
        client = sk.Client(srv.url)
        client.noisy(text="hello")
        with pytest.raises(sk.RemoteError):
            client.noisy(text="boom")
        client.close()
        print("printed by the test")
        dash.refresh()
        log = dash.log.value
        for text in (
            "printed by noisy: hello",
            "noisy to stderr: hello",
            "logged by noisy: hello",
            "printed on the loop: HELLO",
            "service &#x27;noisy&#x27; raised ValueError: boom is not a sentence",  # svckit's own record
        ):
            assert text in log
        assert log.count("<td>noisy</td>") >= 5  # each line names its service
        assert log.index("printed by noisy: hello") < log.index("printed by noisy: boom")  # newest last
        out, err = in_kernel.readouterr()
        assert out == "printed by the test\n"
        assert err == ""
    finally:
        dash.close()
        shop.propagate = True


def test_a_failed_button_action_shows_in_the_log(comms, wordcount, monkeypatch):
    def refuse() -> None:
        raise sk.StateError("wordcount cannot restart just now.")

    monkeypatch.setattr(wordcount, "restart", refuse)
    dash = wordcount.dashboard()
    try:
        dash.cards[0].buttons["restart"].click()
        wait_for(lambda: "cannot restart just now" in dash.log.value, timeout=5, what="the failure in the log")
        assert "<td>wordcount</td>" in dash.log.value and "<td>warning</td>" in dash.log.value
    finally:
        dash.close()


def test_dashboard_repr_has_no_live_numbers(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        assert repr(dash) == "Dashboard(wordcount)"
        bundle = dash._repr_mimebundle_()
        assert bundle["text/plain"] == "Dashboard(wordcount)"
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        dash.close()


def test_runtime_dashboard_follows_new_services(comms, sk_serve):
    dash = sk.dashboard()
    try:
        assert repr(dash) == "Dashboard(nothing served)"
        sk_serve(sk.service(lambda x: x, name="echo"))
        dash.refresh()
        assert repr(dash) == "Dashboard(echo)"
        assert len(dash.cards) == 1
    finally:
        dash.close()


def test_dashboard_refuses_refreshing_faster_than_four_a_second(comms, wordcount):
    with pytest.raises(ValueError, match="at most 4 times a second"):
        wordcount.dashboard(interval=0.1)
