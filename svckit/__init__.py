"""svckit: build, run, watch, share and test small services from a Jupyter notebook."""

from __future__ import annotations

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
from .client import Client
from .dashboard import Dashboard, dashboard
from .flow import Branch, Flow, Parallel, branch, parallel
from .runtime import Runtime, runtime, shutdown
from .served import Served, State, serve
from .service import Service, handle, service

__version__ = "0.1.0"
