"""The exception tree of svckit, and the registry that carries errors across the wire.

::

    SvckitError
    ├── BadMessage            a message lacks a field, has one of the wrong type, or is not a JSON object (HTTP 422)
    ├── BadRequest            a request body that is not valid UTF-8 JSON (HTTP 400)
    ├── PayloadTooLarge       a request body over the size limit (HTTP 413)
    ├── UnknownAction         no such action on this endpoint (HTTP 404)
    ├── Unauthorized          a token was required and not given (HTTP 401)
    ├── TooManyRequests       a request past a throttle's rate (HTTP 429)
    ├── Forbidden             a foreign Origin, or a Host that does not name this server (HTTP 403)
    ├── UnsupportedMediaType  a POST that is not Content-Type: application/json (HTTP 415)
    ├── RequestTimeout        a client too slow to send its request (HTTP 408)
    ├── HeadersTooLarge       a request line and headers over the limit (HTTP 431)
    ├── BadResult             a service returned something that is not JSON-able (HTTP 500)
    ├── ServiceTimeout        a request took longer than the served timeout (HTTP 504)
    ├── ServiceUnavailable    the served thing is failed or stopped (HTTP 503)
    ├── ProgramFailed         an sk.program exited non-zero, or did not write its outputs (HTTP 500)
    ├── WorkerLost            a stage's task was lost with its worker (stage.on(...)), retries used up (HTTP 503)
    ├── ConfigError           a service's config is unknown or ill-typed (also a TypeError)
    ├── WiringError           a flow cannot be composed as written (also a TypeError)
    ├── StateError            a lifecycle step that is not allowed now
    ├── PortInUse             the port asked for is taken (also an OSError)
    ├── RetryExhausted        a stage asked for retries and still failed
    ├── RemoteError           an error of a kind svckit does not know, raised by a remote service
    ├── HTTPError             raised in a stage to answer with the status it names: sk.HTTPError(404, ...)
    └── ControlFlow           raised inside a stage to steer the flow
        ├── StopFlow          stop here and reply with the message so far
        ├── Retry             run this stage again after a pause
        └── Fatal             mark the service failed; it answers 503 until restarted

An exception of the user's own with an integer ``status`` (or ``status_code``, as
Starlette's and FastAPI's ``HTTPException`` spell it) from 400 to 599 is answered with
that status and carries it in its error body; any other exception from user code is 500.
"""

from __future__ import annotations

import http
from typing import Any

__all__ = [
    "BadMessage",
    "BadRequest",
    "BadResult",
    "ConfigError",
    "ControlFlow",
    "Fatal",
    "Forbidden",
    "HTTPError",
    "HeadersTooLarge",
    "PayloadTooLarge",
    "PortInUse",
    "ProgramFailed",
    "RemoteError",
    "RequestTimeout",
    "Retry",
    "RetryExhausted",
    "ServiceTimeout",
    "ServiceUnavailable",
    "StateError",
    "StopFlow",
    "SvckitError",
    "TooManyRequests",
    "Unauthorized",
    "UnknownAction",
    "UnsupportedMediaType",
    "WiringError",
    "WorkerLost",
]


class SvckitError(Exception):
    """Root of every error svckit raises.

    ``status`` is the HTTP status the error is answered with when it crosses the wire.
    """

    status: int = 500

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}
        for key, value in details.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """The error body sent over HTTP and ZMQ: ``{"type", "message", ...details}``."""
        return {"type": type(self).__name__, "message": self.message, **self.details}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))


def _rebuild(cls: type[SvckitError], message: str, details: dict[str, Any]) -> SvckitError:
    return cls(message, **details)


class BadMessage(SvckitError):
    """A message lacks a field a service needs, or the field has the wrong type.

    Attributes ``field`` and ``service`` name what was wrong and where.
    """

    status = 422

    def __init__(
        self, message: str = "", *, field: str | None = None, service: str | None = None, **details: Any
    ) -> None:
        super().__init__(message, field=field, service=service, **details)


class BadRequest(SvckitError):
    """A request body that is not valid JSON (or not UTF-8, or nested too deeply to read)."""

    status = 400


class PayloadTooLarge(SvckitError):
    """A request body larger than the endpoint's ``max_body`` limit."""

    status = 413


class UnknownAction(SvckitError):
    """A request for an action the endpoint does not serve."""

    status = 404


class Unauthorized(SvckitError):
    """A request without the token the endpoint was served with."""

    status = 401


