"""``Tasklane``: Celery-shaped calls to a Tasklane service over HTTP.

tl = Tasklane("https://tasks.example.com", token)
result = tl.task("add").delay(2, 3)           # positional arguments fill the task's fields in order
result.get(timeout=30)                         # 5
flow = tl.chain(tl.task("add").s(2, 2), tl.task("add").s(4)).apply_async()
flow.get(timeout=30)                           # 8
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tasklane_client import canvas as cv
from tasklane_client._http import FINAL, fields_of, unknown_task
from tasklane_client.canvas import Canvas, Signature, Task, arguments
from tasklane_client.client import Client
from tasklane_client.errors import TasklaneError, remote_error

__all__ = ["AsyncResult", "Tasklane", "WorkflowResult", "job_outcome", "workflow_outcome"]


def job_outcome(view: Mapping[str, Any]) -> tuple[bool, Any]:
    """``(True, result)`` for a job that succeeded, ``(False, its TaskError)`` for one that did not."""
    if view.get("state") == "SUCCESS":
        return True, view.get("result")
    return False, remote_error(view.get("error"), revoked=view.get("state") == "REVOKED")


def workflow_outcome(status: Mapping[str, Any]) -> tuple[bool, Any]:
    """As :func:`job_outcome` for a workflow: its result, or the error of the step that failed."""
    if status.get("state") == "SUCCESS":
        return True, status.get("result")
    steps = status.get("steps") or []
    failed = next((s for s in steps if s.get("state") == "FAILURE"), None)
    if failed is not None:
        return False, remote_error(failed.get("error"))
    revoked: dict[str, Any] = next((s for s in steps if s.get("state") == "REVOKED"), {})
    return False, remote_error(revoked.get("error"), revoked=True)


class AsyncResult:
    """A job of the remote service: ``id``, ``state``, ``ready()``, ``get()``, ``revoke()``, ...

    Each read of ``state``, ``status``, ``info`` or ``result`` asks the service (``GET /api/v1/jobs/<id>``).
    """

    def __init__(self, id: str, tasklane: Tasklane) -> None:
        self.id = id
        self.tasklane = tasklane

    @property
    def task_id(self) -> str:
        """Celery's name for ``id``."""
        return self.id

    def view(self) -> dict[str, Any]:
        """The job's whole view, as ``GET /api/v1/jobs/<id>`` returns it."""
        return self.tasklane.client.job(self.id)

    @property
    def state(self) -> str:
        """PENDING, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE or REVOKED."""
        return str(self.view()["state"])

    @property
    def status(self) -> str:
        """RQ's own status word."""
        return str(self.view()["status"])

    @property
    def info(self) -> Any:
        """The progress while it runs, the error once it failed, else the result."""
        view = self.view()
        if view["state"] in ("FAILURE", "REVOKED", "RETRY"):
            return view.get("error")
        if view["state"] == "SUCCESS":
            return view.get("result")
        return view.get("progress")

    @property
    def result(self) -> Any:
        """The return value once it succeeded, the exception once it failed, else None."""
        view = self.view()
        if view["state"] not in FINAL:
            return None
        return job_outcome(view)[1]

    def ready(self) -> bool:
        """True once it has finished: succeeded, failed or was revoked."""
        return self.state in FINAL

    def successful(self) -> bool:
        """True when it succeeded."""
        return self.state == "SUCCESS"

    def failed(self) -> bool:
        """True when it failed for good."""
        return self.state == "FAILURE"

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """Wait for the job; its result. When it failed: raise its error (a :class:`TaskError` named
        after the remote exception, with ``.type`` and ``.message``), or return it if not ``propagate``.
        Raises :class:`TasklaneTimeout` (a ``TimeoutError``) after ``timeout`` s."""
        ok, value = job_outcome(self.tasklane.client.wait(self.id, timeout=timeout, interval=interval))
        if not ok and propagate:
            raise value
        return value

    def revoke(self) -> None:
        """Cancel it if it waits, stop it if it runs (nothing if it has already finished)."""
        try:
            self.tasklane.client.revoke(self.id)
        except TasklaneError as exc:
            if exc.status != 409:
                raise

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class WorkflowResult:
    """A workflow of the remote service: ``id``, ``job_ids``, ``state``, ``get()`` the final result."""

    def __init__(self, id: str, job_ids: list[str], tasklane: Tasklane) -> None:
        self.id = id
        self.job_ids = job_ids
        self.tasklane = tasklane

    @property
    def state(self) -> str:
        """The workflow's aggregate state."""
        return str(self.tasklane.client.workflow_status(self.id)["state"])

    @property
    def results(self) -> list[AsyncResult]:
        """One result per job of the workflow, in creation order."""
        return [AsyncResult(job_id, self.tasklane) for job_id in self.job_ids]

    def ready(self) -> bool:
        """True once it has finished."""
        return self.state in FINAL

    def successful(self) -> bool:
        """True when every step succeeded."""
        return self.state == "SUCCESS"

    def failed(self) -> bool:
        """True when a step failed for good."""
        return self.state == "FAILURE"

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """Wait for the workflow; its result (a list for a group), or the failed step's error."""
        ok, value = workflow_outcome(
            self.tasklane.client.wait_workflow(self.id, timeout=timeout, interval=interval)
        )
        if not ok and propagate:
            raise value
        return value

    def revoke(self) -> None:
        """Revoke every job of the workflow that has not finished."""
        for result in self.results:
            result.revoke()

    def __repr__(self) -> str:
        return f"<WorkflowResult: {self.id}>"


