"""The request and reply of a whole flow: which fields a caller sends, which keys come back.

A flow reads every field some stage reads that no earlier stage is *sure* to produce.
What a stage surely produces comes from its return annotation (a pydantic model's fields,
a ``TypedDict``'s required keys, a plain value under its ``output`` key) or, when the
annotation names no keys (``-> dict``, ``-> dict[str, int]``, none at all), from the
``return {...}`` dict literals in its source. Branches split the request into variants,
one per route (the route key is then a constant); ``request_fields`` merges them, and
``variants`` keeps them apart for a schema that says "one of these".

This module only reads services: it runs nothing and changes nothing.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import math
import textwrap
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .callables import unwrap
from .errors import BadMessage
from .flow import Branch, Flow, Parallel
from .middleware import Middleware, Wrapped
from .params import MISSING, Params, short
from .service import Action, Service

__all__ = [
    "Field",
    "Other",
    "Produced",
    "Variant",
    "action_reply",
    "is_structured",
    "produces",
    "query_message",
    "reply_keys",
    "request_fields",
    "variants",
]

#: More variants than this (branches inside branches) are merged into one.
MAX_VARIANTS = 32
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Field:
    """One field of a request: what the first stage that reads it says about it.

    Attributes
    ----------
    name
        The field's name in the message.
    annotation
        The type the first reader annotates it with (``typing.Any`` when it says nothing).
    default
        The first reader's default, or ``params.MISSING``.
    required
        True when some reader requires it and no earlier stage may produce it.
    service
        The name of the service (or branch) that reads it first.
    choices
        For a branch's route key: the route values it may take (None: any value).
    """

    name: str
    annotation: Any = Any
    default: Any = MISSING
    required: bool = False
    service: str = ""
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Other:
    """A branch key's constraint in a variant that takes the default route: none of ``values``."""

    values: tuple[Any, ...]


@dataclass
class Produced:
    """What running a stage adds to the message.

    ``sure`` keys are always there after it (unless it raises), ``maybe`` keys may be;
    ``unknown`` says it may add keys nobody can name (a ``-> dict``), whose values are of
    type ``values``. Each key maps to the annotations its producers give it.
    """

    sure: dict[str, list[Any]] = field(default_factory=dict)
    maybe: dict[str, list[Any]] = field(default_factory=dict)
    unknown: bool = False
    values: Any = Any

    def demoted(self) -> Produced:
        """The same keys, none of them sure (the stage may also pass the message on unchanged)."""
        maybe = _union(self.maybe, self.sure)
        return Produced({}, maybe, self.unknown, self.values)


@dataclass
class Variant:
    """One way a message may go through a flow: the request fields it reads, the constraints
    on branch keys that pick it (``when``: key → route value or ``Other``), and what the
    stages it meets produce."""

    fields: dict[str, Field] = field(default_factory=dict)
    when: dict[str, Any] = field(default_factory=dict)
    made: Produced = field(default_factory=Produced)

    def copy(self) -> Variant:
        made = Produced(
            {k: list(v) for k, v in self.made.sure.items()},
            {k: list(v) for k, v in self.made.maybe.items()},
            self.made.unknown,
            self.made.values,
        )
        return Variant(dict(self.fields), dict(self.when), made)


# -- the request ---------------------------------------------------------------------------------


def request_fields(node: Service | Sequence[Params]) -> dict[str, Field]:
    """The fields a request to ``node`` may carry, in the order the stages meet them.

    ``node`` is a service or flow, or the ``Params`` of an ``@sk.handle`` action
    (``Served.params_for(action)``).

    Examples
    --------
    >>> import svckit as sk
    >>> @sk.service(output="clean")
    ... def normalize(text: str) -> str:
    ...     return text.strip().lower()
    >>> @sk.service
    ... def translate(clean: str, lang: str, formal: bool = False) -> dict:
    ...     return {"translated": clean}
    >>> fields = request_fields(normalize >> translate)
    >>> [(f.name, f.required, f.service) for f in fields.values()]
    [('text', True, 'normalize'), ('lang', True, 'translate'), ('formal', False, 'translate')]
    """
    if not isinstance(node, Service):
        return _params_fields(node)
    known = _FIELDS.get(node)
    if known is None:
        known = _FIELDS[node] = _collapse(variants(node)).fields
    return known


