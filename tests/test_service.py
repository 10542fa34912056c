"""Services: the decorator, class services with typed config, return-value rules, BadMessage, reprs."""

from __future__ import annotations

import re
import threading

import pytest

import svckit as sk

# -- function services ---------------------------------------------------------


def test_bare_decorator_reads_params_by_name():
    @sk.service
    def parse(text: str) -> dict:
        return {"words": text.split()}

    assert isinstance(parse, sk.Service)
    assert parse.name == "parse"
    assert parse.output == "parse"
    assert parse(text="a b") == {"text": "a b", "words": ["a", "b"]}
    assert parse.fn("x y") == {"words": ["x", "y"]}  # the plain function stays callable


def test_decorator_with_arguments_sets_name_and_output():
    @sk.service(name="shout", output="loud")
    def upper(text: str) -> str:
        return text.upper()

    assert upper.name == "shout"
    assert upper(text="hi") == {"text": "hi", "loud": "HI"}


def test_async_service_runs_synchronously_from_the_test_thread(sk_runtime):
    @sk.service
    async def slow_double(x: int) -> dict:
        assert threading.current_thread() is sk_runtime.thread
        return {"y": 2 * x}

    assert slow_double.is_async
    assert slow_double(x=4) == {"x": 4, "y": 8}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"y": 1}, {"x": 0, "y": 1}),  # a dict is merged
        (None, {"x": 0}),  # None passes the message on
        (42, {"x": 0, "stage": 42}),  # anything else goes under the output key
        ([1, 2], {"x": 0, "stage": [1, 2]}),
    ],
)
def test_return_value_rules(result, expected):
    @sk.service
    def stage(x: int):
        return result

    assert stage(x=0) == expected


def test_return_value_rules_with_output_key():
    @sk.service(output="total")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(a=1, b=2) == {"a": 1, "b": 2, "total": 3}


def test_dict_return_overrides_existing_keys():
    @sk.service
    def bump(x: int) -> dict:
        return {"x": x + 1}

    assert bump(x=1) == {"x": 2}


def test_missing_field_is_bad_message_naming_field_and_service():
    @sk.service
    def parse(text: str) -> dict:
        return {}

    with pytest.raises(sk.BadMessage) as info:
        parse(other=1)
    err = info.value
    assert err.field == "text"
    assert err.service == "parse"
    assert "'text'" in str(err) and "'parse'" in str(err)


def test_ill_typed_field_is_bad_message():
    @sk.service
    def square(n: int) -> int:
        return n * n

    with pytest.raises(sk.BadMessage) as info:
        square(n="three")
    assert info.value.field == "n"
    assert info.value.service == "square"
    assert "'three'" in str(info.value)


def test_fields_are_checked_by_json_types_from_type_hints():
    seen = []

    @sk.service
    def square(n: int, items: list[int]) -> int:
        seen.append((type(n), [type(i) for i in items]))
        return n * n

    assert square(n=3.0, items=[1.0, 2])["square"] == 9  # a number with no fraction is an integer
    assert seen == [(int, [int, int])]
    with pytest.raises(sk.BadMessage, match=r"field 'items\[0\]'"):
        square(n=3, items=["1"])  # a string is no number


def test_default_parameters_may_be_missing():
    @sk.service
    def greet(name: str = "world") -> str:
        return f"hi {name}"

    assert greet()["greet"] == "hi world"
    assert greet(name="you")["greet"] == "hi you"


def test_call_with_dict_or_keywords():
    @sk.service
    def inc(x: int) -> int:
        return x + 1

    assert inc({"x": 1}) == inc(x=1) == {"x": 1, "inc": 2}
    assert inc({"x": 1}, y=5) == {"x": 1, "y": 5, "inc": 2}
    with pytest.raises(sk.BadMessage):
        inc(3)


def test_decorator_refuses_non_functions():
    with pytest.raises(sk.WiringError):
        sk.service(3)  # type: ignore[call-overload]


# -- class services --------------------------------------------------------------


class Scale(sk.Service):
    factor: float = 2.0
    label: str = "scaled"

    def process(self, x: float) -> dict:
        return {"y": x * self.factor, "label": self.label}


def test_class_service_config_is_validated_and_coerced():
    s = Scale(factor=3)
    assert s.factor == 3.0 and isinstance(s.factor, float)
    assert s.config == {"factor": 3.0, "label": "scaled"}
    assert s(x=2) == {"x": 2, "y": 6.0, "label": "scaled"}
    assert Scale().factor == 2.0
    assert s.name == "scale"


def test_class_service_unknown_config_key_is_a_clear_config_error():
    with pytest.raises(sk.ConfigError) as info:
        Scale(factr=3)
    message = str(info.value)
    assert "'factr'" in message and "Scale" in message
    assert "factor" in message and "label" in message  # says what the keys are
    assert isinstance(info.value, TypeError) and isinstance(info.value, sk.SvckitError)


