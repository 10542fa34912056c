"""Served things: replace in place, stop, start and restart, and the metrics they keep."""

from __future__ import annotations

import pandas as pd
import pytest

import svckit as sk
from svckit.testing import wait_for


@sk.service
def parse(text: str) -> dict:
    return {"words": text.split()}


@sk.service
def count(words: list[str]) -> dict:
    return {"n": len(words)}


class Model(sk.Service):
    version: int = 1

    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.log: list[str] = []

    def setup(self) -> None:
        self.log.append("setup")

    def teardown(self) -> None:
        self.log.append("teardown")

    def process(self, x: int) -> dict:
        return {"version": self.version}


def test_serve_returns_a_running_handle(sk_serve):
    srv = sk_serve(parse >> count, name="wc")
    assert isinstance(srv, sk.Served)
    assert srv.state is sk.State.RUNNING
    assert srv.name == "wc" and srv.actions == ["wc"]
    assert srv.zmq_url is None
    assert repr(srv) == "<Served wc: running>"
    html = srv._repr_html_()
    assert "<b>wc</b>: running" in html and f"<code>{srv.url}</code>" in html
    assert "proxy" not in html  # outside JupyterHub there is no proxied link
    srv.stop()
    assert repr(srv) == "<Served wc: stopped>"
    assert srv.status()["state"] == "stopped"


