"""Services: the ``@service`` decorator, the ``Service`` base class and ``@handle`` actions.

A service reads its parameters by name from a message (a ``dict``), validated and
coerced from its type hints, and returns what is merged into the message. Services
know nothing of transports: the runtime and the endpoints call ``run``/``arun``.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from .errors import BadMessage, ConfigError, ControlFlow, Retry, RetryExhausted, StopFlow, WiringError

if TYPE_CHECKING:
    import pydantic

    from .flow import Flow

__all__ = ["Service", "handle", "lift", "service"]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_EXACT = (str, int, float, bool, dict, list)
_MISSING: Any = object()


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
            hints = typing.get_type_hints(fn)
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
            value = msg.get(name, _MISSING)
            if value is _MISSING:
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

    def compile(self, fn: Callable[..., Any], svc: FunctionService) -> Callable[[dict[str, Any]], None] | None:
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
            "_M": _MISSING,
            "_merge": merge,
            "_out": svc.output,
        }
        lines = ["def run(msg):", "    _svc.calls += 1"]
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
            got = kw.get(field, _MISSING) if field else _MISSING
            shown = "" if got is _MISSING else f" (got {type(got).__name__} {_short(got)})"
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


def _short(value: Any, limit: int = 40) -> str:
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


def run_with_retry(
    service: Service, step: Callable[[dict[str, Any]], None], msg: dict[str, Any], first: Retry | None = None
) -> None:
    """Run ``step(msg)``, running it again while it raises ``Retry`` (blocking pauses).

    ``first`` is the ``Retry`` a try made before this was called: it counts as an attempt.
    """
    attempts = 0
    retry = first
    while True:
        if retry is not None:
            attempts += 1
            if attempts > retry.max:
                raise exhausted(service, retry, attempts - 1) from retry
            if retry.after:
                time.sleep(retry.after)
        try:
            step(msg)
            return
        except Retry as exc:
            retry = exc


def _tag(exc: BaseException, name: str) -> BaseException:
    """Remember the innermost service an exception came from (for error rows and replies)."""
    if not isinstance(exc, ControlFlow) and not hasattr(exc, "_svckit_service"):
        try:
            exc._svckit_service = name  # type: ignore[attr-defined]
        except AttributeError:  # exceptions with __slots__
            pass
    return exc


def exhausted(service: Service, retry: Retry, tries: int) -> BaseException:
    cause = retry.__cause__
    if cause is not None:
        return cause
    return RetryExhausted(
        f"Service {service.name!r} asked to be retried and still failed after {tries} retries.",
        service=service.name,
    )


class Service:
    """Base class of everything that handles messages: function and class services, flows.

    Subclass it to write a class service: typed class attributes are its config,
    validated when it is constructed; ``process(self, **params)`` handles a message;
    optional ``setup()``/``teardown()`` run when it is served and stopped;
    ``loop(self)`` runs every ``interval`` seconds once served; methods marked
    ``@sk.handle("reset")`` are extra actions.

    Examples
    --------
    >>> import svckit as sk
    >>> class Scale(sk.Service):
    ...     factor: float = 2.0
    ...     def process(self, x: float) -> dict:
    ...         return {"y": x * self.factor}
    >>> Scale(factor=3)(x=2)
    {'x': 2, 'y': 6.0}
    >>> Scale(factr=3)
    Traceback (most recent call last):
    ...
    svckit.errors.ConfigError: Scale got an unknown config key 'factr'; its config keys are: factor.
    """

    name: str
    output: str
    #: True when running it needs an event loop (it has ``async def`` parts).
    is_async: bool = False
    #: True when it must run as its own step on the runtime (async or fans out).
    concurrent: bool = False
    #: What a flow may hold it as: "stage" (takes and gives messages), "source", "sink".
    role: ClassVar[str] = "stage"
    #: Messages this (leaf) service handled, and how many raised: drawn in flow pictures.
    calls: int = 0
    failures: int = 0

    _config: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A class with loop() is a source: it stands first in a flow (sources.py runs it).
        if callable(getattr(cls, "loop", None)) and "role" not in cls.__dict__:
            cls.role = "source"

    def __init__(self, *args: Any, name: str | None = None, output: str | None = None, **config: Any) -> None:
        cls = type(self)
        if args:
            keys = list(_config_fields(cls))
            example = f"{cls.__name__}({keys[0]}=...)" if keys else f"{cls.__name__}()"
            raise ConfigError(
                f"{cls.__name__} takes its config as keywords, not positional values: {example}. "
                f"Its config keys are: {', '.join(keys) or 'none'}."
            )
        values = _validate_config(cls, config)
        for key, value in values.items():
            setattr(self, key, value)
        self.config = values
        self.name = check_name(name or snake(cls.__name__), "service name")
        self.output = output or self.name
        process = getattr(self, "process", None)
        self._params = Params(process, self.name) if process is not None else None
        self.is_async = process is not None and inspect.iscoroutinefunction(process)
        self.concurrent = self.is_async
        self._actions = {a: Params(m, f"{self.name}.{a}") for a, m in _find_actions(self).items()}

    # -- running -----------------------------------------------------------
    def _step(self, msg: dict[str, Any]) -> None:
        assert self._params is not None
        merge(msg, self.process(**self._params.bind(msg)), self.output)  # type: ignore[attr-defined]

    def run(self, msg: dict[str, Any]) -> None:
        """Handle ``msg`` synchronously, updating it in place."""
        if self._params is None:
            if self.role == "source":
                return  # a source without process() lets a message pass on unchanged
            raise WiringError(f"Service {self.name!r} has no process() method, so it cannot handle messages.")
        if self.is_async:
            from .runtime import runtime

            runtime().call(self.arun(msg, runtime()))
            return
        self.calls += 1
        try:
            run_with_retry(self, self._step, msg)
        except Exception as exc:
            _tag(exc, self.name)
            self.failures += not isinstance(exc, ControlFlow)
            raise

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        """Handle ``msg`` on the runtime loop; blocking code goes to the worker pool."""
        if not self.is_async:
            await rt.blocking(self.run, msg)
            return
        assert self._params is not None
        self.calls += 1
        attempts = 0
        while True:
            try:
                merge(msg, await self.process(**self._params.bind(msg)), self.output)  # type: ignore[attr-defined]
                return
            except Retry as retry:
                attempts += 1
                if attempts > retry.max:
                    raise _tag(exhausted(self, retry, attempts - 1), self.name) from retry
                if retry.after:
                    import asyncio

                    await asyncio.sleep(retry.after)
            except ControlFlow:
                raise
            except Exception as exc:
                _tag(exc, self.name)
                self.failures += 1
                raise

    def __call__(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Run on one message right here and return the resulting message.

        ``svc(text="a b")`` and ``svc({"text": "a b"})`` are the same call.
        """
        # ``fields`` is a new dict made for this call: it can be the message itself
        message = fields if msg is None else _message(self, msg, fields)
        try:
            self.run(message)
        except StopFlow:
            pass
        return message

    async def acall(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Awaitable twin of calling the service: runs it on the runtime, from any loop."""
        import asyncio

        from .runtime import runtime

        message = _message(self, msg, fields)
        rt = runtime()
        try:
            await asyncio.wrap_future(rt.submit(self.arun(message, rt)))
        except StopFlow:
            pass
        return message

    def emit(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """From ``loop()``: send a message downstream (besides what ``loop()`` returns).

        Works while the service is served as a source; from a sync ``loop()`` it waits
        while the pipeline's queue is full, from an ``async`` one a full queue drops it
        (counted). Outside serving it raises ``StateError``.
        """
        hook = getattr(self, "_emit_hook", None)
        if hook is None:
            from .errors import StateError

            raise StateError(
                f"{self.name}.emit() sends messages downstream only while it is served as a source: "
                f"serve it with sk.serve(...) first."
            )
        hook(_message(self, msg, fields))

    # -- lifecycle hooks -----------------------------------------------------
    def setup(self) -> None:
        """Called once when served, before the first message (in the worker pool)."""

    def teardown(self) -> None:
        """Called once when stopped (in the worker pool)."""

    # -- structure -------------------------------------------------------------
    def leaves(self) -> Iterator[Service]:
        """Every leaf service inside this one (itself for a leaf)."""
        yield self

    def actions(self) -> dict[str, tuple[Callable[..., Any], Params]]:
        """Extra actions (``@handle``) of this service, by action name."""
        return {a: (getattr(self, _action_attr(self, a)), p) for a, p in self._actions.items()}

    def describe(self) -> str:
        """A short, deterministic one-line description."""
        if self._params is None:
            return self.name
        return f"{self.name}({self._params.signature_text()})"

    def input_params(self) -> list[Params]:
        """Parameter readers of the stages a message meets first (for the OpenAPI schema)."""
        return [self._params] if self._params is not None else []

    def _repr_html_(self) -> str:
        from .display import html

        return html(self)

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "config", {}).items())
        return f"<Service {type(self).__name__}({cfg})>" if cfg else f"<Service {self.describe()}>"

    # -- composition -----------------------------------------------------------
    def __rshift__(self, other: Any) -> Flow:
        from .flow import Flow

        right = lift(other, strict=False)
        if right is None:
            return NotImplemented
        return Flow.chain(self, right)

    def __rrshift__(self, other: Any) -> Flow:
        from .flow import Flow

        left = lift(other, strict=False)
        if left is None:
            return NotImplemented
        return Flow.chain(left, self)


class FunctionService(Service):
    """A service made from a function by ``@sk.service``.

    Calling it runs it on one message; the plain function stays available as ``.fn``.
    """

    def __init__(
        self, fn: Callable[..., Any], *, name: str | None = None, output: str | None = None, inline: bool = False
    ) -> None:
        default = getattr(fn, "__name__", None) or snake(type(fn).__name__)
        if default == "<lambda>":
            default = "lambda"
        self.fn = fn
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)
        self.config = {}
        self.name = check_name(name or default, "service name")
        self.output = output or self.name
        self._params = Params(fn, self.name)
        call = type(fn).__dict__.get("__call__")  # a callable object's own method
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)
        if inline and self.is_async:
            raise WiringError(f"Service {self.name!r} is async def: it runs on the loop already; drop inline=True.")
        self.inline = inline
        self.concurrent = self.is_async or inline  # its own step on the runtime: no hop to the pool
        self._actions = {}
        self._bind = self._params.bind
        fast = None if self.is_async else self._params.compile(fn, self)
        if fast is not None:
            self.run = fast  # type: ignore[method-assign,assignment]  # this instance's hot path
        self.return_annotation = _return_annotation(fn)

    def _step(self, msg: dict[str, Any]) -> None:
        result = self.fn(**self._bind(msg))
        if result is None:
            return
        if type(result) is dict:
            msg.update(result)
        else:
            merge(msg, result, self.output)

    def run(self, msg: dict[str, Any]) -> None:
        if self.is_async:
            super().run(msg)
            return
        self.calls += 1
        self._guarded(msg)

    def _guarded(self, msg: dict[str, Any]) -> None:
        """The generic step: validates, retries on ``Retry``, tags and counts failures."""
        try:
            self._step(msg)
        except Exception as exc:
            self._raised(msg, exc)

    def _raised(self, msg: dict[str, Any], exc: Exception) -> None:
        """``exc`` came out of the function: retry it if it asked to, else tag, count, raise."""
        if isinstance(exc, Retry):
            try:
                run_with_retry(self, self._step, msg, exc)
                return
            except Exception as again:
                exc = again
        _tag(exc, self.name)
        self.failures += not isinstance(exc, ControlFlow)
        raise exc

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        if not self.is_async:
            if self.inline:
                self.run(msg)  # declared quick: right here on the loop, like an async def
            else:
                await rt.blocking(self.run, msg)
            return
        self.calls += 1
        attempts = 0
        while True:
            try:
                merge(msg, await self.fn(**self._bind(msg)), self.output)
                return
            except Retry as retry:
                attempts += 1
                if attempts > retry.max:
                    raise _tag(exhausted(self, retry, attempts - 1), self.name) from retry
                if retry.after:
                    import asyncio

                    await asyncio.sleep(retry.after)
            except ControlFlow:
                raise
            except Exception as exc:
                _tag(exc, self.name)
                self.failures += 1
                raise

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"


def _return_annotation(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:
        return Any


def _message(svc: Service, msg: Any, fields: dict[str, Any]) -> dict[str, Any]:
    if msg is None:
        return dict(fields)
    if not isinstance(msg, Mapping):
        raise BadMessage(
            f"{svc.name}() takes a message dict or keyword fields, not a {type(msg).__name__}; "
            f"write {svc.name}(field=value). The plain function of a function service is its .fn.",
            service=svc.name,
        )
    message = dict(msg)
    message.update(fields)
    return message


def _action_attr(svc: Service, action: str) -> str:
    for attr in dir(type(svc)):
        member = getattr(type(svc), attr, None)
        if getattr(member, "_svckit_action", None) == action:
            return attr
    raise KeyError(action)


def _find_actions(svc: Service) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for attr in dir(type(svc)):
        if attr.startswith("__"):
            continue
        member = getattr(type(svc), attr, None)
        action = getattr(member, "_svckit_action", None)
        if action is None:
            continue
        if action in found:
            raise WiringError(f"Service class {type(svc).__name__} declares action {action!r} twice.")
        found[action] = getattr(svc, attr)
    return found


_BASE_NAMES: frozenset[str] = frozenset()


def _is_svckit_class(klass: type) -> bool:
    """True for svckit's own classes (a module-level class of a ``svckit.*`` module)."""
    module = klass.__module__
    if module != "svckit" and not module.startswith("svckit."):
        return False
    return getattr(sys.modules.get(module), klass.__qualname__, None) is klass


def _config_fields(cls: type[Service]) -> dict[str, tuple[Any, Any]]:
    """The typed class attributes of a user's Service subclass: name → (type, default)."""
    cached = cls.__dict__.get("_config")
    if cached is not None:
        return cached
    global _BASE_NAMES
    if not _BASE_NAMES:
        _BASE_NAMES = frozenset(dir(Service)) | {"config", "fn", "is_async", "concurrent", "name", "output"}
    fields: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or _is_svckit_class(klass):
            continue
        try:
            hints = inspect.get_annotations(klass, eval_str=True)
        except Exception as exc:
            raise ConfigError(
                f"Service class {klass.__name__}: cannot resolve the type of its config ({exc}). "
                "Define the types it names before the class."
            ) from exc
        for key, ann in hints.items():
            if key.startswith("_") or typing.get_origin(ann) is ClassVar or ann is ClassVar:
                continue
            if key in _BASE_NAMES and key != "interval":
                raise ConfigError(
                    f"Service class {klass.__name__}: config key {key!r} is a name svckit's Service "
                    "uses itself; rename it."
                )
            default = klass.__dict__.get(key, ...)
            fields[key] = (ann, default)
    if callable(getattr(cls, "loop", None)) and "interval" not in fields:
        # a loop service always has an interval; a plain `interval = 0.2` sets its default
        default = getattr(cls, "interval", 1.0)
        fields["interval"] = (float, default if isinstance(default, int | float) else 1.0)
    cls._config = fields
    return fields


def _validate_config(cls: type[Service], config: dict[str, Any]) -> dict[str, Any]:
    fields = _config_fields(cls)
    unknown = [k for k in config if k not in fields]
    if unknown:
        keys = ", ".join(fields) or "none"
        raise ConfigError(f"{cls.__name__} got an unknown config key {unknown[0]!r}; its config keys are: {keys}.")
    if not fields:
        return {}
    model = cls.__dict__.get("_config_model")
    import pydantic

    if model is None:
        spec = {k: (t, pydantic.Field(d)) for k, (t, d) in fields.items()}
        if "interval" in spec:
            spec["interval"] = (float, pydantic.Field(fields["interval"][1], gt=0))
        model = pydantic.create_model(  # type: ignore[call-overload]
            f"{cls.__name__}Config",
            __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=()),
            **spec,
        )
        cls._config_model = model  # type: ignore[attr-defined]
    try:
        obj = model.model_validate(config)
    except pydantic.ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(map(str, err.get("loc", ()))) or "?"
        if err.get("type") == "missing":
            raise ConfigError(f"{cls.__name__} needs config key {key!r}: {cls.__name__}({key}=...).") from None
        got = config.get(str(err["loc"][0]), _MISSING) if err.get("loc") else _MISSING
        shown = "" if got is _MISSING else f" (got {_short(got)})"
        raise ConfigError(f"{cls.__name__} config {key!r}: {err['msg']}{shown}.") from None
    return {k: getattr(obj, k) for k in fields}


