"""Recording a run's outcome: through the run's lease, through outages, through app/core/outcomes.py.

The job in hand is settled by its run's lease (app/core/leases.py): its success is one
atomic write that ends the lease, repeated after an outage until it lands or finds the
lease gone; a run whose outcome cannot be written (a failure, a work horse's result) is put
back on its queue once Redis answers, unless the lease shows it was settled already.
Nothing is lost, nothing recorded twice. Every outcome goes to app/core/outcomes.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue

from app.core import compat, leases, outcomes, steps
from app.core.leases import Lease
from app.core.limits import TimeLimitExceeded
from app.core.outcomes import record_error, redact_arguments
from app.core.queues import STORED, task_spec
from app.foundation import outages, proc
from app.ops import metrics
from app.processes.workers.grace import GraceMixin
from app.processes.workers.redis_outages import REDIS_GONE
from app.processes.workers.surface import RunState

log = logging.getLogger("tasklane.worker")

_T = TypeVar("_T")

#: Exit status of a work horse whose run ended but whose outcome could not be written
#: (Redis unreachable); its parent puts the job back on its queue (EX_TEMPFAIL).
EX_OUTCOME_LOST = 75


class OutcomeLost(Exception):
    """Redis went away before a run's outcome was written; the worker settles the job when it is back."""


#: What cuts a run short for the worker to settle once Redis answers (:meth:`RecordingMixin.settle`).
SETTLE_AFTER: tuple[type[Exception], ...] = (OutcomeLost, *REDIS_GONE)


def _trimmed(commands: list[tuple[Any, ...]], job: Job, lease: Lease) -> list[Any]:
    """RQ's success writes (the commands recorded, see :func:`leases.recorded`), flattened for
    :func:`leases.apply`, less those that change nothing when they apply with the lease's end:

    - the EXPIREs of the job's dependents and dependencies keys, for a job without dependencies:
      the latter does not exist, and the former is empty whenever the writes apply (the apply
      script holds them back while it has members);
    - the execution's removal from the started registry: the lease's end removes that entry;
    - ``HSET <job> status finished`` when the job's whole hash (status included) is written after it;
    - in the job's whole hash, the fields whose value is the one its hash held when the job was
      taken (:data:`~app.core.queues.STORED`, as the claim left it): its data, description,
      times of creation and enqueue, origin, TTLs... (RQ writes them all again).
    """
    noop_expire = set() if job._dependency_ids else {job.dependents_key, job.dependencies_key}
    ended = {(lease.key, m) for m in lease.members}
    key = job.key
    stored: dict[bytes, Any] = job.__dict__.get(STORED) or {}
    whole = [n for n, c in enumerate(commands) if c[0] == "HSET" and c[1] == key and len(c) > 4]
    out: list[Any] = []
    for n, command in enumerate(commands):
        name = command[0]
        size = len(command)
        if size == 3 and name == "EXPIRE" and command[1] in noop_expire:
            continue
        if size == 3 and name == "ZREM" and (command[1], command[2]) in ended:
            continue
        if name == "HSET" and command[1] == key:
            if size == 4 and command[2] == "status" and any(later > n for later in whole):
                continue
            if size > 4 and stored:
                pairs = [
                    (field, value)
                    for field, value in zip(command[2::2], command[3::2], strict=True)
                    if stored.get(field.encode() if isinstance(field, str) else field) != _encoded(value)
                ]
                if not pairs:
                    continue
                command = ("HSET", key, *(item for pair in pairs for item in pair))
        out.append(len(command))
        out.extend(command)
    return out


