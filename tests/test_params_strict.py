"""Message fields are validated by JSON's types, at any depth, and errors say where (issue 13)."""

from __future__ import annotations

import dataclasses
import datetime
import math
import uuid
from typing import Annotated, Any

import numpy as np
import pydantic
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import svckit as sk
from svckit.params import Params


class Item(pydantic.BaseModel):
    qty: int
    name: str = "thing"
    when: datetime.datetime | None = None


class Tree(pydantic.BaseModel):
    value: int = 0
    kids: list[Tree] = []


@dataclasses.dataclass
class Point:
    x: float
    y: float


def _typed(
    a: int = 0,
    b: float = 0.0,
    c: str = "",
    d: bool = False,
    xs: list[int] | None = None,
    item: Item | None = None,
    m: dict[str, int] | None = None,
    t: tuple[int, str] | None = None,
    s: set[int] | None = None,
    when: datetime.datetime | None = None,
    day: datetime.date | None = None,
    u: uuid.UUID | None = None,
    tree: Tree | None = None,
    point: Point | None = None,
    either: int | str = 0,
) -> dict[str, Any]:
    return {}


TYPED = Params(_typed, "typed")

# (field, value the JSON type of which is not the field's, where the error is): each is a 422,
# in a cell and over HTTP
REJECTED = [
    ("a", True, "a"),
    ("a", False, "a"),
    ("a", "3", "a"),
    ("a", 2.5, "a"),
    ("a", None, "a"),
    ("a", [1], "a"),
    ("b", True, "b"),
    ("b", "1.5", "b"),
    ("b", {}, "b"),
    ("c", 3, "c"),
    ("c", 1.5, "c"),
    ("c", False, "c"),
    ("c", ["x"], "c"),
    ("d", 1, "d"),
    ("d", "true", "d"),
    ("d", 0.0, "d"),
    ("xs", [1, True], "xs[1]"),
    ("xs", [1, "2"], "xs[1]"),
    ("xs", [1.5], "xs[0]"),
    ("xs", "12", "xs"),
    ("item", {"qty": True}, "item.qty"),
    ("item", {"qty": "1"}, "item.qty"),
    ("item", {"qty": 1, "name": 7}, "item.name"),
    ("item", {"qty": 1, "when": 1700000000}, "item.when"),
    ("m", {"k": False}, "m.k"),
    ("m", {"k": "1"}, "m.k"),
    ("t", [1, 2], "t[1]"),
    ("t", [True, "x"], "t[0]"),
    ("s", [1, True], "s[1]"),
    ("when", 0, "when"),
    ("when", True, "when"),
    ("day", 20240101, "day"),
    ("tree", {"kids": [{"kids": [{"value": True}]}]}, "tree.kids[0].kids[0].value"),
    ("point", {"x": "1", "y": 2}, "point.x"),
    ("either", True, "either"),
    ("either", 1.5, "either"),
]