@overload
def service(fn: F, /) -> FunctionService: ...
@overload
def service(
    fn: Callable[..., Any], /, *, name: str | None = None, output: str | None = None, inline: bool = False
) -> FunctionService: ...
@overload
def service(
    fn: None = None, /, *, name: str | None = None, output: str | None = None, inline: bool = False
) -> Callable[[Callable[..., Any]], FunctionService]: ...
def service(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    output: str | None = None,
    inline: bool = False,
) -> FunctionService | Callable[[Callable[..., Any]], FunctionService]:
    """Make a service of a function: ``@sk.service`` or ``@sk.service(name=..., output=...)``.

    Parameters are read by name from the incoming message and validated from the type
    hints. A returned ``dict`` is merged into the message, ``None`` passes it on, any
    other value is stored under ``output`` (default: the function's name).

    Once served, a plain ``def`` runs in the runtime's worker pool, so a slow or blocking
    function never stalls the loop (as FastAPI does with ``def`` endpoints); an
    ``async def`` runs on the loop itself. ``inline=True`` runs a plain ``def`` on the loop
    too: it saves the hop to the pool (tens of microseconds, and two waits for the GIL
    when a cell keeps the kernel busy), for quick functions that never block. A slow
    inline function holds up everything the runtime serves.

    Examples
    --------
    >>> import svckit as sk
    >>> @sk.service
    ... def parse(text: str) -> dict:
    ...     return {"words": text.split()}
    >>> parse(text="a b")
    {'text': 'a b', 'words': ['a', 'b']}
    >>> parse
    <Service parse(text: str)>
    """

    def wrap(f: Callable[..., Any]) -> FunctionService:
        if isinstance(f, Service):
            raise WiringError(f"{f!r} is already a service; @sk.service goes on a plain function.")
        if not callable(f):
            raise WiringError(f"@sk.service needs a function, got {type(f).__name__}.")
        return FunctionService(f, name=name, output=output, inline=inline)

    if fn is not None:
        return wrap(fn)
    return wrap