def _encoded(value: Any) -> bytes:
    """``value`` as redis-py sends it (bytes as they are, text in UTF-8, numbers as their repr)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()


class RecordingMixin(GraceMixin):
    """The outcome of the run in hand, recorded once."""

    def _settle(self, job: Job, queue: Queue, error: BaseException) -> None:
        """Redis cut the run short: once it answers, put the job back unless it was settled already."""
        log.warning("Worker %s: job %s: no Redis to record its outcome; "
                    "it is settled once Redis answers", self.name, job.id)  # fmt: skip
        run = self.run_of(job.id).execution
        pending: BaseException | None = error if isinstance(error, REDIS_GONE) else None
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
            if outcomes.put_back(queue, job.id, job):
                log.info("Worker %s: job %s put back on its queue (not started)", self.name, job.id)
            return

        def cleanup(pipe: Any) -> None:
            self.cleanup_execution(job, pipeline=pipe, execution=run)

        lease = Lease.of(job, run)
        if outcomes.orphaned(job, queue, cleanup, lease=lease, cause=outcomes.OUTCOME_LOST):
            return
        if job.get_status(refresh=True) == JobStatus.FINISHED:
            outcomes.succeeded(
                job, counted=True
            )  # its success (and its count) was written before the answer was lost

    def _stop_horse(self) -> None:
        """A work horse still running the job must be gone before the job is handed on (fork mode)."""

    def _record_counts(self, job: Job, run_time: float, pipe: Any) -> None:
        """A success's counters (the worker's, the task's metrics), recorded on ``pipe`` with its writes."""
        self.increment_successful_job_count(pipeline=pipe)
        assert job.started_at and job.ended_at
        self.increment_total_working_time(job.ended_at - job.started_at, pipe)
        spec = task_spec(job)
        metrics.record_job(pipe, spec.name if spec else str(job.func_name), "success", run_time, job.origin)

    def _discard_counts(self, job: Job, run_time: float) -> None:
        """The success's writes were not applied (RQ's path counts it, or it was settled elsewhere):
        forget counters :meth:`_record_counts` kept outside them (here: none, they were on the pipe)."""

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's logging of a failed run, except for a run whose outcome Redis never got (not a failure)."""
        if self.run_of(job.id).outcome_lost or outcomes.snooze_asked(job) is not None:
            return  # a snooze is no failure: outcomes.snoozed logs it
        super().handle_exception(job, *exc_info)

    def _bookkeeping(self, job: Job, call: Callable[[], _T]) -> _T:
        """A write of the run's outcome that is safe to repeat: through an outage, wait and repeat it.

        A work horse does not wait (its parent would take the wait for a stuck job): it
        gives up, and its parent settles the job once Redis answers.
        """
        while True:
            try:
                return call()
            except outages.REDIS_DOWN as exc:
                self.run_of(job.id).outcome_lost = True  # whatever follows, RQ must not record a failure
                if self.is_horse:
                    self._give_up(job)
                self._wait_for_redis(exc)
                self.run_of(job.id).outcome_lost = False

    def _give_up(self, job: Job) -> None:
        """The run's outcome cannot be written now: settle the job later (a horse leaves it to its parent)."""
        self.run_of(job.id).outcome_lost = True
        if self.is_horse:
            self.log.warning(
                "Work horse: job %s: no Redis to record its outcome; its worker settles it", job.id
            )
            os._exit(EX_OUTCOME_LOST)
        raise OutcomeLost(job.id)

    def _after_outcome(self, hook: Callable[[], None]) -> None:
        """The outcomes module's hooks once an outcome is written; through an outage, waited out."""
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
        recorder = leases.light_recorder()
        assert job.started_at and job.ended_at
        run_time = (job.ended_at - job.started_at).total_seconds()
        self._record_counts(job, run_time, recorder)
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl != 0:
            compat.record_success(job, result_ttl, recorder, self.name, execution)
        job.cleanup(result_ttl, pipeline=recorder, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=recorder, execution=execution)
        steps.count_end(job, "SUCCESS", recorder)  # a workflow's step: counted with its success
        lease = Lease.of(job, execution)
        writes = _trimmed([args for args, _ in recorder.command_stack], job, lease)
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
        """One round trip: the success's writes with the end of its lease (see leases.apply), and for a
        job in a sequence the hand-on to the next (outcomes.apply_ending)."""
        dependents = job.dependents_key
        return outcomes.apply_ending(self.connection, job, lease, writes, unless_members_in=dependents)

    def _success_through_rq(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        if not self._renewed(job, execution):
            return
        self._succeeding = job
        try:
            super().handle_job_success(job, queue, started_job_registry, execution)
        except outages.REDIS_DOWN:
            self._give_up(job)
        finally:
            self._succeeding = None
        self._after_outcome(lambda: outcomes.hand_on(job))
        self._after_outcome(lambda: outcomes.succeeded(job))

    #: The job whose success RQ's own path is writing (see :meth:`increment_successful_job_count`).
    _succeeding: Job | None = None

    def increment_successful_job_count(self, pipeline: Any = None) -> None:
        """RQ's count of the worker's successes; inside RQ's success transaction (WATCH/MULTI, repeated
        on a WatchError), a workflow step's success is counted in its workflow's summary with it."""
        super().increment_successful_job_count(pipeline=pipeline)
        if self._succeeding is not None and pipeline is not None:
            steps.count_end(self._succeeding, "SUCCESS", pipeline)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        """Record the failure once, through app/core/outcomes.py: retried, failed for good, or requeued.

        A work horse that died under its job (killed, out of memory, a crash in C code)
        did not fail the job: the job is an orphan, put back without spending a retry. A
        run whose outcome Redis never got is no failure either: it is settled after the outage.
        """
        state = self.run_of(job.id)
        if state.outcome_lost:
            self._give_up(job)
        if state.shutdown_stopped:
            self._bookkeeping(job, lambda: self._requeue_after_grace(job, queue, execution))
            return
        exc_string = redact_arguments(job, exc_string)
        stopped = compat.stopped_job_id(self) == job.id
        if outcomes.snooze_asked(job) is not None and not stopped and not state.horse_died:

            def put_back(pipe: Any) -> None:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)

            lease = leases.of_run(job, execution)
            self._bookkeeping(job, lambda: outcomes.snoozed(job, queue, put_back, lease=lease))  # type: ignore[arg-type]
            return
        if job.worker_name is None:  # the parent of a forked horse never saw the start
            job.worker_name = self.name
        try:
            hard_killed = state.hard_killed
            if state.horse_died and not stopped and not hard_killed:
                state.horse_died = False
                cause = outcomes.OUTCOME_LOST if state.horse_outcome_lost else self._horse_death_cause(state)
                state.horse_outcome_lost = False

                def cleanup(pipe: Any) -> None:
                    self.cleanup_execution(job, pipeline=pipe, execution=execution)

                lease = leases.of_run(job, execution)
                outcomes.orphaned(job, queue, cleanup=cleanup, lease=lease, cause=cause)
                return
            if stopped:  # revoked while it ran: canceled, not failed (RQ would list it among the failed)
                compat.forget_stopped_job(self)

                def cleanup_stopped(pipe: Any) -> None:
                    self.cleanup_execution(job, pipeline=pipe, execution=execution)

                lease = leases.of_run(job, execution)
                self._bookkeeping(job, lambda: outcomes.stopped_run(
                    job, queue, exc_string, cleanup_stopped, lease=lease, worker=self.name))  # fmt: skip
                return
            if not self._renewed(job, execution):
                return
            if hard_killed:
                message = f"hard time limit of {job.timeout} s exceeded; the work horse was killed"
                exc_string = f"{exc_string}\n{TimeLimitExceeded.__module__}.TimeLimitExceeded: {message}"
                record_error(job, "TimeLimitExceeded", message)
            final = not job.should_retry or stopped
            super().handle_job_failure(
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
        state = self.run_of(job.id)
        state.horse_died = True
        state.horse_death = proc.describe_exit(ret_val)
        state.horse_outcome_lost = (
            ret_val is not None and os.waitstatus_to_exitcode(ret_val) == EX_OUTCOME_LOST
        )
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def _horse_death_cause(self, state: RunState) -> tuple[str, str]:
        death = state.horse_death
        return outcomes.horse_lost(death) if death else outcomes.WORKER_LOST