def test_class_service_ill_typed_config_is_a_clear_config_error():
    with pytest.raises(sk.ConfigError) as info:
        Scale(factor="lots")
    message = str(info.value)
    assert "'factor'" in message and "Scale" in message and "'lots'" in message


def test_class_service_config_given_positionally_is_a_clear_config_error():
    with pytest.raises(sk.ConfigError, match=r"keywords, not positional values: Scale\(factor=\.\.\.\)"):
        Scale(3)


@pytest.mark.parametrize("key", ["name", "output"])
def test_a_config_key_that_service_uses_itself_is_refused(key):
    klass = type("Named", (sk.Service,), {"__annotations__": {key: str}, key: "x", "process": lambda self: None})
    with pytest.raises(sk.ConfigError, match=f"config key '{key}' is a name svckit's Service uses itself"):
        klass()


def test_class_service_required_config():
    class Needs(sk.Service):
        path: str

        def process(self) -> None:
            return None

    with pytest.raises(sk.ConfigError, match="needs config key 'path'"):
        Needs()
    assert Needs(path="/tmp").path == "/tmp"


def test_class_service_with_async_process(sk_runtime):
    class Add(sk.Service):
        amount: int = 1

        async def process(self, x: int) -> int:
            return x + self.amount

    assert Add(amount=5)(x=1) == {"x": 1, "add": 6}


def test_async_class_service_retries(sk_runtime):
    class Flaky(sk.Service):
        def __init__(self) -> None:
            super().__init__()
            self.tries = 0

        async def process(self) -> dict:
            self.tries += 1
            if self.tries < 3:
                raise sk.Retry(after=0, max=5)
            return {"tries": self.tries}

    assert Flaky()()["tries"] == 3


class Counter(sk.Service):
    """Counts messages; ``reset`` and ``peek`` are extra actions."""

    start: int = 0

    def setup(self) -> None:
        self.events.append("setup")
        self.n = self.start

    def teardown(self) -> None:
        self.events.append("teardown")

    def process(self, step: int = 1) -> dict:
        self.n += step
        return {"n": self.n}

    @sk.handle("reset")
    def reset(self, to: int = 0) -> dict:
        self.n = to
        return {"n": self.n}

    @sk.handle
    def peek(self) -> int:
        return self.n

    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.events: list[str] = []


def test_handle_marks_methods_and_leaves_them_callable():
    c = Counter(start=5)
    assert sorted(c.actions()) == ["peek", "reset"]
    c.setup()
    assert c.reset(to=2) == {"n": 2}  # still a plain method in a unit test
    assert c.peek() == 2


def test_setup_and_teardown_when_served_and_stopped(sk_serve, client_for):
    c = Counter(start=10)
    assert c.events == []
    srv = sk_serve(c, name="counter")
    assert c.events == ["setup"]
    client = client_for(srv.url)
    assert client.counter(step=2)["n"] == 12
    srv.stop()
    assert c.events == ["setup", "teardown"]
    srv.stop()  # idempotent: no second teardown
    assert c.events == ["setup", "teardown"]


def test_handle_actions_over_http(sk_serve, curl, client_for):
    c = Counter(start=1)
    srv = sk_serve(c, name="counter")
    assert srv.actions == ["counter", "peek", "reset"]
    assert curl("POST", f"{srv.url}/counter", '{"step": 4}') == (200, {"step": 4, "n": 5})
    assert curl("POST", f"{srv.url}/peek", "{}") == (200, {"peek": 5})
    assert curl("POST", f"{srv.url}/reset", '{"to": 7}') == (200, {"n": 7})
    status, body = curl("POST", f"{srv.url}/reset", '{"to": "x"}')
    assert status == 422
    assert body["error"]["type"] == "BadMessage" and body["error"]["field"] == "to"
    assert client_for(srv.url).peek()["peek"] == 7


def test_duplicate_action_names_are_a_wiring_error():
    class Twice(sk.Service):
        def process(self) -> None:
            return None

        @sk.handle("go")
        def one(self) -> None:
            return None

        @sk.handle("go")
        def two(self) -> None:
            return None

    with pytest.raises(sk.WiringError, match="'go'"):
        Twice()


# -- reprs ---------------------------------------------------------------------------

_ADDRESS = re.compile(r"0x[0-9a-f]+|\d{4,}")


def test_service_reprs_are_short_and_deterministic():
    @sk.service
    def parse(text: str, limit: int = 3) -> dict:
        return {}

    assert repr(parse) == "<Service parse(text: str, limit: int)>"
    assert repr(Scale(factor=3)) == "<Service Scale(factor=3.0, label='scaled')>"
    assert repr(sk.service(lambda x: x)) == "<Service lambda(x)>"
    for obj in (parse, Scale(), Counter()):
        assert not _ADDRESS.search(repr(obj)), repr(obj)
        assert repr(obj) == repr(obj)
