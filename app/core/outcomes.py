"""Every outcome of a job, in one place, whichever worker mode or sweep observed it.

- :func:`succeeded`: the task returned;
- :func:`retrying`: an attempt failed and another is scheduled;
- :func:`failed`: the job failed for good (or was stopped while it ran);
- :func:`revoked`: the job was revoked before it ran;
- :func:`orphaned`: the worker holding the job died (or lost Redis before it could record
  the run's outcome): it is put back on its queue without spending a retry (as Sidekiq
  Pro's super_fetch and River's rescuer do), up to ``MAX_ORPHAN_REQUEUES`` times, after
  which it fails as a poison job;
- :func:`deferred`: the task's rate limit put the job back for later;
- :func:`set_aside`: a dequeued job could not be read (not JSON, no data, a bad status): it
  fails unrun, with the cause, and expires as failed jobs do (:func:`remove_set_aside` deletes it);
- :func:`put_back`: a job dequeued but never started goes back to the head of its queue;
- :func:`rescue`: the supervisor's settling of a job whose worker process died;
- :func:`eager_run`: a call in eager mode, run inline with the same signals, hooks and JSON result.
- :func:`snoozed`: the task asked to run again later (``Snooze``): put back, no retry spent;
- :func:`expire`: the job was not started by its ``expires`` time: it never runs (REVOKED,
  ``error.type`` ``expired``), whether a worker about to start it or the sweep saw it first.

The workers (pooled, fork, inline, threads), the supervisor, the scheduler's sweeps,
the API's revoke and eager mode call these and nothing else, so metrics, alerts, logs and
workflow bookkeeping have one hook each. A job's outcome is recorded once, by the one path
that observed it: where a worker and a sweep could both see a run as theirs (after a Redis
outage, say), the run's lease decides (see app/core/leases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import traceback
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
from flask import has_app_context
from pydantic_core import to_jsonable_python
from redis import Redis
from redis.exceptions import NoScriptError, RedisError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import parse_composite_key

from app.catalogue.registry import RetryTask, TaskSpec
from app.core import compat, leases, sealing, sequences, steps
from app.core.leases import Lease
from app.core.queues import JsonJob, JsonQueue, lane_key, lane_of, lane_push_commands, task_spec
from app.core.sealing import hook_kwargs
from app.core.states import SET_ASIDE, State, set_aside_views
from app.foundation import defaults, keys, runtime, signals
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta
from app.foundation.timeutil import iso, seconds_from_now, utcnow
from app.ops import metrics, observability
from app.ops.logs import MASK

if TYPE_CHECKING:
    from redis.client import Pipeline

log = logging.getLogger("tasklane.lifecycle")

_RELEASE_IF_OWNER = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)

#: Statuses of a job that has not started and can still be revoked by cancelling it.
_WAITING = (JobStatus.DEFERRED, JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.CREATED)


class JobFinished(Exception):
    """The job has already finished, successfully or not."""


class JobNotFailed(Exception):
    """Only a failed job can be retried."""


def _context(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "task": job.meta.get(Meta.TASK), "queue": job.origin}


# --- a failed attempt: recorded, and retried or not ---------------------------------------------


def attempt_failed(
    job: Job, spec: TaskSpec | None, exc: BaseException, message: str, *, retryable: bool
) -> None:
    """An attempt raised ``exc`` (``message``: its redacted text): record it, and decide whether the
    failure may be retried (saved in the job's meta, read by :func:`may_retry` when the worker
    records the failure). ``retryable`` False: the run could not start (bad arguments, revoked,
    unknown task), never retried. :class:`RetryTask` asks for another attempt after its countdown;
    any other error is retried as the task's policy says. A stop at the end of a warm shutdown's
    grace is no attempt of the task's: the worker records it once (:data:`SHUTDOWN_STOPPED`)."""
    if isinstance(exc, ShutdownGraceOver):
        return
    record_attempt(job, type(exc).__name__, message)
    if isinstance(exc, RetryTask):
        job.meta[Meta.RETRY_COUNTDOWN] = exc.countdown
    elif spec is None or not retryable or not spec.retry.should_retry(exc):
        job.meta[Meta.NO_RETRY] = True
    job.save_meta()


def may_retry(job: Job, *, budget_left: bool) -> bool:
    """Whether a failed run is retried: while RQ's retry budget lasts, unless the attempt's
    classification (:func:`attempt_failed`) or a revoke made the failure final."""
    if job.meta.get(Meta.NO_RETRY) or job.meta.get(Meta.REVOKED):
        return False
    return budget_left


def schedule_retry(job: Job, queue: Queue, pipeline: Pipeline) -> None:
    """Schedule the next attempt after the task's back-off (with full jitter) or its own countdown.

    RQ's Retry knows only a fixed list of intervals; the delay is decided here instead,
    for failures in the task and for killed work horses alike. :func:`retrying` follows.
    """
    assert job.retries_left
    countdown = job.meta.pop(Meta.RETRY_COUNTDOWN, None)
    if countdown is None:
        spec = task_spec(job)
        attempt = int(job.meta.get(Meta.MAX_RETRIES, 0)) - job.retries_left + 1
        countdown = spec.retry.delay(attempt, random.random()) if spec else 1.0
    job.retries_left -= 1
    when = seconds_from_now(float(countdown))
    job.meta[Meta.NEXT_RETRY_AT] = iso(when)
    compat.set_job_status(job, JobStatus.SCHEDULED)
    queue.schedule_job(job, when, pipeline=pipeline)


