"""Enqueueing a task: the one path from validated arguments to a job in Redis.

Idempotency keys and unique tasks are decided in the same Redis transaction as the
enqueue (WATCH/MULTI), so two racing requests can never both create a job.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from redis import Redis
from redis.exceptions import WatchError
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.rate_limit import RateLimit as ConcurrencyLimit

from app.catalogue.registry import MASK, QueueName, TaskSpec
from app.core import compat, sealing, sequences
from app.core.queues import JsonJob, JsonQueue, get_queue
from app.foundation import defaults, keys
from app.foundation.crypto import KeyRing
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta
from app.foundation.timeutil import iso, seconds_from_now, utcnow, whole_second_after
from app.ops import observability

JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_LIVE = {
    JobStatus.CREATED,
    JobStatus.QUEUED,
    JobStatus.DEFERRED,
    JobStatus.SCHEDULED,
    JobStatus.STARTED,
    JobStatus.RATE_LIMITED,
    JobStatus.READY_TO_ENQUEUE,
}


class JobExistsError(Exception):
    """A caller-chosen job id is already taken."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was used before with a different request."""


class OptionRefused(ValueError):
    """An enqueue option that cannot apply to this call (``field`` names it, as in a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Idempotency:
    """A caller's Idempotency-Key and a digest of the request it came with."""

    caller: str
    key: str
    request_digest: str

    @property
    def redis_key(self) -> str:
        return keys.idempotency(self.caller, hashlib.sha256(self.key.encode()).hexdigest()[:32])


def _expiry_number(value: Any) -> Any:
    """``expires`` as seconds when it is a number (or a number's text), checked here: pydantic would
    otherwise read a refused number as a Unix time."""
    if isinstance(value, bool):
        raise ValueError("expires is a number of seconds or an ISO 8601 time with a zone")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value  # a time, judged as one
    if isinstance(value, int | float):
        if not 0 < value <= defaults.MAX_DELAY:
            raise ValueError("expires in seconds must be above 0 and at most 366 days")
        return float(value)
    return value


