"""Services: the ``Service`` base class, ``@service`` functions, ``@handle`` actions, and binding.

A service reads its parameters by name from a message (a ``dict``), validated and
coerced from its type hints, and returns what is merged into the message. Services
know nothing of transports: the request path and pipelines call ``run``/``arun``.

Serving never runs the user's objects themselves: it ``bind``s a copy of every stage,
with its own counters (and, for sinks and sources, its own sockets), so one service
object served in two flows counts in each separately. Called right in a cell, a service
runs as it is: its ``setup()`` once before the first call, its ``teardown()`` at
``sk.shutdown()``.
"""

from __future__ import annotations

import asyncio
import copy
import typing
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, overload

from .callables import generator_kind, is_async_callable
from .config import config_fields, validate_config
from .errors import BadMessage, ConfigError, ControlFlow, Retry, StateError, StopFlow, WiringError
from .metrics import instrument
from .params import Params, check_name, merge, snake
from .placement import Placement
from .running import Binder, aretrying, cell_ready, note_origin, retrying, set_up_in_cell, trimmed
from .runtime import run_here
from .streaming import collect, pump

__all__ = ["Action", "FunctionService", "Service", "check_methods", "handle", "lift", "service"]
F = TypeVar("F", bound=Callable[..., Any])


class Service:
    """Base class of everything that handles messages: function and class services, flows.

    Subclass it to write a class service: typed class attributes are its config,
    validated when it is constructed; ``process(self, **params)`` handles a message;
    optional ``setup()``/``teardown()`` run when it is served and stopped (called in a
    cell: before its first call, and at ``sk.shutdown()``); ``loop(self)`` runs every
    ``interval`` seconds once served; methods marked ``@sk.handle("reset")`` are extra actions.

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
    #: Where a plain ``def`` runs: True on the loop from the first call, False always in the
    #: worker pool, None (the default) in the pool until it proves quick (``svckit.placement``).
    inline: bool | None = None
    #: On a bound plain ``def`` stage: where it runs now (``svckit.placement.Placement``).
    _place: Placement | None = None
    #: The HTTP methods its action answers (``@sk.service(methods=("GET", "POST"))``); a GET
    #: reads the message's fields from the query string.
    methods: tuple[str, ...] = ("POST",)
    #: True when it yields several messages per message (a generator stage, or a flow with one).
    streams: bool = False
    #: ``"sync"`` or ``"async"`` for a generator stage (its ``process`` or function yields).
    _generator: str | None = None
    #: What a flow may hold it as: "stage" (takes and gives messages), "source", "sink", "middleware".
    role: ClassVar[str] = "stage"
    #: Messages this (leaf) service handled, and how many raised: drawn in flow pictures.
    calls: int = 0
    failures: int = 0
    #: Flows, branches, parallels and middleware wrappers: made of other services.
    _composite: ClassVar[bool] = False
    #: On a bound copy: the user's object it was copied from.
    _origin: Service | None = None

    _config: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A class with loop() is a source: it stands first in a flow (pipelines run it).
        if callable(getattr(cls, "loop", None)) and "role" not in cls.__dict__:
            cls.role = "source"

    def __init__(self, *args: Any, name: str | None = None, output: str | None = None, **config: Any) -> None:
        cls = type(self)
        if args:
            keys = list(config_fields(cls))
            example = f"{cls.__name__}({keys[0]}=...)" if keys else f"{cls.__name__}()"
            raise ConfigError(
                f"{cls.__name__} takes its config as keywords, not positional values: {example}. "
                f"Its config keys are: {', '.join(keys) or 'none'}."
            )
        values = validate_config(cls, config)
        for key, value in values.items():
            setattr(self, key, value)
        self.config = values
        self.name = check_name(name or snake(cls.__name__), "service name")
        self.output = output or self.name
        process = getattr(self, "process", None)
        self._params = Params(process, self.name) if process is not None else None
        self.is_async = process is not None and is_async_callable(process)
        self._generator = generator_kind(process) if process is not None else None
        if self._generator is not None:
            self.streams = True
            self.is_async = True  # it runs as a stream on the loop (a def generator's body in the pool)
        self.concurrent = self.is_async
        self._actions = {a: Params(m, f"{self.name}.{a}") for a, m in _find_actions(self).items()}
        self.methods = check_methods(cls.methods, self.name)

    @property
    def _has_setup(self) -> bool:
        """True when its class has a ``setup`` or ``teardown`` of its own (not svckit's no-op)."""
        cls = type(self)
        return cls.setup is not Service.setup or cls.teardown is not Service.teardown

    def _target(self) -> Callable[..., Any]:
        """The user's callable a message is handed to: ``process`` (a function service's ``fn``)."""
        return self.process  # type: ignore[attr-defined,no-any-return]

    # -- running -----------------------------------------------------------
    def _step(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        assert self._params is not None
        merge(msg, self._target()(**self._params.bind(msg)), self.output)

    async def _astep(self, msg: dict[str, Any]) -> None:
        assert self._params is not None
        merge(msg, await self._target()(**self._params.bind(msg)), self.output)

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, ControlFlow):
            self.failures += 1
            note_origin(exc, self.name)

    def run(self, msg: dict[str, Any]) -> None:
        """Handle ``msg`` synchronously, updating it in place."""
        __tracebackhide__ = True
        if self._params is None:
            if self.role == "source":
                return  # a source without process() lets a message pass on unchanged
            raise WiringError(f"Service {self.name!r} has no process() method, so it cannot handle messages.")
        if self.is_async:
            run_here(lambda rt: self.arun(msg, rt))
            return
        self.calls += 1
        try:
            retrying(self, self._step, msg)
        except Exception as exc:
            self._failed(exc)
            raise

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        """Handle ``msg`` on the runtime loop; blocking code goes to the worker pool."""
        if self.streams:
            await _last(self, msg, rt)
            return
        if not self.is_async:
            place = self._place
            if self.inline or (place is not None and place.loop):
                self.run(msg)  # declared or proven quick: right here on the loop, like an async def
            else:
                await rt.blocking(self.run, msg)
            return
        self.calls += 1
        try:
            await aretrying(self, self._astep, msg)
        except Exception as exc:
            self._failed(exc)
            raise

    def __call__(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Run on one message right here and return the resulting message.

        ``svc(text="a b")`` and ``svc({"text": "a b"})`` are the same call. The first call
        runs the ``setup()`` of every stage that has one. A streaming service (one with a
        generator stage) returns the list of messages it yields (see ``stream``).
        """
        __tracebackhide__ = True
        # ``fields`` is a new dict made for this call: it can be the message itself
        message = fields if msg is None else _message(self, msg, fields)
        if self._needs_setup and self not in cell_ready:
            set_up_in_cell(self)
        if self.streams:
            return self._collected(message)  # type: ignore[return-value]
        try:
            self.run(message)
        except StopFlow:
            pass
        except Exception as exc:
            raise trimmed(exc)
        return message

    @property
    def _needs_setup(self) -> bool:
        return any(leaf._has_setup for leaf in self.leaves())

    def stream(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> list[dict[str, Any]]:
        """Run on one message right here and return every message that comes out: one for a
        plain service, each message a generator stage yields (through the stages after it)
        for a streaming one.

        Examples
        --------
        >>> import svckit as sk
        >>> @sk.service
        ... def words(text: str):
        ...     for word in text.split():
        ...         yield {"word": word}
        >>> [m["word"] for m in (words >> sk.service(lambda word: word.upper(), name="up")).stream(text="a b")]
        ['a', 'b']
        """
        __tracebackhide__ = True
        message = fields if msg is None else _message(self, msg, fields)
        if self._needs_setup and self not in cell_ready:
            set_up_in_cell(self)
        if not self.streams:
            return [self(message)]
        return self._collected(message)

    def _collected(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        __tracebackhide__ = True
        try:
            return run_here(lambda rt: collect(self.astream(message, rt)))
        except Exception as exc:
            raise trimmed(exc)

    async def astream(self, msg: dict[str, Any], rt: Any) -> AsyncIterator[dict[str, Any]]:
        """The messages that come out for ``msg``, on the runtime loop: ``msg`` itself once
        it has been handled, for a service that does not stream; for a generator stage, each
        message it yields, a copy of ``msg`` with the item merged in (a dict merged, ``None``
        as it is, another value under ``output``)."""
        if self._generator is None:
            await self.arun(msg, rt)
            yield msg
            return
        assert self._params is not None
        self.calls += 1
        try:
            kw = self._params.bind(msg)
            fn = self._target()
            if self._generator == "async":
                items: AsyncIterator[Any] = fn(**kw)
            else:
                items = pump(lambda: fn(**kw), asyncio.get_running_loop(), rt.pool)
            try:
                async for item in items:
                    out = dict(msg)
                    merge(out, item, self.output)
                    yield out
            finally:
                await items.aclose()  # type: ignore[attr-defined]
        except Exception as exc:
            self._failed(exc)
            raise

    def emit(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """From ``loop()``: send a message downstream (besides what ``loop()`` returns).

        Works while the service is served as a source; from a sync ``loop()`` it waits
        while the pipeline's queue is full, from an ``async`` one a full queue drops it
        (counted). Outside serving it raises ``StateError``.
        """
        hook = getattr(self, "_emit_hook", None)
        if hook is None:
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

    async def open(self, binder: Binder, rt: Any) -> None:
        """svckit's own serving hook, on the runtime loop: a bound sink opens its socket here."""

    async def close(self) -> None:
        """svckit's own serving hook: release what ``open`` took (on the runtime loop)."""

    # -- binding -----------------------------------------------------------------
    def _bound_copy(self, binder: Binder) -> Service:
        """The copy serving runs (``Binder.bind`` asks for it); the user's object is left as it is."""
        clone = copy.copy(self)
        clone.calls = 0
        clone.failures = 0
        clone._bound(binder)
        instrument(clone)  # its own StageTimer: the time per call the dashboard's picture shows
        return clone

    def _bound(self, binder: Binder) -> None:
        """Fix up a fresh copy (its own counters are already zero)."""

    # -- structure -------------------------------------------------------------
    def leaves(self) -> Iterator[Service]:
        """Every leaf service inside this one (itself for a leaf)."""
        yield self

    def children(self) -> tuple[str, list[tuple[str, Service]]]:
        """How it is drawn: ``("leaf", [])``, or a layout and its labelled parts (see ``display``)."""
        return "leaf", []

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
    #: ``Flow.chain``, set by ``flow.py``: this module knows no flows.
    _chain: ClassVar[Callable[[Service, Service], Service] | None] = None
    #: ``scale.on``, set by ``scale.py``: this module knows no executors.
    _on: ClassVar[Callable[..., Service] | None] = None

    def on(self, executor: Any, *, limit: int | None = None, retries: int = 1) -> Service:
        """This stage with its calls run on ``executor``: a ``distributed.Client``, any
        ``concurrent.futures.Executor``, or a function that makes one (see ``svckit.scale``).

        A new stage; this one is left as it is. Each message is validated here, then the
        plain function and its keyword arguments run as one task (a function defined in a
        notebook travels by value, cloudpickle) while the runtime loop goes on. ``limit``
        bounds the tasks in flight (default: twice the workers' threads); a task whose
        worker died is resubmitted ``retries`` times, then answered ``WorkerLost``.
        """
        if Service._on is None:
            raise WiringError("svckit.scale is not loaded: import svckit to use .on().")
        return Service._on(self, executor, limit=limit, retries=retries)

    def __rshift__(self, other: Any) -> Service:
        right = lift(other, strict=False)
        if right is None or Service._chain is None:
            return NotImplemented
        return Service._chain(self, right)

    def __rrshift__(self, other: Any) -> Service:
        left = lift(other, strict=False)
        if left is None or Service._chain is None:
            return NotImplemented
        return Service._chain(left, self)


class FunctionService(Service):
    """A service made from a function by ``@sk.service``.

    Calling it runs it on one message; the plain function stays available as ``.fn``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        output: str | None = None,
        inline: bool | None = None,
        methods: Any = ("POST",),
    ) -> None:
        inner = getattr(fn, "func", None)  # functools.partial
        default = getattr(fn, "__name__", None) or getattr(inner, "__name__", None) or snake(type(fn).__name__)
        if default == "<lambda>":
            default = "lambda"
        self.fn = fn
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)
        self.config = {}
        self.name = check_name(name or default, "service name")
        self.output = output or self.name
        self._params = Params(fn, self.name)
        self.is_async = is_async_callable(fn)
        self._generator = generator_kind(fn)
        if inline and self.is_async:
            raise WiringError(f"Service {self.name!r} is async def: it runs on the loop already; drop inline=True.")
        if inline and self._generator:
            raise WiringError(
                f"Service {self.name!r} is a generator: it streams from the worker pool (an async def generator "
                "from the loop); drop inline=True."
            )
        self.inline = inline
        if self._generator is not None:
            self.streams = True
            self.is_async = True  # it runs as a stream on the loop (a def generator's body in the pool)
        self.concurrent = self.is_async or inline is True  # its own step on the runtime: no hop to the pool
        self.methods = check_methods(methods, self.name)
        self._actions = {}
        self._bind = self._params.bind
        self._compile()
        self.return_annotation = _return_annotation(fn)

    def _compile(self) -> None:
        """This instance's hot path: a ``run`` specialised for its signature (``Params.compile``)."""
        self.__dict__.pop("run", None)
        assert self._params is not None
        fast = None if self.is_async or self.streams else self._params.compile(self.fn, self)
        if fast is not None:
            self.run = fast  # type: ignore[method-assign,assignment]

    def _bound(self, binder: Binder) -> None:
        self._compile()  # the copied fast path would count on the original

    def _target(self) -> Callable[..., Any]:
        return self.fn

    @property
    def _has_setup(self) -> bool:
        return False

    def _step(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        result = self.fn(**self._bind(msg))
        if result is None:
            return
        if type(result) is dict:
            msg.update(result)
        else:
            merge(msg, result, self.output)

    def run(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        if self.is_async:
            super().run(msg)
            return
        self.calls += 1
        self._guarded(msg)

    def _guarded(self, msg: dict[str, Any]) -> None:
        """The generic step: validates, retries on ``Retry``, notes and counts failures."""
        __tracebackhide__ = True
        try:
            self._step(msg)
        except Exception as exc:
            self._raised(msg, exc)

    def _raised(self, msg: dict[str, Any], exc: Exception) -> None:
        """``exc`` came out of the function: retry it if it asked to, else note, count, raise."""
        __tracebackhide__ = True
        if isinstance(exc, Retry):
            try:
                retrying(self, self._step, msg, exc)
                return
            except Exception as again:
                exc = again
        self._failed(exc)
        raise exc

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"


class Action(Service):
    """One ``@sk.handle`` action of a bound service, as a node the request path runs: the
    reply is what the method returns (a dict as it is, another value under the action's name)."""

    def __init__(self, action: str, fn: Callable[..., Any], params: Params) -> None:
        self.name = action
        self.output = action
        self.config = {}
        self.fn = fn
        self._params = params
        self._actions = {}
        self.is_async = is_async_callable(fn)
        self.concurrent = self.is_async

    def _target(self) -> Callable[..., Any]:
        return self.fn

    def _step(self, msg: dict[str, Any]) -> None:
        assert self._params is not None
        self._reply(msg, self.fn(**self._params.bind(msg)))

    async def _astep(self, msg: dict[str, Any]) -> None:
        assert self._params is not None
        self._reply(msg, await self.fn(**self._params.bind(msg)))

    def _reply(self, msg: dict[str, Any], result: Any) -> None:
        msg.clear()
        if result is None:
            return
        if isinstance(result, Mapping):
            msg.update(result)
        else:
            msg[self.name] = result

    def run(self, msg: dict[str, Any]) -> None:
        if self.is_async:
            run_here(lambda rt: self.arun(msg, rt))
            return
        try:
            self._step(msg)
        except Exception as exc:
            note_origin(exc, self.name)
            raise

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        if not self.is_async:
            await rt.blocking(self.run, msg)
            return
        try:
            await self._astep(msg)
        except Exception as exc:
            note_origin(exc, self.name)
            raise


async def _last(svc: Service, msg: dict[str, Any], rt: Any) -> None:
    """Run a streaming ``svc`` where one message is expected (a pipeline, ``run``): every
    message goes through, and ``msg`` becomes the last one."""
    last = None
    async for out in svc.astream(dict(msg), rt):
        last = out
    if last is not None:
        msg.clear()
        msg.update(last)


_METHODS = ("GET", "POST")


def check_methods(methods: Any, name: str) -> tuple[str, ...]:
    """``methods`` as a tuple of upper-case HTTP methods (GET, POST), else ``WiringError``."""
    if isinstance(methods, str):
        methods = (methods,)
    try:
        out = tuple(dict.fromkeys(str(m).upper() for m in methods))
    except TypeError:
        out = ()
    if not out or any(m not in _METHODS for m in out):
        raise WiringError(
            f'{name!r}: methods={methods!r}; an action is served with GET, POST or both, e.g. methods=("GET", "POST").'
        )
    return out


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
        if generator_kind(member) is not None:
            raise WiringError(
                f"{type(svc).__name__}.{attr} (action {action!r}) is a generator: an @sk.handle action answers "
                "once. Return a list, or stream from the service's process() (a generator stage streams)."
            )
        found[action] = getattr(svc, attr)
    return found


def _return_annotation(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:
        return Any


@overload
def service(fn: F, /) -> FunctionService: ...
@overload
def service(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    output: str | None = None,
    inline: bool | None = None,
    methods: Sequence[str] = ("POST",),
) -> FunctionService: ...
@overload
def service(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    output: str | None = None,
    inline: bool | None = None,
    methods: Sequence[str] = ("POST",),
) -> Callable[[Callable[..., Any]], FunctionService]: ...
def service(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    output: str | None = None,
    inline: bool | None = None,
    methods: Sequence[str] = ("POST",),
) -> FunctionService | Callable[[Callable[..., Any]], FunctionService]:
    """Make a service of a function: ``@sk.service`` or ``@sk.service(name=..., output=...)``.

    Parameters are read by name from the incoming message and validated from the type
    hints. A returned ``dict`` is merged into the message, ``None`` passes it on, any
    other value is stored under ``output`` (default: the function's name).

    Once served, a plain ``def`` starts in the runtime's worker pool, so a slow or blocking
    function never stalls the loop (as FastAPI does with ``def`` endpoints); an
    ``async def`` runs on the loop itself. A ``def`` that has returned quickly, without
    waiting on anything, 100 calls in a row then runs on the loop too: that saves the hop
    to the pool (tens of microseconds, and two waits for the GIL when a cell keeps the
    kernel busy). If one of its calls there takes more than 10 ms, it goes back to the pool
    for good (logged, and shown by ``status()`` and the flow picture): a function that
    turns slow holds up the rest of the runtime for that one call (``svckit.placement``).
    ``inline=True`` runs it on the loop from the first call and never moves it;
    ``inline=False`` keeps it in the pool.

    ``methods=("GET", "POST")`` lets HTTP clients call it with ``GET /name?field=value``
    too: query fields are validated like a JSON body's, strings coerced to the annotated
    types (``?x=21`` is an ``int`` for ``x: int``). POST alone is the default.

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
        return FunctionService(f, name=name, output=output, inline=inline, methods=methods)

    if fn is not None:
        return wrap(fn)
    return wrap


def handle(action: str | Callable[..., Any], *, methods: Sequence[str] = ("POST",)) -> Any:
    """Mark a method of a ``Service`` subclass as an extra action (HTTP ``POST /action``).

    The method is left as it is, so it stays callable in a unit test. ``methods=("GET",)``
    serves it as ``GET /action?field=value`` instead (or as well, with ``("GET", "POST")``).

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
    allowed = check_methods(methods, name)

    def mark(method: F) -> F:
        method._svckit_action = name  # type: ignore[attr-defined]
        method._svckit_methods = allowed  # type: ignore[attr-defined]
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