class TooManyRequests(SvckitError):
    """A request past a ``sk.throttle`` rate; ``retry_after`` says when to try again."""

    status = 429


class BadResult(SvckitError):
    """A service returned a value that cannot be sent as JSON."""

    status = 500


class ServiceTimeout(SvckitError):
    """A request that took longer than the served ``timeout``."""

    status = 504


class ServiceUnavailable(SvckitError):
    """The served thing is failed (after ``Fatal``) or stopped; restart it to serve again."""

    status = 503


class ProgramFailed(SvckitError):
    """An external program run by ``sk.program`` exited non-zero (or without writing its
    outputs); ``returncode`` and ``stderr_tail`` say how, ``workdir`` where it ran when kept."""

    status = 500


class WorkerLost(SvckitError):
    """A stage run on an executor (``stage.on(...)``) lost its task with the worker or
    process pool running it, and still did after its ``retries``; ``worker`` names it."""

    status = 503


class ConfigError(SvckitError, TypeError):
    """A service was constructed with an unknown or ill-typed config key."""

    status = 400


class WiringError(SvckitError, TypeError):
    """A flow cannot be composed as written (raised when composing, not at the first message)."""


class StateError(SvckitError):
    """A lifecycle step that is not allowed in the current state."""

    status = 409


class PortInUse(SvckitError, OSError):
    """The port asked for is already taken by another process or socket."""


class RetryExhausted(SvckitError):
    """A stage raised ``Retry`` (with no cause) more often than it allowed."""


class RemoteError(SvckitError):
    """An error raised by a remote service, of a type svckit does not know.

    ``type`` holds the remote exception's class name and ``message`` its text.
    """

    type: str

    def __init__(self, message: str = "", *, type: str = "Exception", **details: Any) -> None:  # noqa: A002
        super().__init__(message, type=type, **details)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else str(self.type)

    def to_dict(self) -> dict[str, Any]:
        body = dict(self.details)
        body["message"] = self.message
        return body


class ControlFlow(SvckitError):
    """Base of the exceptions a stage raises to steer its flow."""


class StopFlow(ControlFlow):
    """Raised inside a stage: stop the flow here and reply with the message so far.

    The stop is counted in the served metrics; it is not an error.
    """

    status = 200


class Retry(ControlFlow):
    """Raised inside a stage: run the stage again after ``after`` seconds, at most ``max`` times.

    Raise it ``from`` the exception that caused it: when the retries run out, that cause
    is what the caller sees.

    Examples
    --------
    >>> import svckit as sk
    >>> calls = []
    >>> @sk.service
    ... def flaky(x: int) -> dict:
    ...     calls.append(x)
    ...     if len(calls) < 3:
    ...         raise sk.Retry(after=0, max=5)
    ...     return {"tries": len(calls)}
    >>> flaky(x=1)["tries"]
    3
    """

    def __init__(self, message: str = "", *, after: float = 0.1, max: int = 3) -> None:  # noqa: A002
        if after < 0:
            raise ValueError(f"Retry(after={after!r}): the pause must be zero or more seconds.")
        if max < 1:
            raise ValueError(f"Retry(max={max!r}): allow at least one retry.")
        super().__init__(message or f"retry after {after} s, at most {max} times")
        self.after = after
        self.max = max
        self.details = {}


class Fatal(ControlFlow):
    """Raised inside a stage: mark the served thing failed.

    Its endpoints answer 503 until ``Served.restart()``.
    """

    status = 503


class Forbidden(SvckitError):
    """A request refused for where it comes from: a web page of a foreign ``Origin`` (not in
    ``allow_origins``), or a ``Host`` that does not name this server (DNS rebinding)."""

    status = 403


class UnsupportedMediaType(SvckitError):
    """A POST whose body is not declared ``Content-Type: application/json``."""

    status = 415


class RequestTimeout(SvckitError):
    """A client that did not send its request line, headers or body within ``read_timeout``."""

    status = 408


class HeadersTooLarge(SvckitError):
    """A request line and headers over ``max_header`` bytes."""

    status = 431


