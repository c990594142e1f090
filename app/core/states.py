"""Jobs as the API shows them: Celery's state vocabulary beside RQ's own status."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from app.catalogue.registry import MASK, REGISTRY
from app.core import sealing, sequences
from app.foundation import defaults
from app.foundation.meta import Meta
from app.foundation.timeutil import iso


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
    total = int(job.meta.get(Meta.MAX_RETRIES, job.retries_left))
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
        return State.PROGRESS if job.meta.get(Meta.PROGRESS) else State.STARTED
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


def scheduled_for(job: Job, status: Any) -> str | None:
    """When a scheduled job is due to be enqueued (UTC, ISO 8601), from RQ's scheduled registry."""
    if status != JobStatus.SCHEDULED:
        return None
    score = job.connection.zscore(ScheduledJobRegistry(job.origin, connection=job.connection).key, job.id)
    return iso(datetime.fromtimestamp(score, UTC)) if score else None


def sequence_view(job: Job, status: Any) -> dict[str, Any] | None:
    """``{"key", "ahead"}`` for a job in a sequence (``ahead``: jobs before it, 0 when its turn has
    come; null once it has ended), or None."""
    key = sequences.key_of(job)
    if key is None:
        return None
    ended = status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
    return {"key": key, "ahead": None if ended else sequences.ahead(job.connection, job)}


def describe(job: Job) -> dict[str, Any]:
    """The job as ``GET /api/v1/jobs/<id>`` returns it."""
    status = job.get_status(refresh=False)
    state = state_of(job, status)
    result = None
    error = None
    if state is State.SUCCESS:
        result = job.return_value()
        try:
            result = sealing.job_result(job, result)
        except sealing.DecryptError:
            result = MASK  # sealed under a key that is gone: not shown, never the envelope
    elif state in (State.FAILURE, State.RETRY, State.REVOKED):
        latest = job.latest_result()
        error = parse_error(latest.exc_string if latest else None)
        recorded = job.meta.get(Meta.ERROR)
        if isinstance(recorded, dict):
            error = {**(error or {"traceback": None}), "type": str(recorded.get("type")),
                     "message": str(recorded.get("message"))}  # fmt: skip
        if error is not None:
            error = {**error, "attempts": job.meta.get(Meta.ATTEMPTS) or []}
    return {
        "job_id": job.id,
        "task": task_name(job),
        "queue": job.origin,
        "state": state.value,
        "status": status.value if isinstance(status, JobStatus) else status,
        "progress": job.meta.get(Meta.PROGRESS),
        "result": result,
        "error": error,
        "retries": attempts_made(job),
        # Every failed attempt, also of a job that then succeeded (a worker lost mid-run, say).
        "attempts": job.meta.get(Meta.ATTEMPTS) or [],
        "next_retry_at": job.meta.get(Meta.NEXT_RETRY_AT) if state is State.RETRY else None,
        # When a delayed job (countdown, eta, a retry's or a snooze's wait) is due; null otherwise.
        "scheduled_for": scheduled_for(job, status),
        # How many times the task snoozed (``raise Snooze(seconds)``): no retry spent, no failure.
        "snoozed": int(job.meta.get(Meta.SNOOZED) or 0),
        # The job's sequence (the ``sequence`` option) and how many of its jobs are before it.
        "sequence": sequence_view(job, status),
        # Its place in its queue: priority 0 (first) .. 9 (last), and its fairness group (or null).
        "priority": _priority(job),
        "group": job.meta.get(Meta.GROUP),
        "enqueued_at": iso(job.enqueued_at),
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "worker": job.worker_name,
    }


def _priority(job: Job) -> int:
    value = job.meta.get(Meta.PRIORITY)
    return value if isinstance(value, int) and not isinstance(value, bool) else defaults.DEFAULT_PRIORITY


#: The job hash field that marks a job set aside unread (app/core/outcomes.py: set_aside).
SET_ASIDE = "tasklane_set_aside"
_SET_ASIDE_FIELDS = (SET_ASIDE, "error", "origin", "ended_at", "enqueued_at", "created_at")


def set_aside_views(connection: Redis, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The jobs of ``job_ids`` that were set aside unread, as ``GET /api/v1/jobs/<id>`` shows them:
    FAILURE, with the recorded cause as the error. Only raw fields are read: the job's data and
    meta (maybe a pickle) are never decoded."""
    if not job_ids:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), *_SET_ASIDE_FIELDS)
        rows = pipe.execute()
    views: dict[str, dict[str, Any]] = {}
    for job_id, row in zip(job_ids, rows, strict=True):
        marker, cause, origin, ended_at, enqueued_at, created_at = (_text(v) for v in row)
        enqueued_at = enqueued_at or created_at
        if not marker:
            continue
        error = parse_error(cause) or {"type": "Error", "message": "", "traceback": None}
        views[job_id] = {
            "job_id": job_id,
            "task": None,
            "queue": origin or marker,
            "state": State.FAILURE.value,
            "status": JobStatus.FAILED.value,
            "progress": None,
            "result": None,
            "error": {**error, "traceback": None, "attempts": []},
            "retries": 0,
            "attempts": [],
            "next_retry_at": None,
            "enqueued_at": enqueued_at or None,
            "started_at": None,
            "ended_at": ended_at or None,
            "worker": None,
        }
    return views


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
