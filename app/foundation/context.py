"""What a running task can know about its own job (Celery's ``self.request`` with ``bind=True``)."""

from __future__ import annotations

from dataclasses import dataclass

from rq import get_current_job

from app.foundation.meta import Meta


@dataclass(frozen=True)
class TaskContext:
    """The job a task is running as, and where it stands in its retry budget."""

    job_id: str
    task: str | None
    queue: str
    #: Retries used before this attempt (Celery's ``self.request.retries``).
    retries: int
    max_retries: int
    #: Times the job was put back because its worker died (not counted as retries).
    orphaned: int

    @property
    def attempt(self) -> int:
        """This attempt's number, 1 for the first."""
        return self.retries + 1

    @property
    def retries_left(self) -> int:
        """How many more attempts may follow this one."""
        return max(0, self.max_retries - self.retries)

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now fails the job for good."""
        return self.retries_left == 0


def current_task() -> TaskContext | None:
    """The running job's context, or None outside a job (a direct call, eager mode without a job)."""
    job = get_current_job()
    if job is None:
        return None
    max_retries = int(job.meta.get(Meta.MAX_RETRIES) or 0)
    left = job.retries_left if job.retries_left is not None else max_retries
    return TaskContext(
        job_id=job.id,
        task=job.meta.get(Meta.TASK),
        queue=job.origin,
        retries=max(0, max_retries - left),
        max_retries=max_retries,
        orphaned=int(job.meta.get(Meta.ORPHANED) or 0),
    )