#: ``request_fields`` of each service or flow asked about (a flow is immutable: its fields
#: are read once, not on every GET), for as long as it lives.
_FIELDS: weakref.WeakKeyDictionary[Service, dict[str, Field]] = weakref.WeakKeyDictionary()


def variants(node: Service) -> list[Variant]:
    """The ways a message may go through ``node``: one per combination of branch routes that
    the request alone picks (at most ``MAX_VARIANTS``; past it, merged into one)."""
    out = _apply(node, [Variant()])
    if len(out) > MAX_VARIANTS:
        out = [_collapse(out)]
    return out


def produces(node: Service) -> Produced:
    """What a request to ``node`` comes back with, besides its own fields (all variants merged)."""
    return _collapse(variants(node)).made


def reply_keys(node: Service) -> tuple[dict[str, list[Any]], set[str], bool]:
    """The keys of ``node``'s reply: key → annotations (request fields first), the keys that
    are sure to be there, and whether it may carry keys nobody can name.

    The request's required fields are sure to come back (stages add to the message, never
    take away); what stages produce is never sure, since a stage may raise ``StopFlow``.
    """
    merged = _collapse(variants(node))
    keys: dict[str, list[Any]] = {}
    for name, f in merged.fields.items():
        keys[name] = [f.annotation]
    for name, anns in (*merged.made.sure.items(), *merged.made.maybe.items()):
        bucket = keys.setdefault(name, [])
        bucket.extend(a for a in anns if not any(a is b or a == b for b in bucket))
    sure = {name for name, f in merged.fields.items() if f.required}
    return keys, sure, merged.made.unknown


def action_reply(fn: Callable[..., Any], action: str) -> Produced:
    """What an ``@sk.handle`` action replies: the dict it returns, or its value under ``action``.

    Examples
    --------
    >>> def reset(self) -> dict:
    ...     return {"reset": True}
    >>> action_reply(reset, "reset").sure
    {'reset': [<class 'bool'>]}
    """
    return _returns(fn, action, action=True)


def _params_fields(params: Iterable[Params]) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for p in params:
        for name in p.names:
            if name not in out:
                out[name] = Field(
                    name, p.annotations.get(name, Any), p.defaults.get(name, MISSING), name in p.required, p.service
                )
    return out


def _apply(node: Service, worlds: list[Variant]) -> list[Variant]:
    """``worlds`` after ``node`` has run in each of them."""
    if isinstance(node, Flow):
        for stage in getattr(node, "_body", node.stages):
            worlds = _apply(stage, worlds)
            if len(worlds) > MAX_VARIANTS:
                worlds = [_collapse(worlds)]
        return worlds
    if isinstance(node, Wrapped):
        if node.inner is not None:
            worlds = _apply(node.inner, worlds)
        return [_made(w, _returns(node.mw.fn, node.mw.output, middleware=True)) for w in worlds]
    if isinstance(node, Middleware):
        return [_made(w, _returns(node.fn, node.output, middleware=True)) for w in worlds]
    if isinstance(node, Branch):
        return [out for w in worlds for out in _branch(node, w)]
    if isinstance(node, Parallel):
        return [out for w in worlds for out in _parallel(node, w)]
    return [_leaf(node, w) for w in worlds]


def _leaf(node: Service, world: Variant) -> Variant:
    params = getattr(node, "_params", None)
    if params is None:
        readers = node.input_params() if node._composite else []
        if not readers:
            # a composite svckit does not know, or a source passing the message on
            return _made(world, Produced(unknown=True)) if node._composite else world
        world = world.copy()
        for p in readers:
            _read(world, p)
        return _made(world, Produced(unknown=True))
    world = world.copy()
    _read(world, params)
    target = node.fn if isinstance(node, Action) else node._target()
    return _made(world, _returns(target, node.output, action=isinstance(node, Action)))


def _read(world: Variant, params: Params) -> None:
    made = world.made
    for name in params.names:
        if name in made.sure:
            continue
        may = made.unknown or name in made.maybe
        requires = name in params.required and not may
        known = world.fields.get(name)
        if known is not None:
            if requires and not known.required:
                world.fields[name] = replace(known, required=True)
            continue
        world.fields[name] = Field(
            name, params.annotations.get(name, Any), params.defaults.get(name, MISSING), requires, params.service
        )


