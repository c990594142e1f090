"""What every Tasklane worker adds to RQ's: JSON only, the registry's limits, one lifecycle,
and a work loop that rides out Redis outages.

Each worker mode is a small subclass in its own module (fork.py, inline.py, threads.py);
RQ's classes own the work loop. Every outcome a worker observes goes to app/core/outcomes.py.

Redis outages. RQ's loop retries a failed dequeue but quits on any other Redis error (a
heartbeat, a state write, maintenance, a job's bookkeeping). Here every step of the loop
that only keeps the worker's own records (registration, heartbeats, state, suspension
check, maintenance, dequeue) waits for Redis (backoff, one log line per outage) and is
made again. The job in hand is settled by its run's lease (app/core/leases.py): its start is
one atomic claim, its success one atomic write that ends the lease, repeated after an
outage until it lands or finds the lease gone; a run whose outcome cannot be written (a
failure, a work horse's result) is put back on its queue once Redis answers, unless the
lease shows it was settled already. Nothing is lost, nothing recorded twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import register

from app.core import compat, leases, outcomes
from app.core.execution import ExecutingJob
from app.core.leases import Lease
from app.core.limits import RateLimiter, TaskTimeLimits, TimeLimitExceeded, raise_in_thread
from app.core.outcomes import ShutdownGraceOver, record_error, redact_arguments
from app.core.queues import JsonQueue, UnreadableJob, task_spec
from app.foundation import defaults, outages, proc
from app.foundation.runtime import runtime
from app.ops import metrics
from app.processes import maintenance

log = logging.getLogger("tasklane.worker")

_T = TypeVar("_T")

#: Exit status of a work horse whose run ended but whose outcome could not be written
#: (Redis unreachable); its parent puts the job back on its queue (EX_TEMPFAIL).
EX_OUTCOME_LOST = 75

_REDIS_GONE: tuple[type[Exception], ...] = (*outages.REDIS_DOWN, outages.RedisUnavailable)


def _claim_landed(connection: Redis, job: Job, execution: Execution, intermediate: str) -> bool | None:
    """After a claim's answer was lost: True if it was written, False if the job is no longer
    this worker's to start, None if it never reached Redis (the job still waits in the list)."""
    if leases.held(connection, Lease.of(job, execution)):
        return True
    return None if connection.lpos(intermediate, job.id) is not None else False


def _trimmed(writes: list[Any], job: Job, lease: Lease) -> list[Any]:
    """RQ's success writes (see :func:`leases.recorded`) less those that change nothing when they
    apply with the lease's end (:func:`leases.apply`):

    - the EXPIREs of the job's dependents and dependencies keys, for a job without dependencies:
      the latter does not exist, and the former is empty whenever the writes apply (the apply
      script holds them back while it has members);
    - the execution's removal from the started registry: the lease's end removes that entry;
    - ``HSET <job> status finished`` when the job's whole hash (status included) is written after it.
    """
    commands: list[list[Any]] = []
    i = 0
    while i < len(writes):
        n = writes[i]
        commands.append(writes[i + 1 : i + 1 + n])
        i += n + 1
    noop_expire = set() if job._dependency_ids else {job.dependents_key, job.dependencies_key}
    ended = {(lease.key, m) for m in lease.members}
    saves_status = [
        n
        for n, c in enumerate(commands)
        if str(c[0]).upper() == "HSET" and c[1] == job.key and "status" in c[2::2]
    ]
    out: list[Any] = []
    for n, command in enumerate(commands):
        name = str(command[0]).upper()
        if name == "EXPIRE" and len(command) == 3 and command[1] in noop_expire:
            continue
        if name == "ZREM" and len(command) == 3 and (command[1], command[2]) in ended:
            continue
        if (
            name == "HSET"
            and len(command) == 4
            and command[1:3] == [job.key, "status"]
            and any(later > n for later in saves_status if len(commands[later]) > 4)
        ):
            continue
        out.append(len(command))
        out.extend(command)
    return out