def record_attempt(job: Job, exc_type: str, message: str) -> None:
    """Append this attempt's error to the job's history (saved with the next meta write)."""
    attempts = list(job.meta.get(Meta.ATTEMPTS) or [])
    attempts.append(
        {"attempt": len(attempts) + 1, "type": exc_type, "message": message[:2000], "at": iso(utcnow())}
    )
    job.meta[Meta.ATTEMPTS] = attempts[-defaults.MAX_ATTEMPT_RECORDS :]
    job.meta[Meta.ERROR] = {"type": exc_type, "message": message}


def redact_arguments(job: Job, text: str) -> str:
    """``text`` with the job's sensitive argument values masked (for texts made after its run)."""
    spec = task_spec(job)
    encrypted = sealing.is_encrypted(job)
    if spec is None or not (spec.sensitive or encrypted) or not text:
        return text
    try:
        kwargs = sealing.job_kwargs(job)
    except Exception:
        return text
    for value in sealing.secret_values(spec, kwargs, encrypted):
        text = text.replace(value, MASK)
    return text


def record_error(job: Job, exc_type: str, message: str) -> None:
    """Record a failure seen from outside the task (a killed or abandoned run) as an attempt, now."""
    job.meta = job.get_meta(refresh=True)  # the run may have saved progress and attempts since
    record_attempt(job, exc_type, message)
    job.save_meta()


# --- outcomes -------------------------------------------------------------------------------


def succeeded(job: Job, *, counted: bool = False) -> None:
    """The task returned: free its uniqueness lock; count it (unless the worker wrote the count with
    the success itself); tell the task's and the users' handlers."""
    release_unique(job)
    if not counted:
        _count(job, "success", _run_time(job))
    spec = task_spec(job)
    name = spec.name if spec else str(job.meta.get(Meta.TASK))
    if (spec is not None and spec.on_success) or signals.task_success.receivers:
        result = sealing.job_result(job, compat.last_return_value(job))
        signals.send(signals.task_success, name, job_id=job.id, kwargs=hook_kwargs(job), result=result)
        if spec is not None and spec.on_success:
            _call_hook(spec.on_success, job, result)


def retrying(job: Job) -> None:
    """An attempt failed and another is scheduled (its time is in the job's meta)."""
    retry_at = job.meta.get(Meta.NEXT_RETRY_AT)
    log.info("attempt failed; retry at %s", retry_at, extra=_context(job))
    _count(job, "retry")
    if signals.task_retry.receivers:
        error = job.meta.get(Meta.ERROR) or {}
        signals.send(signals.task_retry, _name(job), job_id=job.id, kwargs=hook_kwargs(job), error=error,
                     retry_at=retry_at)  # fmt: skip


def failed(job: Job, exc_string: str, *, stopped: bool = False) -> None:
    """The job failed for good (or was stopped): revoke what waited on it, free its lock, alert."""
    release_unique(job)
    revoke_dependents(job)
    spec = task_spec(job)
    _count(job, "revoked" if stopped else "failure")
    if stopped:
        signals.send(signals.task_revoked, _name(job), job_id=job.id, kwargs=hook_kwargs(job))
        return
    if spec is not None and spec.critical:
        alert(job, spec.name, exc_string)
    last_line = (exc_string.strip().splitlines() or [""])[-1]
    error = job.meta.get(Meta.ERROR) or {"type": "Error", "message": last_line}
    observability.capture_failure(
        job.id, _name(job), str(error.get("type")), redact_arguments(job, str(error.get("message")))
    )
    signals.send(signals.task_failure, _name(job), job_id=job.id, kwargs=hook_kwargs(job), error=error,
                 exc_string=exc_string)  # fmt: skip
    if spec is not None and spec.on_failure:
        _call_hook(spec.on_failure, job, error)


def revoked(job: Job) -> None:
    """The job was revoked before it ran: free its lock and revoke what waited on it."""
    release_unique(job)
    revoke_dependents(job)
    _count(job, "revoked")
    signals.send(signals.task_revoked, _name(job), job_id=job.id, kwargs=hook_kwargs(job))


def _count(job: Job, outcome: str, seconds: float | None = None) -> None:
    """Count an outcome in the shared metrics; a failure to count never changes the outcome."""
    try:
        with job.connection.pipeline(transaction=False) as pipe:
            metrics.record_job(pipe, _name(job), outcome, seconds, job.origin)  # the queue it ran on
            if outcome in _STEP_ENDS:  # a success is counted in its workflow with its writes
                steps.count_end(job, _STEP_ENDS[outcome], pipe)
            pipe.execute()
    except RedisError as exc:
        log.debug("could not count %s: %s", outcome, exc, extra=_context(job))


