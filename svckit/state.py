"""The lifecycle state every served thing shares."""

from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.StrEnum):
    """Lifecycle of a served thing."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
