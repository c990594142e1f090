"""``AsyncResult``: a job's state and result the way Celery callers read them.

``AsyncResult(job_id)`` works in any process that has the service's environment (at least
``REDIS_URL``); inside a Flask app of this service it uses that app's connection.
``get()`` waits on RQ's own results stream (blocking reads), not on a loop that polls.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.results import Result

from app.core import outcomes
from app.core.queues import JsonJob
from app.core.states import State, describe
from app.foundation.runtime import client_runtime

__all__ = [
    "READY",
    "AsyncResult",
    "EagerResult",
    "StateQueries",
    "TaskError",
    "TaskRevokedError",
    "remote_error",
]

#: Longest single blocking read on the results stream, in ms (kept below the socket timeout).
_BLOCK_MS = 2000
READY = frozenset({State.SUCCESS.value, State.FAILURE.value, State.REVOKED.value})


class TaskError(Exception):
    """A task failed in a worker. ``type`` is the remote exception's name, ``traceback`` its text.

    ``get()`` raises a subclass named after the remote type (``ValueError`` in the worker
    raises a ``TaskError`` subclass called ``ValueError`` here), so logs and ``except``
    clauses that print the type keep reading the same. Its argument is the remote message
    alone, as the worker raised it: ``UnknownUser('no user with id 9')``, not the type twice.
    """

    def __init__(self, type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(*((message,) if message else ()))
        self.type = type
        self.message = message
        self.traceback = traceback


class TaskRevokedError(TaskError):
    """The job was revoked before it could finish."""


_classes: dict[str, type[TaskError]] = {}


def remote_error(error: dict[str, Any] | None) -> TaskError:
    """The exception that stands for a failure recorded as ``{"type", "message", "traceback"}``."""
    error = error or {}
    name = str(error.get("type") or "TaskError")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", name):
        name = "TaskError"
    cls = _classes.get(name)
    if cls is None:
        cls = _classes[name] = type(name, (TaskError,), {"__module__": "app.calling.result"})
    return cls(name, str(error.get("message") or ""), error.get("traceback"))


class StateQueries:
    """``ready()``, ``successful()`` and ``failed()`` from a ``state`` (of a job or a workflow)."""

    state: Any

    def ready(self) -> bool:
        """True once it has finished: succeeded, failed or was revoked."""
        return self.state in READY

    def successful(self) -> bool:
        """True when it succeeded."""
        return bool(self.state == State.SUCCESS.value)

    def failed(self) -> bool:
        """True when it failed for good."""
        return bool(self.state == State.FAILURE.value)


class AsyncResult(StateQueries):
    """The result of one job: ``id``, ``state``, ``ready()``, ``get()``, ``revoke()``, ..."""

    def __init__(self, id: str, connection: Redis | None = None) -> None:
        self.id = id
        self._connection = connection
        #: True when the enqueue returned an earlier job (``unique`` or ``debounce``) instead of a new one.
        self.deduplicated = False

    @property
    def task_id(self) -> str:
        """Celery's name for ``id``."""
        return self.id

    @property
    def connection(self) -> Redis:
        """The Redis the job lives in."""
        if self._connection is None:
            self._connection = client_runtime().redis
        return self._connection

    def _job(self) -> Job | None:
        try:
            return JsonJob.fetch(self.id, connection=self.connection)
        except NoSuchJobError:
            return None

    def _view(self) -> dict[str, Any]:
        job = self._job()
        if job is None:  # Celery's answer for an id it does not know
            return {
                "state": State.PENDING.value,
                "status": None,
                "result": None,
                "error": None,
                "progress": None,
            }
        return describe(job)

    @property
    def state(self) -> str:
        """``PENDING``, ``STARTED``, ``PROGRESS``, ``RETRY``, ``SUCCESS``, ``FAILURE`` or ``REVOKED``."""
        return str(self._view()["state"])

    #: Celery's other name for the state.
    status = state

    @property
    def rq_status(self) -> str | None:
        """RQ's own status word (``queued``, ``started``, ``finished``, ...)."""
        return self._view()["status"]

    @property
    def info(self) -> Any:
        """The return value on success, the error (an exception) on failure, else the progress report."""
        return _info(self._view())

    #: As in Celery, ``result`` is ``info``.
    result = info

    @property
    def traceback(self) -> str | None:
        """The failure's traceback text, when the job failed."""
        error = self._view().get("error")
        return error.get("traceback") if error else None

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """Wait for the job to finish and return its result.

        Raises the task's failure (a :class:`TaskError` named after the remote type) when
        ``propagate``, ``TimeoutError`` after ``timeout`` seconds. Waits in blocking reads
        on the job's results stream (RQ writes a result there when a job ends), from the
        newest entry seen before each status check, so no result is missed and none is
        waited for twice; ``interval`` is unused (kept for Celery's signature).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        stream = Result.get_key(self.id)
        block_ms = _block_ms(self.connection)
        while True:
            newest = self.connection.xrevrange(stream, count=1)
            since: Any = newest[0][0] if newest else "0-0"
            job = self._job()
            view = describe(job) if job is not None else None
            if view is not None and view["state"] in READY:
                return self._outcome(view, propagate)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            wait_ms = block_ms if remaining is None else max(1, min(block_ms, int(remaining * 1000)))
            self.connection.xread({stream: since}, block=wait_ms)

    def _outcome(self, view: dict[str, Any], propagate: bool) -> Any:
        if view["state"] == State.SUCCESS.value:
            return view["result"]
        error = remote_error(view["error"])
        if view["state"] == State.REVOKED.value:
            error = TaskRevokedError(
                error.type, error.message or f"job {self.id} was revoked", error.traceback
            )
        if propagate:
            raise error
        return error

    def wait(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Celery's older name for :meth:`get`."""
        return self.get(timeout=timeout, propagate=propagate)

    def revoke(self) -> None:
        """Cancel the job if it waits, stop it if it runs (on whichever host runs it)."""
        job = self._job()
        if job is not None:
            with contextlib.suppress(outcomes.JobFinished):
                outcomes.revoke(job)

    def forget(self) -> None:
        """Delete the job and its results from Redis."""
        job = self._job()
        if job is not None:
            job.delete()

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def _block_ms(connection: Redis) -> int:
    """The longest blocking read the connection's socket timeout allows (status re-checked after each)."""
    timeout = connection.connection_pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return _BLOCK_MS
    return max(100, min(_BLOCK_MS, int((float(timeout) - 0.5) * 1000)))