#: Outcomes that end a workflow's step (the summary's state), besides a success.
_STEP_ENDS = {"failure": "FAILURE", "revoked": "REVOKED", "expired": "REVOKED"}


def _run_time(job: Job) -> float | None:
    """Seconds the run took, when both ends are known."""
    if job.started_at is None or job.ended_at is None:
        return None
    return max(0.0, (job.ended_at - job.started_at).total_seconds())


def _name(job: Job) -> str:
    spec = task_spec(job)
    return spec.name if spec else str(job.meta.get(Meta.TASK))


def _call_hook(hook: Any, job: Job, value: Any) -> None:
    _call_hook_of(hook, job.id, hook_kwargs(job), value, _context(job))


def _call_hook_of(
    hook: Any, job_id: str, kwargs: dict[str, Any], value: Any, context: dict[str, Any]
) -> None:
    try:
        hook(value, job_id, kwargs)
    except Exception:
        log.exception("the task's %s hook failed (the job is not affected)", hook.__name__, extra=context)


def eager_run(spec: TaskSpec, values: dict[str, Any], job_id: str) -> tuple[Any, dict[str, Any] | None]:
    """Eager mode (app/calling/eager.py): run a validated call inline, as a worker's run ends.

    The same signals (prerun, postrun, then success or failure) and task hooks as a worker's
    run, an awaitable result awaited, and the result made JSON as RQ would store it. Nothing
    is written to Redis (eager mode needs none). Returns ``(result, None)`` or ``(None, error)``
    with the error's type, message and traceback.
    """
    context = {"job_id": job_id, "task": spec.name, "queue": None}
    signals.send(signals.task_prerun, spec.name, job_id=job_id, kwargs=values)
    try:
        try:
            result = spec.func(**values)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        finally:
            signals.send(signals.task_postrun, spec.name, job_id=job_id, kwargs=values)
        result = to_jsonable_python(result)
    except Exception as exc:
        exc_string = traceback.format_exc()
        error = {"type": type(exc).__name__, "message": str(exc), "traceback": exc_string}
        summary = {"type": error["type"], "message": error["message"]}
        signals.send(
            signals.task_failure,
            spec.name,
            job_id=job_id,
            kwargs=values,
            error=summary,
            exc_string=exc_string,
        )
        if spec.on_failure:
            _call_hook_of(spec.on_failure, job_id, values, summary, context)
        return None, error
    signals.send(signals.task_success, spec.name, job_id=job_id, kwargs=values, result=result)
    if spec.on_success:
        _call_hook_of(spec.on_success, job_id, values, result, context)
    return result, None


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def deferred(job: Job, queue: Queue, wait: float) -> None:
    """Put a dequeued job back, to start when its task's rate limit allows; never a failure."""
    when = seconds_from_now(wait)
    job.meta[Meta.RATE_LIMITED_UNTIL] = iso(when)
    with job.connection.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        queue.schedule_job(job, when, pipeline=pipe)
        pipe.execute()
    log.info("rate limited: waits %.2f s", wait, extra=_context(job))
    _count(job, "deferred")


