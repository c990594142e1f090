"""What every Tasklane worker adds to RQ's: JSON only, the registry's limits, one outcomes module,
and a work loop that rides out Redis outages.

Each worker mode is a small subclass in its own module (pooled.py, fork.py, inline.py,
threads.py); RQ's classes own the work loop. What they share is split by concern:

- redis_outages.py: every step that keeps the worker's own records waits out an outage;
- grace.py: a warm shutdown's grace for the job in hand;
- recording.py: the run's outcome, written through its lease and app/core/outcomes.py;
- this module: the start of a run (one atomic claim), its limits, and the job in hand,
  whose state is one :class:`~app.processes.workers.surface.RunState` per job.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from redis import Redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import now
from rq.worker import WorkerStatus

from app.core import leases, outcomes
from app.core.execution import ExecutingJob
from app.core.leases import Lease
from app.core.limits import RateLimiter, TaskTimeLimits
from app.core.outcomes import ShutdownGraceOver
from app.core.queues import JsonQueue, UnreadableJob, task_spec
from app.foundation import defaults, keys, outages
from app.foundation.meta import Meta
from app.processes.workers.recording import EX_OUTCOME_LOST, SETTLE_AFTER, OutcomeLost, RecordingMixin
from app.processes.workers.surface import RunState

__all__ = [
    "EX_OUTCOME_LOST",
    "JobNotClaimed",
    "OutcomeLost",
    "ShutdownGraceOver",
    "TasklaneWorkerMixin",
    "WorkerQueue",
]

log = logging.getLogger("tasklane.worker")


def _claim_landed(connection: Redis, job: Job, execution: Execution, intermediate: str) -> bool | None:
    """After a claim's answer was lost: True if it was written, False if the job is no longer
    this worker's to start, None if it never reached Redis (the job still waits in the list)."""
    if leases.held(connection, Lease.of(job, execution)):
        return True
    return None if connection.lpos(intermediate, job.id) is not None else False


class WorkerQueue(JsonQueue):
    """The workers' queue class: a dequeued job that cannot be read is set aside as failed, with
    its cause, through app/core/outcomes.py, and the queue flows on."""

    @classmethod
    def unreadable(cls, found: UnreadableJob) -> None:
        outcomes.set_aside(found.queue, found.job_id, found.cause)


class JobNotClaimed(Exception):
    """The dequeued job was put back by the sweep before this worker could start it."""