def _utc_representable(value: datetime) -> datetime:
    """A time with a zone that is a time in UTC too: ``0001-01-01T00:00:00+01:00`` is not (Python's
    conversion overflows; it was a 500)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range: give a time between years 1 and 9999 in UTC") from None
    return value


#: A time with a zone that can be read in UTC.
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc_representable)]

#: ``expires``: seconds after the enqueue, or a time with a zone.
Expiry = Annotated[float | UtcTime, BeforeValidator(_expiry_number)]


def _expires_at(expires: float | datetime | None, spec: TaskSpec) -> datetime | None:
    """When a job of ``spec`` enqueued now with ``expires`` (else the task's default) expires."""
    if isinstance(expires, datetime):
        return expires.astimezone(UTC)
    seconds = expires if expires is not None else spec.expires
    return seconds_from_now(float(seconds)) if seconds else None


# --- unique and debounce (issue 19) ---------------------------------------------------------


class UniqueOption(BaseModel):
    """``unique``: while a job with the same key was enqueued less than ``period`` s ago and has not
    ended (with ``until="period"``: ended or not), another enqueue returns that job. Strict: a
    period of ``"60"`` or ``true`` is refused, not read as a number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    period: float = Field(gt=0, le=defaults.MAX_DELAY, description="seconds (above 0, at most 366 days)")
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="the uniqueness key (per task); default: the task's canonical JSON args",
    )
    until: Literal["end", "period"] = Field(
        default="end",
        description="'end' (default): the key is free once its job ends; 'period': it holds for the "
        'whole period, ended job or not ("don\'t send the same digest twice in an hour")',
    )


class DebounceOption(BaseModel):
    """``debounce``: the job starts ``delay`` s after the last enqueue with the key; the latest args win."""

    model_config = ConfigDict(extra="forbid", strict=True)  # a delay of "5" is refused, as a period

    delay: float = Field(ge=1, le=defaults.MAX_DELAY, description="seconds (at least 1, at most 366 days)")
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="the debounce key (per task); default: one window for every call of the task",
    )


def deduplicated(job: Job) -> bool:
    """True when :func:`enqueue` returned an earlier job (``unique`` or ``debounce``) instead of a new one."""
    return bool(getattr(job, "_tasklane_deduplicated", False))


def _deduplicated(job: Job) -> Job:
    job._tasklane_deduplicated = True  # type: ignore[attr-defined]
    return job


class RateKeyRefused(ValueError):
    """A ``rate_key`` for a task without a rate limit (the API's 422 names ``options.rate_key``)."""


#: ``rate_key``: the bucket of the task's rate limit a job starts in (each key its own).
RateKey = Annotated[str, StringConstraints(min_length=1, max_length=defaults.MAX_RATE_KEY)]
_RATE_KEY_HELP = (
    "each key its own bucket of the task's rate_limit (e.g. an account id); only for a task with a "
    "rate_limit; default: the value of the task's declared rate_key argument, if any"
)


def rate_key_refused(spec: TaskSpec, rate_key: str | None) -> str | None:
    """Why ``rate_key`` cannot be given for ``spec``, or None when it can."""
    if rate_key is not None and spec.rate_limit is None:
        return f"task {spec.name!r} has no rate_limit, so it takes no rate_key"
    return None


def _rate_key(
    spec: TaskSpec, given: str | None, kwargs: Mapping[str, Any], ring: KeyRing | None
) -> str | None:
    """The bucket a job of ``spec`` starts in: the call's ``rate_key``, else the value of the task's
    declared rate_key argument (a keyed digest of it for an encrypted job), else None (the task's one)."""
    if (problem := rate_key_refused(spec, given)) is not None:
        raise RateKeyRefused(problem)
    if given is not None:
        return given
    if spec.rate_key is None or spec.rate_limit is None:
        return None
    value = str(kwargs.get(spec.rate_key))
    if ring is not None:
        return ring.fingerprint(value)[:32]  # a key name is never encrypted: no argument in it
    return value if len(value) <= defaults.MAX_RATE_KEY else hashlib.sha256(value.encode()).hexdigest()


#: ``sequence``: a key; jobs with the same key run one at a time, in enqueue order.
SequenceKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
_SEQUENCE_DOC = (
    "a key (1-200 printable characters): jobs with the same key run one at a time, in enqueue order, "
    "on any worker; one that ends (success, final failure, revoke, expiry) hands on to the next; "
    "default: the task's sequence_key argument"
)


def sequence_for(
    spec: TaskSpec, kwargs: Mapping[str, Any], given: str | None, ring: KeyRing | None
) -> str | None:
    """The sequence of a job: the call's ``sequence``, else the task's ``sequence_key`` (the value of
    that argument, under the task's name; a keyed digest of it for an encrypted job), else None."""
    if given is not None:
        return given
    if spec.sequence_key is None or kwargs.get(spec.sequence_key) is None:
        return None
    value = str(kwargs[spec.sequence_key])
    if ring is not None:
        value = ring.fingerprint(value)[:32]  # a key name is never encrypted: no argument in it
    return f"{spec.name}:{value}"


#: ``priority``: 0 (first) .. 9 (last) inside the job's queue.
Priority = Annotated[int, Field(ge=defaults.MIN_PRIORITY, le=defaults.MAX_PRIORITY, strict=True)]
#: ``group``: a fairness key (round robin over groups inside the job's queue).
Group = Annotated[str, Field(pattern=defaults.GROUP_PATTERN)]
_PRIORITY_HELP = "0 (first) .. 9 (last) inside the queue, FIFO among equals; default: the task's priority (5)"
_GROUP_HELP = (
    "a fairness key: waiting jobs of different groups in a queue take turns (round robin); "
    "1-64 letters, digits, '_', '.', '@' or '-'; default: the task's group"
)


def lane_meta(spec: TaskSpec, priority: int | None, group: str | None) -> dict[str, Any]:
    """The job meta of a call's ``priority`` and ``group`` (else the task's): nothing for the plain
    path (priority 5, no group), so a plain job is stored exactly as before."""
    p = spec.priority if priority is None else priority
    g = group or spec.group
    meta: dict[str, Any] = {}
    if p != defaults.DEFAULT_PRIORITY:
        meta[Meta.PRIORITY] = p
    if g:
        meta[Meta.GROUP] = g
    return meta


class BatchOptions(BaseModel):
    """Options of ``POST /api/v1/tasks/<name>/batch``, once for all its items."""

    model_config = ConfigDict(extra="forbid")

    expires: Expiry | None = Field(
        default=None,
        description="seconds, or an ISO 8601 time with a zone: a job not started by then never runs "
        "(REVOKED, error type expired); default: the task's expires",
    )
    # --- unique and debounce (issue 19) ---
    unique: UniqueOption | None = Field(
        default=None,
        description="per item, keyed by the item's own args (no 'key': one key for all would make the "
        "batch one job); an item whose key holds a live job gets that job",
    )
    debounce: Any = Field(default=None, description="not taken by a batch (one job per key)")

    @field_validator("unique")
    @classmethod
    def _item_keys(cls, value: UniqueOption | None) -> UniqueOption | None:
        if value is not None and value.key is not None:
            raise ValueError("a batch keys each item by its own args: leave out 'key' (one key: one job)")
        return value

    @field_validator("debounce")
    @classmethod
    def _no_debounce(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("debounce makes one job per key: enqueue debounced jobs one by one")
        return None

    priority: Priority | None = Field(default=None, description=_PRIORITY_HELP)
    group: Group | None = Field(default=None, description=_GROUP_HELP)

    def expires_at(self, spec: TaskSpec) -> datetime | None:
        return _expires_at(self.expires, spec)

    rate_key: RateKey | None = Field(default=None, description=_RATE_KEY_HELP)
    sequence: SequenceKey | None = Field(default=None, description=_SEQUENCE_DOC)


class EnqueueOptions(BaseModel):
    """Per-call options of ``POST /api/v1/tasks/<name>``."""

    model_config = ConfigDict(extra="forbid")

    countdown: float | None = Field(
        default=None, ge=0, le=defaults.MAX_DELAY, description="seconds to wait (at most 366 days)"
    )
    eta: UtcTime | None = Field(default=None, description="ISO 8601 time with a zone, within 366 days")
    queue: QueueName | None = None
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    result_ttl: int | None = Field(default=None, ge=-1, description="seconds; -1 keeps the result")
    encrypt: bool | None = Field(
        default=None, description="store the args and result encrypted (AES-GCM, ENCRYPTION_KEYS)"
    )
    expires: Expiry | None = Field(
        default=None,
        description="seconds, or an ISO 8601 time with a zone: a job not started by then never runs "
        "(REVOKED, error type expired); default: the task's expires",
    )
    # --- unique and debounce (issue 19) ---
    unique: UniqueOption | None = Field(
        default=None,
        description='{"period": s, "key": "..."}: while a job with the same key (default: the task plus its '
        "canonical JSON args) was enqueued less than period s ago and has not ended, another enqueue "
        'returns that job ("deduplicated": true)',
    )
    debounce: DebounceOption | None = Field(
        default=None,
        description='{"key": "...", "delay": s}: the job starts delay s after the LAST enqueue with that '
        "key; enqueues inside the window return the same job with the latest args; it runs once",
    )

    @field_validator("debounce")
    @classmethod
    def _debounce_alone(cls, value: DebounceOption | None, info: ValidationInfo) -> DebounceOption | None:
        if value is not None:
            clash = [n for n in ("countdown", "eta", "job_id", "unique") if info.data.get(n) is not None]
            if clash:
                raise ValueError(f"debounce sets the job's start and id: give no {', '.join(clash)} with it")
        return value

    rate_key: RateKey | None = Field(default=None, description=_RATE_KEY_HELP)

    priority: Priority | None = Field(default=None, description=_PRIORITY_HELP)
    group: Group | None = Field(default=None, description=_GROUP_HELP)

    def expires_at(self, spec: TaskSpec) -> datetime | None:
        """When the job expires (this call's ``expires``, else the task's), or None."""
        return _expires_at(self.expires, spec)

    sequence: SequenceKey | None = Field(default=None, description=_SEQUENCE_DOC)

    @model_validator(mode="after")
    def _one_delay(self) -> EnqueueOptions:
        if self.countdown is not None and self.eta is not None:
            raise ValueError("give countdown or eta, not both")
        if self.eta is not None and self.eta > utcnow() + timedelta(seconds=defaults.MAX_DELAY):
            raise ValueError("eta must be within 366 days, as countdown is")
        return self

    def run_at(self) -> datetime | None:
        """When the job should run, or None for now (rounded up to RQ's whole seconds, never early)."""
        if self.eta is not None:
            return whole_second_after(self.eta.astimezone(UTC))
        if self.countdown:
            return seconds_from_now(self.countdown)
        return None


def digest(value: Any) -> str:
    """A stable digest of a JSON value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _live_job(connection: Redis, job_id: bytes | str | None) -> JsonJob | None:
    if not job_id:
        return None
    try:
        job = JsonJob.fetch(job_id.decode() if isinstance(job_id, bytes) else job_id, connection=connection)
    except NoSuchJobError:
        return None
    return job  # type: ignore[return-value]


def _unique_ttl(spec: TaskSpec) -> int:
    # Long enough to cover every attempt and back-off; the worker deletes the lock earlier.
    return int(spec.time_limit * (spec.retry.max_retries + 1) + sum(spec.retry.countdowns()) + 3600)


def enqueue(
    spec: TaskSpec,
    args: BaseModel | Mapping[str, Any],
    connection: Redis,
    options: EnqueueOptions | None = None,
    *,
    default_result_ttl: int,
    failure_ttl: int,
    meta: dict[str, Any] | None = None,
    idempotency: Idempotency | None = None,
    depends_on: list[Any] | None = None,
    job_id: str | None = None,
    pipeline: Any = None,
) -> Job:
    """Create the job for ``spec`` with validated ``args`` and put it on its queue (or schedule).

    Returns the existing job instead when ``idempotency`` names an earlier identical
    request, or when the task is unique and a job with the same arguments is waiting or
    running. Raises IdempotencyConflict or JobExistsError. ``args`` is a validated model,
    or a mapping the caller has checked (a workflow step whose input comes later).

    ``pipeline``: a pipeline that the caller sends, for a plain job of a batch written in one go
    (a workflow's steps, see :func:`stage`); a unique or concurrency-capped task's job is enqueued
    at once, as without it.
    """
    options = options or EnqueueOptions()
    step = job_id is not None or bool(depends_on)  # a workflow's step (or an outbox row's job)
    queue: JsonQueue = get_queue((options.queue or spec.queue).value, connection)
    kwargs = args.model_dump(mode="json") if isinstance(args, BaseModel) else dict(args)
    job_meta: dict[str, Any] = {
        Meta.TASK: spec.name,
        Meta.MAX_RETRIES: spec.retry.max_retries,
        **lane_meta(spec, options.priority, options.group),
        **(meta or {}),
    }
    stored, description = kwargs, masked_description(spec, kwargs)
    if sealing.is_sealed_kwargs(kwargs):
        # Sealed for this job id already (an outbox row pushed by a process without the key).
        ring = None
        job_meta[Meta.ENCRYPTED], description = True, sealed_description(spec)
    elif (ring := sealing.ring_for(spec, options.encrypt)) is not None:
        job_id = job_id or options.job_id or str(uuid.uuid4())
        stored, description = sealing.seal_kwargs(ring, job_id, kwargs), sealed_description(spec)
        job_meta[Meta.ENCRYPTED] = True
    if observability.TRACER is not None and (carrier := observability.trace_carrier()):
        job_meta[Meta.TRACE] = carrier
    if ring is not None and idempotency is not None:
        # Of an encrypted job, records hold only keyed digests (a plain hash of a card number
        # or a user id could be matched by hashing guesses).
        idempotency = replace(idempotency, request_digest=ring.fingerprint(idempotency.request_digest))
    expires_at = options.expires_at(spec)
    if expires_at is not None:
        job_meta[Meta.EXPIRES] = iso(expires_at)
    if (rate_key := _rate_key(spec, options.rate_key, kwargs, ring)) is not None:
        job_meta[Meta.RATE_KEY] = rate_key
    # A workflow's step (its id chosen, its dependencies) is never debounced by its task's default.
    debounce = None if step else _debounce_of(spec, options)
    unique_key, unique_ms = (None, 0) if debounce else _unique_lock(spec, options.unique, ring, kwargs)
    if unique_key:
        job_meta[Meta.UNIQUE_KEY] = unique_key
    whole_period = options.unique is not None and options.unique.until == "period" and not debounce
    if whole_period:
        job_meta[Meta.UNIQUE_UNTIL] = "period"  # its end leaves the key to expire with its period
    concurrency = None
    if spec.concurrency:
        value = str(kwargs.get(spec.concurrency_key)) if spec.concurrency_key else None
        if ring is not None and value is not None:
            value = ring.fingerprint(value)[:32]  # a key name is never encrypted: no argument in it
        concurrency = ConcurrencyLimit(key=keys.concurrency(spec.name, value), concurrency=spec.concurrency)
    # A sequence (not for a workflow's steps: they wait on their dependencies) runs one at a time
    # by itself: the task's concurrency cap does not hold its jobs back (see docs/FLOW_CONTROL.md).
    sequence = None if depends_on or debounce else sequence_for(spec, kwargs, options.sequence, ring)
    if sequence is not None:
        job_meta[Meta.SEQUENCE], concurrency = sequence, None
    run_at = seconds_from_now(debounce.delay) if debounce else options.run_at()
    job = queue.create_job(
        spec.path,
        kwargs=stored,
        timeout=spec.time_limit,
        result_ttl=_first(options.result_ttl, spec.result_ttl, default_result_ttl),
        failure_ttl=_first(spec.failure_ttl, failure_ttl),
        job_id=job_id or options.job_id,
        retry=Retry(max=spec.retry.max_retries) if spec.retry.max_retries else None,
        meta=job_meta,
        status=JobStatus.SCHEDULED if run_at else JobStatus.QUEUED,
        rate_limit=concurrency,
        depends_on=depends_on,
        description=description,
    )
    if debounce is not None and run_at is not None:
        return _debounced(spec, queue, job, debounce, run_at, ring, expires_at, idempotency)
    scheduled = run_at is not None and run_at > utcnow()
    watched = [k for k in (idempotency.redis_key if idempotency else None, unique_key) if k]
    if options.job_id and (watched or sequence is not None):
        watched.append(job.key)
    if pipeline is not None and not watched and concurrency is None and not scheduled and sequence is None:
        stage(queue, job, pipeline)
        _index_expiry(pipeline, job.id, expires_at)
        return job
    if not watched and sequence is not None:
        with connection.pipeline() as pipe:
            sequences.join_on(pipe, job, sequence, run_at if scheduled else None)
            _index_expiry(pipe, job.id, expires_at)
            sequences.execute(pipe, connection, job, sequence)
        return job
    if not watched:
        if options.job_id is None and not depends_on and concurrency is None:
            # One round trip: RQ's own enqueue_job without a pipeline makes two.
            with connection.pipeline() as pipe:
                _put(queue, job, run_at if scheduled else None, unique=False, pipeline=pipe)
                _index_expiry(pipe, job.id, expires_at)  # after: RQ's enqueue starts the MULTI
                pipe.execute()
            return job
        _index_expiry(connection, job.id, expires_at)  # an entry without a job is dropped by the sweep
        return _put(queue, job, run_at if scheduled else None, unique=options.job_id is not None)
    with connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(*watched)
                if idempotency is not None:
                    raw = pipe.get(idempotency.redis_key)
                    if raw:
                        record = json.loads(raw)
                        if record["digest"] != idempotency.request_digest:
                            raise IdempotencyConflict(
                                "this Idempotency-Key was used with a different request in the last 24 h"
                            )
                        earlier = _live_job(connection, record["job_id"])
                        if earlier is not None:
                            return earlier
                if options.job_id and pipe.exists(job.key):
                    raise JobExistsError(f"a job with id {job.id!r} already exists")
                if unique_key:
                    holder = _live_job(connection, pipe.get(unique_key))
                    if holder is not None and (whole_period or holder.get_status() in _LIVE):
                        if idempotency is not None:
                            _remember(pipe, idempotency, holder.id)
                        return _deduplicated(holder)
                pipe.multi()
                if idempotency is not None:
                    _remember(pipe, idempotency, job.id)
                if unique_key:
                    pipe.set(unique_key, job.id, px=unique_ms)
                if concurrency is not None and not scheduled:
                    # RQ enqueues a concurrency-capped job only outside a pipeline: record the
                    # key first; should the enqueue not follow, the key names no live job and a
                    # repeat of the request enqueues afresh.
                    _index_expiry(pipe, job.id, expires_at)
                    pipe.execute()
                    return _put(queue, job, None, unique=False)
                if sequence is not None:
                    sequences.join_on(pipe, job, sequence, run_at if scheduled else None)
                    _index_expiry(pipe, job.id, expires_at)
                    sequences.execute(pipe, connection, job, sequence)
                    return job
                _put(queue, job, run_at if scheduled else None, unique=False, pipeline=pipe)
                _index_expiry(pipe, job.id, expires_at)
                pipe.execute()
                return job
            except WatchError:
                continue


# --- unique and debounce (issue 19) ---------------------------------------------------------


def _unique_lock(
    spec: TaskSpec, unique: UniqueOption | None, ring: KeyRing | None, kwargs: Mapping[str, Any]
) -> tuple[str | None, int]:
    """The uniqueness lock of a call and how long it holds (ms): the call's ``unique`` (its key, or
    the args), else the task's (``unique=True``: until the job ends; ``unique={"period": s}``)."""
    if unique is not None:
        ms = math.ceil(unique.period * 1000)
        if unique.key is not None:
            named = hashlib.sha256(unique.key.encode()).hexdigest()
            return keys.unique_key(spec.name, named if ring is None else ring.fingerprint(named)), ms
        return keys.unique_lock(spec.name, _args_digest(ring, kwargs)), ms
    if spec.unique:
        period = spec.unique_period or _unique_ttl(spec)
        return keys.unique_lock(spec.name, _args_digest(ring, kwargs)), math.ceil(period * 1000)
    return None, 0


def _debounce_of(spec: TaskSpec, options: EnqueueOptions) -> DebounceOption | None:
    """The call's ``debounce``, else the task's unless the call sets its own start, id or uniqueness."""
    if options.debounce is not None:
        return options.debounce
    if spec.debounce_delay is None or any(
        v is not None for v in (options.countdown, options.eta, options.job_id, options.unique)
    ):
        return None
    return DebounceOption(delay=spec.debounce_delay, key=spec.debounce_key)


#: KEYS: debounce key, scheduled registry, new job's key, RQ's set of queues.
#: ARGV: new job id, start (score), key TTL, queue key, job key prefix, not-before (score), data,
#: description, then the new job's hash (field, value, ...).
#: A job of the key still scheduled (and not about to be moved to its queue) gets the new start and
#: args; otherwise the new job is written and scheduled. Returns the id of the job that waits.
_DEBOUNCE = LuaScript(
    """
local holder = redis.call('GET', KEYS[1])
if holder then
  local score = redis.call('ZSCORE', KEYS[2], holder)
  local job_key = ARGV[5] .. holder
  if score and tonumber(score) > tonumber(ARGV[6]) and redis.call('EXISTS', job_key) == 1 then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[2], holder)
    redis.call('HSET', job_key, 'data', ARGV[7], 'description', ARGV[8])
    redis.call('SET', KEYS[1], holder, 'EX', ARGV[3])
    return holder
  end
end
redis.call('HSET', KEYS[3], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return ARGV[1]
"""
)


def _debounced(
    spec: TaskSpec,
    queue: JsonQueue,
    job: Job,
    debounce: DebounceOption,
    run_at: datetime,
    ring: KeyRing | None,
    expires_at: datetime | None,
    idempotency: Idempotency | None,
) -> Job:
    """Schedule ``job`` at ``run_at`` unless a job of the same debounce key still waits: that one then
    starts at ``run_at`` with ``job``'s args instead (one Lua script: atomic against concurrent
    enqueues and the scheduler's moves)."""
    if ring is not None:
        # Sealed args are bound to their job's id: they cannot become another job's.
        raise OptionRefused("options.debounce", "debounce does not take encrypted args (encrypt, sensitive)")
    connection = queue.connection
    if idempotency is not None and (raw := connection.get(idempotency.redis_key)):
        record = json.loads(raw)
        if record["digest"] != idempotency.request_digest:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request in 24 h")
        if (earlier := _live_job(connection, record["job_id"])) is not None:
            return earlier
    fields = compat.job_hash_fields(job)
    named = dict(zip(fields[::2], fields[1::2], strict=True))
    # One window per task, queue and key: a job waits in its own queue's scheduled registry.
    named_key = f"{queue.name}\0{debounce.key or ''}"
    key = keys.debounce(spec.name, hashlib.sha256(named_key.encode()).hexdigest())
    score = int(run_at.timestamp())
    for _ in range(3):  # again only if the job it named was deleted before it could be read
        holder = _DEBOUNCE(
            connection,
            keys=[key, queue.scheduled_job_registry.key, job.key, queue.redis_queues_keys],
            args=[job.id, score, math.ceil(debounce.delay) + defaults.DEBOUNCE_KEY_GRACE, queue.key,
                  job.key[: -len(job.id)], utcnow().timestamp() + defaults.DEBOUNCE_MARGIN,
                  named["data"], named.get("description", ""), *fields],
        )  # fmt: skip
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if holder == job.id:
            break
        earlier = _live_job(connection, holder)
        if earlier is not None:
            if idempotency is not None:
                _remember_now(connection, idempotency, earlier.id)
            return _deduplicated(earlier)
    else:
        raise RuntimeError(f"debounce key of task {spec.name!r} kept naming deleted jobs")
    _index_expiry(connection, job.id, expires_at)
    if idempotency is not None:
        _remember_now(connection, idempotency, job.id)
    return job


def _remember_now(connection: Redis, idempotency: Idempotency, job_id: str) -> None:
    record = json.dumps({"job_id": job_id, "digest": idempotency.request_digest})
    connection.set(idempotency.redis_key, record, ex=defaults.IDEMPOTENCY_TTL)


def stage(queue: JsonQueue, job: Job, pipe: Any) -> None:
    """Write a new job on ``pipe`` (a pipeline) without a read, as RQ's enqueue writes it less the
    status's own HSET (the job's hash holds it): a job without dependencies is queued (its hash,
    then its id pushed on its queue); one with dependencies waits for them, as RQ's
    ``setup_dependencies`` and ``register_dependency`` write it when they have not finished (its
    hash, deferred, in the deferred registry, in each one's dependents and they in its
    dependencies). For jobs whose dependencies are written by the same build and cannot have run
    yet: the caller sends the jobs that wait before the jobs they wait for, adds their queues to
    RQ's set of queues, and rings the queues' doorbells (app/core/queues.py) once it has pushed."""
    if not job._dependency_ids:
        queue._prepare_for_queue(job)  # origin, enqueued_at, timeout, status queued (no I/O)
        job.save(pipeline=pipe)
        job.cleanup(ttl=job.ttl, pipeline=pipe)
        Queue.push_job_id(queue, job.id, pipeline=pipe)  # the caller rings the queue's doorbell
        return
    job.origin = queue.name
    job._status = JobStatus.DEFERRED
    job.save(pipeline=pipe)
    queue.deferred_job_registry.add(job, pipeline=pipe, ttl=job.ttl)
    pipe.sadd(job.dependencies_key, *job._dependency_ids)
    for dependency_id in job._dependency_ids:
        pipe.sadd(job.dependents_key_for(dependency_id), job.id)
    job.cleanup(ttl=job.ttl, pipeline=pipe)


def enqueue_many(
    spec: TaskSpec,
    many_args: Sequence[BaseModel | Mapping[str, Any]],
    connection: Redis,
    *,
    default_result_ttl: int,
    failure_ttl: int,
    queue: QueueName | None = None,
    encrypt: bool | None = None,
    expires_at: datetime | None = None,
    rate_key: str | None = None,
    sequence: str | None = None,
    priority: int | None = None,
    group: str | None = None,
) -> list[Job]:
    """Enqueue one job per argument set, all in one round trip to Redis.

    For plain tasks only: unique, concurrency-capped or dependent jobs need the checks of
    :func:`enqueue`, one job at a time. With ``sequence`` (or the task's ``sequence_key``) the
    items join their sequences in the order given, in the same round trip.
    """
    if spec.unique or spec.concurrency:
        raise ValueError(f"task {spec.name!r} is unique or concurrency-capped: enqueue its jobs one by one")
    target: JsonQueue = get_queue((queue or spec.queue).value, connection)
    retry = Retry(max=spec.retry.max_retries) if spec.retry.max_retries else None
    meta: dict[str, Any] = {Meta.TASK: spec.name, Meta.MAX_RETRIES: spec.retry.max_retries}
    meta.update(lane_meta(spec, priority, group))
    if expires_at is not None:
        meta[Meta.EXPIRES] = iso(expires_at)
    if observability.TRACER is not None and (carrier := observability.trace_carrier()):
        meta[Meta.TRACE] = carrier
    ring = sealing.ring_for(spec, encrypt)
    if ring is not None:
        meta[Meta.ENCRYPTED] = True
    if (problem := rate_key_refused(spec, rate_key)) is not None:
        raise RateKeyRefused(problem)
    jobs = []
    all_kwargs = [a.model_dump(mode="json") if isinstance(a, BaseModel) else dict(a) for a in many_args]
    for kwargs in all_kwargs:
        job_id = str(uuid.uuid4())
        job_meta = dict(meta)
        if (bucket := _rate_key(spec, rate_key, kwargs, ring)) is not None:
            job_meta[Meta.RATE_KEY] = bucket
        jobs.append(
            target.create_job(
                spec.path,
                kwargs=kwargs if ring is None else sealing.seal_kwargs(ring, job_id, kwargs),
                timeout=spec.time_limit,
                result_ttl=_first(spec.result_ttl, default_result_ttl),
                failure_ttl=_first(spec.failure_ttl, failure_ttl),
                retry=retry,
                meta=job_meta,
                description=masked_description(spec, kwargs) if ring is None else sealed_description(spec),
                job_id=job_id,
            )
        )
    in_sequences = [sequence_for(spec, kwargs, sequence, ring) for kwargs in all_kwargs]
    if any(s is not None for s in in_sequences):
        with connection.pipeline() as pipe:
            for job, in_sequence in zip(jobs, in_sequences, strict=True):
                if in_sequence is None:
                    target.enqueue_job(job, pipeline=pipe)
                else:
                    sequences.join_on(pipe, job, in_sequence, None)
                _index_expiry(pipe, job.id, expires_at)
            sequences.execute_many(pipe, connection, jobs)
        return jobs
    with connection.pipeline() as pipe:
        for job in jobs:
            target.enqueue_job(job, pipeline=pipe)
            _index_expiry(pipe, job.id, expires_at)
        pipe.execute()
    return jobs


def masked_description(spec: TaskSpec, kwargs: Mapping[str, Any]) -> str | None:
    """The job's description (what RQ logs and rq-dashboard shows) with sensitive arguments masked;
    None (RQ's own ``func(kw=...)``) for a task without sensitive fields."""
    if not spec.sensitive:
        return None
    shown = ", ".join(f"{key}={value!r}" for key, value in spec.masked(kwargs).items())
    return f"{spec.path}({shown})"


def _args_digest(ring: KeyRing | None, kwargs: Mapping[str, Any]) -> str:
    return digest(kwargs) if ring is None else ring.fingerprint(digest(kwargs))


def sealed_description(spec: TaskSpec) -> str:
    """The description of an encrypted job: no argument, not even masked names."""
    return f"{spec.path}({MASK})"


def _remember(pipe: Any, idempotency: Idempotency, job_id: str) -> None:
    record = json.dumps({"job_id": job_id, "digest": idempotency.request_digest})
    if pipe.explicit_transaction:
        pipe.set(idempotency.redis_key, record, ex=defaults.IDEMPOTENCY_TTL)
    else:
        pipe.multi()
        pipe.set(idempotency.redis_key, record, ex=defaults.IDEMPOTENCY_TTL)
        pipe.execute()


def _index_expiry(pipe: Any, job_id: str, expires_at: datetime | None) -> None:
    """Note a job with ``expires`` where the sweep finds it, should it still wait past that time."""
    if expires_at is not None:
        pipe.zadd(keys.expiries(), {job_id: expires_at.timestamp()})


def _put(queue: JsonQueue, job: Job, run_at: datetime | None, unique: bool, pipeline: Any = None) -> Job:
    try:
        if run_at is not None:
            return queue.schedule_job(job, run_at, pipeline=pipeline, unique=unique)
        return queue.enqueue_job(job, pipeline=pipeline, unique=unique)
    except DuplicateJobError:
        raise JobExistsError(f"a job with id {job.id!r} already exists") from None


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no TTL")