# End a job that is still waiting (queued, in its queue's list or intermediate list; scheduled;
# deferred) as expired: status canceled, its meta, the canceled registry (scored with its
# retention, as JsonJob.cancel does) and the hash's TTL, off every list and registry; and drop
# its entry of the expiry index. 0 (only the entry dropped) when it no longer waits.
# KEYS: job, queue, intermediate, scheduled, deferred, canceled, expiries.
# ARGV: job id, ended_at, meta, canceled score, ttl.
_EXPIRE = LuaScript(
    """
redis.call('ZREM', KEYS[7], ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'scheduled' and status ~= 'deferred' then return 0 end
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], 'meta', ARGV[3])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
)


def _waiting_list(job: Job, queue: Queue) -> str:
    """The list a waiting ``job`` is in: its queue's, or its lane's (a priority or a group)."""
    lane = lane_of(job)
    return queue.key if lane is None else lane_key(queue.name, lane)


def snooze_asked(job: Job) -> float | None:
    """Seconds the run that just ended asked to snooze for (``raise Snooze(s)``), or None."""
    value = job.meta.get(Meta.SNOOZE_FOR)
    return None if value is None else float(value)


def snoozed(job: Job, queue: JsonQueue, cleanup: Any = None, *, lease: Lease | None = None) -> bool:
    """The task asked to run again after some seconds: the job waits as a delayed one (scheduled,
    ``PENDING`` with ``scheduled_for``), no retry spent, no attempt or failure recorded; its
    ``snoozed`` count goes up, and it counts as ``snoozed``. ``cleanup`` and ``lease`` as for
    :func:`orphaned`. True when the writes were applied (False: the run was settled elsewhere)."""
    seconds = snooze_asked(job) or 0.0
    job.meta.pop(Meta.SNOOZE_FOR, None)
    job.meta[Meta.SNOOZED] = int(job.meta.get(Meta.SNOOZED) or 0) + 1
    when = seconds_from_now(seconds)
    pipe = _writes(job.connection, lease)
    if cleanup is not None:
        cleanup(pipe)
    pipe.hset(job.key, "meta", compat.serialized_meta(job))
    pipe.lrem(queue.intermediate_queue_key, 0, job.id)
    compat.set_job_status(job, JobStatus.SCHEDULED)
    queue.schedule_job(job, when, pipeline=pipe)
    if not _commit(job.connection, pipe, lease):
        log.info("run already settled elsewhere; not snoozed", extra=_context(job))
        return False
    log.info("snoozed for %.1f s (%d so far)", seconds, job.meta[Meta.SNOOZED], extra=_context(job))
    _count(job, "snoozed")
    return True


def expires_at(job: Job) -> datetime | None:
    """When the job expires (its ``expires``), or None."""
    stamp = job.meta.get(Meta.EXPIRES)
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def expire_if_due(job: Job, queue: Queue) -> bool:
    """Before a worker starts ``job``: when its ``expires`` has passed, end it as expired (see
    :func:`expire`) and answer True: it is not to run. False: run it as usual."""
    deadline = expires_at(job)
    if deadline is None or deadline > utcnow() or _started_once(job):
        return False  # a job that started once (a retry, a requeued orphan, a snooze) has met its expiry
    return expire(job, queue)  # type: ignore[arg-type]


def expire(job: Job, queue: JsonQueue | None = None) -> bool:
    """The job was not started by its ``expires`` time: it never runs. It ends ``REVOKED`` with
    ``error.type`` ``expired`` (kept as a revoked job is), its uniqueness lock is freed, what
    waited on it is revoked, and it counts as ``expired``. Atomic: of a worker about to start it
    and the sweep, one ends it; False when it no longer waited (started, ended or revoked)."""
    queue = queue or JsonQueue(job.origin, connection=job.connection)
    connection = job.connection
    deadline = job.meta.get(Meta.EXPIRES)
    job.meta[Meta.REVOKED] = True
    job.meta[Meta.ERROR] = {"type": "expired", "message": f"not started by {deadline}, so never run"}
    ttl = job.revoked_ttl() if isinstance(job, JsonJob) else defaults.FAILED_JOB_TTL
    sec, usec = connection.time()
    job.ended_at = utcnow()
    expire_keys = [
        *(job.key, _waiting_list(job, queue), queue.intermediate_queue_key, queue.scheduled_job_registry.key),
        *(queue.deferred_job_registry.key, queue.canceled_job_registry.key, keys.expiries()),
    ]
    expire_args = [job.id, iso(job.ended_at) or "", compat.serialized_meta(job), sec + usec / 1e6 + ttl, ttl]
    if sequences.key_of(job) is None:
        done = _EXPIRE(connection, keys=expire_keys, args=expire_args)
    else:  # the end and the hand-on of its sequence in one MULTI
        while True:
            with connection.pipeline() as pipe:
                _EXPIRE.queue(pipe, keys=expire_keys, args=expire_args)
                sequences.settle_on(pipe, job)
                answers = pipe.execute(raise_on_error=False)
            if not isinstance(done := answers[0], NoScriptError):
                break
            _EXPIRE.load(connection)  # nothing applied; the hand-on found it waiting
        sequences.settled(connection, job, answers)
    if not done:
        return False
    compat.set_job_status(job, JobStatus.CANCELED)
    log.info("expired: not started by %s; never run", deadline, extra=_context(job))
    release_unique(job)
    revoke_dependents(job)
    _count(job, "expired")
    signals.send(signals.task_revoked, _name(job), job_id=job.id, kwargs=hook_kwargs(job))
    return True


def expire_due(connection: Redis, batch: int = 500) -> int:
    """The sweep's part: end every job still waiting past its ``expires`` (those a worker would
    only meet at its start: in a paused or busy queue, scheduled later than their expiry, waiting
    on a dependency). Entries of jobs that started or ended are dropped. Returns how many expired."""
    now = utcnow().timestamp()
    ended = 0
    while True:
        found: list[bytes] = connection.zrangebyscore(keys.expiries(), "-inf", now, 0, batch)  # type: ignore[assignment]
        due = [_text(i) for i in found]
        if not due:
            return ended
        for job_id, job in zip(due, JsonJob.fetch_many(due, connection=connection), strict=True):
            if job is None or _started_once(job):  # gone, or started once: the entry goes
                connection.zrem(keys.expiries(), job_id)
            elif expire(job):
                ended += 1
        if len(due) < batch:
            return ended


def _started_once(job: Job) -> bool:
    return bool(job.meta.get(Meta.ATTEMPTS) or job.meta.get(Meta.SNOOZED))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: Why an orphan was put back: its worker died under it...
WORKER_LOST = ("WorkerLostError", "the worker running this job died; requeued without spending a retry")
#: ...or its worker lost Redis before it could record how the run ended.
OUTCOME_LOST = (
    "RedisUnavailable",
    "Redis became unreachable before this run's outcome was recorded; requeued without spending a retry",
)


#: ...or a warm shutdown's grace (WORKER_SHUTDOWN_GRACE) ran out while it ran: not its fault,
#: so it counts neither as a retry nor towards the poison-job bound.
SHUTDOWN_STOPPED = (
    "WorkerShutdown",
    "the worker was shut down and its grace period ran out; requeued without spending a retry",
)


class ShutdownGraceOver(BaseException):
    """Raised in an in-process job still running when a warm shutdown's grace ran out. Not an
    attempt of its own: the worker records the stop once, as :data:`SHUTDOWN_STOPPED`."""


def horse_lost(death: str, who: str = "work horse") -> tuple[str, str]:
    """The cause of an orphan whose work horse (or worker process) died: how it ended."""
    return ("WorkerLostError", f"the {who} running this job {death}; requeued without spending a retry")


def orphaned(
    job: Job,
    queue: Queue,
    cleanup: Any = None,
    *,
    lease: Lease | None = None,
    cause: tuple[str, str] = WORKER_LOST,
) -> bool:
    """The worker (or work horse) holding ``job`` died: requeue it, or fail it as a poison job.

    ``cleanup(pipeline)`` records the removal of the job's execution, written with the rest.
    With a ``lease``, nothing is written unless the run's lease is still held (it then
    ends with these writes). Returns True when the job was put back on its queue.
    """
    job.meta = job.get_meta(refresh=True)
    recorded = job.meta.get(Meta.ERROR) or {}
    if job.meta.get(Meta.NO_RETRY) and recorded.get("type") == "TimeLimitExceeded":
        # The supervisor killed its process for the hard limit and recorded why: that is final.
        fail_now(job, queue, None, cleanup=cleanup, lease=lease)
        return False
    # Only the death of the process running the job counts towards the poison-job bound: a Redis
    # outage that lost the outcome, or a warm shutdown's grace, says nothing about the job.
    death = cause[0] == WORKER_LOST[0]
    count = int(job.meta.get(Meta.ORPHANED) or 0)
    if death and count >= defaults.MAX_ORPHAN_REQUEUES:
        last = cause[1].split(";", 1)[0]
        message = (
            f"the worker running this job died {count + 1} times (last: {last}); "
            "it is failed as a poison job (see the attempts for each death)"
        )
        fail_now(job, queue, ("WorkerLostError", message), cleanup=cleanup, lease=lease)
        return False
    lost = int(job.meta.get(Meta.OUTCOMES_LOST) or 0)
    if cause[0] == OUTCOME_LOST[0] and lost >= defaults.MAX_OUTCOME_LOST_REQUEUES:
        message = (
            f"this job's outcome was lost {lost + 1} times (its work horse exited as one that lost "
            "Redis does); it is failed so that it cannot run for ever (see the attempts)"
        )
        fail_now(job, queue, ("RedisUnavailable", message), cleanup=cleanup, lease=lease)
        return False
    record_attempt(job, *cause)
    if death:
        job.meta[Meta.ORPHANED] = count + 1
    elif cause[0] == OUTCOME_LOST[0]:
        job.meta[Meta.OUTCOMES_LOST] = lost + 1
    pipe = _writes(job.connection, lease)
    if cleanup is not None:
        cleanup(pipe)
    pipe.hset(job.key, "meta", compat.serialized_meta(job))
    job.set_status(JobStatus.QUEUED, pipeline=pipe)
    pipe.lrem(queue.intermediate_queue_key, 0, job.id)
    queue.push_job_id(job.id, pipeline=pipe, at_front=True, lane=lane_of(job))  # type: ignore[call-arg]
    if not _commit(job.connection, pipe, lease):
        log.info("run already settled elsewhere; not requeued", extra=_context(job))
        return False
    _count(job, "orphaned")
    if not death:
        log.warning("%s", cause[1], extra=_context(job))
        return True
    log.warning("%s (%d of %d)", cause[1], count + 1, defaults.MAX_ORPHAN_REQUEUES,
                extra=_context(job))  # fmt: skip
    return True


def fail_now(
    job: Job,
    queue: Queue,
    error: tuple[str, str] | None,
    cleanup: Any = None,
    *,
    lease: Lease | None = None,
) -> bool:
    """Fail a job whose process is gone, for good: recorded error, failed registry, then :func:`failed`.

    With a ``lease``, only while the run's lease is held. Returns True when recorded.
    """
    if error is not None:
        job.meta = job.get_meta(refresh=True)  # the run may have saved progress and attempts since
        record_attempt(job, *error)
    recorded = job.meta.get(Meta.ERROR) or {}
    exc_string = f"{recorded.get('type', 'Error')}: {recorded.get('message', '')}"
    job.ended_at = utcnow()
    pipe = _writes(job.connection, lease)
    if cleanup is not None:
        cleanup(pipe)
    if error is not None:
        pipe.hset(job.key, "meta", compat.serialized_meta(job))
    pipe.lrem(queue.intermediate_queue_key, 0, job.id)
    compat.record_failure(job, exc_string, pipe)
    if not _commit(job.connection, pipe, lease, ending=job):
        log.info("run already settled elsewhere; not failed", extra=_context(job))
        return False
    queue.enqueue_dependents(job)
    log.error("failed for good: %s", exc_string, extra=_context(job))
    failed(job, exc_string)
    return True


def stopped_run(
    job: Job,
    queue: Queue,
    exc_string: str,
    cleanup: Any = None,
    *,
    lease: Lease | None = None,
    worker: str = "",
) -> bool:
    """A running job was revoked and its run stopped: recorded as RQ records a cancel, not a failure
    (canceled registry, status stopped, its end time), then :func:`failed` with ``stopped`` (what
    waited on it is revoked, counted as revoked, task_revoked sent). With a ``lease``, only while the
    run's lease is held. Returns True when recorded."""
    pipe = _writes(job.connection, lease)
    if cleanup is not None:
        cleanup(pipe)
    ttl = job.revoked_ttl() if isinstance(job, JsonJob) else int(job.failure_ttl or defaults.FAILED_JOB_TTL)
    compat.record_stop(job, exc_string, pipe, worker, ttl)
    pipe.lrem(queue.intermediate_queue_key, 0, job.id)
    if not _commit(job.connection, pipe, lease, ending=job):
        log.info("run already settled elsewhere; not recorded as stopped", extra=_context(job))
        return False
    log.info("stopped on a revoke", extra=_context(job))
    failed(job, exc_string, stopped=True)
    return True


