"""The ``pooled`` mode (the default): long-lived worker processes that each run many jobs.

Like Celery's prefork pool: the supervisor (app/supervisor.py) forks N children, each an
inline worker (no fork per job, one round trip to start a job and one to finish it), and
replaces a child

- after it has run ``WORKER_MAX_JOBS_PER_CHILD`` jobs, or once its resident memory is past
  ``WORKER_MAX_MEMORY_PER_CHILD_MB`` after a job (it leaves warmly, between jobs, and exits
  with :data:`EX_RECYCLED`; its replacement is forked at once);
- when it dies. The supervisor never runs a job, so a crash (a segfault in C code, the OOM
  killer, ``os._exit`` in a task) only takes the child: the job it held, read from the
  shared :class:`~app.workers.inline.DeadlineBoard`, is put back on its queue (or failed as
  a poison job after ``MAX_ORPHAN_REQUEUES`` deaths) at once, through the run's lease, as
  the fork mode's parent does for a dead work horse; the dead child's registration is removed.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

from redis import Redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from app import compat, lifecycle, maintenance
from app.leases import Lease
from app.queues import JsonJob, JsonQueue
from app.workers.inline import JsonInlineWorker

log = logging.getLogger("tasklane.worker")

#: Exit status of a pooled child that left to be replaced (job count or memory cap).
EX_RECYCLED = 98

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """This process's resident set size, in MiB (from /proc; the peak RSS where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class JsonPooledWorker(JsonInlineWorker):
    """An inline worker in a pooled child: marks the job it holds, and leaves to be recycled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.max_jobs: int = kwargs.pop("max_jobs", 0)
        self.max_memory_mb: int = kwargs.pop("max_memory_mb", 0)
        super().__init__(*args, **kwargs)
        self.jobs_run = 0
        self.recycled: str | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job with it marked as held on the board; then leave if this child is spent."""
        if self.board is not None:
            self.board.hold(self.slot, job.id)
        try:
            super().execute_job(job, queue)
        finally:
            if self.board is not None:
                self.board.release(self.slot)
        self.jobs_run += 1
        if self.max_jobs and self.jobs_run >= self.max_jobs:
            self._recycle(f"ran {self.jobs_run} jobs (WORKER_MAX_JOBS_PER_CHILD={self.max_jobs})")
        elif self.max_memory_mb and (used := rss_mb()) > self.max_memory_mb:
            self._recycle(f"uses {used:.0f} MiB (WORKER_MAX_MEMORY_PER_CHILD_MB={self.max_memory_mb})")

    def _recycle(self, why: str) -> None:
        log.info("Worker %s %s; leaving to be replaced", self.name, why)
        self.recycled = why
        self.asked_to_stop = True
        compat.request_stop(self)


def settle_held(connection: Redis, job_id: str) -> str:
    """A pooled child died holding ``job_id``: put it back (or fail it as a poison job) now.

    Dequeued but not started: back to the head of its queue. Started: an orphan, through
    its run's lease (nothing is written if a sweep settled it already). Finished or failed
    (it died after writing the outcome): left alone. Returns what was done.
    """
    job = JsonJob.fetch_many([job_id], connection=connection)[0]
    if job is None:
        return "gone"
    queue = JsonQueue(job.origin, connection=connection)
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        return "requeued" if maintenance.requeue_dequeued(queue, job_id) else "left"
    if status != JobStatus.STARTED:
        return "left"
    registry = StartedJobRegistry(job.origin, connection=connection, job_class=JsonJob)
    members = lifecycle.started_members(connection, registry.key, job.id)
    if not members:
        return "left"
    lease = Lease(registry.key, tuple(members))
    return "requeued" if lifecycle.orphaned(job, queue, lease=lease) else "failed"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def forget_worker(connection: Redis, pid: int, hostname: str) -> list[str]:
    """Remove the registrations of a dead child (by pid and host), so no ghost is listed."""
    gone = []
    for key in connection.smembers("rq:workers"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        fields = connection.hmget(name, ["pid", "hostname", "queues"])
        found_pid, found_host, queues = (_text(v) for v in fields)
        if not found_pid or int(found_pid) != pid or found_host != hostname:
            continue
        with connection.pipeline() as pipe:
            pipe.delete(name)
            pipe.srem("rq:workers", name)
            for queue in queues.split(","):
                if queue:
                    pipe.srem(f"rq:workers:{queue}", name)
            pipe.execute()
        gone.append(name)
    return gone