def handle(action: str | Callable[..., Any]) -> Any:
    """Mark a method of a ``Service`` subclass as an extra action (HTTP ``POST /action``).

    The method is left as it is, so it stays callable in a unit test.

    Examples
    --------
    >>> import svckit as sk
    >>> class Counter(sk.Service):
    ...     def process(self) -> dict:
    ...         return {}
    ...     @sk.handle("reset")
    ...     def reset(self) -> dict:
    ...         return {"reset": True}
    >>> sorted(Counter().actions())
    ['reset']
    """
    if callable(action):
        action._svckit_action = check_name(action.__name__, "action")  # type: ignore[attr-defined]
        return action
    name = check_name(action, "action")

    def mark(method: F) -> F:
        method._svckit_action = name  # type: ignore[attr-defined]
        return method

    return mark


@overload
def lift(obj: Any) -> Service: ...
@overload
def lift(obj: Any, *, strict: bool) -> Service | None: ...
def lift(obj: Any, *, strict: bool = True) -> Service | None:
    """A ``Service`` for ``obj``: services pass through, plain callables are wrapped."""
    if isinstance(obj, Service):
        return obj
    if callable(obj) and not isinstance(obj, type):
        return FunctionService(obj)
    if strict:
        raise WiringError(
            f"Cannot use a {type(obj).__name__} as a stage: use a function, an sk.service or an sk.Service."
        )
    return None
