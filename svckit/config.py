"""The typed config of class services: read from their annotations, validated with pydantic."""

from __future__ import annotations

import inspect
import sys
import typing
from typing import Any, ClassVar

from .errors import ConfigError
from .params import MISSING, short

__all__ = ["config_fields", "is_svckit_class", "validate_config"]

_BASE_NAMES: frozenset[str] = frozenset()


def is_svckit_class(klass: type) -> bool:
    """True for svckit's own classes (a module-level class of a ``svckit.*`` module)."""
    module = klass.__module__
    if module != "svckit" and not module.startswith("svckit."):
        return False
    return getattr(sys.modules.get(module), klass.__qualname__, None) is klass


def config_fields(cls: type[Any]) -> dict[str, tuple[Any, Any]]:
    """The typed class attributes of a user's Service subclass: name → (type, default)."""
    cached = cls.__dict__.get("_config")
    if cached is not None:
        return cached
    global _BASE_NAMES
    if not _BASE_NAMES:
        base = next(k for k in cls.__mro__ if k.__name__ == "Service" and is_svckit_class(k))
        _BASE_NAMES = frozenset(dir(base)) | {"config", "fn", "is_async", "concurrent", "inline", "name", "output"}
    fields: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or is_svckit_class(klass):
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


def validate_config(cls: type[Any], config: dict[str, Any]) -> dict[str, Any]:
    fields = config_fields(cls)
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
        got = config.get(str(err["loc"][0]), MISSING) if err.get("loc") else MISSING
        shown = "" if got is MISSING else f" (got {short(got)})"
        raise ConfigError(f"{cls.__name__} config {key!r}: {err['msg']}{shown}.") from None
    return {k: getattr(obj, k) for k in fields}
