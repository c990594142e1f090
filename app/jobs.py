"""Jobs as the API shows them: Celery's state vocabulary beside RQ's own status."""

from __future__ import annotations

import contextlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from rq.job import Job, JobStatus

from app.hooks import ATTEMPTS_META_KEY, ERROR_META_KEY
from app.progress import PROGRESS_META_KEY
from app.registry import REGISTRY


class State(StrEnum):
    """The states Celery clients already poll for."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


_WAITING = {
    JobStatus.CREATED,
    JobStatus.QUEUED,
    JobStatus.DEFERRED,
    JobStatus.SCHEDULED,
    JobStatus.RATE_LIMITED,
    JobStatus.READY_TO_ENQUEUE,
}


def attempts_made(job: Job) -> int:
    """How many retries the job has used so far."""
    if job.retries_left is None:
        return 0
    total = int(job.meta.get("max_retries", job.retries_left))
    return max(0, total - job.retries_left)


def state_of(job: Job, status: JobStatus | None = None) -> State:
    """Map RQ's status (and the job's meta) onto the Celery vocabulary."""
    status = status or job.get_status(refresh=False)
    if status == JobStatus.FINISHED:
        return State.SUCCESS
    if status == JobStatus.FAILED:
        return State.FAILURE
    if status in (JobStatus.CANCELED, JobStatus.STOPPED):
        return State.REVOKED
    if status == JobStatus.STARTED:
        return State.PROGRESS if job.meta.get(PROGRESS_META_KEY) else State.STARTED
    if status in (JobStatus.SCHEDULED, JobStatus.QUEUED) and attempts_made(job) > 0:
        return State.RETRY
    return State.PENDING


def task_name(job: Job) -> str | None:
    """The registry name of the job's task, or its raw function name if unregistered."""
    spec = REGISTRY.by_path(job.func_name or "") if job.func_name else None
    return spec.name if spec else job.func_name


def parse_error(exc_string: str | None) -> dict[str, Any] | None:
    """Split a formatted traceback into type, message and the traceback itself."""
    if not exc_string:
        return None
    last = exc_string.strip().splitlines()[-1] if exc_string.strip() else ""
    exc_type, _, message = last.partition(": ")
    if " " in exc_type or not exc_type:
        exc_type, message = "Error", last
    return {"type": exc_type.rsplit(".", 1)[-1], "message": message, "traceback": exc_string}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def describe(job: Job) -> dict[str, Any]:
    """The job as ``GET /api/v1/jobs/<id>`` returns it."""
    status = job.get_status(refresh=False)
    state = state_of(job, status)
    result = None
    error = None
    if state is State.SUCCESS:
        result = job.return_value()
    elif state in (State.FAILURE, State.RETRY, State.REVOKED):
        latest = job.latest_result()
        error = parse_error(latest.exc_string if latest else None)
        recorded = job.meta.get(ERROR_META_KEY)
        if isinstance(recorded, dict):
            error = {**(error or {"traceback": None}), "type": str(recorded.get("type")),
                     "message": str(recorded.get("message"))}  # fmt: skip
        if error is not None:
            error = {**error, "attempts": job.meta.get(ATTEMPTS_META_KEY) or []}
    return {
        "job_id": job.id,
        "task": task_name(job),
        "queue": job.origin,
        "state": state.value,
        "status": status.value if isinstance(status, JobStatus) else status,
        "progress": job.meta.get(PROGRESS_META_KEY),
        "result": result,
        "error": error,
        "retries": attempts_made(job),
        "next_retry_at": job.meta.get("next_retry_at") if state is State.RETRY else None,
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "worker": job.worker_name,
    }


class JobFinished(Exception):
    """The job has already finished, successfully or not."""


class JobNotFailed(Exception):
    """Only a failed job can be retried."""


def revoke(job: Job) -> State:
    """Cancel a waiting job or stop a running one (on whichever host runs it)."""
    from rq.command import send_stop_job_command
    from rq.exceptions import InvalidJobOperation
    from rq.serializers import JSONSerializer

    from app.hooks import after_revoke
    from app.queues import META_REVOKED

    status = job.get_status()
    if status in (JobStatus.CANCELED, JobStatus.STOPPED):
        return State.REVOKED
    if status in (JobStatus.FINISHED, JobStatus.FAILED):
        raise JobFinished(f"job {job.id} has already finished ({status.value})")
    job.meta[META_REVOKED] = True
    job.save_meta()
    if status == JobStatus.STARTED:
        # Between dequeue and start there is no worker to tell: the revoke flag stops the run.
        with contextlib.suppress(InvalidJobOperation):
            send_stop_job_command(job.connection, job.id, serializer=JSONSerializer)
    else:
        job.cancel()
    after_revoke(job)
    return State.REVOKED


def retry_failed(job: Job) -> None:
    """Put a failed job back on its queue for a fresh run."""
    if job.get_status() != JobStatus.FAILED:
        raise JobNotFailed(f"job {job.id} is {job.get_status().value}, not failed")
    for key in ("no_retry", "revoked"):
        job.meta.pop(key, None)
    job.save_meta()
    job.requeue()
