"""svckit: build, run, watch, share and test small services from a Jupyter notebook."""

from __future__ import annotations

from .client import Client, Subscription, ZmqClient
from .dashboard import Dashboard, dashboard
from .errors import (
    BadMessage,
    BadRequest,
    BadResult,
    ConfigError,
    Fatal,
    PayloadTooLarge,
    PortInUse,
    RemoteError,
    Retry,
    RetryExhausted,
    ServiceTimeout,
    ServiceUnavailable,
    StateError,
    StopFlow,
    SvckitError,
    Unauthorized,
    UnknownAction,
    WiringError,
)
from .flow import Branch, Flow, Parallel, branch, parallel
from .runtime import Runtime, runtime, shutdown
from .served import Served, State, serve
from .service import Service, handle, service
from .sinks import Post, Publish, Push, Table, post, publish, push, table, tables
from .sources import Every, Pull, Subscribe, every, pull, subscribe

__all__ = [
    "BadMessage",
    "BadRequest",
    "BadResult",
    "Branch",
    "Client",
    "ConfigError",
    "Dashboard",
    "Every",
    "Fatal",
    "Flow",
    "Parallel",
    "PayloadTooLarge",
    "PortInUse",
    "Post",
    "Publish",
    "Pull",
    "Push",
    "RemoteError",
    "Retry",
    "RetryExhausted",
    "Runtime",
    "Served",
    "Service",
    "ServiceTimeout",
    "ServiceUnavailable",
    "State",
    "StateError",
    "StopFlow",
    "Subscribe",
    "Subscription",
    "SvckitError",
    "Table",
    "Unauthorized",
    "UnknownAction",
    "WiringError",
    "ZmqClient",
    "branch",
    "dashboard",
    "every",
    "handle",
    "parallel",
    "post",
    "publish",
    "pull",
    "push",
    "runtime",
    "serve",
    "service",
    "shutdown",
    "subscribe",
    "table",
    "tables",
]

__version__ = "0.1.0"
