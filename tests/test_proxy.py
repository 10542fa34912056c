"""Behind jupyter-server-proxy (as on Binder): a real Jupyter server forwards to a served flow."""

from __future__ import annotations

import pytest
import requests

import svckit as sk


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory, start_jupyter):
    """A real ``jupyter server`` (with jupyter-server-proxy) on 127.0.0.1, no token. It takes
    any ``Host`` (as a hub's single-user server does), so a hub's public name can be sent."""
    with start_jupyter("server", tmp_path_factory.mktemp("jupyter"), "--ServerApp.allow_remote_access=True") as base:
        yield base


@pytest.fixture
def wordcount(sk_serve):
    @sk.service
    def parse(text: str) -> dict:
        """Split text into words."""
        return {"words": text.split()}

    return sk_serve(parse >> sk.service(lambda words: len(words), name="n"), name="wordcount")


def test_call_through_the_proxy(jupyter_server, wordcount):
    url = f"{jupyter_server}/proxy/{wordcount.http_port}"
    reply = requests.post(f"{url}/wordcount", json={"text": "a b c"}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["n"] == 3
    bad = requests.post(f"{url}/wordcount", json={"txt": 1}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "text"


def test_client_works_through_the_proxy(jupyter_server, wordcount):
    with sk.Client(f"{jupyter_server}/proxy/{wordcount.http_port}") as client:
        assert client.wordcount(text="x y")["n"] == 2
        with pytest.raises(sk.BadMessage):
            client.wordcount(text=3)


def test_links_and_openapi_respect_the_proxy_prefix(jupyter_server, wordcount):
    prefix = f"/proxy/{wordcount.http_port}"
    index = requests.get(f"{jupyter_server}{prefix}/", timeout=10).json()
    assert index["actions"]["wordcount"] == f"{prefix}/wordcount"
    assert index["links"]["openapi"] == f"{prefix}/openapi.json"
    spec = requests.get(f"{jupyter_server}{index['links']['openapi']}", timeout=10).json()
    assert spec["servers"] == [{"url": prefix}]
    # the server URL the spec names, joined with a path it lists, reaches the service
    path = next(iter(spec["paths"]))
    reply = requests.post(f"{jupyter_server}{spec['servers'][0]['url']}{path}", json={"text": "a"}, timeout=10)
    assert reply.json()["n"] == 1
    # outside the proxy the same endpoints have no prefix
    assert requests.get(f"{wordcount.url}/openapi.json", timeout=10).json()["servers"] == [{"url": "/"}]


def test_proxy_url_inside_a_hub(monkeypatch, jupyter_server, wordcount):
    assert wordcount.proxy_url is None
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert wordcount.proxy_url == f"/user/ada/proxy/{wordcount.http_port}/"
    assert wordcount.status()["proxy"] == wordcount.proxy_url
    # this server's base URL is "/": the proxied URL it gives opens the service there
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/")
    assert requests.get(f"{jupyter_server}{wordcount.proxy_url}health", timeout=10).json()["status"] == "ok"


def test_a_page_jupyter_served_may_post_through_the_proxy(jupyter_server, wordcount):
    """What a browser sends from a page of the Jupyter server (its own Origin) is answered."""
    url = f"{jupyter_server}/proxy/{wordcount.http_port}/wordcount"
    reply = requests.post(url, json={"text": "a b"}, headers={"Origin": jupyter_server}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["n"] == 2


def test_a_foreign_page_is_refused_through_the_proxy(jupyter_server, wordcount):
    url = f"{jupyter_server}/proxy/{wordcount.http_port}/wordcount"
    reply = requests.post(url, json={"text": "a"}, headers={"Origin": "https://evil.example"}, timeout=10)
    assert reply.status_code == 403
    assert reply.json()["error"]["type"] == "Forbidden"  # svckit's answer, not the Jupyter server's
    simple = requests.post(url, data='{"text": "a"}', headers={"Content-Type": "text/plain"}, timeout=10)
    assert simple.status_code == 415 and simple.json()["error"]["type"] == "UnsupportedMediaType"
    assert wordcount.status()["errors_by_type"] == {"Forbidden": 1, "UnsupportedMediaType": 1}


def test_inside_a_hub_its_public_host_passes_through_the_proxy(monkeypatch, jupyter_server, sk_serve):
    """In a hub the proxied request keeps the hub's public Host: it passes with the proxy's
    context header for this port; the same Host sent straight to the port does not."""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/")  # this Jupyter server's base URL
    srv = sk_serve(sk.service(lambda x: x, name="echo"))
    hub = {"Host": "hub.example", "Origin": "https://hub.example"}
    through = requests.post(f"{jupyter_server}/proxy/{srv.http_port}/echo", json={"x": 1}, headers=hub, timeout=10)
    assert through.status_code == 200, through.text
    assert requests.get(f"{jupyter_server}{srv.proxy_url}status", headers=hub, timeout=10).status_code == 200
    direct = requests.post(f"{srv.url}/echo", json={"x": 1}, headers=hub, timeout=10)
    assert direct.status_code == 403 and direct.json()["error"]["type"] == "Forbidden"


def test_dashboard_links_to_the_proxied_url(monkeypatch, wordcount):
    import comm

    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: comm.DummyComm(*a, **k))
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    dash = wordcount.dashboard()
    try:
        assert f'href="/user/ada/proxy/{wordcount.http_port}/"' in dash.cards[0].header.value
    finally:
        dash.close()
