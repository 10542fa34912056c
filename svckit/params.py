"""How a callable reads its parameters from a message: names, type hints, pydantic validation.

Also the rules for applying a stage's return value to the message (``merge``) and for the
names services and actions may have.
"""

from __future__ import annotations

import inspect
import numbers
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .callables import unwrap
from .errors import BadMessage, WiringError

if TYPE_CHECKING:
    import pydantic
    import pydantic_core

__all__ = ["MISSING", "Params", "check_name", "merge", "short", "snake"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_EXACT = (str, int, float, bool, dict, list)
#: A field a message lacks (``msg.get(name, MISSING)``).
MISSING: Any = object()


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it can be an action in a URL path, else raise ``WiringError``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise WiringError(
            f"{what} {name!r} cannot be used as an action: use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'."
        )
    return name


def snake(name: str) -> str:
    """``WordCount`` → ``word_count``; used for default names of class services."""
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


def _describe_type(ann: Any) -> str:
    if typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]  # the type, not its constraints and validators
    if ann is Any or ann is inspect.Parameter.empty:
        return ""
    if isinstance(ann, type) and not typing.get_args(ann):
        return ann.__name__
    return str(ann).replace("typing.", "")


class Params:
    """How one callable reads its parameters from a message.

    Values whose type already is the annotated plain type (``str``, ``int``, ...) pass
    untouched; anything else goes through a pydantic model built from the signature,
    which converts it or explains what is wrong (``BadMessage``).

    The rule is JSON's: a value must have the JSON type the field's JSON Schema names, at
    any depth (in lists, dict values, tuples, nested pydantic models and dataclasses).

    - ``int`` takes an integer, or a number with no fraction (``2.0`` is 2, as JSON
      Schema's ``"integer"`` says); not ``true``, not ``"3"``, not ``2.5``.
    - ``float`` takes any number; ``str`` takes a string only; ``bool`` only ``true`` or
      ``false``; a ``Literal`` or an ``Enum`` of numbers does not take ``true`` for 1.
    - ``datetime``, ``date``, ``time`` and ``timedelta`` take ISO 8601 strings, not numbers.
    - What JSON cannot say is converted as pydantic does: ISO strings to datetimes, dates
      and UUIDs, lists to tuples and sets, objects to models.

    A Python caller in a cell may also pass what a JSON encoder would turn into the
    right type: numpy integer and float scalars (``np.int64(3)`` for an ``int``), numpy
    booleans, ``datetime`` and model instances. ``Annotated`` metadata counts:
    ``Annotated[int, Field(ge=1)]`` is checked, a ``BeforeValidator`` sees the value
    first (``Annotated[int, BeforeValidator(int)]`` takes ``"3"``), and
    ``Annotated[int, Strict()]`` is stricter still (no numpy, no ``2.0``).

    Values of the exact plain type never reach pydantic: the check costs nothing there.

    Examples
    --------
    >>> p = Params(lambda n, xs=(): None, "square")
    >>> p.names, sorted(p.required)
    (('n', 'xs'), ['n'])
    >>> def f(n: int, xs: list[float]) -> None: ...
    >>> Params(f, "f").validate({"n": 2.0, "xs": [1, 2.5]})
    {'n': 2, 'xs': [1.0, 2.5]}
    >>> Params(f, "f").validate({"n": True, "xs": []})
    Traceback (most recent call last):
    ...
    svckit.errors.BadMessage: Service 'f': field 'n': Input should be a valid integer (got bool True).
    """

    __slots__ = (
        "_fields",
        "_model",
        "_plan",
        "_strict",
        "_tolerant",
        "annotations",
        "complex",
        "defaults",
        "exact",
        "names",
        "positional",
        "required",
        "service",
        "whole",
    )

    def __init__(self, fn: Callable[..., Any], service: str) -> None:
        self.service = service
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise WiringError(f"Service {service!r}: cannot read the signature of {fn!r}: {exc}") from exc
        try:
            target = unwrap(fn)  # a partial's hints are its function's
            if not (inspect.isroutine(target) or inspect.isclass(target)):
                target = type(target).__call__  # a callable object's are its __call__'s
            hints = typing.get_type_hints(target, include_extras=True)  # keep Annotated[int, Field(ge=0)]
        except Exception as exc:  # a forward reference that cannot be resolved
            raise WiringError(
                f"Service {service!r}: cannot resolve the type hints of its parameters ({exc}). "
                "Define the types it names before the service."
            ) from exc
        names: list[str] = []
        positional: list[str] = []  # leading parameters that can be passed by position
        self.required: frozenset[str]
        required = set()
        self.annotations: dict[str, Any] = {}
        self.defaults: dict[str, Any] = {}
        self.whole = False
        exact: list[tuple[str, type]] = []
        self.complex = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                self.whole = True
                continue
            if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
                raise WiringError(
                    f"Service {service!r}: parameter {p.name!r} is positional-only or *args; "
                    "a service reads its parameters by name from the message."
                )
            names.append(p.name)
            if p.kind is p.POSITIONAL_OR_KEYWORD and len(names) == len(positional) + 1:
                positional.append(p.name)
            ann = hints.get(p.name, Any)
            self.annotations[p.name] = ann
            if p.default is p.empty:
                required.add(p.name)
            else:
                self.defaults[p.name] = p.default
            if ann is Any:
                continue
            if ann in _EXACT:
                exact.append((p.name, ann))
            else:
                self.complex = True
        self.names = tuple(names)
        self.positional = tuple(positional)
        self.required = frozenset(required)
        self.exact = tuple(exact)
        kinds = dict(exact)
        # (name, exact type or None, required) in signature order: bind() walks this once.
        self._plan = tuple((n, kinds.get(n), n in self.required) for n in self.names)
        self._model: type[pydantic.BaseModel] | None = None
        self._fields: dict[str, str] = {}
        self._strict: pydantic_core.SchemaValidator | None = None
        self._tolerant: pydantic_core.SchemaValidator | None = None

    def model(self) -> type[pydantic.BaseModel]:
        """The pydantic model of these parameters (built on first use).

        Its JSON Schema is the one published (``/openapi.json``); messages are validated
        by ``validate`` with JSON's stricter rules over the same fields.
        """
        if self._model is None:
            import pydantic

            fields: dict[str, Any] = {}
            for i, name in enumerate(self.names):
                ann = self.annotations[name]
                default = self.defaults.get(name, ...)
                fields[f"f{i}"] = (ann, pydantic.Field(default, alias=name))
                self._fields[f"f{i}"] = name
            config = pydantic.ConfigDict(extra="ignore", arbitrary_types_allowed=True, populate_by_name=False)
            self._model = pydantic.create_model(  # type: ignore[call-overload]
                _model_name(self.service), __config__=config, **fields
            )
        assert self._model is not None
        return self._model

    def missing(self, name: str, msg: Mapping[str, Any]) -> BadMessage:
        have = ", ".join(sorted(map(str, msg))) or "nothing"
        return BadMessage(
            f"Service {self.service!r} needs field {name!r}, which the message lacks (it has: {have}).",
            field=name,
            service=self.service,
        )

    def bind(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        """Read this callable's keyword arguments from ``msg``, validated and coerced."""
        kw: dict[str, Any] = {}
        slow = self.complex
        for name, kind, required in self._plan:
            value = msg.get(name, MISSING)
            if value is MISSING:
                if required:
                    raise self.missing(name, msg)
            else:
                kw[name] = value
                if kind is not None and type(value) is not kind:
                    slow = True  # not the exact plain type: pydantic coerces it or explains
        if slow:
            kw = self.validate(kw)
        if self.whole:
            for key, value in msg.items():
                if key not in kw:
                    kw[key] = value
        return kw

    def compile(self, fn: Callable[..., Any], svc: Any) -> Callable[[dict[str, Any]], None] | None:
        """A ``run`` specialised for this signature, or None when the generic one must serve.

        When every parameter is required and is ``Any`` or a plain type, it counts the
        call, reads each field once, checks its exact type and calls ``fn`` by position: a
        few hundred nanoseconds a stage. Anything else (a missing field, a value to coerce)
        takes ``svc._guarded``, the generic path that validates and explains; an exception
        from ``fn`` goes to ``svc._raised`` (retries, tagging, counting).
        """
        if self.whole or self.complex or self.defaults or not self.names:
            return None
        kinds = dict(self.exact)
        env: dict[str, Any] = {
            "_svc": svc,
            "_fn": fn,
            "_slow": svc._guarded,
            "_raised": svc._raised,
            "_M": MISSING,
            "_merge": merge,
            "_out": svc.output,
        }
        lines = ["def run(msg):", "    __tracebackhide__ = True", "    _svc.calls += 1"]
        args = []
        for i, name in enumerate(self.names):
            lines.append(f"    v{i} = msg.get({name!r}, _M)")
            if name in kinds:
                env[f"_t{i}"] = kinds[name]
                lines.append(f"    if type(v{i}) is not _t{i}: return _slow(msg)")
            else:
                lines.append(f"    if v{i} is _M: return _slow(msg)")
            args.append(f"v{i}" if name in self.positional else f"{name}=v{i}")
        lines += [
            "    try:",
            f"        r = _fn({', '.join(args)})",
            "    except Exception as exc:",
            "        return _raised(msg, exc)",
            "    if r is None: return",
            "    if type(r) is dict: msg.update(r)",
            "    else: _merge(msg, r, _out)",
        ]
        exec("\n".join(lines), env)  # the source is built above from identifiers and reprs only
        run: Callable[[dict[str, Any]], None] = env["run"]
        return run

    def validate(self, kw: dict[str, Any]) -> dict[str, Any]:
        """``kw`` (fields read from a message) validated and converted by the JSON rule
        of the class docstring; raises ``BadMessage`` naming the first wrong field.

        Two validators share the model's schema: a strict one, all in pydantic-core (what a
        JSON body holds passes it at pydantic's own speed), and, only when that one
        refuses, a tolerant one that also takes numpy scalars and ``2.0`` for an ``int``
        and whose errors are the ones reported.
        """
        import pydantic

        if self._strict is None:
            self._strict = _Checker(self.model(), tolerant=False).validator
        try:
            values = self._strict.validate_python(kw)[0]
        except pydantic.ValidationError:
            if self._tolerant is None:
                self._tolerant = _Checker(self.model(), tolerant=True).validator
            try:
                values = self._tolerant.validate_python(kw)[0]
            except pydantic.ValidationError as exc:
                raise self._explain(exc) from None
        return {name: values[attr] for attr, name in self._fields.items() if name in kw}

    def _explain(self, exc: pydantic.ValidationError) -> BadMessage:
        """The first of pydantic's errors as a sentence: the field's path in the message
        (``item.qty``, ``xs[1]``), what is wrong, the value, and how many more errors."""
        errors = exc.errors(include_url=False)
        paths = [self._path(err["loc"]) for err in errors]
        first = errors[0]
        here = [err["msg"] for err, path in zip(errors, paths, strict=True) if path == paths[0]]
        text = _either(list(dict.fromkeys(here)))  # a union: one message per choice, same path
        shown = ""
        if first["type"] != "missing":  # for a missing field, the input is the object around it
            got = first.get("input")
            shown = f" (got {type(got).__name__} {short(got)})"
        others = len(set(paths)) - 1
        more = f" (and {others} more error{'s' if others > 1 else ''})" if others else ""
        return BadMessage(
            f"Service {self.service!r}: field {paths[0]!r}: {text}{shown}{more}.",
            field=paths[0],
            service=self.service,
        )

    def _path(self, loc: tuple[int | str, ...]) -> str:
        """``('f0', 'qty')`` → ``item.qty``; ``('xs', 1)`` → ``xs[1]``; ``('d', 'a b')`` → ``d['a b']``."""
        parts: list[str] = []
        for i, key in enumerate(loc):
            if i == 0 and isinstance(key, str):
                parts.append(self._fields.get(key, key))  # the model's alias back to the parameter
            elif isinstance(key, str) and key.startswith(_CHOICE):
                continue  # which choice of a union failed: not a place in the message
            elif isinstance(key, str) and key.isidentifier():
                parts.append(f".{key}")
            elif isinstance(key, str) and key.startswith("[") and key.endswith("]"):
                parts.append(key)  # pydantic's own marker, such as ``[key]`` for a dict's key
            else:
                parts.append(f"[{key!r}]")
        return "".join(parts).lstrip(".") or "message"

    def signature_text(self) -> str:
        parts = []
        for name in self.names:
            t = _describe_type(self.annotations[name])
            parts.append(f"{name}: {t}" if t else name)
        if self.whole:
            parts.append("**message")
        return ", ".join(parts)


# -- JSON's rules for pydantic: a rewrite of a model's core schema ---------------------------

#: Prefix of the labels given to a union's choices, so that an error's location can skip them.
_CHOICE = "\u2063choice"
_TEMPORAL = {
    "datetime": "datetime_type",
    "date": "date_type",
    "time": "time_type",
    "timedelta": "time_delta_type",
}
# keys of a core schema whose values are data (a default, a serializer, metadata), not schemas
_DATA_KEYS = frozenset(
    {"cls", "config", "custom_error_context", "default", "expected", "members", "metadata", "ref", "serialization"}
)


def _is_bool(value: Any) -> bool:
    """``True``/``False``, or a numpy boolean (which is no ``bool`` subclass)."""
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b"


def _error(kind: str) -> Exception:
    from pydantic_core import PydanticKnownError

    return PydanticKnownError(kind)  # type: ignore[arg-type]


def _int(value: Any, handler: Callable[[Any], Any]) -> Any:
    # pydantic's lax int does the rest: numpy integers, 2.0 -> 2, and refuses 2.5
    if isinstance(value, (str, bytes, bytearray)) or _is_bool(value):
        raise _error("int_type")
    return handler(value)


def _float(value: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(value, (str, bytes, bytearray)) or _is_bool(value):
        raise _error("float_type")
    return handler(value)


def _bool(value: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(value, bool):
        return handler(value)
    if _is_bool(value):
        return handler(bool(value))
    raise _error("bool_type")


def _not_number(kind: str) -> Callable[[Any, Callable[[Any], Any]], Any]:
    error = _TEMPORAL[kind]

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(value, numbers.Number):  # JSON Schema says a string; 0 is no date
            raise _error(error)
        return handler(value)

    check.__name__ = f"_{kind}"
    return check


def _no_bool(expected: list[Any]) -> Callable[[Any, Callable[[Any], Any]], Any]:
    """For a ``Literal`` or an ``Enum`` of numbers: ``True`` is not 1 in JSON."""

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if _is_bool(value):
            from pydantic_core import PydanticCustomError

            shown = " or ".join(repr(e) for e in expected)
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": shown})
        return handler(value)

    return check


def _wrap(fn: Callable[[Any, Callable[[Any], Any]], Any], node: dict[str, Any]) -> dict[str, Any]:
    from pydantic_core import core_schema

    ref = node.pop("ref", None)  # a definition-ref must reach the checked schema, not the bare one
    wrapped = dict(core_schema.no_info_wrap_validator_function(fn, node))  # type: ignore[arg-type]
    if ref is not None:
        wrapped["ref"] = ref
    return wrapped


def _numbers_in(values: list[Any]) -> bool:
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and not any(
        isinstance(v, bool) for v in values
    )


class _Checker:
    """The validator of a signature's model by JSON's types (``Params``).

    It is a copy of the model's pydantic-core schema, rewritten. ``tolerant=False``: the
    plain types made strict, all in pydantic-core; ``True``: they stay lax behind a check
    that refuses what JSON would not mean (a bool or a string for a number), so numpy
    scalars and ``2.0`` for an ``int`` pass. Fields marked ``Strict()`` keep what they say.

    pydantic-core validates a complete model with the validator its class holds, whatever
    schema it is given, so a model (or dataclass) inside is first checked by a validator
    of its own, built from its fields and config on first use, then built by its class's.
    The signature's own model is validated field by field: its values come out of this
    one pass (``validate_python`` returns ``(values, extra, fields_set)``).
    """

    def __init__(self, model: type[pydantic.BaseModel], *, tolerant: bool) -> None:
        self.tolerant = tolerant
        self.definitions: list[Any] = []
        schema = model.__pydantic_core_schema__
        if schema["type"] == "definitions":
            self.definitions = self.walk(schema["definitions"])
            schema = schema["schema"]
        assert schema["type"] == "model", schema["type"]  # create_model() in Params.model made it
        self.validator = self._compile(self.walk(schema["schema"]), schema.get("config"))

    def _compile(self, schema: Any, config: Any) -> pydantic_core.SchemaValidator:
        from pydantic_core import SchemaValidator

        if self.definitions:
            schema = {"type": "definitions", "schema": schema, "definitions": self.definitions}
        return SchemaValidator(schema, config)

    def walk(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.walk(x) for x in node]
        if isinstance(node, tuple):  # a union's (schema, label) choice
            return tuple(self.walk(x) for x in node)
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if not isinstance(kind, str):  # a mapping of schemas: a model's fields, a tagged union's choices
            return {k: self.walk(v) for k, v in node.items()}
        if kind == "definitions":  # nested ones (the model's own are read in __init__)
            self.definitions.extend(self.walk(node["definitions"]))
            return self.walk(node["schema"])
        if kind in ("model", "dataclass") and not node.get("custom_init"):  # a custom __init__ decides
            return self._nested(node)
        out = {k: (v if k in _DATA_KEYS else self.walk(v)) for k, v in node.items()}
        if kind == "typed-dict":
            out.pop("cls", None)  # no prebuilt validator may stand in for this schema
        if kind == "union":
            out["choices"] = [c if isinstance(c, tuple) else (c, f"{_CHOICE}{i}") for i, c in enumerate(out["choices"])]
            return out
        if out.get("strict") is not None:
            return out  # the user said Strict() for this one
        if kind == "str":
            out["strict"] = True  # lax str only adds bytes, which JSON cannot send
        elif kind in ("int", "float", "bool"):
            if not self.tolerant:
                out["strict"] = True
            else:
                return _wrap({"int": _int, "float": _float, "bool": _bool}[kind], out)
        elif kind in _TEMPORAL:
            return _wrap(_not_number(kind), out)
        elif kind == "literal" and _numbers_in(list(out.get("expected", ()))):
            return _wrap(_no_bool(list(out["expected"])), out)
        elif kind == "enum" and _numbers_in([m.value for m in out.get("members", ())]):
            return _wrap(_no_bool([m.value for m in out["members"]]), out)
        return out

    def _nested(self, node: dict[str, Any]) -> dict[str, Any]:
        """A model or dataclass node → its fields checked by a validator of their own, then
        the node as it was (its class builds the value)."""
        cls, inner, config = node["cls"], self.walk(node["schema"]), node.get("config")
        built: list[pydantic_core.SchemaValidator] = []

        def check(value: Any, handler: Callable[[Any], Any]) -> Any:
            if not isinstance(value, cls):  # an instance was validated when it was made
                if not built:
                    built.append(self._compile(inner, config))
                built[0].validate_python(value)  # its errors keep their place in the message
            return handler(value)

        check.__name__ = f"_check_{getattr(cls, '__name__', 'model')}"
        return _wrap(check, dict(node))


def _either(messages: list[str]) -> str:
    """``["Input should be a valid integer", "Input should be a valid string"]`` →
    ``Input should be a valid integer or a valid string``."""
    lead = "Input should be "
    if len(messages) > 1 and all(m.startswith(lead) for m in messages):
        return lead + " or ".join(m[len(lead) :] for m in messages)
    return "; or ".join(messages)


def _model_name(service: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", service) if p) + "Input"


def short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def merge(msg: dict[str, Any], result: Any, output: str) -> None:
    """Apply a service's return value to the message, in place (DESIGN §1 rules)."""
    if result is None:
        return
    if type(result) is dict or isinstance(result, Mapping):
        msg.update(result)
    elif callable(getattr(result, "model_dump", None)):
        msg.update(result.model_dump(mode="json"))
    else:
        msg[output] = result