class WorkerQueue(JsonQueue):
    """The workers' queue class: a dequeued job that cannot be read is set aside as failed, with
    its cause, through app/core/outcomes.py, and the queue flows on."""

    @classmethod
    def unreadable(cls, found: UnreadableJob) -> None:
        outcomes.set_aside(found.queue, found.job_id, found.cause)


class OutcomeLost(Exception):
    """Redis went away before a run's outcome was written; the worker settles the job when it is back."""


class JobNotClaimed(Exception):
    """The dequeued job was put back by the sweep before this worker could start it."""


_SETTLE_AFTER: tuple[type[Exception], ...] = (OutcomeLost, *_REDIS_GONE)


class TasklaneWorkerMixin:
    """What every Tasklane worker adds to RQ's: JSON only, the registry's limits and hooks."""

    #: The job whose last heartbeat failed, and (job id, when) of the last one that landed.
    _missed_beat: str | None = None
    _beat_at: tuple[str, float] | None = None

    connection: Redis
    queues: list[Queue]
    name: str
    executions: dict[str, Execution]
    birth_date: Any
    worker_ttl: int
    is_horse: bool
    horse_pid: int
    queue_class: type[Queue]
    _hard_killed: str | None = None
    _horse_lost: str | None = None
    _horse_outcome_lost: bool = False
    #: The run this process started (its execution), while it is in hand.
    _run: Execution | None = None
    #: The job whose start this process wrote with its claim (a work horse skips RQ's start).
    _claimed: str | None = None
    #: The job whose outcome could not be written: RQ's failure path must not record one.
    _outcome_lost: str | None = None
    #: Set by a stop request (signal or thread pool), to tell a requested exit from an unexpected one.
    asked_to_stop: bool = False
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

    def _dequeue_through_outcomes(self) -> None:
        """Once RQ's init has checked the queues (JSON queues): dequeue through :class:`WorkerQueue`,
        which sets an unreadable job aside through app/core/outcomes.py."""
        if self.queue_class is JsonQueue:
            self.queue_class = WorkerQueue

    # --- riding out a Redis outage ---------------------------------------------------------------

    def _stop_asked(self) -> bool:
        return self.asked_to_stop or compat.stop_requested(self)

    def _wait_for_redis(self, error: BaseException | None) -> None:
        """Wait until Redis answers again, then make sure this worker is still registered.

        Raises StopRequested when the worker is asked to stop meanwhile: it leaves, and
        the job in hand (if any) is settled by the sweeps once Redis is back.
        """
        while True:
            if not outages.wait_until_reachable(self.connection, error=error, stop=self._stop_asked):
                raise StopRequested()
            try:
                self._register_again()
                return
            except outages.REDIS_DOWN as exc:
                error = exc

    def _register_again(self) -> None:
        """Write the worker's registration again: a long outage may have let it expire."""
        if self.birth_date is None or self.is_horse:
            return
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())  # type: ignore[attr-defined]
            register(self, pipe)  # type: ignore[arg-type]
            pipe.expire(self.key, self.worker_ttl + 60)  # type: ignore[attr-defined]
            pipe.execute()

    def _ride_out(self, call: Callable[[], _T]) -> _T:
        """``call()``, waited out and made again through any Redis outage (it must be safe to repeat)."""
        while True:
            try:
                return call()
            except _REDIS_GONE as exc:
                self._wait_for_redis(exc)

    # --- the worker's own records: each waits out an outage and is made again -----------------

    def register_birth(self) -> None:
        """RQ's registration, through an outage (a repeat recognises this process's own record)."""
        retried = False
        while True:
            try:
                super().register_birth()  # type: ignore[misc]
                return
            except ValueError:
                if retried and self._registered_here():
                    return
                raise
            except outages.REDIS_DOWN as exc:
                retried = True
                self._wait_for_redis(exc)

    def _registered_here(self) -> bool:
        pid, host = self.connection.hmget(self.key, ["pid", "hostname"])  # type: ignore[attr-defined]
        return pid is not None and int(pid) == os.getpid() and host == socket.gethostname().encode()

    def register_death(self) -> None:
        """RQ's deregistration; with Redis unreachable the registration simply expires."""
        try:
            super().register_death()  # type: ignore[misc]
        except outages.REDIS_DOWN as exc:
            log.warning("Worker %s: Redis unreachable at exit (%s); its registration expires by itself",
                        self.name, type(exc).__name__)  # fmt: skip

    def subscribe(self) -> None:
        """RQ's command channel, subscribed through an outage; its reader thread logs outages once."""
        self._ride_out(lambda: compat.subscribe(self, self._pubsub_error))

    def _pubsub_error(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        """The command channel's reader lost Redis: note it (logged once per outage) and retry later."""
        if not isinstance(exc, outages.REDIS_DOWN):
            raise exc
        outages.OUTAGE.failed(exc)
        time.sleep(defaults.RECONNECT_MAX_DELAY / 4)

    def unsubscribe(self) -> None:
        """RQ's unsubscribe; with Redis unreachable there is nothing to tell it."""
        try:
            super().unsubscribe()  # type: ignore[misc]
        except outages.REDIS_DOWN:
            with contextlib.suppress(Exception):
                self.pubsub_thread.stop()  # type: ignore[attr-defined]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat; written directly, it waits out an outage."""
        beat = super().heartbeat  # type: ignore[misc]
        if pipeline is not None:
            beat(timeout, pipeline=pipeline)
            return
        self._ride_out(lambda: beat(timeout))

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's state write; written directly, it waits out an outage."""
        write = super().set_state  # type: ignore[misc]
        if pipeline is not None:
            write(state, pipeline=pipeline)
            return
        self._ride_out(lambda: write(state))

    def set_shutdown_requested_date(self) -> None:
        """Noted in Redis if it answers: a stop request is never lost to an outage."""
        with contextlib.suppress(*outages.REDIS_DOWN):
            super().set_shutdown_requested_date()  # type: ignore[misc]

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm shutdown, remembered (an exit after it is a requested one); its grace starts."""
        self.asked_to_stop = True
        self.start_shutdown_grace()
        super().request_stop(signum, frame)  # type: ignore[misc]

    # --- warm shutdown's grace (WORKER_SHUTDOWN_GRACE) -----------------------------------------
    #: When the grace of a warm shutdown ends (time.monotonic()), once one was asked for.
    _grace_end: float | None = None
    #: The job stopped because the grace ran out: put back on its queue, no retry spent.
    _shutdown_stopped: str | None = None

    def _settings(self) -> Any:
        return runtime().settings

    def start_shutdown_grace(self) -> None:
        """A warm shutdown began: the job in hand has WORKER_SHUTDOWN_GRACE seconds to finish.

        Fork mode's worker watches the end itself (fork.py); an in-process job is interrupted
        by a timer that raises :class:`ShutdownGraceOver` in the thread running it.
        """
        if self._grace_end is not None:
            return
        grace = float(self._settings().worker_shutdown_grace)
        self._grace_end = time.monotonic() + grace
        if not getattr(self, "is_horse", False) and self.uses_grace_timer:
            timer = threading.Timer(grace, self._grace_over)
            timer.daemon = True
            timer.start()

    #: In-process modes stop the job in hand with a timer; fork mode kills its horse (fork.py).
    uses_grace_timer = False

    def shutdown_grace_end(self) -> float | None:
        """When the warm shutdown's grace ends (time.monotonic()), or None before any stop request."""
        return self._grace_end

    def note_shutdown_stop(self, job_id: str | None) -> None:
        """The job in hand is being stopped because the grace ran out (requeued, not failed)."""
        self._shutdown_stopped = job_id

    def _grace_over(self) -> None:
        """In-process modes: the grace ran out with a job still running; stop it in its thread."""
        running = getattr(self, "_running", None)
        if running is None or getattr(self, "_body_done", False):
            return  # no job, or its body returned: its outcome is being written, let it land
        job = running[0]
        log.warning("Worker %s: warm shutdown grace over; stopping job %s (it is put back on its queue)",
                    self.name, job.id)  # fmt: skip
        self.note_shutdown_stop(job.id)
        raise_in_thread(self._thread_id, ShutdownGraceOver)  # type: ignore[attr-defined]

    def _requeue_after_grace(self, job: Job, queue: Queue, execution: Any) -> None:
        """Put a job stopped by the end of the grace back on its queue: no retry spent, no failure."""
        self._shutdown_stopped = None

        def cleanup(pipe: Any) -> None:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)  # type: ignore[attr-defined]

        lease = leases.of_run(job, execution)
        outcomes.orphaned(job, queue, cleanup=cleanup, lease=lease, cause=outcomes.SHUTDOWN_STOPPED)  # type: ignore[arg-type]

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's `rq suspend` check, through an outage."""
        check = super().check_for_suspension  # type: ignore[misc]
        self._ride_out(lambda: check(burst))

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, through an outage."""
        self._ride_out(super().run_maintenance_tasks)  # type: ignore[misc]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, through an outage (JsonQueue raises RedisUnavailable, which RQ lets through)."""
        dequeue = super().dequeue_job_and_maintain_ttl  # type: ignore[misc]
        return self._ride_out(lambda: dequeue(timeout, max_idle_time))

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """RQ's heartbeats of the job in hand; one missed in an outage is made up by the next.

        After a missed or late beat (the worker was cut off from Redis, or stalled), the
        sweep may have handed the job to another run: the first beat that lands checks the
        run's lease, and a run that lost it is stopped (:meth:`_drop_lost_run`).
        """
        try:
            super().maintain_heartbeats(job, execution)  # type: ignore[misc]
            # Judged once the beat landed: a beat that hung through a cut (a connection without a
            # read timeout, delivered when the link came back) is a late one.
            doubtful = self._beat_missed(job)
            lease_held = not doubtful or leases.held(self.connection, Lease.of(job, execution))
        except outages.REDIS_DOWN as exc:
            self._missed_beat = job.id
            outages.OUTAGE.failed(exc)
            return
        outages.OUTAGE.recovered()
        self._missed_beat = None
        self._beat_at = (job.id, time.monotonic())
        if not lease_held and job.ended_at is None:  # the body still runs (inline: it has not returned)
            self._drop_lost_run(job)

    def _beat_missed(self, job: Job) -> bool:
        """True when a beat of this run failed, or the last one (or the run's start) is older than its TTL."""
        if self._missed_beat == job.id:
            return True
        if self._beat_at is not None and self._beat_at[0] == job.id:
            since = time.monotonic() - self._beat_at[1]
        else:
            since = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        return since > self.get_heartbeat_ttl(job)

    def _drop_lost_run(self, job: Job) -> None:
        """The run's lease is gone: this worker was cut off from Redis past its heartbeat and a
        sweep handed the job to another run (or settled it). Stop this run; its outcome would be
        dropped anyway (every outcome write is fenced by the lease), and the worker carries on."""
        log.warning("Worker %s: job %s lost its lease while this worker was cut off; stopping this run "
                    "(the job is re-run or settled elsewhere)", self.name, job.id)  # fmt: skip
        self.kill_horse()  # type: ignore[attr-defined]

    # --- the job in hand --------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short heartbeats, so that a dead worker's job is noticed (and re-run) within a minute."""
        return int(self.job_monitoring_interval + defaults.HEARTBEAT_SLACK)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Defer a job that is over its task's rate limit; run any other; settle it after an outage."""
        try:
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
                    outcomes.deferred(job, queue, wait)
                    return
            super().execute_job(job, queue)  # type: ignore[misc]
        except JobNotClaimed:
            log.info("Worker %s: job %s was put back by the sweep before it started here; skipped",
                     self.name, job.id)  # fmt: skip
        except _SETTLE_AFTER as exc:
            self._settle(job, queue, exc)
        finally:
            if self._run is not None:
                self.executions.pop(self._run.id, None)
            self._run = self._claimed = self._outcome_lost = None

    def _settle(self, job: Job, queue: Queue, error: BaseException) -> None:
        """Redis cut the run short: once it answers, put the job back unless it was settled already."""
        log.warning("Worker %s: job %s: no Redis to record its outcome; "
                    "it is settled once Redis answers", self.name, job.id)  # fmt: skip
        run = self._run if self._run is not None and self._run.job_id == job.id else None
        pending: BaseException | None = error if isinstance(error, _REDIS_GONE) else None
        while True:
            self._wait_for_redis(pending)
            self._stop_horse()
            try:
                self._hand_back(job, queue, run)
                return
            except outages.REDIS_DOWN as exc:  # gone again: every step below is safe to repeat
                pending = exc

    def _hand_back(self, job: Job, queue: Queue, run: Execution | None) -> None:
        if run is None:
            if outcomes.put_back(queue, job.id):  # type: ignore[arg-type]
                log.info("Worker %s: job %s put back on its queue (not started)", self.name, job.id)
            return

        def cleanup(pipe: Any) -> None:
            self.cleanup_execution(job, pipeline=pipe, execution=run)  # type: ignore[attr-defined]

        lease = Lease.of(job, run)
        if outcomes.orphaned(job, queue, cleanup, lease=lease, cause=outcomes.OUTCOME_LOST):  # type: ignore[arg-type]
            return
        if job.get_status(refresh=True) == JobStatus.FINISHED:
            outcomes.succeeded(
                job, counted=True
            )  # its success (and its count) was written before the answer was lost

    def _stop_horse(self) -> None:
        """A work horse still running the job must be gone before the job is handed on (fork mode)."""

    def prepare_execution(self, job: Job) -> Execution:
        """Start the run in one atomic claim: its execution (the lease), the worker's and the job's state.

        The same writes as RQ's, which it splits between the worker and its work horse; here
        they apply only if the job is still in the intermediate list it was dequeued into.
        """
        ttl = self.get_heartbeat_ttl(job)
        intermediate = JsonQueue(job.origin, connection=self.connection).intermediate_queue_key
        while True:
            pipe = leases.recorder(self.connection)
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
        self._run = execution
        self._claimed = job.id
        return execution

    def _record_start(self, job: Job, ttl: int, pipe: Any) -> None:
        """The worker's and the job's start writes, recorded on ``pipe`` for the claim (RQ's)."""
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        self.heartbeat(ttl, pipeline=pipe)
        job.heartbeat(now(), ttl, pipeline=pipe)
        job.prepare_for_execution(self.name, pipeline=pipe)

    def _record_counts(self, job: Job, run_time: float, pipe: Any) -> None:
        """A success's counters (the worker's, the task's metrics), recorded on ``pipe`` with its writes."""
        self.increment_successful_job_count(pipeline=pipe)  # type: ignore[attr-defined]
        assert job.started_at and job.ended_at
        self.increment_total_working_time(job.ended_at - job.started_at, pipe)  # type: ignore[attr-defined]
        spec = task_spec(job)
        metrics.record_job(pipe, spec.name if spec else str(job.func_name), "success", run_time)

    def _discard_counts(self, job: Job, run_time: float) -> None:
        """The success's writes were not applied (RQ's path counts it, or it was settled elsewhere):
        forget counters :meth:`_record_counts` kept outside them (here: none, they were on the pipe)."""

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Written with the claim (prepare_execution); RQ's own start only for a run not claimed here."""
        if self._claimed == job.id:
            return
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

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's end of a run (a last heartbeat); missed in an outage, the outcome's writes meet it next."""
        try:
            super().handle_execution_ended(job, queue, heartbeat_ttl)  # type: ignore[misc]
        except outages.REDIS_DOWN as exc:
            job.ended_at = job.ended_at or now()
            outages.OUTAGE.failed(exc)
            return
        outages.OUTAGE.recovered()

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's logging of a failed run, except for a run whose outcome Redis never got (not a failure)."""
        if self._outcome_lost == job.id:
            return
        super().handle_exception(job, *exc_info)  # type: ignore[misc]

    def _bookkeeping(self, job: Job, call: Callable[[], _T]) -> _T:
        """A write of the run's outcome that is safe to repeat: through an outage, wait and repeat it.

        A work horse does not wait (its parent would take the wait for a stuck job): it
        gives up, and its parent settles the job once Redis answers.
        """
        while True:
            try:
                return call()
            except outages.REDIS_DOWN as exc:
                self._outcome_lost = job.id  # whatever follows, RQ must not record a failure
                if self.is_horse:
                    self._give_up(job)
                self._wait_for_redis(exc)
                self._outcome_lost = None

    def _give_up(self, job: Job) -> None:
        """The run's outcome cannot be written now: settle the job later (a horse leaves it to its parent)."""
        self._outcome_lost = job.id
        if self.is_horse:
            self.log.warning(
                "Work horse: job %s: no Redis to record its outcome; its worker settles it", job.id
            )
            os._exit(EX_OUTCOME_LOST)
        raise OutcomeLost(job.id)

    def _after_outcome(self, hook: Callable[[], None]) -> None:
        """The lifecycle's hooks once an outcome is written; through an outage, waited out and repeated."""
        while True:
            try:
                hook()
                return
            except outages.REDIS_DOWN as exc:
                if self.is_horse:
                    self.log.warning("Work horse: Redis unreachable after the outcome was written; "
                                     "a uniqueness lock is released when it expires")  # fmt: skip
                    return
                try:
                    self._wait_for_redis(exc)
                except StopRequested:
                    return

    def _renewed(self, job: Job, execution: Any) -> bool:
        """Renew the run's lease before one of RQ's unconditional writes: False if it is gone."""
        if execution is None:
            return True
        lease = Lease.of(job, execution)
        if self._bookkeeping(job, lambda: leases.renew(self.connection, lease, self.get_heartbeat_ttl(job))):
            return True
        log.warning("Worker %s: job %s was settled elsewhere (its lease expired); this run's outcome "
                    "is dropped", self.name, job.id)  # fmt: skip
        return False

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        """RQ's success writes in one atomic round trip that also ends the run's lease.

        The writes are RQ's own (its methods record them on an unsent pipeline); they apply
        only while the lease is held and no job depends on this one. A job with dependents
        (or a repeat, or an RQ rate limit) goes through RQ's WATCH-guarded path instead,
        after the lease is renewed.
        """
        if job.repeats_left or job.has_rate_limit:
            self._success_through_rq(job, queue, started_job_registry, execution)
            return
        recorder = leases.recorder(self.connection)
        assert job.started_at and job.ended_at
        run_time = (job.ended_at - job.started_at).total_seconds()
        self._record_counts(job, run_time, recorder)
        result_ttl = job.get_result_ttl(self.default_result_ttl)  # type: ignore[attr-defined]
        if result_ttl != 0:
            compat.record_success(job, result_ttl, recorder, self.name, execution)
        job.cleanup(result_ttl, pipeline=recorder, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=recorder, execution=execution)  # type: ignore[attr-defined]
        lease = Lease.of(job, execution)
        writes = _trimmed(leases.recorded(recorder), job, lease)
        outcome = self._bookkeeping(job, lambda: self._apply_success(job, lease, writes))
        if outcome != leases.APPLIED:  # the recorded counters were not written with the success
            self._discard_counts(job, run_time)
        if outcome == leases.BLOCKED:
            self._success_through_rq(job, queue, started_job_registry, execution)
            return
        if outcome == leases.LOST and self._bookkeeping(job, job.get_status) != JobStatus.FINISHED:
            log.warning("Worker %s: job %s was settled elsewhere (its lease expired); this run's success "
                        "is dropped", self.name, job.id)  # fmt: skip
            return
        compat.set_job_status(job, JobStatus.FINISHED)
        self._after_outcome(lambda: outcomes.succeeded(job, counted=True))

    def _apply_success(self, job: Job, lease: Lease, writes: list[Any]) -> int:
        """One round trip: the success's writes with the end of its lease (see leases.apply)."""
        return leases.apply(self.connection, lease, writes, unless_members_in=job.dependents_key)

    def _success_through_rq(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        if not self._renewed(job, execution):
            return
        try:
            super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]
        except outages.REDIS_DOWN:
            self._give_up(job)
        self._after_outcome(lambda: outcomes.succeeded(job))

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
        did not fail the job: the job is an orphan, put back without spending a retry. A
        run whose outcome Redis never got is no failure either: it is settled after the outage.
        """
        if self._outcome_lost == job.id:
            self._give_up(job)
        if self._shutdown_stopped == job.id:
            self._bookkeeping(job, lambda: self._requeue_after_grace(job, queue, execution))
            return
        exc_string = redact_arguments(job, exc_string)
        stopped = compat.stopped_job_id(self) == job.id
        if job.worker_name is None:  # the parent of a forked horse never saw the start
            job.worker_name = self.name
        try:
            hard_killed = getattr(self, "_hard_killed", None) == job.id
            if getattr(self, "_horse_lost", None) == job.id and not stopped and not hard_killed:
                self._horse_lost = None
                cause = outcomes.OUTCOME_LOST if self._horse_outcome_lost else self._horse_death_cause()
                self._horse_outcome_lost = False

                def cleanup(pipe: Any) -> None:
                    self.cleanup_execution(job, pipeline=pipe, execution=execution)  # type: ignore[attr-defined]

                lease = leases.of_run(job, execution)
                outcomes.orphaned(job, queue, cleanup=cleanup, lease=lease, cause=cause)  # type: ignore[arg-type]
                return
            if not self._renewed(job, execution):
                return
            if hard_killed:
                message = f"hard time limit of {job.timeout} s exceeded; the work horse was killed"
                exc_string = f"{exc_string}\n{TimeLimitExceeded.__module__}.TimeLimitExceeded: {message}"
                record_error(job, "TimeLimitExceeded", message)
            final = not job.should_retry or stopped
            super().handle_job_failure(  # type: ignore[misc]
                job,
                queue,
                started_job_registry=started_job_registry,
                exc_string=exc_string,
                execution=execution,
            )
            # A horse that died before it started leaves the id in the intermediate list.
            self.connection.lrem(queue.intermediate_queue_key, 0, job.id)
        except outages.REDIS_DOWN:
            self._give_up(job)
        if final:
            self._after_outcome(lambda: outcomes.failed(job, exc_string, stopped=stopped))
        else:
            outcomes.retrying(job)

    def handle_work_horse_killed(self, job: Job, retpid: Any, ret_val: Any, rusage: Any) -> None:
        """Note that the horse died under the job (or gave it up in an outage); handle_job_failure,
        called next, requeues it."""
        self._horse_lost = job.id
        self._horse_death = proc.describe_exit(ret_val)
        self._horse_outcome_lost = (
            ret_val is not None and os.waitstatus_to_exitcode(ret_val) == EX_OUTCOME_LOST
        )
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[misc]

    def _horse_death_cause(self) -> tuple[str, str]:
        death = getattr(self, "_horse_death", None)
        return outcomes.horse_lost(death) if death else outcomes.WORKER_LOST

    def clean_registries(self) -> None:
        """RQ's maintenance, except that orphans are requeued, not failed (app/processes/maintenance.py)."""
        for queue in self.queues:
            maintenance.sweep_queue(queue)  # type: ignore[arg-type]
        self.last_cleaned_at = now()
