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
    TooManyRequests,
    Unauthorized,
    UnknownAction,
    WiringError,
)
from .flow import Branch, Flow, Parallel, branch, parallel
from .middleware import Middleware, Request, Throttle, middleware, throttle
from .runtime import Runtime, runtime, shutdown
from .served import Served, State, serve
from .service import Service, handle, service
from .sinks import Post, Publish, Push, Table, post, publish, push, table, tables
from .sources import Every, Pull, Subscribe, every, pull, subscribe
from .version import __version__ as __version__

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
    "Middleware",
    "Parallel",
    "PayloadTooLarge",
    "PortInUse",
    "Post",
    "Publish",
    "Pull",
    "Push",
    "RemoteError",
    "Request",
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
    "Throttle",
    "TooManyRequests",
    "Unauthorized",
    "UnknownAction",
    "WiringError",
    "ZmqClient",
    "branch",
    "dashboard",
    "every",
    "handle",
    "middleware",
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
    "throttle",
]
