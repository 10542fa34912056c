"""Typed config from a config file (SVCKIT_CONFIG, svckit run --config) and SVCKIT_<SERVICE>_<KEY>."""

from __future__ import annotations

import pytest

import svckit as sk
from svckit.config import load_config_file, unused_sections


class OrderBook(sk.Service):
    depth: int = 5
    venue: str = "x"

    def process(self) -> dict:
        return {}


class Order(sk.Service):
    size: int = 1

    def process(self) -> dict:
        return {}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("SVCKIT_CONFIG", "SVCKIT_ORDER_BOOK_DEPTH", "SVCKIT_ORDER_SIZE"):
        monkeypatch.delenv(var, raising=False)


def test_code_beats_the_environment_beats_the_file_beats_the_default(tmp_path, monkeypatch):
    config = tmp_path / "app.json"
    config.write_text('{"order_book": {"depth": 10, "venue": "file"}}')
    monkeypatch.setenv("SVCKIT_CONFIG", str(config))
    assert OrderBook().config == {"depth": 10, "venue": "file"}
    monkeypatch.setenv("SVCKIT_ORDER_BOOK_DEPTH", "20")
    assert OrderBook().config == {"depth": 20, "venue": "file"}
    assert OrderBook(depth=30).config == {"depth": 30, "venue": "file"}
    assert Order().config == {"size": 1}  # SVCKIT_ORDER_BOOK_DEPTH is order_book's, not order's
    assert unused_sections() == []


def test_bad_keys_and_values_name_the_service_the_key_and_where(tmp_path, monkeypatch):
    config = tmp_path / "app.toml"
    config.write_text("[OrderBook]\ndepht = 3\n")
    monkeypatch.setenv("SVCKIT_CONFIG", str(config))
    with pytest.raises(sk.ConfigError) as caught:
        OrderBook()
    assert str(caught.value) == (
        f"The config file {config} sets 'depht' for OrderBook (its table [OrderBook]), which has no such "
        "config key; its config keys are: depth, venue."
    )
    config.write_text('[order_book]\ndepth = "deep"\n[nobody]\nx = 1\n')
    with pytest.raises(sk.ConfigError, match=f"OrderBook config 'depth', from the config file {config}: "):
        OrderBook()
    assert unused_sections() == ["nobody"]
    monkeypatch.delenv("SVCKIT_CONFIG")
    monkeypatch.setenv("SVCKIT_ORDER_SIZE", "many")
    with pytest.raises(sk.ConfigError, match="from the environment variable SVCKIT_ORDER_SIZE"):
        Order()
    monkeypatch.setenv("SVCKIT_ORDER_SIZE", "3")
    monkeypatch.setenv("SVCKIT_ORDER_SIZ", "3")
    with pytest.raises(sk.ConfigError, match="The environment variable SVCKIT_ORDER_SIZ sets 'siz' for Order"):
        Order()


@pytest.mark.parametrize(
    ("text", "says"),
    [("{bad", "is not valid JSON"), ('{"a": 1}', "must hold one table per service"), ("a = [", "is not valid TOML")],
)
def test_unreadable_files_are_one_sentence(tmp_path, text, says):
    path = tmp_path / ("c.json" if text.startswith("{") else "c.toml")
    path.write_text(text)
    with pytest.raises(sk.ConfigError, match=says):
        load_config_file(path)