def _made(world: Variant, produced: Produced) -> Variant:
    out = world.copy()
    made = out.made
    for key, anns in produced.sure.items():
        made.maybe.pop(key, None)
        _add(made.sure, key, anns)
    for key, anns in produced.maybe.items():
        if key in made.sure:
            _add(made.sure, key, anns)  # there already; it may now also be of this type
        else:
            _add(made.maybe, key, anns)
    if produced.unknown:
        made.unknown = True
        made.values = produced.values if made.values is Any else made.values
    return out


def _branch(node: Branch, world: Variant) -> list[Variant]:
    key = node.key
    arms: list[tuple[Any, Service]] = [(v, t) for v, t in node.routes.items() if _jsonable(v)]
    decided = key not in world.made.sure and key not in world.made.maybe and not world.made.unknown
    if not decided:
        # an earlier stage may set the key: the route is not the request's to pick
        alternatives = [w for _, target in node.routes.items() for w in _apply(target, [world])]
        if node.default is not None:
            alternatives += _apply(node.default, [world])
        if key not in world.made.sure:
            alternatives = [_with_key(w, key, node, required=False) for w in alternatives]
        merged = _collapse(alternatives)
        merged.when = dict(world.when)
        return [merged]
    out: list[Variant] = []
    pinned = world.when.get(key, MISSING)
    for value, target in arms:
        if pinned is not MISSING and not _agrees(pinned, value):
            continue
        w = _with_key(world, key, node, required=True, choices=(value,))
        w.when[key] = value
        out += _apply(target, [w])
    if node.default is not None:
        values = tuple(v for v, _ in arms)
        if pinned is MISSING or isinstance(pinned, Other) or pinned not in values:
            w = _with_key(world, key, node, required=False)
            if pinned is MISSING or isinstance(pinned, Other):
                before = pinned.values if isinstance(pinned, Other) else ()
                w.when[key] = Other(tuple(dict.fromkeys((*before, *values))))
            out += _apply(node.default, [w])
    return out


def _with_key(
    world: Variant, key: str, node: Branch, *, required: bool, choices: tuple[Any, ...] | None = None
) -> Variant:
    out = world.copy()
    if key in out.made.sure:
        return out
    known = out.fields.get(key)
    if known is None:
        out.fields[key] = Field(key, Any, MISSING, required, node.name, choices)
    else:
        out.fields[key] = replace(known, required=known.required or required, choices=choices)
    return out


def _agrees(pinned: Any, value: Any) -> bool:
    if isinstance(pinned, Other):
        return value not in pinned.values
    return bool(pinned == value and type(pinned) is type(value))


def _parallel(node: Parallel, world: Variant) -> list[Variant]:
    results = [world]
    for branch in node.branches:
        assert branch is not None
        after: list[Variant] = []
        for r in results:
            view = r.copy()
            view.made = world.copy().made  # each branch sees the message as it came in
            for out in _apply(branch, [view]):
                combined = out.copy()
                combined.made = r.copy().made
                after.append(_made(combined, out.made))
        results = after if len(after) <= MAX_VARIANTS else [_collapse(after)]
    return results


def _collapse(worlds: list[Variant]) -> Variant:
    """One variant for all of ``worlds``: a field is required only when every one requires
    it, a key is sure only when every one surely makes it."""
    if len(worlds) == 1:
        return worlds[0]
    fields: dict[str, Field] = {}
    for w in worlds:
        for name, f in w.fields.items():
            known = fields.get(name)
            if known is None:
                fields[name] = f
            elif f.choices != known.choices:
                merged = None
                if known.choices is not None and f.choices is not None:
                    merged = tuple(dict.fromkeys((*known.choices, *f.choices)))
                fields[name] = replace(known, choices=merged)
    for name, f in list(fields.items()):
        everywhere = all(name in w.fields and w.fields[name].required for w in worlds)
        if f.required != everywhere:
            fields[name] = replace(f, required=everywhere)
        if any(isinstance(w.when.get(name), Other) for w in worlds):
            fields[name] = replace(fields[name], choices=None)
    sure_keys = set.intersection(*(set(w.made.sure) for w in worlds))
    made = Produced()
    for w in worlds:
        for key, anns in (*w.made.sure.items(), *w.made.maybe.items()):
            _add(made.sure if key in sure_keys else made.maybe, key, anns)
        if w.made.unknown:
            made.unknown = True
            made.values = w.made.values if made.values is Any else made.values
    return Variant(fields, {}, made)


