"""Enqueueing a task: the one path from validated arguments to a job in Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from redis import Redis
from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus, Retry

from app.queues import JsonQueue, QueueName, get_queue
from app.registry import TaskSpec

JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"


class JobExistsError(Exception):
    """A caller-chosen job id is already taken."""


class EnqueueOptions(BaseModel):
    """Per-call options of ``POST /api/v1/tasks/<name>``."""

    model_config = ConfigDict(extra="forbid")

    countdown: float | None = Field(default=None, ge=0, le=366 * 24 * 3600, description="seconds to wait")
    eta: AwareDatetime | None = Field(default=None, description="ISO 8601 time with a zone")
    queue: QueueName | None = None
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    result_ttl: int | None = Field(default=None, ge=-1, description="seconds; -1 keeps the result")

    @model_validator(mode="after")
    def _one_delay(self) -> EnqueueOptions:
        if self.countdown is not None and self.eta is not None:
            raise ValueError("give countdown or eta, not both")
        return self

    def run_at(self) -> datetime | None:
        """When the job should run, or None for now."""
        if self.eta is not None:
            return self.eta.astimezone(UTC)
        if self.countdown:
            return datetime.now(UTC) + timedelta(seconds=self.countdown)
        return None


def enqueue(
    spec: TaskSpec,
    args: BaseModel,
    connection: Redis,
    options: EnqueueOptions | None = None,
    *,
    default_result_ttl: int,
    failure_ttl: int,
    meta: dict[str, Any] | None = None,
) -> Job:
    """Create the job for ``spec`` with validated ``args`` and put it on its queue (or schedule)."""
    options = options or EnqueueOptions()
    queue: JsonQueue = get_queue((options.queue or spec.queue).value, connection)
    retry = None
    if spec.retry.max_retries:
        retry = Retry(max=spec.retry.max_retries, interval=spec.retry.countdowns())
    run_at = options.run_at()
    job = queue.create_job(
        spec.path,
        kwargs=args.model_dump(mode="json"),
        timeout=spec.time_limit,
        result_ttl=_first(options.result_ttl, spec.result_ttl, default_result_ttl),
        failure_ttl=failure_ttl,
        job_id=options.job_id,
        retry=retry,
        meta={"task": spec.name, "max_retries": spec.retry.max_retries, **(meta or {})},
        status=JobStatus.SCHEDULED if run_at else JobStatus.QUEUED,
    )
    unique = options.job_id is not None
    try:
        if run_at is not None and run_at > datetime.now(UTC):
            return queue.schedule_job(job, run_at, unique=unique)
        return queue.enqueue_job(job, unique=unique)
    except DuplicateJobError:
        raise JobExistsError(f"a job with id {options.job_id!r} already exists") from None


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no result TTL")