def _writes(connection: Redis, lease: Lease | None) -> Any:
    """Where an outcome's writes go: a transaction, or a recording for a lease-guarded apply."""
    return connection.pipeline() if lease is None else leases.recorder(connection)


def _commit(connection: Redis, pipe: Any, lease: Lease | None, ending: Job | None = None) -> bool:
    """Apply an outcome's writes (``pipe``); with ``ending``, the job they end hands its sequence on
    in the same transaction (see :func:`apply_ending`)."""
    if lease is None:
        with pipe:
            if ending is not None and sequences.settle_on(pipe, ending):
                sequences.settled(connection, ending, pipe.execute(raise_on_error=False))
            else:
                pipe.execute()
        return True
    writes = leases.recorded(pipe)
    if ending is not None:
        return apply_ending(connection, ending, lease, writes) == leases.APPLIED
    return leases.apply(connection, lease, writes) == leases.APPLIED


def apply_ending(
    connection: Redis, job: Job, lease: Lease, writes: list[Any], unless_members_in: str | None = None
) -> int:
    """:func:`leases.apply` of the writes that end ``job``'s run; for a job in a sequence, in one
    MULTI with the hand-on (app/core/sequences.py), which pushes the next job of the sequence onto
    its queue only if the writes did end the job. The one step where a sequence moves on after a
    run: a worker's success, a final failure or stop recorded here, a poison job."""
    if sequences.key_of(job) is None:
        return leases.apply(connection, lease, writes, unless_members_in)
    with connection.pipeline() as pipe:  # MULTI: the end and the hand-on, or neither
        leases.apply_on(pipe, lease, writes, unless_members_in)
        sequences.settle_on(pipe, job)
        answers = pipe.execute(raise_on_error=False)
    if isinstance(outcome := answers[0], NoScriptError):  # nothing applied; the hand-on found the run on
        leases.load_apply(connection)
        return apply_ending(connection, job, lease, writes, unless_members_in)
    sequences.settled(connection, job, answers)
    return int(outcome)