class TasklaneWorkerMixin(RecordingMixin):
    """What every Tasklane worker adds to RQ's: JSON only, the registry's limits and hooks."""

    #: How a job's soft and hard limits are enforced in the process or thread that runs it.
    time_limits_class: type[BaseDeathPenalty] = TaskTimeLimits

    def _init_tasklane(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = kwargs.get("job_class") or ExecutingJob
        kwargs["queue_class"] = kwargs.get("queue_class") or JsonQueue
        kwargs.setdefault("job_monitoring_interval", defaults.MONITOR_INTERVAL)
        return kwargs

    def _dequeue_through_outcomes(self) -> None:
        """Once RQ's init has checked the queues (JSON queues): dequeue through :class:`WorkerQueue`,
        which sets an unreadable job aside through app/core/outcomes.py."""
        if self.queue_class is JsonQueue:
            # JsonQueue's constructor takes fewer positional arguments than RQ's Queue: mypy's
            # type[] check compares them; every queue here is built with keywords.
            self.queue_class = WorkerQueue  # type: ignore[assignment]

    # --- the job in hand --------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short heartbeats, so that a dead worker's job is noticed (and re-run) within a minute."""
        return int(self.job_monitoring_interval + defaults.HEARTBEAT_SLACK)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Defer a job that is over its task's rate limit; run any other; settle it after an outage."""
        self._in_hand = RunState(job.id)
        try:
            if outcomes.expire_if_due(job, queue):  # past its `expires`: ended as expired, never run
                return
            spec = task_spec(job)
            if spec is not None and spec.rate_limit is not None and not self._rate_allows(job, queue, spec):
                return
            super().execute_job(job, queue)
        except JobNotClaimed:
            log.info("Worker %s: job %s was put back by the sweep before it started here; skipped",
                     self.name, job.id)  # fmt: skip
        except SETTLE_AFTER as exc:
            self._settle(job, queue, exc)
        finally:
            run = self.run_of(job.id).execution
            if run is not None:
                self.executions.pop(run.id, None)
            self._in_hand = None

    def _rate_allows(self, job: Job, queue: Queue, spec: Any) -> bool:
        """Take the job's start slot of its task's rate limit: True to start it now; False when it
        was put back (through app/core/outcomes.py) to start when its slot comes."""
        limiter = RateLimiter(self.connection)
        rate_key = job.meta.get(Meta.RATE_KEY)
        if rate_key is not None:
            # Each key its own bucket; every start passes it, so the rate holds exactly. A job over
            # it is not held on its first try (the next job in the queue may be another key's,
            # free to start now): it takes its place in the key's waiting line and waits in the
            # scheduled registry until then, so the waiting jobs of a key come back spread at the
            # key's rate rather than all at once. Back from there it may hold up to
            # RATE_LIMIT_HOLD for its start, as an unkeyed job does.
            take = functools.partial(limiter.acquire, spec.name, spec.rate_limit, rate_key=rate_key,
                                     burst=spec.burst)  # fmt: skip
            wait = take()
            hold = defaults.RATE_LIMIT_HOLD if job.meta.get(Meta.RATE_LIMITED_UNTIL) else 0.0
            while 0 < wait <= hold:
                time.sleep(wait)
                wait = take()
            if wait > 0:
                line = limiter.acquire(spec.name, spec.rate_limit, reserve=True,
                                       key=keys.rate_line(spec.name, rate_key))  # fmt: skip
                outcomes.deferred(job, queue, max(wait, line))
                return False
            return True
        wait = limiter.acquire(spec.name, spec.rate_limit, burst=spec.burst)
        # A short wait is spent here, holding the job (it stays in the intermediate list,
        # so nothing is lost); a longer one goes through the scheduled registry.
        while 0 < wait <= defaults.RATE_LIMIT_HOLD:
            time.sleep(wait)
            wait = limiter.acquire(spec.name, spec.rate_limit, burst=spec.burst)
        if wait > 0:
            outcomes.deferred(job, queue, wait)
            return False
        return True

    def prepare_execution(self, job: Job) -> Execution:
        """Start the run in one atomic claim: its execution (the lease), the worker's and the job's state.

        The same writes as RQ's, which it splits between the worker and its work horse; here
        they apply only if the job is still in the intermediate list it was dequeued into.
        """
        ttl = self.get_heartbeat_ttl(job)
        intermediate = JsonQueue(job.origin, connection=self.connection).intermediate_queue_key
        while True:
            pipe = leases.light_recorder()
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self._record_start(job, ttl, pipe)
            pipe.persist(job.key)
            writes = leases.recorded(pipe)
            try:
                claimed: bool | None = leases.claim(self.connection, intermediate, job.id, writes)
            except outages.REDIS_DOWN as exc:
                self._wait_for_redis(exc)
                landed = functools.partial(_claim_landed, self.connection, job, execution, intermediate)
                claimed = self._ride_out(landed)
                if claimed is None:
                    continue  # the claim never reached Redis: make it again
            break
        if not claimed:
            raise JobNotClaimed(job.id)
        self.executions[execution.id] = execution
        state = self.run_of(job.id)
        state.execution = execution
        state.claimed = True
        return execution

    def _record_start(self, job: Job, ttl: int, pipe: Any) -> None:
        """The worker's and the job's start writes, recorded on ``pipe`` for the claim (RQ's)."""
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        self.heartbeat(ttl, pipeline=pipe)
        job.heartbeat(now(), ttl, pipeline=pipe)
        job.prepare_for_execution(self.name, pipeline=pipe)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Written with the claim (prepare_execution); RQ's own start only for a run not claimed here."""
        if self.run_of(job.id).claimed:
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        """Run the job under its task's soft and hard time limits."""
        spec = task_spec(job)
        soft = spec.soft_time_limit if spec is not None else None
        # RQ builds its death penalty from this class; a partial carries the soft limit with it.
        self.death_penalty_class = functools.partial(self.time_limits_class, soft_timeout=soft)  # type: ignore[assignment]
        try:
            return bool(super().perform_job(job, queue, execution))
        finally:
            del self.death_penalty_class