def _jsonable(value: Any) -> bool:
    return isinstance(value, _JSON_SCALARS)


def _add(table: dict[str, list[Any]], key: str, anns: Iterable[Any]) -> None:
    bucket = table.setdefault(key, [])
    for a in anns:
        if not any(a is b or a == b for b in bucket):
            bucket.append(a)


def _union(*tables: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for t in tables:
        for k, v in t.items():
            _add(out, k, v)
    return out


# -- what a stage returns --------------------------------------------------------------------------

_GIVEN_NOTHING: Any = object()


def _returns(fn: Callable[..., Any], output: str, *, action: bool = False, middleware: bool = False) -> Produced:
    """What calling ``fn`` adds to the message: from its return annotation, else its source."""
    target = unwrap(fn)
    if not (inspect.isroutine(target) or inspect.isclass(target)):
        target = getattr(type(target), "__call__", target)  # noqa: B004 - a callable object
    func = getattr(target, "__func__", target)
    generator = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    ann = _return_hint(target)
    if generator and ann is not _GIVEN_NOTHING:
        ann = _item_type(ann)
    from_ann = _from_annotation(ann, output, models=not action) if ann is not _GIVEN_NOTHING else None
    if from_ann is not None and not _mapping_of(ann):
        return from_ann
    found = _from_source(func, output, generator=generator)
    if found is not None and middleware:
        found.maybe.pop(output, None)  # `return call(msg)`: the message itself, not a value
    if found is None:
        if from_ann is not None:
            return from_ann
        return Produced(maybe={} if middleware else {output: [Any]}, unknown=True)
    if from_ann is not None and from_ann.values is not Any:
        # `-> dict[str, int]` with `return {"n": len(x)}`: the literal's values are ints
        typed = [from_ann.values]
        found.sure = {k: typed if v == [Any] else v for k, v in found.sure.items()}
        found.maybe = {k: typed if v == [Any] else v for k, v in found.maybe.items()}
        found.values = from_ann.values
    return found


def _return_hint(target: Any) -> Any:
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # an unresolvable forward reference: as if it said nothing
        return _GIVEN_NOTHING
    return hints.get("return", _GIVEN_NOTHING)


def _item_type(ann: Any) -> Any:
    """``Iterator[X]``, ``Generator[X, ...]``, ``AsyncIterator[X]`` → ``X``."""
    args = typing.get_args(ann)
    return args[0] if args else _GIVEN_NOTHING


def _mapping_of(ann: Any) -> bool:
    """True for ``dict``, ``dict[str, X]``, ``Mapping[...]``: a dict whose keys it does not name."""
    if ann in (dict, Mapping, typing.Dict):  # noqa: UP006 - the old spelling may be written too
        return True
    origin = typing.get_origin(ann)
    return origin is not None and isinstance(origin, type) and issubclass(origin, Mapping) and not _typeddict(ann)


def _typeddict(ann: Any) -> bool:
    return typing.is_typeddict(ann)


def _is_model(ann: Any) -> bool:
    """True for a pydantic model class (told by its API, so pydantic is not imported for it)."""
    return isinstance(ann, type) and hasattr(ann, "model_fields") and hasattr(ann, "model_json_schema")


def _from_annotation(ann: Any, output: str, models: bool = True) -> Produced | None:
    """What a return annotation says is produced; None when it says nothing (``Any``).

    ``models``: a returned pydantic model is merged field by field (a stage); otherwise
    it is a value under ``output`` (an ``@sk.handle`` action's reply)."""
    if typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    if ann is Any or ann is object:
        return None
    if ann is None or ann is type(None):
        return Produced()
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        parts = typing.get_args(ann)
        optional = type(None) in parts
        rest = [p for p in parts if p is not type(None)]
        each = [_from_annotation(p, output, models) for p in rest]
        if any(e is None for e in each):
            return None
        combined = _alternatives([e for e in each if e is not None])
        return combined.demoted() if optional else combined
    if _mapping_of(ann):
        args = typing.get_args(ann)
        return Produced(unknown=True, values=args[1] if len(args) == 2 else Any)
    if _typeddict(ann):
        hints = typing.get_type_hints(ann, include_extras=True)
        required = getattr(ann, "__required_keys__", frozenset(hints))
        sure: dict[str, list[Any]] = {}
        maybe: dict[str, list[Any]] = {}
        for key, hint in hints.items():
            # Python 3.11 cannot see Required[...] in a string annotation: look again
            wrapper = typing.get_origin(hint)
            known = wrapper is typing.Required or (key in required and wrapper is not typing.NotRequired)
            (sure if known else maybe)[key] = [_plain(hint)]
        return Produced(sure, maybe)
    if _is_model(ann) and models:
        fields = ann.model_fields
        return Produced({name: [_model_field(f)] for name, f in fields.items()})
    return Produced({output: [ann]})


def _plain(ann: Any) -> Any:
    """A TypedDict value's type without ``Required``/``NotRequired``."""
    origin = typing.get_origin(ann)
    if origin in (typing.Required, typing.NotRequired):
        return typing.get_args(ann)[0]
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(ann)
        return typing.Annotated[(_plain(inner), *meta)] if meta else _plain(inner)
    return ann


def _model_field(info: Any) -> Any:
    """A pydantic model field's type, with its constraints and description (not its default)."""
    ann = info.annotation if info.annotation is not None else Any
    meta = list(info.metadata)
    if info.description or info.title:
        import pydantic

        meta.append(pydantic.Field(description=info.description, title=info.title))
    return typing.Annotated[(ann, *meta)] if meta else ann


def _alternatives(each: list[Produced]) -> Produced:
    """One of ``each`` happens: sure keys are those all of them surely produce."""
    if not each:
        return Produced()
    sure_keys = set.intersection(*(set(e.sure) for e in each))
    out = Produced()
    for e in each:
        for key, anns in (*e.sure.items(), *e.maybe.items()):
            _add(out.sure if key in sure_keys else out.maybe, key, anns)
        if e.unknown:
            out.unknown = True
            out.values = e.values if out.values is Any else out.values
    return out


# -- reading the source: the keys of `return {...}` literals ---------------------------------------


def _from_source(func: Any, output: str, *, generator: bool) -> Produced | None:
    """The keys ``func``'s ``return {...}`` (or ``yield {...}``) literals give; None when its
    source cannot be read."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    name = getattr(func, "__name__", "")
    body: list[ast.expr | None] | None = None
    falls_through = True
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = None
    if name == "<lambda>":
        body = _lambda_body(tree, source, func)
        falls_through = False
    elif tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                body = _results(node.body, generator)
                falls_through = generator or not _ends(node.body)
                break
    if body is None:
        return None
    outcomes = [_outcome(expr, output) for expr in body]
    if falls_through and not generator:
        outcomes.append(Produced())  # it may return None: the message passes on unchanged
    if generator and not outcomes:
        return Produced()
    return _alternatives(outcomes)


def _lambda_body(tree: ast.Module | None, source: str, func: Any) -> list[ast.expr | None] | None:
    if tree is None:  # a lambda in the middle of a line: cut the line from its `lambda`
        at = source.find("lambda")
        if at < 0:
            return None
        text = source[at:]
        for end in range(len(text), 0, -1):
            try:
                tree = ast.parse(text[:end].strip(), mode="eval")  # type: ignore[assignment]
                break
            except SyntaxError:
                continue
        if tree is None:
            return None
    code = getattr(func, "__code__", None)
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if code is not None else ()
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Lambda) and tuple(a.arg for a in (*node.args.args, *node.args.kwonlyargs)) == names
    ]
    if len(found) != 1:
        return None
    return [found[0].body]


def _results(stmts: list[ast.stmt], generator: bool) -> list[ast.expr | None]:
    """The expressions its ``return`` (or ``yield``) statements give, not those of nested functions."""
    out: list[ast.expr | None] = []
    todo: list[ast.AST] = list(stmts)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if generator and isinstance(node, ast.Yield):
            out.append(node.value)
        elif generator and isinstance(node, ast.YieldFrom):
            out.append(ast.Call(ast.Name("iter"), [], []))  # items nobody can name
        elif not generator and isinstance(node, ast.Return):
            out.append(node.value)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _ends(stmts: list[ast.stmt]) -> bool:
    """True when every way through ``stmts`` ends in ``return`` or ``raise``."""
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return | ast.Raise):
        return True
    if isinstance(last, ast.If):
        return _ends(last.body) and _ends(last.orelse)
    if isinstance(last, ast.With | ast.AsyncWith):
        return _ends(last.body)
    if isinstance(last, ast.Try):
        return (_ends(last.body) or _ends(last.orelse)) and all(_ends(h.body) for h in last.handlers)
    if isinstance(last, ast.Match):
        return all(_ends(c.body) for c in last.cases) and any(
            isinstance(c.pattern, ast.MatchAs) and c.pattern.pattern is None for c in last.cases
        )
    return False


_LITERAL_TYPES: dict[type[ast.AST], Any] = {
    ast.JoinedStr: str,
    ast.List: list,
    ast.ListComp: list,
    ast.Tuple: list,
    ast.Set: list,
    ast.SetComp: list,
    ast.Compare: bool,
}


def _outcome(expr: ast.expr | None, output: str) -> Produced:
    """What one ``return expr`` adds to the message."""
    if expr is None or (isinstance(expr, ast.Constant) and expr.value is None):
        return Produced()
    if isinstance(expr, ast.Dict):
        out = Produced()
        for key, value in zip(expr.keys, expr.values, strict=True):
            if key is None:  # `**other`: keys nobody can name
                out.unknown = True
            elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                out.sure[key.value] = [_value_type(value)]
            else:
                out.unknown = True
        return out
    if isinstance(expr, ast.DictComp):
        return Produced(unknown=True)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "dict" and not expr.args:
        out = Produced()
        for kw in expr.keywords:
            if kw.arg is None:
                out.unknown = True
            else:
                out.sure[kw.arg] = [_value_type(kw.value)]
        return out
    kind = _value_type(expr)
    if kind is not Any:
        return Produced({output: [kind]})
    return Produced(maybe={output: [Any]}, unknown=True)  # a value or a dict: it cannot tell


def _value_type(expr: ast.expr) -> Any:
    if isinstance(expr, ast.Constant):
        return Any if expr.value is None or isinstance(expr.value, bytes) else type(expr.value)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        return bool
    return _LITERAL_TYPES.get(type(expr), Any)


# -- a query string as a message -------------------------------------------------------------------


def query_message(
    node: Service | Sequence[Params] | Mapping[str, Field], items: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """The message a ``GET`` query string stands for, each value coerced from its string by the
    annotated type of the field's first reader.

    ``node`` is the served service or flow, the ``Params`` of an action, or fields from
    ``request_fields``. A key given more than once is a list for a list-typed field (and for
    a key no stage reads); keys no stage reads are kept as strings. A value that is not of
    its field's type raises ``BadMessage`` naming the field and the service.

    Examples
    --------
    >>> import svckit as sk
    >>> @sk.service(methods=("GET", "POST"))
    ... def add(x: int, tags: list[str] = [], loud: bool = False) -> int:
    ...     return x
    >>> query_message(add, [("x", "21"), ("tags", "a"), ("tags", "b"), ("loud", "true"), ("y", "z")])
    {'x': 21, 'tags': ['a', 'b'], 'loud': True, 'y': 'z'}
    >>> query_message(add, [("x", "many")])
    Traceback (most recent call last):
    ...
    svckit.errors.BadMessage: Service 'add': query field 'x' is 'many', which is not a valid integer.
    """
    if isinstance(node, Mapping):
        fields: Mapping[str, Field] = node
    else:
        fields = request_fields(node)
    grouped: dict[str, list[str]] = {}
    for key, value in items:
        grouped.setdefault(key, []).append(value)
    msg: dict[str, Any] = {}
    for key, values in grouped.items():
        f = fields.get(key)
        if f is None:
            msg[key] = values[0] if len(values) == 1 else values
            continue
        msg[key] = _coerce(f, values)
    return msg


def _coerce(f: Field, values: list[str]) -> Any:
    ann = f.annotation
    if f.choices is not None and ann is Any:
        ann = typing.Literal[f.choices]  # type: ignore[valid-type]
    listed = _is_list(ann)
    if len(values) > 1 and not listed:
        raise BadMessage(
            f"Service {f.service!r}: query field {f.name!r} is given {len(values)} times; it takes one value.",
            field=f.name,
            service=f.service,
        )
    import pydantic

    given: Any = values if listed else values[0]
    try:
        if listed:
            args = typing.get_args(_strip_optional(ann))
            items = [_from_string(args[0] if args else Any, v) for v in values]
            adapter = _adapter(ann)
            # JSON's form of what it checked (a set is a list again): the stage checks it as a body's
            return items if adapter is None else adapter.dump_python(adapter.validate_python(items), mode="json")
        return _from_string(ann, values[0])
    except (pydantic.ValidationError, ValueError) as exc:
        kind = _type_name(ann)
        if isinstance(exc, pydantic.ValidationError):
            reason = exc.errors(include_url=False)[0]["msg"]
        else:
            reason = str(exc)
        detail = "" if kind in _NAMES.values() else f" ({reason})"
        raise BadMessage(
            f"Service {f.service!r}: query field {f.name!r} is {short(given)}, which is not {kind}{detail}.",
            field=f.name,
            service=f.service,
        ) from None


def _adapter(ann: Any) -> Any:
    """A pydantic ``TypeAdapter`` of ``ann`` (made once per type); None for a type pydantic
    cannot check (the stage's own ``Params`` will say what is wrong with such a value)."""
    try:
        return _cached_adapter(ann)
    except TypeError:  # an annotation that cannot be a dict key
        return _make_adapter(ann)


@functools.lru_cache(maxsize=512)
def _cached_adapter(ann: Any) -> Any:
    return _make_adapter(ann)


def _make_adapter(ann: Any) -> Any:
    import pydantic

    try:
        return pydantic.TypeAdapter(ann)
    except Exception:
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _from_string(ann: Any, text: str) -> Any:
    """One query value as ``ann``; raises ``pydantic.ValidationError`` or ``ValueError``."""
    plain = _strip_optional(ann)
    if plain is Any or plain is str:
        return text
    if typing.get_origin(plain) is typing.Literal:
        for choice in typing.get_args(plain):
            shown = ("true" if choice else "false") if isinstance(choice, bool) else str(choice)
            if text == shown:
                return choice
        raise ValueError("it is none of the choices")
    adapter = _adapter(ann)
    if adapter is None:
        return text
    if not _is_scalar(ann):
        # an object or a model: its value is JSON, checked by the stage as strictly as a body's
        return json.loads(text, parse_constant=_no_constant)
    value = adapter.validate_strings(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("it is not a finite number")  # as JSON has no NaN or Infinity
    return adapter.dump_python(value, mode="json")  # JSON's form: a UUID, a Decimal, an Enum as a body has them


def _strip_optional(ann: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(rest) == 1:
            return _strip_optional(rest[0])
    return ann


def is_structured(ann: Any) -> bool:
    """True for a type whose query value is JSON (an object, a model), not a plain string."""
    return ann is not Any and not _is_list(ann) and not _is_scalar(ann)


def _is_list(ann: Any) -> bool:
    ann = _strip_optional(ann)
    if ann in (list, tuple, set, frozenset):
        return True
    origin = typing.get_origin(ann)
    return origin in (list, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, Sequence) and not issubclass(origin, str | bytes)
    )


def _is_scalar(ann: Any) -> bool:
    ann = _strip_optional(ann)
    if typing.get_origin(ann) is typing.Literal:
        return True
    if isinstance(ann, type):
        return not (issubclass(ann, Mapping) or _is_model(ann) or _typeddict(ann))
    origin = typing.get_origin(ann)
    return not (isinstance(origin, type) and issubclass(origin, Mapping))


_NAMES = {int: "a valid integer", float: "a valid number", bool: "a valid boolean (true or false)"}


def _type_name(ann: Any) -> str:
    ann = _strip_optional(ann)
    if ann in _NAMES:
        return _NAMES[ann]
    if typing.get_origin(ann) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    text = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
    return f"a valid {text}"
