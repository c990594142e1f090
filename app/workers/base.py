"""What every Tasklane worker adds to RQ's: JSON only, the registry's limits, one lifecycle.

Each worker mode is a small subclass in its own module (fork.py, inline.py, threads.py);
RQ's classes own the work loop. Every outcome a worker observes goes to app/lifecycle.py.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import now

from app import compat, defaults, lifecycle, maintenance
from app.execution import ExecutingJob, record_error
from app.limits import RateLimiter, TaskTimeLimits, TimeLimitExceeded
from app.queues import JsonQueue, task_spec

log = logging.getLogger("tasklane.worker")


class TasklaneWorkerMixin:
    """What every Tasklane worker adds to RQ's: JSON only, the registry's limits and hooks."""

    connection: Redis
    queues: list[Queue]
    name: str
    _hard_killed: str | None = None
    _horse_lost: str | None = None
    log: logging.Logger
    job_monitoring_interval: int
    #: How a job's soft and hard limits are enforced in the process or thread that runs it.
    time_limits_class: type[BaseDeathPenalty] = TaskTimeLimits

    def _init_tasklane(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = kwargs.get("job_class") or ExecutingJob
        kwargs["queue_class"] = kwargs.get("queue_class") or JsonQueue
        kwargs.setdefault("job_monitoring_interval", defaults.MONITOR_INTERVAL)
        return kwargs

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short heartbeats, so that a dead worker's job is noticed (and re-run) within a minute."""
        return int(self.job_monitoring_interval + defaults.HEARTBEAT_SLACK)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Defer a job that is over its task's rate limit; run any other."""
        spec = task_spec(job)
        if spec is not None and spec.rate_limit is not None:
            limiter = RateLimiter(self.connection)
            wait = limiter.acquire(spec.name, spec.rate_limit)
            # A short wait is spent here, holding the job (it stays in the intermediate list,
            # so nothing is lost); a longer one goes through the scheduled registry.
            while 0 < wait <= defaults.RATE_LIMIT_HOLD:
                time.sleep(wait)
                wait = limiter.acquire(spec.name, spec.rate_limit)
            if wait > 0:
                lifecycle.deferred(job, queue, wait)
                return
        super().execute_job(job, queue)  # type: ignore[misc]

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Every dequeue went through an intermediate list (see JsonQueue.dequeue_any): clear it."""
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)  # type: ignore[misc]

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        """Run the job under its task's soft and hard time limits."""
        spec = task_spec(job)
        soft = spec.soft_time_limit if spec is not None else None
        self.death_penalty_class = functools.partial(self.time_limits_class, soft_timeout=soft)
        try:
            return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]
        finally:
            del self.death_penalty_class

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        """Record the failure once, through the lifecycle: retried, failed for good, or requeued.

        A work horse that died under its job (killed, out of memory, a crash in C code)
        did not fail the job: the job is an orphan, put back without spending a retry.
        """
        stopped = compat.stopped_job_id(self) == job.id
        if job.worker_name is None:  # the parent of a forked horse never saw the start
            job.worker_name = self.name
        if getattr(self, "_hard_killed", None) == job.id:
            message = f"hard time limit of {job.timeout} s exceeded; the work horse was killed"
            exc_string = f"{exc_string}\n{TimeLimitExceeded.__module__}.TimeLimitExceeded: {message}"
            record_error(job, "TimeLimitExceeded", message)
        elif getattr(self, "_horse_lost", None) == job.id and not stopped:
            self._horse_lost = None

            def cleanup(pipe: Any) -> None:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)  # type: ignore[attr-defined]

            lifecycle.orphaned(job, queue, cleanup=cleanup)  # type: ignore[arg-type]
            return
        final = not job.should_retry or stopped
        super().handle_job_failure(  # type: ignore[misc]
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )
        # A horse that died before it started leaves the id in the intermediate list.
        self.connection.lrem(queue.intermediate_queue_key, 0, job.id)
        if final:
            lifecycle.failed(job, exc_string, stopped=stopped)
        else:
            lifecycle.retrying(job)

    def handle_work_horse_killed(self, job: Job, retpid: Any, ret_val: Any, rusage: Any) -> None:
        """Note that the horse died under the job; handle_job_failure, called next, requeues it."""
        self._horse_lost = job.id
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[misc]

    def clean_registries(self) -> None:
        """RQ's maintenance, except that orphans are requeued, not failed (app/maintenance.py)."""
        for queue in self.queues:
            maintenance.sweep_queue(queue)  # type: ignore[arg-type]
        self.last_cleaned_at = now()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        """RQ's success handling, then the lifecycle's."""
        super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]
        lifecycle.succeeded(job)