def hand_on(job: Job) -> None:
    """After ``job`` ended by a path whose writes are RQ's own (a revoke's cancel, RQ's success path):
    its sequence moves on, as a step of its own (the sweep settles it should this process die
    before). Nothing for a job in no sequence."""
    if sequences.key_of(job) is not None:
        sequences.settle(job.connection, job)


def fail_stuck(connection: Redis, job_id: str, error: tuple[str, str] | None = None) -> None:
    """A job whose process was killed for its hard time limit (or ``error``, the cause it was
    killed for, such as its memory cap): fail it now, with that cause.

    Only while its run's lease is held: a run already settled (or requeued by a sweep) is left alone.
    """
    job = JsonJob.fetch_many([job_id], connection=connection)[0]
    if job is None or job.get_status() != JobStatus.STARTED:
        return
    queue = JsonQueue(job.origin, connection=connection)
    job.meta = job.get_meta(refresh=True)
    job.meta[Meta.NO_RETRY] = True
    message = f"hard time limit of {job.timeout} s exceeded; its worker process was killed"
    error = error or ("TimeLimitExceeded", message)
    fail_now(job, queue, error, lease=leases.of_started(connection, job))


def rescue(
    connection: Redis,
    job_id: str,
    cause: tuple[str, str] = WORKER_LOST,
    *,
    waiting_only: bool = False,
    ahead_of: str | None = None,
) -> str:
    """The worker process holding ``job_id`` died (and was reaped): settle the job now, not when
    its heartbeat expires. The supervisor's one rescue path, for every in-process mode.

    Dequeued but not started: back to the head of its queue (:func:`put_back`). Started: an
    orphan (:func:`orphaned`), only while its run's lease is held (nothing is written if a
    sweep settled it already). Finished or failed (it died after writing the outcome): left
    alone. ``waiting_only``: only a job dequeued but not started (the job a dead worker took last,
    which may since have been started elsewhere) is settled. ``ahead_of`` (a worker's name): the
    job was claimed ahead by that worker, which died before running it; while it is still that
    worker's run, the claim is taken back and the job put back, as one that never started (no
    attempt, no death counted). Returns what was done: "requeued", "failed" (as a poison job),
    "left" or "gone".
    """
    job = JsonJob.fetch_many([job_id], connection=connection)[0]
    if job is None:
        return "gone"
    queue = JsonQueue(job.origin, connection=connection)
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        return "requeued" if put_back(queue, job_id, job) else "left"
    if status == JobStatus.STARTED and ahead_of is not None and job.worker_name == ahead_of:
        return "requeued" if _release_ahead(connection, job, queue, ahead_of) else "left"
    lease = leases.of_started(connection, job) if status == JobStatus.STARTED and not waiting_only else None
    if lease is None:
        return "left"
    return "requeued" if orphaned(job, queue, lease=lease, cause=cause) else "failed"


