"""What the platform does around a job's life, in the worker: errors, deferrals, final outcomes.

Called by the worker classes (app/workers.py) and the scheduler's sweeps, so that a job
that fails in its task, is killed past its hard limit, or is abandoned by a dead worker
gets the same treatment: a recorded error, an alert if its task is critical, its
workflow's later steps revoked, its uniqueness lock released.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
from flask import current_app, has_app_context

from app.queues import task_spec

if TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

log = logging.getLogger("tasklane.hooks")

ERROR_META_KEY = "error"
ATTEMPTS_META_KEY = "attempts"
RATE_LIMITED_META_KEY = "rate_limited_until"
UNIQUE_META_KEY = "unique_key"
#: Most attempt records a job keeps (the latest ones).
MAX_ATTEMPT_RECORDS = 25

_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def record_error(job: Job, exc_type: str, message: str) -> None:
    """Record a failure seen from outside the task (a killed or abandoned run) as an attempt."""
    job.meta = job.get_meta(refresh=True)  # the run may have saved progress and attempts since
    record_attempt(job, exc_type, message)
    job.save_meta()


def record_attempt(job: Job, exc_type: str, message: str) -> None:
    """Append this attempt's error to the job's history (saved with the next meta write)."""
    attempts = list(job.meta.get(ATTEMPTS_META_KEY) or [])
    attempts.append(
        {
            "attempt": len(attempts) + 1,
            "type": exc_type,
            "message": message[:2000],
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    )
    job.meta[ATTEMPTS_META_KEY] = attempts[-MAX_ATTEMPT_RECORDS:]
    job.meta[ERROR_META_KEY] = {"type": exc_type, "message": message}


def defer_rate_limited(job: Job, queue: Queue, wait: float) -> None:
    """Put a dequeued job back, to start when its task's rate limit allows; never a failure."""
    from app.dispatch import whole_second_after

    when = whole_second_after(datetime.now(UTC) + timedelta(seconds=wait))
    job.meta[RATE_LIMITED_META_KEY] = when.isoformat().replace("+00:00", "Z")
    with job.connection.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        queue.schedule_job(job, when, pipeline=pipe)
        pipe.execute()
    log.info("rate limited: job %s waits %.2f s", job.id, wait, extra={"job_id": job.id})


def release_unique(job: Job) -> None:
    """Free the task's uniqueness lock if this job holds it."""
    key = job.meta.get(UNIQUE_META_KEY)
    if key:
        job.connection.eval(_RELEASE_IF_OWNER, 1, key, job.id)


def after_success(job: Job) -> None:
    """A job finished: free its uniqueness lock."""
    release_unique(job)


def after_revoke(job: Job) -> None:
    """A job was revoked: free its lock and revoke the workflow steps that needed it."""
    release_unique(job)
    _revoke_workflow_rest(job)


def after_final_failure(job: Job, exc_string: str, stopped: bool = False) -> None:
    """A job failed for good (or was stopped): alert, revoke its workflow's later steps, free its lock."""
    release_unique(job)
    _revoke_workflow_rest(job)
    spec = task_spec(job)
    if spec is not None and spec.critical and not stopped:
        alert(job, spec.name, exc_string)


def _revoke_workflow_rest(job: Job) -> None:
    if not job.meta.get("workflow"):
        return
    try:
        from app.workflows import on_step_failed

        on_step_failed(job)
    except Exception:
        log.exception("could not revoke the workflow steps after job %s", job.id)


def alert(job: Job, task: str, exc_string: str) -> None:
    """Raise the alarm for a critical task's final failure: an ERROR log line and ALERT_WEBHOOK_URL."""
    error = job.meta.get(ERROR_META_KEY) or {}
    payload: dict[str, Any] = {
        "event": "job.failed",
        "job_id": job.id,
        "task": task,
        "queue": job.origin,
        "error": error,
        "attempts": len(job.meta.get(ATTEMPTS_META_KEY) or []),
        "failed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    summary = error.get("message") or (exc_string.strip().splitlines() or [""])[-1]
    context = {"job_id": job.id, "task": task, "queue": job.origin}
    log.error("critical task %s failed for good: %s", task, summary, extra=context)
    url = current_app.extensions["tasklane"].settings.alert_webhook_url if has_app_context() else ""
    if url:
        try:
            requests.post(url, json=payload, timeout=5).raise_for_status()
        except requests.RequestException as exc:
            log.error("alert webhook failed: %s", exc, extra={"job_id": job.id, "task": task})
