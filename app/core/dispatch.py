"""Enqueueing a task: the one path from validated arguments to a job in Redis.

Idempotency keys and unique tasks are decided in the same Redis transaction as the
enqueue (WATCH/MULTI), so two racing requests can never both create a job.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from redis import Redis
from redis.exceptions import WatchError
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus, Retry
from rq.rate_limit import RateLimit as ConcurrencyLimit

from app.catalogue.registry import MASK, QueueName, TaskSpec
from app.core import sealing
from app.core.queues import JsonJob, JsonQueue, get_queue
from app.foundation import defaults, keys
from app.foundation.crypto import KeyRing
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


#: ``expires``: seconds after the enqueue, or a time with a zone.
Expiry = Annotated[float | AwareDatetime, BeforeValidator(_expiry_number)]


def _expires_at(expires: float | datetime | None, spec: TaskSpec) -> datetime | None:
    """When a job of ``spec`` enqueued now with ``expires`` (else the task's default) expires."""
    if isinstance(expires, datetime):
        return expires.astimezone(UTC)
    seconds = expires if expires is not None else spec.expires
    return seconds_from_now(float(seconds)) if seconds else None


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

    priority: Priority | None = Field(default=None, description=_PRIORITY_HELP)
    group: Group | None = Field(default=None, description=_GROUP_HELP)

    def expires_at(self, spec: TaskSpec) -> datetime | None:
        return _expires_at(self.expires, spec)


class EnqueueOptions(BaseModel):
    """Per-call options of ``POST /api/v1/tasks/<name>``."""

    model_config = ConfigDict(extra="forbid")

    countdown: float | None = Field(
        default=None, ge=0, le=defaults.MAX_DELAY, description="seconds to wait (at most 366 days)"
    )
    eta: AwareDatetime | None = Field(default=None, description="ISO 8601 time with a zone, within 366 days")
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

    priority: Priority | None = Field(default=None, description=_PRIORITY_HELP)
    group: Group | None = Field(default=None, description=_GROUP_HELP)

    def expires_at(self, spec: TaskSpec) -> datetime | None:
        """When the job expires (this call's ``expires``, else the task's), or None."""
        return _expires_at(self.expires, spec)

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
) -> Job:
    """Create the job for ``spec`` with validated ``args`` and put it on its queue (or schedule).

    Returns the existing job instead when ``idempotency`` names an earlier identical
    request, or when the task is unique and a job with the same arguments is waiting or
    running. Raises IdempotencyConflict or JobExistsError. ``args`` is a validated model,
    or a mapping the caller has checked (a workflow step whose input comes later).
    """
    options = options or EnqueueOptions()
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
    unique_key = keys.unique_lock(spec.name, _args_digest(ring, kwargs)) if spec.unique else None
    if unique_key:
        job_meta[Meta.UNIQUE_KEY] = unique_key
    concurrency = None
    if spec.concurrency:
        value = str(kwargs.get(spec.concurrency_key)) if spec.concurrency_key else None
        if ring is not None and value is not None:
            value = ring.fingerprint(value)[:32]  # a key name is never encrypted: no argument in it
        concurrency = ConcurrencyLimit(key=keys.concurrency(spec.name, value), concurrency=spec.concurrency)
    run_at = options.run_at()
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
    scheduled = run_at is not None and run_at > utcnow()
    watched = [k for k in (idempotency.redis_key if idempotency else None, unique_key) if k]
    if watched and options.job_id:
        watched.append(job.key)
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
                    if holder is not None and holder.get_status() in _LIVE:
                        if idempotency is not None:
                            _remember(pipe, idempotency, holder.id)
                        return holder
                pipe.multi()
                if idempotency is not None:
                    _remember(pipe, idempotency, job.id)
                if unique_key:
                    pipe.set(unique_key, job.id, ex=_unique_ttl(spec))
                if concurrency is not None and not scheduled:
                    # RQ enqueues a concurrency-capped job only outside a pipeline: record the
                    # key first; should the enqueue not follow, the key names no live job and a
                    # repeat of the request enqueues afresh.
                    _index_expiry(pipe, job.id, expires_at)
                    pipe.execute()
                    return _put(queue, job, None, unique=False)
                _put(queue, job, run_at if scheduled else None, unique=False, pipeline=pipe)
                _index_expiry(pipe, job.id, expires_at)
                pipe.execute()
                return job
            except WatchError:
                continue


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
    priority: int | None = None,
    group: str | None = None,
) -> list[Job]:
    """Enqueue one job per argument set, all in one round trip to Redis.

    For plain tasks only: unique, concurrency-capped or dependent jobs need the checks of
    :func:`enqueue`, one job at a time.
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
    jobs = []
    for kwargs in (a.model_dump(mode="json") if isinstance(a, BaseModel) else dict(a) for a in many_args):
        job_id = str(uuid.uuid4())
        jobs.append(
            target.create_job(
                spec.path,
                kwargs=kwargs if ring is None else sealing.seal_kwargs(ring, job_id, kwargs),
                timeout=spec.time_limit,
                result_ttl=_first(spec.result_ttl, default_result_ttl),
                failure_ttl=_first(spec.failure_ttl, failure_ttl),
                retry=retry,
                meta=dict(meta),
                description=masked_description(spec, kwargs) if ring is None else sealed_description(spec),
                job_id=job_id,
            )
        )
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