def _release_ahead(connection: Redis, job: Job, queue: JsonQueue, worker: str) -> bool:
    """Take back every run of ``job`` that ``worker`` claimed ahead, then put it back (see rescue)."""
    lease = leases.of_started(connection, job)
    runs = [parse_composite_key(_text(m))[1] for m in (lease.members if lease else ()) if ":" in _text(m)]
    released = [leases.release_claim(connection, queue, job.id, run, worker) for run in runs]
    return any(released) and put_back(queue, job.id, job)


# ARGV[2..], when given: the writes that push the id to its lane (n, command, arg..., as _CLAIM's).
_PUT_BACK = LuaScript(
    """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  if #ARGV == 1 then redis.call('LPUSH', KEYS[2], ARGV[1]) end
  local i = 2
  while i <= #ARGV do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
  return 1
end
return 0
"""
)


def put_back(queue: Queue, job_id: str, job: Job | None = None) -> bool:
    """Put a job a worker dequeued but did not start back at the head of its queue (no attempt:
    it never ran), of its priority and group (``job``'s lane; read when not given). Atomic: only
    if the id is still in the queue's intermediate list (a sweep or the supervisor may have put it
    back already). Returns True when this call put it back."""
    if job is None:
        job = JsonJob.fetch_many([job_id], connection=queue.connection)[0]
    lane = lane_of(job) if job is not None else None
    writes: list[Any] = []
    if lane is not None:
        for command in lane_push_commands(queue.name, job_id, lane, at_front=True):
            writes += [len(command), *command]
    return bool(
        _PUT_BACK(queue.connection, keys=[queue.intermediate_queue_key, queue.key], args=[job_id, *writes])
    )


def set_aside(queue: Queue, job_id: str, cause: str) -> None:
    """A dequeued job cannot be read: fail it unrun, with the cause, off every list.

    Its hash keeps the cause and a marker (:data:`states.SET_ASIDE`), so the API lists it among
    the failed jobs and DELETE removes it; it expires after FAILED_JOB_TTL, as failed jobs do.
    Counted as a failure of task "unknown"; what waited on it is revoked.
    """
    log.error("job %s in queue %s cannot be read (%s); moved to the failed jobs", job_id, queue.name, cause)
    ttl = _failed_job_ttl()
    failed_registry = FailedJobRegistry(queue.name, connection=queue.connection, job_class=JsonJob)
    with queue.connection.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job_id)
        pipe.zadd(failed_registry.key, {job_id: (utcnow() + timedelta(seconds=ttl)).timestamp()})
        pipe.hset(
            JsonJob.key_for(job_id),
            mapping={
                "status": JobStatus.FAILED.value,
                "ended_at": iso(utcnow()) or "",
                "error": cause,
                "origin": queue.name,
                SET_ASIDE: queue.name,
            },
        )
        pipe.expire(JsonJob.key_for(job_id), ttl)
        metrics.record_job(pipe, UNREADABLE_TASK, "failure")
        pipe.execute()
    revoke_dependents_of(queue.connection, job_id)
    exc_type, _, message = cause.partition(": ")
    error = {"type": exc_type, "message": message or cause}
    observability.capture_failure(job_id, UNREADABLE_TASK, exc_type, message or cause)
    signals.send(signals.task_failure, UNREADABLE_TASK, job_id=job_id, kwargs={}, error=error,
                 exc_string=cause)  # fmt: skip


#: The task name a job set aside unread is counted and signalled under (its own cannot be read).
UNREADABLE_TASK = "unknown"


def remove_set_aside(connection: Redis, job_id: str) -> bool:
    """Delete a job that was set aside unread (its hash and its failed registry entry); False when
    ``job_id`` is no such job."""
    views = set_aside_views(connection, [job_id])
    if job_id not in views:
        return False
    failed_registry = FailedJobRegistry(views[job_id]["queue"], connection=connection, job_class=JsonJob)
    with connection.pipeline() as pipe:
        pipe.zrem(failed_registry.key, job_id)
        pipe.delete(JsonJob.key_for(job_id))
        pipe.execute()
    log.info("job %s (set aside unread) deleted", job_id, extra={"job_id": job_id})
    return True