def test_inside_a_hub_the_served_html_links_through_the_proxy(sk_serve, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    srv = sk_serve(parse >> count, name="wc")
    proxied = f"/user/ada/proxy/{srv.http_port}/"
    assert srv.proxy_url == proxied
    html = srv._repr_html_()
    assert f'<a href="{proxied}" target="_blank">{proxied}</a>' in html
    assert html.index(proxied) < html.index(srv.url)  # the link a browser can open comes first
    assert repr(srv) == "<Served wc: running>"  # the text form stays the same for nbval


def test_default_name_is_the_services(sk_serve):
    assert sk_serve(parse).name == "parse"
    assert sk_serve(parse >> count).name == "parse_count"


def test_replace_in_place_keeps_port_and_handle(sk_serve, client_for):
    old, new = Model(version=1), Model(version=2)
    srv = sk_serve(old, name="model")
    client = client_for(srv.url)
    assert client.model(x=0)["version"] == 1
    again = sk_serve(new, name="model")
    assert again is srv
    assert srv.node is new and srv.state is sk.State.RUNNING
    assert client.model(x=0)["version"] == 2  # same port, same keep-alive connection
    assert old.log == ["setup", "teardown"]
    assert new.log == ["setup"]
    srv.stop()
    assert new.log == ["setup", "teardown"]


def test_replace_does_not_tear_down_stages_it_keeps(sk_serve, client_for):
    shared = Model()
    srv = sk_serve(shared, name="m")
    sk_serve(parse >> shared, name="m")  # re-run the cell with a longer flow around it
    assert "teardown" not in shared.log
    assert client_for(srv.url).m(text="a", x=1) == {"text": "a", "x": 1, "words": ["a"], "version": 1}
    srv.stop()
    assert shared.log[-1] == "teardown"


def test_a_replace_refused_for_an_action_clash_leaves_the_old_flow_serving(sk_serve, client_for):
    events: list[str] = []

    class Old(sk.Service):
        def teardown(self) -> None:
            events.append("old teardown")

        def process(self, x: int) -> dict:
            return {"who": "old"}

    class New(sk.Service):
        def setup(self) -> None:
            events.append("new setup")

        def process(self, x: int) -> dict:
            return {"who": "new"}

        @sk.handle("a")
        def a(self) -> dict:
            return {}

    first = sk_serve(sk.service(lambda x: x, name="a"), name="a")
    srv = sk_serve(Old(), name="b", http=first.http_port)
    with pytest.raises(sk.WiringError, match=f"Port {first.http_port} already serves action 'a'"):
        sk.serve(New(), name="b", http=first.http_port)
    assert srv.state is sk.State.RUNNING and isinstance(srv.node, Old)
    assert client_for(srv.url).b(x=1)["who"] == "old"
    assert events == []  # neither was the old torn down nor the new set up


def test_replace_moves_to_a_new_port_when_asked(sk_serve, client_for):
    srv = sk_serve(parse, name="p")
    other = sk_serve(count, name="other")
    sk_serve(parse, name="p", http=other.http_port)
    assert srv.http_port == other.http_port
    assert client_for(srv.url).p(text="a b")["words"] == ["a", "b"]
    assert client_for(srv.url).other(words=["a"])["n"] == 1


def test_two_served_things_cannot_share_an_action_on_a_port(sk_serve, client_for):
    srv = sk_serve(parse, name="p")
    with pytest.raises(sk.WiringError, match="'p'"):
        sk_serve(_with_action("p"), name="x", http=srv.http_port)
    assert client_for(srv.url).p(text="a")["words"] == ["a"]
    other = sk_serve(_with_action("q"), name="x", http=srv.http_port)
    assert other.http_port == srv.http_port


def _with_action(action: str) -> sk.Service:
    class WithAction(sk.Service):
        def process(self) -> None:
            return None

        @sk.handle(action)
        def act(self) -> None:
            return None

    return WithAction()


def test_stop_is_idempotent_and_start_serves_again(sk_serve, client_for):
    m = Model()
    srv = sk_serve(m, name="model")
    port = srv.http_port
    srv.stop()
    srv.stop()
    assert m.log == ["setup", "teardown"]
    with pytest.raises(sk.ServiceUnavailable):
        client_for(srv.url, timeout=2).model(x=1)
    srv.start()
    assert srv.state is sk.State.RUNNING and srv.http_port == port
    assert client_for(srv.url).model(x=1)["version"] == 1
    assert m.log == ["setup", "teardown", "setup"]
    with pytest.raises(sk.StateError, match="restart"):
        srv.start()


def test_restart_runs_teardown_and_setup(sk_serve):
    m = Model()
    srv = sk_serve(m, name="model")
    srv.restart()
    assert m.log == ["setup", "teardown", "setup"]
    assert srv.state is sk.State.RUNNING
    srv.stop()
    srv.restart()  # a stopped thing is started
    assert srv.state is sk.State.RUNNING


def test_serve_checks_its_arguments(sk_runtime):
    with pytest.raises(sk.WiringError):
        sk.serve(parse, http=70000)
    with pytest.raises(sk.WiringError):
        sk.serve(parse, http=True)
    with pytest.raises(sk.WiringError):
        sk.serve(parse, timeout=0)
    with pytest.raises(sk.WiringError):
        sk.serve(parse, name="has space")
    with pytest.raises(sk.WiringError):
        sk.serve(3)
    with pytest.raises(sk.WiringError, match="keep=-1"):
        sk.serve(parse, keep=-1)
    with pytest.raises(sk.WiringError, match="max_body='big'"):
        sk.serve(parse, max_body="big")
    with pytest.raises(sk.WiringError, match="host=None"):
        sk.serve(parse, host=None)
    assert not sk.runtime().served  # nothing was left half served


# -- metrics -------------------------------------------------------------------------------


def test_counters_by_action_and_errors(sk_serve, client_for):
    class Tally(sk.Service):
        def process(self, x: int) -> dict:
            return {"y": x}

        @sk.handle("ping")
        def ping(self) -> str:
            return "pong"

    srv = sk_serve(Tally(), name="tally")
    client = client_for(srv.url)
    for i in range(3):
        client.tally(x=i)
    assert client.ping() == {"ping": "pong"}
    with pytest.raises(sk.BadMessage):
        client.tally(x="no")
    counters = srv.status()
    assert counters["received"] == 5 and counters["replied"] == 5
    assert counters["errors"] == 1 and counters["errors_by_type"] == {"BadMessage": 1}
    assert counters["by_action"] == {"tally": 4, "ping": 1}
    assert counters["last_error"]["service"] == "tally"
    assert counters == {**counters, **srv.metrics.counters(), "rate": counters["rate"]}


def test_outputs_frame_one_row_per_message_oldest_first(sk_serve, client_for):
    srv = sk_serve(parse >> count, name="wc", keep=3)
    assert srv.outputs.empty
    client = client_for(srv.url)
    for text in ["a", "a b", "a b c", "a b c d"]:
        client.wc(text=text)
    with pytest.raises(sk.BadMessage):
        client.wc(nothing=1)  # errors are not outputs
    frame = srv.outputs
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["text", "words", "n", "time", "request_id"]  # then when and for which request
    assert frame["n"].tolist() == [2, 3, 4]  # bounded by keep, oldest first


def test_traffic_frame(sk_serve, client_for):
    srv = sk_serve(parse, name="p", keep=100)
    client = client_for(srv.url)
    client.p(text="a")
    with pytest.raises(sk.BadMessage):
        client.p()
    frame = srv.traffic
    assert list(frame.columns) == [
        "time",
        "endpoint",
        "direction",
        "action",
        "size",
        "latency_ms",
        "status",
        "request_id",
    ]
    assert frame["direction"].tolist() == ["in", "out", "in", "out"]
    assert frame["endpoint"].unique().tolist() == ["http"]
    assert frame["status"].dropna().astype(int).tolist() == [200, 422]
    assert (frame["latency_ms"].dropna() >= 0).all()
    assert pd.api.types.is_datetime64_any_dtype(frame["time"])


def test_snapshots_are_copies(sk_serve, client_for):
    srv = sk_serve(parse, name="p")
    client = client_for(srv.url)
    client.p(text="a")
    frame = srv.outputs
    client.p(text="b")
    assert len(frame) == 1 and len(srv.outputs) == 2


def test_settle_waits_until_every_request_is_answered(sk_serve):
    import threading
    import time as _time

    release = threading.Event()

    @sk.service
    def slow(x: int) -> dict:
        release.wait(5)
        return {"y": x}

    srv = sk_serve(slow, name="slow")
    client = sk.Client(srv.url)
    caller = threading.Thread(target=client.slow, kwargs={"x": 1})
    caller.start()
    wait_for(lambda: srv.metrics.received == 1)
    with pytest.raises(TimeoutError, match="1 messages in flight"):
        srv.settle(timeout=0.2)
    release.set()
    started = _time.monotonic()
    assert srv.settle(timeout=5) is srv
    assert srv.metrics.replied == 1 and _time.monotonic() - started < 5
    caller.join(5)
    client.close()


def test_settle_waits_for_a_pipeline_queue(sk_serve):
    from svckit.testing import collect

    sink = collect()
    numbers = iter(range(50))

    def tick() -> dict | None:
        n = next(numbers, None)
        return None if n is None else {"n": n}  # None emits nothing: 50 messages, then quiet ticks

    srv = sk_serve(sk.every(0.001, tick) >> sink, name="burst", http=None)
    wait_for(lambda: srv.metrics.iterations >= 60)
    srv.settle(timeout=10)
    assert [m["n"] for m in sink.items[:50]] == list(range(50))


def test_replacing_keeps_stages_set_up_once(sk_serve):
    events: list[str] = []

    class Resource(sk.Service):
        def setup(self) -> None:
            events.append("setup")

        def teardown(self) -> None:
            events.append("teardown")

        def process(self, x: int) -> dict:
            return {"y": x}

    kept = Resource()
    srv = sk_serve(kept, name="res")
    sk_serve(kept >> sk.service(lambda y: y + 1, name="inc"), name="res")  # the same stage, in a new flow
    assert events == ["setup"]
    sk_serve(Resource(), name="res")  # a new instance: set up, and the old one torn down
    assert events == ["setup", "setup", "teardown"]
    srv.stop()
    assert events == ["setup", "setup", "teardown", "teardown"]
