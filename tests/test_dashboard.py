"""Dashboards driven with no frontend: widget state, error rows, stop buttons, throttling."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import comm
import pytest

import svckit as sk
from svckit.testing import wait_for


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
        assert card.errors.value.count("svckit-error-row") == 2
        assert "ValueError" in card.errors.value and "boom is not a sentence" in card.errors.value
        assert "BadMessage" in card.stats.value  # the last error
        assert '<span class="svckit-num svckit-errors">2</span>' in card.stats.value
        client.close()
    finally:
        dash.close()


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


def test_background_refresh_is_throttled(comms, wordcount):
    dash = wordcount.dashboard()
    try:
        client = sk.Client(wordcount.url)
        start = time.monotonic()
        first = len(comms)
        refreshes = []
        last_updates = dash.updates
        while time.monotonic() - start < 2.0:
            client.wordcount(text="a b c")
            if dash.updates != last_updates:
                refreshes.append(time.monotonic())
                last_updates = dash.updates
        elapsed = time.monotonic() - start
        # updates keep coming under load, but never more than 4 refreshes a second
        assert len(refreshes) >= 4
        assert len(refreshes) <= 4 * elapsed + 2
        per_refresh = 12  # widgets a card can change in one refresh
        assert len(comms) - first <= per_refresh * (4 * elapsed + 2)
        client.close()
    finally:
        dash.close()


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
