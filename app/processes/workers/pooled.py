"""The ``pooled`` mode (the default): long-lived worker processes that each run many jobs.

Like Celery's prefork pool: the supervisor (app/processes/supervisor.py) forks N children, each an
inline worker (no fork per job; one round trip per job while jobs follow each other: the success
and the next job's dequeue and start, see :meth:`JsonPooledWorker._apply_success`), and replaces
a child

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
from redis.exceptions import NoScriptError
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

from app.catalogue.registry import REGISTRY
from app.core import compat, leases, outcomes, sequences
from app.core.leases import Lease
from app.core.queues import (
    TAKEN,
    ClaimAhead,
    UnreadableJob,
    claimed,
    load_move_first,
    move_first_on,
    moved,
    take_moved,
)
from app.foundation import outages
from app.foundation.held import HeldConnection
from app.processes.workers.inline import JsonInlineWorker

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
        #: The next job, dequeued (into its queue's intermediate list) with the last one's success.
        self._prefetched: tuple[str, str, dict[bytes, Any]] | None = None
        #: The claim made for it in the same step, when it was started there too (see _apply_success).
        self._ahead: ClaimAhead | None = None
        self._ahead_job: str | None = None
        #: A success's round trip (with the next job's move) was sent and its answer not heard.
        self._answer_lost = False
        #: Whether the next job may be claimed with the last one's success (set False to claim every
        #: job as it starts), and the tasks whose jobs never are: those with a rate limit (their start
        #: slot is taken in Python before the claim; see base.execute_job).
        self.claims_ahead = True
        #: The connection the success's round trip goes on (app/foundation/held.py).
        self._held = HeldConnection(self.connection)
        self.unclaimed_tasks = tuple(spec.name for spec in REGISTRY if spec.rate_limit is not None)

    # --- fewer Redis commands per job --------------------------------------------------------------

    def _record_start(self, job: Job, ttl: int, pipe: Any) -> None:
        """The start as RQ writes it, less what changes nothing while jobs follow each other:

        the worker's state is written only when it changes (it stays "busy" through a run of
        jobs), and the worker's key keeps its idle TTL (its heartbeats go on at least once a
        second, and a dead child's record is removed by the supervisor at once), so neither a
        short TTL here nor a long one after the job is written. The job's own heartbeat is the
        one RQ's start writes (``last_heartbeat`` with ``started_at``); the run's lease (the
        started registry's entry, 20 s) is written by the claim as in every mode.
        """
        if compat.worker_state(self) != WorkerStatus.BUSY:
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        job.prepare_for_execution(self.name, pipeline=pipe)

    def _apply_success(self, job: Job, lease: Lease, writes: list[Any]) -> int:
        """The success's writes and the dequeue and start of the next job in one round trip (two
        scripts, pipelined): one round trip per job while jobs follow each other.

        The next job is moved to its queue's intermediate list as any dequeue does, and claimed
        (started: its run's lease written, as :meth:`prepare_execution` would) in the same script
        step, unless it needs a look before its start (an ``expires``, a task with a rate limit,
        a hash that is not a waiting job's): then its claim is made as usual before it runs. A
        child that dies holding it has it put back at once by its supervisor (a job claimed
        ahead, which never ran, without counting a death); one whose host died, by the sweep. No
        job is taken when this worker is about to leave (stop request, recycling).
        """
        if self._answer_lost:  # the last try's answer was lost (an outage): what it took goes back
            self._put_back_taken(job)
        leaving = self._stop_asked() or (self.max_jobs and self.jobs_run + 1 >= self.max_jobs)
        if leaving or self._prefetched is not None or sequences.key_of(job) is not None:
            # A job in a sequence hands on in the same MULTI as its success (outcomes.apply_ending).
            return super()._apply_success(job, lease, writes)
        ahead = (
            ClaimAhead.new(self.name, self.get_heartbeat_ttl(job), self.unclaimed_tasks)
            if self.claims_ahead
            else None
        )
        commands = leases.light_recorder()
        leases.apply_on(commands, lease, writes, unless_members_in=job.dependents_key)
        # The move names this worker as the taker, in the same script step: if this child is
        # killed before it hears the answer, the supervisor still puts the job back at once.
        move_first_on(commands, [q.key for q in self._ordered_queues], taker=self.key,
                      claim=ahead.args() if ahead is not None else None)  # fmt: skip
        self._answer_lost = True  # until the answer is heard: Redis may go away meanwhile
        outcome, found = self._held.round_trip([args for args, _ in commands.command_stack])
        self._answer_lost = False
        if not isinstance(found, Exception):
            self._prefetched = moved(found)  # taken whatever the success's answer: it is held now
            self._ahead = ahead if self._prefetched is not None and claimed(found) else None
            self._ahead_job = self._prefetched[1] if self._prefetched is not None and self._ahead else None
            if self._prefetched is not None and self.board is not None and outcome == leases.APPLIED:
                # The job in hand is settled (its success is written): from now on the slot holds the
                # next one, so a child that dies before its next start has it put back at once.
                self.board.hold(self.slot, self._prefetched[1], ahead=self._ahead is not None)
        if isinstance(outcome, NoScriptError) or isinstance(found, NoScriptError):
            leases.load_apply(self.connection)  # a restarted or flushed server: load them for next time
            load_move_first(self.connection)
        if isinstance(outcome, NoScriptError):
            return super()._apply_success(job, lease, writes)
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)

    def _put_back_taken(self, job: Job) -> None:
        """A success's round trip whose answer an outage lost may have taken (and claimed) the next
        job: the move named it in this worker's :data:`TAKEN` field. Unless that is the job in hand
        (the move never ran), it goes back to its queue as a job that never started (no attempt),
        before the success is tried again; otherwise the sweep would find it only once its lease
        expired."""
        self._answer_lost = False
        raw = self.connection.hget(self.key, TAKEN)
        taken = raw.decode() if isinstance(raw, bytes) else raw
        if taken and taken != job.id:
            done = outcomes.rescue(self.connection, taken, waiting_only=True, ahead_of=self.name)
            log.info(
                "Worker %s: job %s, taken in a round trip whose answer was lost: %s", self.name, taken, done
            )

    def _take_prefetched(self) -> tuple[Job, Queue] | None:
        found, self._prefetched = self._prefetched, None
        if found is None:
            return None
        by_key = {q.key: q for q in self.queues}
        try:
            return take_moved(found, by_key, self.connection, self.job_class)
        except UnreadableJob as exc:
            self._release_ahead(exc.queue, exc.job_id)
            outcomes.set_aside(exc.queue, exc.job_id, exc.cause)
            return None

    def _release_ahead(self, queue: Queue, job_id: str) -> None:
        """Take back the claim made ahead for ``job_id`` (it goes back to the intermediate list,
        waiting, as a job moved only would be), before it is handed back or set aside."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self._ahead_job == job_id:
            self._ahead_job = None
            leases.release_claim(self.connection, queue, job_id, ahead.execution_id, ahead.worker_name)

    def prepare_execution(self, job: Job) -> Execution:
        """The run the last success claimed for this job (no round trip), else the claim as usual."""
        ahead = self._ahead
        if ahead is None or self._ahead_job != job.id:
            return super().prepare_execution(job)
        self._ahead = self._ahead_job = None
        if compat.worker_state(self) != WorkerStatus.BUSY:
            self.set_state(WorkerStatus.BUSY)
        execution = ahead.execution(job)
        self.executions[execution.id] = execution
        state = self.run_of(job.id)
        state.execution = execution
        state.claimed = True
        return execution

    def _hand_back_prefetched(self) -> None:
        """Leaving with a job taken ahead: put it back at the head of its queue (its claim, when it
        was claimed ahead, taken back first: it never ran)."""
        found, self._prefetched = self._prefetched, None
        if found is None:
            return
        queue = next(q for q in self.queues if q.key == found[0])
        self._release_ahead(queue, found[1])
        if outcomes.put_back(queue, found[1]):
            log.info("Worker %s: job %s taken ahead put back on its queue", self.name, found[1])

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """The job taken with the last success if there is one; before waiting for a job (or
        leaving), write the counters: an idle worker's are exact."""
        taken = self._take_prefetched()
        if taken is not None:
            self.heartbeat()  # at most once a second (JsonInlineWorker.heartbeat)
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
            taken[0].redis_server_version = self.get_redis_server_version()
            return taken
        result = super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        if result is not None or timeout is None:
            if result is None:
                self.flush_counts()
            return result
        self.flush_counts()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def register_death(self) -> None:
        """Put back a job taken ahead, write the last counters, then RQ's deregistration."""
        try:
            self._hand_back_prefetched()
            self.flush_counts()
        except outages.REDIS_DOWN:
            log.warning("Worker %s: Redis unreachable at exit; its last %d successes are not counted",
                        self.name, self._pending)  # fmt: skip
        self._held.close()
        super().register_death()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job with it marked as held on the board; then leave if this child is spent."""
        if self.board is not None:
            self.board.hold(self.slot, job.id)
        try:
            super().execute_job(job, queue)
        finally:
            if self._ahead_job == job.id:  # claimed ahead, yet not run (a check before its start said so)
                self._release_ahead(queue, job.id)
            if self.board is not None:
                self.board.release(self.slot)
                if self._prefetched is not None:  # held too: the supervisor puts it back if this dies
                    self.board.hold(
                        self.slot, self._prefetched[1], ahead=self._ahead_job == self._prefetched[1]
                    )
        if self._stop_asked():
            self._hand_back_prefetched()
        if self._counts_due():
            self.flush_counts()
        self.jobs_run += 1
        if self.max_jobs and self.jobs_run >= self.max_jobs:
            self._recycle(f"ran {self.jobs_run} jobs (WORKER_MAX_JOBS_PER_CHILD={self.max_jobs})")
        elif self.max_memory_mb and (used := rss_mb()) > self.max_memory_mb:
            self._recycle(f"uses {used:.0f} MiB (WORKER_MAX_MEMORY_PER_CHILD_MB={self.max_memory_mb})")

    def _recycle(self, why: str) -> None:
        log.info("Worker %s %s; leaving to be replaced", self.name, why)
        self._hand_back_prefetched()
        self.recycled = why
        self.asked_to_stop = True
        compat.request_stop(self)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def forget_worker(connection: Redis, pid: int, hostname: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove the registrations of a dead child (by pid and host), so no ghost is listed; returns
    their names and the jobs they last took ahead (:data:`~app.core.queues.TAKEN`), each with the
    name of the worker that took it, for the supervisor to put back."""
    gone: list[str] = []
    taken: list[tuple[str, str]] = []
    for key in connection.smembers("rq:workers"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        fields = connection.hmget(name, ["pid", "hostname", "queues", TAKEN])
        found_pid, found_host, queues, took = (_text(v) for v in fields)
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
        if took:
            taken.append((took, name.removeprefix(JsonPooledWorker.redis_worker_namespace_prefix)))
    return gone, taken
