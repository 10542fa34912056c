"""Flows: immutable chains of services built with ``>>``, plus ``branch`` and ``parallel``.

A flow is itself a service. Composition validates the wiring at once; running passes
one message dict through each stage in turn (see ``params.merge`` for the rules). A
middleware in a flow wraps every stage after it (``middleware.Wrapped``).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from .errors import BadMessage, StopFlow, WiringError
from .middleware import Middleware, Wrapped
from .params import Params, check_name
from .placement import Placement
from .running import Binder, cell_ready, set_up_in_cell, trimmed
from .runtime import run_here
from .service import Service, _last, lift

__all__ = ["Branch", "Flow", "Parallel", "branch", "parallel"]


def _run_all(runs: tuple[Callable[[dict[str, Any]], None], ...], msg: dict[str, Any]) -> None:
    for run in runs:
        run(msg)


def _run_here(
    runs: tuple[Callable[[dict[str, Any]], None], ...],
    places: tuple[tuple[Placement, ...] | None, ...],
    msg: dict[str, Any],
) -> int:
    """Run ``runs`` on the loop, in order, while every ``def`` stage of the next one runs on
    the loop (``places``, one tuple per run; None for one that must stay in the pool); how
    many ran."""
    for i, run in enumerate(runs):
        here = places[i]
        if here is None:
            return i
        for place in here:
            if not place.loop:
                return i
        run(msg)
    return len(runs)


class Flow(Service):
    """Services run one after another on the same message: what ``a >> b`` builds.

    A flow is immutable: ``a >> b`` returns a new flow and changes neither side.

    Examples
    --------
    >>> import svckit as sk
    >>> @sk.service
    ... def parse(text: str) -> dict:
    ...     return {"words": text.split()}
    >>> @sk.service
    ... def count(words: list[str]) -> dict:
    ...     return {"n": len(words)}
    >>> flow = parse >> count
    >>> flow
    <Flow parse >> count>
    >>> flow(text="a b c")
    {'text': 'a b c', 'words': ['a', 'b', 'c'], 'n': 3}
    """

    def __init__(self, *stages: Any, name: str | None = None) -> None:
        if not stages:
            raise WiringError("A flow needs at least one stage.")
        lifted = tuple(lift(s) for s in stages)
        assert all(s is not None for s in lifted)
        _check_roles(lifted)  # type: ignore[arg-type]
        self.stages: tuple[Service, ...] = lifted  # type: ignore[assignment]
        self.named = name is not None
        self.name = check_name(name, "flow name") if name else "_".join(s.name for s in self.stages)
        self.output = self.name
        self.config = {}
        self._params = None
        self._actions = {}
        self.role = "source" if self.stages[0].role == "source" else "stage"  # type: ignore[misc]
        self._build()

    _composite = True

    def _build(self) -> None:
        body = _wrap(self.stages)
        self.is_async = any(s.is_async for s in body)
        self.concurrent = any(s.concurrent for s in body)
        self._body = body
        self.methods = self.stages[0].methods  # what requests meet first answers
        self.streams = any(s.streams for s in body)
        self._split: tuple[Flow | None, Service, Flow | None] | None = None
        if self.streams:
            # before the first streaming stage, that stage, and what runs on each message it yields
            i = next(k for k, s in enumerate(body) if s.streams)
            head = Flow._inner(body[:i]) if i else None
            tail = Flow._inner(body[i + 1 :]) if i + 1 < len(body) else None
            self._split = (head, body[i], tail)
        self._runs = tuple(s.run for s in body)
        self._segments = _segments(body)
        self._setup_needed = any(leaf._has_setup for leaf in self.leaves())

    def _bound_copy(self, binder: Binder) -> Service:
        clone = copy.copy(self)
        clone.stages = tuple(binder.bind(s) for s in self.stages)
        clone._build()
        return clone

    def children(self) -> tuple[str, list[tuple[str, Service]]]:
        return "sequence", [("", s) for s in self.stages]

    @property
    def _needs_setup(self) -> bool:
        return self._setup_needed

    @classmethod
    def chain(cls, left: Service, right: Service) -> Flow:
        """``left >> right``; anonymous flows on either side are flattened."""
        parts: list[Service] = []
        for side in (left, right):
            if isinstance(side, Flow) and not side.named:
                parts.extend(side.stages)
            else:
                parts.append(side)
        return cls(*parts)

    @classmethod
    def _inner(cls, stages: tuple[Service, ...]) -> Flow:
        """An anonymous flow of stages already checked (what a middleware wraps)."""
        flow = cls.__new__(cls)
        flow.stages = stages
        flow.named = False
        flow.name = "_".join(s.name for s in stages)
        flow.output = flow.name
        flow.config = {}
        flow._params = None
        flow._actions = {}
        flow._build()
        return flow

    def named_as(self, name: str) -> Flow:
        """A copy of this flow under another name (the name it is served and drawn as)."""
        return Flow(*self.stages, name=name)

    def run(self, msg: dict[str, Any]) -> None:
        __tracebackhide__ = True
        if self.is_async:
            run_here(lambda rt: self.arun(msg, rt))
            return
        for run in self._runs:
            run(msg)

    def __call__(self, msg: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        __tracebackhide__ = True
        if self.is_async or msg is not None:
            return super().__call__(msg, **fields)
        if self._setup_needed and self not in cell_ready:
            set_up_in_cell(self)
        try:  # the common case, `flow(field=...)`, without a layer of calls: it is per call
            for run in self._runs:
                run(fields)
        except StopFlow:
            pass
        except Exception as exc:
            raise trimmed(exc)
        return fields

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        if self.streams:
            await _last(self, msg, rt)
            return
        for kind, item, places in self._segments:
            if kind:
                await item.arun(msg, rt)
                continue
            # the stages proven quick run here, each looked at just before it runs (one moved
            # back a moment ago, even earlier in this message, does not); the rest, one hop
            ran = _run_here(item, places, msg)
            if ran < len(item):
                await rt.blocking(_run_all, item[ran:] if ran else item, msg)

    async def astream(self, msg: dict[str, Any], rt: Any) -> AsyncIterator[dict[str, Any]]:
        """Each message that comes out of the end: the stages after a generator stage run on
        every message it yields. A ``StopFlow`` before the generator replies the message so
        far, once; one after it, that yielded message so far."""
        if self._split is None:
            await self.arun(msg, rt)
            yield msg
            return
        head, stage, tail = self._split
        if head is not None:
            try:
                await head.arun(msg, rt)
            except StopFlow:
                yield msg
                return
        async for out in stage.astream(msg, rt):
            if tail is None:
                yield out
            elif tail.streams:
                async for last in tail.astream(out, rt):
                    yield last
            else:
                try:
                    await tail.arun(out, rt)
                except StopFlow:
                    pass
                yield out

    def leaves(self) -> Iterator[Service]:
        for stage in self.stages:
            yield from stage.leaves()

    def actions(self) -> dict[str, tuple[Callable[..., Any], Params]]:
        found: dict[str, tuple[Callable[..., Any], Params]] = {}
        seen: set[int] = set()
        for leaf in self.leaves():
            if id(leaf) in seen:
                continue
            seen.add(id(leaf))
            for action, entry in leaf.actions().items():
                if action in found:
                    raise WiringError(f"Flow {self.name!r}: two stages declare the action {action!r}.")
                found[action] = entry
        return found

    def input_params(self) -> list[Params]:
        return self.stages[0].input_params()

    def describe(self) -> str:
        return " >> ".join(_short(s) for s in self.stages)

    def __repr__(self) -> str:
        head = f"{self.name}: " if self.named else ""
        return f"<Flow {head}{self.describe()}>"


def _short(s: Service) -> str:
    if isinstance(s, Flow):
        return s.name if s.named else f"({s.describe()})"
    if isinstance(s, Branch | Parallel):
        return s.describe()
    return s.name


def _wrap(stages: tuple[Service, ...]) -> tuple[Service, ...]:
    """The stages as they run: a middleware and every stage after it become one ``Wrapped``."""
    for i, stage in enumerate(stages):
        if isinstance(stage, Middleware):
            rest = stages[i + 1 :]
            inner: Service | None = None
            if len(rest) == 1:
                inner = rest[0]
            elif rest:
                inner = Flow._inner(rest)
            return (*stages[:i], Wrapped(stage, inner))
    return stages


def _segments(stages: tuple[Service, ...]) -> tuple[tuple[bool, Any, Any], ...]:
    """Group runs of plain synchronous stages so each run is one hop to the worker pool, and
    less once its ``def`` stages are proven quick: ``(False, runs, placements)``, with each
    run's placements (None for one that must stay in the pool: a ``def`` middleware and what
    it wraps, a stage not bound by serving); ``(True, stage, None)`` for a stage with its
    own step."""
    out: list[tuple[bool, Any, Any]] = []
    pending: list[Service] = []

    def flush() -> None:
        places: list[tuple[Placement, ...] | None] = []
        for stage in pending:
            found = _placements(stage)
            places.append(tuple(found) if found is not None else None)
            if found is None:  # what runs inside it runs in the pool, whatever its calls take
                for leaf in stage.leaves():
                    inner = getattr(leaf, "_place", None)
                    if inner is not None:
                        inner.pin("it runs inside a part that stays in the worker pool (a def middleware)")
        out.append((False, tuple(stage.run for stage in pending), tuple(places)))
        pending.clear()

    for stage in stages:
        if stage.concurrent:
            if pending:
                flush()
            out.append((True, stage, None))
        else:
            pending.append(stage)
    if pending:
        flush()
    return tuple(out)


def _placements(stage: Service) -> list[Placement] | None:
    """Where every ``def`` a synchronous ``stage`` runs is placed (``svckit.placement``): its
    own, or its parts' in a flow or branch; None when some part has none (a ``def``
    middleware, a stage not bound by serving), so the whole must stay in the pool."""
    place = getattr(stage, "_place", None)
    if place is not None:
        return [place]
    if isinstance(stage, Flow):
        parts: list[Service] = list(stage._body)
    elif isinstance(stage, Branch):
        parts = list(stage.routes.values()) + ([stage.default] if stage.default is not None else [])
    else:
        return None
    found: list[Placement] = []
    for part in parts:
        inner = _placements(part)
        if inner is None:
            return None
        found += inner
    return found


def _check_roles(stages: tuple[Service, ...]) -> None:
    for i, stage in enumerate(stages):
        role = stage.role
        if isinstance(stage, Middleware) and stage.scope == "request":
            raise WiringError(
                f"{stage.name!r} is request-scope middleware: it sees requests before they are decoded, "
                "so it goes in sk.serve(..., middleware=[...]), not in a flow."
            )
        if role == "source" and i:
            raise WiringError(f"{stage.name!r} is a source: it can only stand first in a flow, not at place {i + 1}.")
        composite = stage._composite or isinstance(stage, Middleware)
        no_process = role == "stage" and getattr(stage, "_params", True) is None and not composite
        if no_process and (not callable(getattr(stage, "loop", None)) or i):
            raise WiringError(f"Service {stage.name!r} has no process() method, so it cannot take messages in a flow.")


class Branch(Service):
    """Route each message by the value of one of its fields; see ``branch``."""

    def __init__(self, key: str, routes: Mapping[Any, Any], default: Any = None, *, name: str | None = None) -> None:
        if not isinstance(key, str):
            raise WiringError(f"branch() routes by a field name (a str), got {type(key).__name__}.")
        if not isinstance(routes, Mapping) or not routes:
            raise WiringError("branch() needs a non-empty dict mapping field values to services.")
        self.key = key
        self.routes: dict[Any, Service] = {}
        for value, target in routes.items():
            svc = lift(target, strict=False)
            if svc is None:
                raise WiringError(
                    f"branch({key!r}): the route for {value!r} is a {type(target).__name__}, not a service."
                )
            self.routes[value] = svc
        self.default = lift(default) if default is not None else None
        targets = list(self.routes.values()) + ([self.default] if self.default else [])
        for t in targets:
            if t.role != "stage":
                raise WiringError(f"branch({key!r}): {t.name!r} is a {t.role}; routes must be stages.")
        self.name = check_name(name or f"branch_{key}", "branch name")
        self.output = self.name
        self.config = {}
        self._params = None
        self._actions = {}
        self.is_async = any(t.is_async for t in targets)
        self.concurrent = any(t.concurrent for t in targets)
        self.streams = any(t.streams for t in targets)

    _composite = True

    async def astream(self, msg: dict[str, Any], rt: Any) -> AsyncIterator[dict[str, Any]]:
        async for out in self.pick(msg).astream(msg, rt):
            yield out

    def _bound_copy(self, binder: Binder) -> Service:
        clone = copy.copy(self)
        clone.routes = {value: binder.bind(t) for value, t in self.routes.items()}
        clone.default = binder.bind(self.default) if self.default is not None else None
        return clone

    def children(self) -> tuple[str, list[tuple[str, Service]]]:
        parts = [(repr(v), t) for v, t in self.routes.items()]
        if self.default is not None:
            parts.append(("default", self.default))
        return f"branch:{self.key}", parts

    def pick(self, msg: Mapping[str, Any]) -> Service:
        if self.key not in msg:
            if self.default is not None:
                return self.default
            raise BadMessage(
                f"Branch {self.name!r} routes by field {self.key!r}, which the message lacks.",
                field=self.key,
                service=self.name,
            )
        value = msg[self.key]
        try:
            target = self.routes.get(value)
        except TypeError:
            target = None
        if target is None:
            target = self.default
        if target is None:
            choices = ", ".join(map(repr, self.routes))
            raise BadMessage(
                f"Branch {self.name!r}: field {self.key!r} is {value!r}; expected one of {choices}.",
                field=self.key,
                service=self.name,
            )
        return target

    def run(self, msg: dict[str, Any]) -> None:
        self.pick(msg).run(msg)

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        await self.pick(msg).arun(msg, rt)

    def leaves(self) -> Iterator[Service]:
        for t in self.routes.values():
            yield from t.leaves()
        if self.default is not None:
            yield from self.default.leaves()

    def describe(self) -> str:
        routes = ", ".join(f"{v!r}: {_short(t)}" for v, t in self.routes.items())
        if self.default is not None:
            routes += f", default: {_short(self.default)}"
        return f"branch({self.key!r}, {{{routes}}})"

    def __repr__(self) -> str:
        return f"<Branch {self.describe()}>"


class Parallel(Service):
    """Run several services on copies of one message and merge what they add; see ``parallel``."""

    def __init__(self, *branches: Any, name: str | None = None) -> None:
        if len(branches) < 2:
            raise WiringError("parallel() needs at least two services to fan out to.")
        self.branches = tuple(lift(b) for b in branches)
        for b in self.branches:
            assert b is not None
            if b.role != "stage":
                raise WiringError(f"parallel(): {b.name!r} is a {b.role}; only stages can run in parallel.")
            if b.streams:
                raise WiringError(
                    f"parallel(): {b.name!r} streams (it has a generator stage), so its messages cannot be "
                    "merged into one; put the generator before or after the parallel()."
                )
        self.name = check_name(name or "parallel_" + "_".join(b.name for b in self.branches), "name")  # type: ignore[union-attr]
        self.output = self.name
        self.config = {}
        self._params = None
        self._actions = {}
        self.is_async = any(b.is_async for b in self.branches)  # type: ignore[union-attr]
        self.concurrent = True

    _composite = True

    def _bound_copy(self, binder: Binder) -> Service:
        clone = copy.copy(self)
        clone.branches = tuple(binder.bind(b) for b in self.branches)  # type: ignore[arg-type]
        return clone

    def children(self) -> tuple[str, list[tuple[str, Service]]]:
        return "parallel", [("", b) for b in self.branches]  # type: ignore[misc]

    @staticmethod
    def _merge(msg: dict[str, Any], copies: list[dict[str, Any]]) -> None:
        before = dict(msg)
        for branch_msg in copies:
            for key, value in branch_msg.items():
                if key not in before or before[key] is not value:
                    msg[key] = value

    def run(self, msg: dict[str, Any]) -> None:
        if self.is_async:
            run_here(lambda rt: self.arun(msg, rt))
            return
        copies = []
        for b in self.branches:
            copy = dict(msg)
            b.run(copy)  # type: ignore[union-attr]
            copies.append(copy)
        self._merge(msg, copies)

    async def arun(self, msg: dict[str, Any], rt: Any) -> None:
        copies = [dict(msg) for _ in self.branches]
        results = await asyncio.gather(
            *(b.arun(c, rt) for b, c in zip(self.branches, copies, strict=True)),  # type: ignore[union-attr]
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
        self._merge(msg, copies)

    def leaves(self) -> Iterator[Service]:
        for b in self.branches:
            yield from b.leaves()  # type: ignore[union-attr]

    def input_params(self) -> list[Params]:
        return [p for b in self.branches for p in b.input_params()]  # type: ignore[union-attr]

    def describe(self) -> str:
        return "parallel(" + ", ".join(_short(b) for b in self.branches) + ")"  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Parallel {self.describe()}>"


def branch(key: str, routes: Mapping[Any, Any], default: Any = None, *, name: str | None = None) -> Branch:
    """Route by the value of field ``key``: ``sk.branch("kind", {"img": f, "txt": g}, default=h)``.

    A message whose ``key`` matches no route goes to ``default``; with no default it is
    a ``BadMessage`` naming the field.
    """
    return Branch(key, routes, default, name=name)


def parallel(*services: Any, name: str | None = None) -> Parallel:
    """Fan out to several services on copies of the message and merge what each adds.

    ``a >> sk.parallel(b, c) >> d``: on the runtime the branches run concurrently; when
    two branches set the same key, the later one in the list wins.
    """
    return Parallel(*services, name=name)


Service._chain = Flow.chain