#: ``AsyncResult`` under a name that the ``Tasklane.AsyncResult`` method does not hide.
JobResult = AsyncResult


class Tasklane:
    """A client of a Tasklane service: ``Tasklane(base_url, token)``; the keyword options are
    :class:`~tasklane_client.client.Client`'s (``timeout``, ``retries``, ``backoff``, ...)."""

    def __init__(self, base_url: str, token: str, **options: Any) -> None:
        self.client = Client(base_url, token, **options)
        self._fields: dict[str, list[str]] | None = None

    def task(self, name: str) -> Task[JobResult, WorkflowResult]:
        """The handle of the remote task ``name`` (nothing is asked of the service yet)."""
        return Task(self, name)

    def AsyncResult(self, id: str) -> JobResult:  # Celery's app.AsyncResult(id)
        """The result of a job enqueued earlier, by its id."""
        return JobResult(id, self)

    def chain(self, *steps: Any) -> cv.chain[JobResult, WorkflowResult]:
        """Steps one after another, each receiving the previous step's result."""
        return cv.chain(self, *steps)

    def group(self, *steps: Any) -> cv.group[JobResult, WorkflowResult]:
        """Steps side by side; the result is the list of their results."""
        return cv.group(self, *steps)

    def chord(
        self, header: Any, body: Signature[JobResult, WorkflowResult]
    ) -> cv.chord[JobResult, WorkflowResult]:
        """A group whose list of results goes to ``body``."""
        return cv.chord(self, header, body)

    def fields(self, task: str) -> list[str]:
        """The task's input fields in order, from the service's catalogue (read once, then kept)."""
        return self._catalogue([task])[task]

    def close(self) -> None:
        """Release the pooled connections."""
        self.client.close()

    def __enter__(self) -> Tasklane:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _catalogue(self, tasks: Iterable[str]) -> dict[str, list[str]]:
        wanted = set(tasks)
        if wanted and (self._fields is None or not wanted <= self._fields.keys()):
            self._fields = fields_of(self.client.tasks())
        missing = wanted - self._fields.keys() if self._fields is not None else set()
        if missing:
            raise unknown_task(sorted(missing)[0])
        return self._fields or {}

    def _enqueue(
        self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: dict[str, Any]
    ) -> JobResult:
        if args:
            kwargs = arguments(task, self._catalogue([task])[task], args, kwargs)
        return JobResult(self.client.enqueue(task, dict(kwargs), **options), self)

    def _start_workflow(self, canvas: Canvas[Any, Any]) -> WorkflowResult:
        spec = canvas.node(False, self._catalogue(canvas.tasks()))
        created = self.client.workflow(spec)
        return WorkflowResult(str(created["workflow_id"]), list(created["job_ids"]), self)