def _info(view: dict[str, Any]) -> Any:
    state = view["state"]
    if state == State.SUCCESS.value:
        return view["result"]
    if state in (State.FAILURE.value, State.REVOKED.value, State.RETRY.value) and view.get("error"):
        return remote_error(view["error"])
    return view.get("progress")


class EagerResult:
    """The result of a call run inline (eager mode): the same surface as :class:`AsyncResult`."""

    def __init__(self, id: str, value: Any = None, error: TaskError | None = None) -> None:
        self.id = id
        self._value = value
        self._error = error

    task_id = property(lambda self: self.id)

    @property
    def state(self) -> str:
        """``SUCCESS`` or ``FAILURE``: an eager call has finished when it returns."""
        return State.FAILURE.value if self._error is not None else State.SUCCESS.value

    status = state

    def ready(self) -> bool:
        """Always True."""
        return True

    def successful(self) -> bool:
        """True when the call returned."""
        return self._error is None

    def failed(self) -> bool:
        """True when the call raised."""
        return self._error is not None

    @property
    def info(self) -> Any:
        """The return value, or the error."""
        return self._error if self._error is not None else self._value

    result = info

    @property
    def traceback(self) -> str | None:
        """The error's traceback text."""
        return self._error.traceback if self._error is not None else None

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """The return value; the error is raised when ``propagate``."""
        if self._error is not None:
            if propagate:
                raise self._error
            return self._error
        return self._value

    def revoke(self) -> None:
        """Nothing to revoke: the call has run."""

    def forget(self) -> None:
        """Nothing is stored."""

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"
