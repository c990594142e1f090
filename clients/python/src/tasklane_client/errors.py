"""The exceptions: the API's errors (``TasklaneError``) and a task's own failure (``TaskError``)."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "InvalidArguments",
    "TaskError",
    "TaskRevokedError",
    "TasklaneError",
    "TasklaneTimeout",
    "remote_error",
]


class TasklaneError(Exception):
    """The API answered with an error: ``status`` (HTTP), ``code``, ``message``, ``details``.

    They are the fields of the API's error shape, ``{"error": {"code", "message", "details"}}``;
    a service that cannot be reached is ``status`` 503, ``code`` ``"unreachable"``.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class InvalidArguments(TasklaneError, ValueError):
    """422: the call's arguments (or options, or a workflow's steps) are invalid; ``details`` names
    each bad field (``{"field", "message", "type"}``). Also a ``ValueError``, as in-process calls raise."""


class TasklaneTimeout(TasklaneError, TimeoutError):
    """Waiting for a job or a workflow gave up before it finished (also a ``TimeoutError``)."""


class TaskError(Exception):
    """A task failed in a worker: ``type`` is the remote exception's name, ``message`` its text.

    ``AsyncResult.get()`` raises a subclass named after the remote type (a ``ValueError`` in
    the worker raises a ``TaskError`` subclass called ``ValueError`` here), as the in-process
    ``app.result.AsyncResult`` does.
    """

    def __init__(self, type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message
        self.traceback = traceback


class TaskRevokedError(TaskError):
    """The job was revoked (or expired) before it could finish."""


_classes: dict[str, type[TaskError]] = {}


def remote_error(error: dict[str, Any] | None, revoked: bool = False) -> TaskError:
    """The exception that stands for a failure recorded as ``{"type", "message", "traceback"}``."""
    error = error or {}
    if revoked:
        return TaskRevokedError(str(error.get("type") or "TaskRevokedError"), str(error.get("message") or ""))
    name = str(error.get("type") or "TaskError")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", name):
        name = "TaskError"
    cls = _classes.get(name)
    if cls is None:
        cls = _classes[name] = type(name, (TaskError,), {"__module__": __name__})
    return cls(name, str(error.get("message") or ""), error.get("traceback"))