def _failed_job_ttl() -> int:
    """FAILED_JOB_TTL in force (the worker's settings)."""
    return int(runtime.settings().failed_job_ttl)


# --- operations on a job --------------------------------------------------------------------


def revoke(job: Job) -> State:
    """Cancel a waiting job or stop a running one (on whichever host runs it)."""
    status = job.get_status()
    if status in (JobStatus.CANCELED, JobStatus.STOPPED):
        return State.REVOKED
    if status in (JobStatus.FINISHED, JobStatus.FAILED):
        raise JobFinished(f"job {job.id} has already finished ({status.value})")
    job.meta[Meta.REVOKED] = True
    job.save_meta()
    if status == JobStatus.STARTED:
        # Between dequeue and start there is no worker to tell: the revoke flag stops the run.
        # The worker that stops it records the outcome (failed, stopped).
        with contextlib.suppress(InvalidJobOperation):
            send_stop_job_command(job.connection, job.id, serializer=JSONSerializer)
        return State.REVOKED
    job.cancel()
    revoked(job)
    return State.REVOKED


def retry_failed(job: Job) -> None:
    """Put a failed job back on its queue for a fresh run, with a fresh retry budget."""
    if job.get_status() != JobStatus.FAILED:
        raise JobNotFailed(f"job {job.id} is {job.get_status().value}, not failed")
    for key in (Meta.NO_RETRY, Meta.REVOKED, Meta.ORPHANED, Meta.NEXT_RETRY_AT, Meta.RETRY_COUNTDOWN):
        job.meta.pop(key, None)
    job.save_meta()
    with job.connection.pipeline(transaction=False) as pipe:
        steps.count_end(job, "FAILURE", pipe, by=-1)  # a workflow's step: no longer failed
        pipe.execute()
    budget = int(job.meta.get(Meta.MAX_RETRIES) or 0)
    if budget:  # a fresh retry budget (the attempts so far stay in its history)
        job.retries_left = budget
        job.connection.hset(job.key, "retries_left", budget)
    job.requeue()


def revoke_dependents(job: Job) -> list[str]:
    """Revoke every job that waited, directly or not, on ``job``; iteratively, in bounded time.

    A 10,000-step chain is walked level by level (one SMEMBERS and one bulk fetch per
    level), never by recursion.
    """
    return revoke_dependents_of(job.connection, job.id)


def revoke_dependents_of(connection: Redis, job_id: str) -> list[str]:
    """:func:`revoke_dependents` of a job known by its id only (one that cannot be read)."""
    revoked_ids: list[str] = []
    seen = {job_id}
    frontier: deque[str] = deque([job_id])
    while frontier:
        current = frontier.popleft()
        members = connection.smembers(JsonJob.dependents_key_for(current))
        ids = [m.decode() if isinstance(m, bytes) else m for m in members]
        ids = [i for i in ids if i not in seen]
        seen.update(ids)
        ended = []
        for dep in JsonJob.fetch_many(ids, connection=connection):
            if dep is None:
                continue
            frontier.append(dep.id)
            if dep.get_status(refresh=False) in _WAITING:
                dep.meta[Meta.REVOKED] = True
                dep.save_meta()
                dep.cancel()
                release_unique(dep)
                revoked_ids.append(dep.id)
                ended.append(dep)
        if ended:  # the revoked steps of a workflow, counted in its summary (one round trip a level)
            with connection.pipeline(transaction=False) as pipe:
                for dep in ended:
                    steps.count_end(dep, "REVOKED", pipe)
                pipe.execute()
    return revoked_ids


def release_unique(job: Job) -> None:
    """Free the task's uniqueness lock if this job holds it (unless it holds for its whole period)."""
    key = job.meta.get(Meta.UNIQUE_KEY)
    if key and job.meta.get(Meta.UNIQUE_UNTIL) != "period":  # else it expires with its period
        _RELEASE_IF_OWNER(job.connection, keys=[key], args=[job.id])


def alert(job: Job, task: str, exc_string: str) -> None:
    """Raise the alarm for a critical task's final failure: an ERROR log line and ALERT_WEBHOOK_URL."""
    error = job.meta.get(Meta.ERROR) or {}
    payload: dict[str, Any] = {
        "event": "job.failed",
        "job_id": job.id,
        "task": task,
        "queue": job.origin,
        "error": error,
        "attempts": len(job.meta.get(Meta.ATTEMPTS) or []),
        "failed_at": iso(utcnow()),
    }
    summary = error.get("message") or (exc_string.strip().splitlines() or [""])[-1]
    context = {"job_id": job.id, "task": task, "queue": job.origin}
    log.error("critical task %s failed for good: %s", task, summary, extra=context)
    url = runtime.settings().alert_webhook_url if has_app_context() else ""
    if url:
        try:
            requests.post(url, json=payload, timeout=defaults.ALERT_TIMEOUT).raise_for_status()
        except requests.RequestException as exc:
            log.error("alert webhook failed: %s", exc, extra=context)
