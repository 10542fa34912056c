"""The typed config of class services: read from their annotations, validated with pydantic.

Besides the keywords a service is constructed with, its config is filled from a config
file (``svckit run --config FILE``, or ``SVCKIT_CONFIG=FILE``: JSON or TOML, one table per
service) and from ``SVCKIT_<SERVICE>_<KEY>`` environment variables. A keyword given in code
wins over the environment, which wins over the file, which wins over the class's default.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError
from .params import MISSING, short, snake

__all__ = ["config_fields", "is_svckit_class", "load_config_file", "unused_sections", "validate_config"]

#: svckit's own environment variables: never read as a service's config.
RESERVED_ENV = frozenset(
    {"SVCKIT_CONFIG", "SVCKIT_LOOP", "SVCKIT_PORTS", "SVCKIT_PROXY_PREFIX", "SVCKIT_STALL_MS", "SVCKIT_TOKEN"}
    | {"SVCKIT_WORKERS", "SVCKIT_SCREENSHOT", "SVCKIT_NO_BROWSER"}
)
_loaded: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
_used: set[tuple[str, str]] = set()  # (file, section) that some service read


def load_config_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The tables of a config file: ``{service: {key: value}}``, from JSON (``.json``) or
    TOML (``.toml``, read with ``tomllib``); ``ConfigError`` in a sentence when it cannot be read."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {name}: {exc.strerror or exc}.") from None
    toml = name.endswith(".toml") or (not name.endswith(".json") and not raw.lstrip().startswith(b"{"))
    try:
        if toml:
            import tomllib

            data: Any = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if toml else "JSON"
        raise ConfigError(f"The config file {name} is not valid {kind}: {exc}.") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        bad = next((k for k, v in data.items() if not isinstance(v, dict)), None) if isinstance(data, dict) else None
        raise ConfigError(
            f"The config file {name} must hold one table per service, such as [ticker] interval = 0.5"
            + (f"; {bad!r} is not a table." if bad is not None else ".")
        )
    return data


def _file_tables() -> tuple[str | None, dict[str, dict[str, Any]]]:
    name = os.environ.get("SVCKIT_CONFIG")
    if not name:
        return None, {}
    try:
        mtime = os.stat(name).st_mtime
    except OSError:
        mtime = -1.0
    cached = _loaded.get(name)
    if cached is None or cached[0] != mtime:
        cached = _loaded[name] = (mtime, load_config_file(name))
    return name, cached[1]


def unused_sections() -> list[str]:
    """The tables of the config file that no service constructed so far has read."""
    name, tables = _file_tables()
    return [section for section in tables if (name, section) not in _used] if name else []


def _env_name(service: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", service).upper()


def _overrides(cls: type[Any], fields: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """The config of ``cls`` from the config file and the environment: key -> (value, where)."""
    service = snake(cls.__name__)
    out: dict[str, tuple[Any, str]] = {}
    name, tables = _file_tables()
    for section in dict.fromkeys((service, cls.__name__)):
        table = tables.get(section)
        if table is None:
            continue
        _used.add((name or "", section))
        for key, value in table.items():
            if key not in fields:
                raise ConfigError(
                    f"The config file {name} sets {key!r} for {cls.__name__} (its table [{section}]), which has no "
                    f"such config key; its config keys are: {', '.join(fields) or 'none'}."
                )
            out[key] = (value, f"the config file {name}")
    prefix = f"SVCKIT_{_env_name(service)}_"
    longer = None
    for var, text in os.environ.items():
        if not var.startswith(prefix) or var in RESERVED_ENV:
            continue
        key = var[len(prefix) :].lower()
        if key not in fields:
            if longer is None:
                longer = _longer_prefixes(cls, prefix)
            if any(var.startswith(p) for p in longer):
                continue  # it is another service's (order_book's, not order's)
            raise ConfigError(
                f"The environment variable {var} sets {key!r} for {cls.__name__}, which has no such config key; "
                f"its config keys are: {', '.join(fields) or 'none'}."
            )
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[key] = (value, f"the environment variable {var}")
    return out


def _longer_prefixes(cls: type[Any], prefix: str) -> list[str]:
    base = next((k for k in cls.__mro__ if k.__name__ == "Service" and is_svckit_class(k)), None)
    found: list[str] = []
    stack: list[type[Any]] = list(base.__subclasses__()) if base is not None else []
    while stack:
        klass = stack.pop()
        stack.extend(klass.__subclasses__())
        other = f"SVCKIT_{_env_name(snake(klass.__name__))}_"
        if len(other) > len(prefix) and other.startswith(prefix):
            found.append(other)
    return found


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
    """The config of ``cls``: its defaults, then the config file, the environment and
    ``config`` (the keywords given in code) over them, validated; ``ConfigError`` naming
    the service, the key and where a bad value came from."""
    fields = config_fields(cls)
    unknown = [k for k in config if k not in fields]
    if unknown:
        keys = ", ".join(fields) or "none"
        raise ConfigError(f"{cls.__name__} got an unknown config key {unknown[0]!r}; its config keys are: {keys}.")
    outside = _overrides(cls, fields)
    if outside:
        where = {k: w for k, (_, w) in outside.items() if k not in config}
        config = {**{k: v for k, (v, _) in outside.items()}, **config}
    else:
        where = {}
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
        origin = where.get(str(err["loc"][0])) if err.get("loc") else None
        source = f", from {origin}" if origin else ""
        raise ConfigError(f"{cls.__name__} config {key!r}{source}: {err['msg']}{shown}.") from None
    return {k: getattr(obj, k) for k in fields}
