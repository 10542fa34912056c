"""How a callable reads its parameters from a message: names, type hints, pydantic validation.

Also the rules for applying a stage's return value to the message (``merge``) and for the
names services and actions may have.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .callables import unwrap
from .errors import BadMessage, WiringError

if TYPE_CHECKING:
    import pydantic

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
    if ann is Any or ann is inspect.Parameter.empty:
        return ""
    if isinstance(ann, type) and not typing.get_args(ann):
        return ann.__name__
    return str(ann).replace("typing.", "")


class Params:
    """How one callable reads its parameters from a message.

    Values whose type already is the annotated plain type (``str``, ``int``, ...) pass
    untouched; anything else goes through a pydantic model built from the signature,
    which coerces it or explains what is wrong.
    """

    __slots__ = (
        "_fields",
        "_model",
        "_plan",
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
            hints = typing.get_type_hints(target)
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

    def model(self) -> type[pydantic.BaseModel]:
        """The pydantic model of these parameters (built on first use)."""
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
        import pydantic

        model = self.model()
        try:
            obj = model.model_validate(kw)
        except pydantic.ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = str(err["loc"][0]) if err.get("loc") else None
            got = kw.get(field, MISSING) if field else MISSING
            shown = "" if got is MISSING else f" (got {type(got).__name__} {short(got)})"
            raise BadMessage(
                f"Service {self.service!r}: field {field!r}: {err['msg']}{shown}.",
                field=field,
                service=self.service,
            ) from None
        out = {}
        for attr, name in self._fields.items():
            if name in kw:
                out[name] = getattr(obj, attr)
        return out

    def signature_text(self) -> str:
        parts = []
        for name in self.names:
            t = _describe_type(self.annotations[name])
            parts.append(f"{name}: {t}" if t else name)
        if self.whole:
            parts.append("**message")
        return ", ".join(parts)


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