class HTTPError(SvckitError):
    """Raised in a stage to answer with the HTTP status it names (400 to 599).

    The error body is the usual one, with ``type`` "HTTPError", the ``status`` and any
    ``details`` given as keywords; ``sk.Client`` and ``sk.ZmqClient`` raise it again as
    ``HTTPError`` with the same status. An empty ``message`` is the status's phrase.

    Examples
    --------
    >>> import svckit as sk
    >>> @sk.service
    ... def order(id: int) -> dict:
    ...     raise sk.HTTPError(404, f"There is no order {id}.", id=id)
    >>> try:
    ...     order(id=7)
    ... except sk.HTTPError as exc:
    ...     print(exc.status, exc.to_dict())
    404 {'type': 'HTTPError', 'message': 'There is no order 7.', 'status': 404, 'id': 7}
    """

    def __init__(self, status: int, message: str = "", **details: Any) -> None:
        code = error_status(status)
        if code is None:
            raise ValueError(
                f"sk.HTTPError({status!r}): the status must be an integer from 400 to 599; "
                "to answer 2xx, return the reply instead of raising."
            )
        if "type" in details:
            raise ValueError("sk.HTTPError(..., type=...): 'type' names the error in its body; use another key.")
        if not message:
            try:
                message = http.HTTPStatus(code).phrase
            except ValueError:  # a status with no registered phrase (499)
                message = f"HTTP {code}"
        super().__init__(message, status=code, **details)

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": self.message, **self.details}

    def __reduce__(self) -> tuple[Any, ...]:
        details = {k: v for k, v in self.details.items() if k != "status"}
        return (_rebuild_http, (type(self), self.status, self.message, details))


def _rebuild_http(cls: type[HTTPError], status: int, message: str, details: dict[str, Any]) -> HTTPError:
    return cls(status, message, **details)


def error_status(value: Any) -> int | None:
    """``value`` as an HTTP error status: an integer from 400 to 599 (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return int(value)  # an IntEnum such as HTTPStatus.NOT_FOUND as the plain number
    return None


def user_status(exc: BaseException) -> int | None:
    """The status an exception from user code asks for: its ``status`` or ``status_code``
    attribute when that is an integer from 400 to 599; None otherwise (answered 500)."""
    for attr in ("status", "status_code"):
        try:
            code = error_status(getattr(exc, attr, None))
        except Exception:  # a property that raises asks for nothing
            code = None
        if code is not None:
            return code
    return None


_KNOWN: dict[str, type[SvckitError]] = {}


def _register_all() -> None:
    stack: list[type[SvckitError]] = [SvckitError]
    while stack:
        cls = stack.pop()
        _KNOWN[cls.__name__] = cls
        stack.extend(cls.__subclasses__())


def error_body(exc: BaseException, **extra: Any) -> dict[str, Any]:
    """The JSON error body for any exception: svckit's own details, or its type and text
    (and its ``status``, when it asks for one: ``user_status``)."""
    if isinstance(exc, SvckitError):
        body = exc.to_dict()
    else:
        body = {"type": type(exc).__name__, "message": str(exc)}
        code = user_status(exc)
        if code is not None:
            body["status"] = code
    for key, value in extra.items():
        if value is not None:
            body.setdefault(key, value)
    return body


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception is answered with: svckit's own, the one a user's
    exception asks for (``user_status``), or 500."""
    if isinstance(exc, SvckitError):
        return exc.status
    code = user_status(exc)
    return 500 if code is None else code


def from_body(body: Any, status: int | None = None) -> SvckitError:
    """Rebuild an exception from an error body that came over the wire.

    A type svckit knows comes back as that class (``HTTPError`` with the status in the
    body, else ``status``, the HTTP one); any other as ``RemoteError``, whose ``status`` is
    the one in the body, else ``status``.
    """
    if not _KNOWN:
        _register_all()
    if not isinstance(body, dict):
        return RemoteError(f"unreadable error reply: {body!r}", type="Error", status=status)
    kind = str(body.get("type", "Error"))
    message = str(body.get("message", ""))
    details = {k: v for k, v in body.items() if k not in ("type", "message")}
    cls = _KNOWN.get(kind)
    if cls is None or cls is RemoteError or cls is Retry:
        if status is not None:
            details.setdefault("status", status)
        return RemoteError(message, type=kind, **details)
    try:
        if issubclass(cls, HTTPError):
            code = details.pop("status", status)
            return cls(code, message, **details)
        details.pop("status", None)  # a known class has its own
        return cls(message, **details)
    except (TypeError, ValueError):  # details it does not take, a status that is no error's
        if status is not None:
            details.setdefault("status", status)
        return RemoteError(message, type=kind, **details)