# (field, value, what the function gets): a JSON body's values and a Python caller's
ACCEPTED = [
    ("a", 3, 3),
    ("a", 2.0, 2),  # JSON Schema's "integer": a number with no fraction
    ("a", -(2**70), -(2**70)),
    ("b", 3, 3.0),
    ("b", 2.5, 2.5),
    ("c", "3", "3"),
    ("d", True, True),
    ("xs", [1, 2.0], [1, 2]),
    ("item", {"qty": 2}, Item(qty=2)),
    ("m", {"k": 1}, {"k": 1}),
    ("t", [1, "x"], (1, "x")),
    ("s", [3, 1, 3], {1, 3}),
    ("when", "2024-05-01T12:30:00", datetime.datetime(2024, 5, 1, 12, 30)),
    ("day", "2024-05-01", datetime.date(2024, 5, 1)),
    ("u", "12345678-1234-5678-1234-567812345678", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("tree", {"kids": [{"value": 1}]}, Tree(kids=[Tree(value=1)])),
    ("point", {"x": 1, "y": 2.5}, Point(1.0, 2.5)),
    ("either", "3", "3"),
    ("either", 3, 3),
]

# only a Python caller can send these: what a JSON encoder turns into the right type
IN_A_CELL = [
    ("a", np.int64(3), 3),
    ("a", np.uint8(7), 7),
    ("a", np.float64(4.0), 4),
    ("b", np.float32(1.5), 1.5),
    ("b", np.int32(2), 2.0),
    ("d", np.bool_(True), True),
    ("xs", [np.int64(1), np.int16(2)], [1, 2]),
    ("xs", (1, 2), [1, 2]),
    ("item", Item(qty=5), Item(qty=5)),
    ("t", (1, "x"), (1, "x")),
    ("s", {1, 2}, {1, 2}),
    ("when", datetime.datetime(2024, 5, 1), datetime.datetime(2024, 5, 1)),
    ("point", Point(1.0, 2.0), Point(1.0, 2.0)),
]


@pytest.mark.parametrize(("field", "value", "where"), REJECTED, ids=[f"{f}={v!r}" for f, v, _ in REJECTED])
def test_a_value_of_another_json_type_is_refused_in_a_cell(field: str, value: Any, where: str) -> None:
    with pytest.raises(sk.BadMessage) as info:
        TYPED.validate({field: value})
    err = info.value
    assert err.service == "typed"
    assert err.field == where
    assert str(err).startswith(f"Service 'typed': field {err.field!r}: ")
    assert str(err).endswith(".")


@pytest.mark.parametrize(("field", "value", "seen"), ACCEPTED + IN_A_CELL)
def test_json_values_and_python_values_of_the_right_kind_pass(field: str, value: Any, seen: Any) -> None:
    got = TYPED.validate({field: value})[field]
    assert got == seen
    assert type(got) is type(seen)
    if isinstance(seen, list):
        assert [type(x) for x in got] == [type(x) for x in seen]


def test_a_served_service_refuses_the_same_values_and_takes_the_same(sk_serve: Any) -> None:
    checked = sk.service(name="checked")(_typed)
    srv = sk_serve(checked, name="checked", http=0)
    url = f"{srv.url}/checked"
    with requests.Session() as http:
        for field, value, where in REJECTED:
            r = http.post(url, json={field: value}, timeout=10)
            assert r.status_code == 422, (field, value, r.text)
            body = r.json()["error"]
            assert body["type"] == "BadMessage"
            assert body["field"] == where, (field, value)
            assert body["service"] == "checked"
        for field, value, _ in ACCEPTED:
            r = http.post(url, json={field: value}, timeout=10)
            assert r.status_code == 200, (field, value, r.text)


def test_a_remote_client_sees_the_bad_message_with_its_path(sk_serve: Any, client_for: Any) -> None:
    @sk.service
    def order(item: Item, xs: list[int]) -> dict[str, Any]:
        return {"n": item.qty + sum(xs)}

    srv = sk_serve(order, name="order", http=0, zmq=0)
    zmq = sk.ZmqClient(srv.zmq_url)
    try:
        for client in (client_for(srv.url), zmq):
            with pytest.raises(sk.BadMessage) as info:
                client.call("order", item={"name": "pen"}, xs=[1])
            assert info.value.field == "item.qty"
            assert "Service 'order': field 'item.qty': Field required." in str(info.value)
            with pytest.raises(sk.BadMessage) as info:
                client.call("order", item={"qty": 1}, xs=[1, True])
            assert info.value.field == "xs[1]"
            assert "(got bool True)" in str(info.value)
            assert client.call("order", item={"qty": 1, "when": "2024-01-02T03:04:05Z"}, xs=[2])["n"] == 3
    finally:
        zmq.close()


def test_a_missing_nested_field_names_its_path_and_counts_the_others() -> None:
    @sk.service
    def order(item: Item, xs: list[int], d: dict[str, int]) -> None:
        return None

    with pytest.raises(sk.BadMessage) as info:
        order(item={"name": "pen"}, xs=[1], d={})
    assert str(info.value) == "Service 'order': field 'item.qty': Field required."
    assert info.value.field == "item.qty"

    with pytest.raises(sk.BadMessage) as info:
        order(item={"qty": 1}, xs=[1, "two", 3.5], d={"key": "v", "odd key": 1})
    text = str(info.value)
    assert info.value.field == "xs[1]"
    assert text.startswith("Service 'order': field 'xs[1]': Input should be a valid integer (got str 'two')")
    assert text.endswith(" (and 2 more errors).")

    with pytest.raises(sk.BadMessage) as info:
        order(item={"qty": 1}, xs=[], d={"key": True})
    assert info.value.field == "d.key"
    with pytest.raises(sk.BadMessage) as info:
        order(item={"qty": 1}, xs=[], d={"odd key": True})
    assert info.value.field == "d['odd key']"


def test_error_paths_name_parameters_not_the_model_s_own_aliases() -> None:
    def f(first: int, second: Item) -> None: ...

    p = Params(f, "pair")
    with pytest.raises(sk.BadMessage) as info:
        p.validate({"first": 1, "second": {"qty": "x"}})
    assert info.value.field == "second.qty"
    assert "f1" not in str(info.value) and "f0" not in str(info.value)


def test_a_long_value_is_shown_short() -> None:
    with pytest.raises(sk.BadMessage) as info:
        TYPED.validate({"a": "x" * 500})
    assert "(got str 'xxxxxxxx" in str(info.value)
    assert len(str(info.value)) < 150


def test_a_union_that_fails_says_each_choice_once_at_one_path() -> None:
    with pytest.raises(sk.BadMessage) as info:
        TYPED.validate({"either": True})
    assert info.value.field == "either"
    assert "Input should be a valid integer or a valid string (got bool True)" in str(info.value)


def test_annotated_constraints_are_checked_and_a_before_validator_may_convert() -> None:
    @sk.service
    def page(n: Annotated[int, pydantic.Field(ge=1)], size: Annotated[int, pydantic.BeforeValidator(int)] = 10) -> None:
        return None

    with pytest.raises(sk.BadMessage, match="greater than or equal to 1"):
        page(n=0)
    with pytest.raises(sk.BadMessage, match="valid integer"):
        page(n=True)
    assert page(n=1, size="20") == {"n": 1, "size": "20"}  # the message keeps what it was sent
    assert repr(page) == "<Service page(n: int, size: int)>"


def test_strict_annotation_is_stricter_still() -> None:
    def f(n: Annotated[int, pydantic.Strict()]) -> None: ...

    p = Params(f, "exact")
    assert p.validate({"n": 3}) == {"n": 3}
    for value in (np.int64(3), 3.0, True):
        with pytest.raises(sk.BadMessage):
            p.validate({"n": value})


def test_the_fast_path_never_reaches_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    @sk.service
    def plain(a: int, b: float, c: str, d: bool, e: list, f: dict) -> dict[str, Any]:
        return {"ok": True}

    def refuse(self: Params, kw: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("exact plain types must not be validated")

    monkeypatch.setattr(Params, "validate", refuse)
    assert plain(a=1, b=1.5, c="x", d=True, e=[], f={})["ok"] is True
    with pytest.raises(AssertionError):
        plain(a=True, b=1.5, c="x", d=True, e=[], f={})  # a bool for an int: no longer exact


# -- properties --------------------------------------------------------------------------------

# numbers a float holds exactly (pydantic refuses 1e19 for an int: past a 64-bit integer)
NUMBERS = st.integers(-(2**53), 2**53) | st.floats(-(2.0**53), 2.0**53, allow_nan=False)
JSON_SCALARS = st.none() | st.booleans() | NUMBERS | st.text()
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8)


def _is_json_integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_an_int_field_takes_exactly_the_json_integers(value: Any) -> None:
    def f(n: int) -> None: ...

    p = Params(f, "n")
    if _is_json_integer(value):
        got = p.validate({"n": value})["n"]
        assert type(got) is int and got == value
    else:
        with pytest.raises(sk.BadMessage):
            p.validate({"n": value})


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_a_float_field_takes_exactly_the_json_numbers(value: Any) -> None:
    def f(x: float) -> None: ...

    p = Params(f, "x")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        got = p.validate({"x": value})["x"]
        assert type(got) is float and (got == value or math.isclose(got, value))
    else:
        with pytest.raises(sk.BadMessage):
            p.validate({"x": value})


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON_SCALARS, max_size=6))
def test_a_list_of_ints_is_refused_at_its_first_item_that_is_not_one(values: list[Any]) -> None:
    def f(xs: list[int]) -> None: ...

    p = Params(f, "xs")
    bad = [i for i, v in enumerate(values) if not _is_json_integer(v)]
    if not bad:
        assert p.validate({"xs": values})["xs"] == values
    else:
        with pytest.raises(sk.BadMessage) as info:
            p.validate({"xs": values})
        assert info.value.field == f"xs[{bad[0]}]"
        more = len(bad) - 1
        assert str(info.value).endswith(f" (and {more} more error{'s' if more > 1 else ''})." if more else ".")
