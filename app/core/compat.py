"""Every reach into RQ, rq-scheduler and rq-dashboard below their public API, in one place.

Tasklane subclasses RQ's worker, job and queue classes and overrides documented
methods; those overrides are pinned by ``tests/test_compat.py`` (their signatures and
the attributes read here). Anything beyond that, a private attribute, a module global
patched, a method whose body RQ would otherwise repeat, goes through a function of this
module, so that an upgrade of RQ fails one test loudly instead of misbehaving quietly.

Pinned versions: rq 3.0.0, rq-scheduler 0.14.0, rq-dashboard 0.9.0.
"""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq import scheduler as rq_scheduler_module
from rq import serializers as rq_serializers
from rq import utils as rq_utils
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import CanceledJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty

from app.foundation import clock
from app.foundation.timeutil import utcnow

#: The library versions whose internals this module was written against.
PINNED = {"rq": "3.0.0", "rq-scheduler": "0.14.0", "rq-dashboard": "0.9.0"}


# --- rq: fast paths (same answers, less CPU per job) --------------------------------------


_resolve_serializer = rq_serializers.resolve_serializer
_utcparse = rq_utils.utcparse
_utcformat = rq_utils.utcformat

#: The RQ modules that call ``resolve_serializer`` by the name they imported.
SERIALIZER_USERS = (
    "rq.job", "rq.queue", "rq.registry", "rq.results", "rq.scheduler", "rq.cron", "rq.worker.base",
)  # fmt: skip
#: The RQ modules that call ``utcformat`` by the name they imported.
UTCFORMAT_USERS = ("rq.job", "rq.rate_limit", "rq.scheduler", "rq.cron", "rq.worker.base")


def resolve_serializer(serializer: Any = None) -> Any:
    """RQ's ``resolve_serializer``, answering at once for the JSON serializer every Tasklane class
    passes: RQ's checks it against a runtime Protocol, a slow ``isinstance`` that RQ makes for
    every job, queue and registry object it builds (about seven times per job run)."""
    if serializer is JSONSerializer:
        return JSONSerializer
    return _resolve_serializer(serializer)


#: Exactly what ``rq.utils.utcformat`` writes (``%Y-%m-%dT%H:%M:%S.%fZ``: fixed widths, ASCII
#: digits, six fraction digits). Only this shape takes the fast path: ``fromisoformat`` reads more
#: than ``strptime`` does (offsets, a comma before the fraction, fewer digits), and read some of
#: those wrong once the ``Z`` was cut off (``...00.123+01Z`` lost its offset).
_RQ_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)


def utcparse(string: str) -> datetime:
    """RQ's ``utcparse``: its own timestamps (see ``_RQ_TIMESTAMP``) through ``fromisoformat``,
    several times faster than ``strptime``; any other string goes to RQ's own parser, so both
    accept and refuse the same strings and read them alike (``tests/test_compat.py`` fuzzes it)."""
    if _RQ_TIMESTAMP.fullmatch(string):
        try:
            return datetime.fromisoformat(string[:-1]).replace(tzinfo=UTC)
        except ValueError:
            pass  # the right shape but no such date (month 13): RQ's own says so, in its words
    return _utcparse(string)


def utcformat(dt: datetime) -> str:
    """RQ's ``utcformat`` (``strftime('%Y-%m-%dT%H:%M:%S.%fZ')``, about six times per job run)
    through ``isoformat``, twice as fast, for the same text: the wall-clock fields, six fraction
    digits, no offset. Years below 1000 (which ``strftime`` may not pad) go to RQ's own."""
    if dt.year < 1000:
        return _utcformat(dt)
    if dt.tzinfo is not None:
        dt = dt.replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds") + "Z"


def _point(modules: tuple[str, ...], name: str, original: Any, fast: Any) -> None:
    """In each of ``modules`` that holds RQ's ``original`` under ``name``, put ``fast`` instead."""
    for module_name in modules:
        module = importlib.import_module(module_name)
        if getattr(module, name, None) is original:
            setattr(module, name, fast)


def install_fast_paths() -> None:
    """Point RQ's modules at :func:`resolve_serializer`, :func:`utcparse` and :func:`utcformat`
    (idempotent)."""
    _point(SERIALIZER_USERS, "resolve_serializer", _resolve_serializer, resolve_serializer)
    _point(("rq.utils", *UTCFORMAT_USERS), "utcformat", _utcformat, utcformat)
    _point(("rq.utils", "rq.scheduler"), "utcparse", _utcparse, utcparse)


install_fast_paths()


# --- rq: jobs -------------------------------------------------------------------------------


def set_job_status(job: Job, status: JobStatus) -> None:
    """Set the status RQ caches on the job object, without a write (the write is in a pipeline)."""
    job._status = status


def last_return_value(job: Job) -> Any:
    """The value the task returned in this process (RQ keeps it on the job object after ``perform``)."""
    return getattr(job, "_result", None)


def serialized_meta(job: Job) -> bytes:
    """The job's meta as RQ stores it (the bytes ``save_meta`` writes), for a recorded write."""
    return job._serialize_meta()


def meta_unreadable(job: Job) -> bool:
    """True when the meta ``restore`` read could not be decoded (RQ then keeps it aside, unread)."""
    return getattr(job, "_unreadable_meta", None) is not None


def record_failure(job: Job, exc_string: str, pipeline: Any) -> None:
    """RQ's worker-less failure: status FAILED, the failed registry and a failure result."""
    record_job_failure(job, exc_string, pipeline)


def record_stop(job: Job, exc_string: str, pipeline: Any, worker_name: str, ttl: int) -> None:
    """A running job stopped on a revoke, as RQ records a cancel (not a failure): status STOPPED, its
    end time, RQ's canceled registry (rq-dashboard and ``rq info`` list it there; the entry scored
    with the end of its retention, ``ttl`` s, as a revoke of a waiting job is) and a result with
    why it stopped; the job's hash expires after ``ttl``."""
    job.ended_at = job.ended_at or utcnow()
    job.set_status(JobStatus.STOPPED, pipeline=pipeline)
    pipeline.hset(job.key, "ended_at", rq_utils.utcformat(job.ended_at))
    CanceledJobRegistry(job.origin, job.connection, job_class=type(job), serializer=job.serializer).add(
        job, ttl=ttl, pipeline=pipeline
    )
    Result.create_failure(job, ttl, exc_string=exc_string, worker_name=worker_name, pipeline=pipeline)
    pipeline.expire(job.key, ttl)


def forget_stopped_job(worker: Any) -> None:
    """The stop the worker was told of (``rq``'s stop-job command) is recorded: clear it, as RQ's
    failure handling does."""
    worker._stopped_job_id = None


def record_success(job: Job, result_ttl: int, pipeline: Any, worker_name: str, execution: Any) -> None:
    """RQ's success writes for ``job`` (result, finished registry), recorded on ``pipeline``."""
    job._handle_success(
        result_ttl,
        pipeline=pipeline,
        worker_name=worker_name,
        execution_id=execution.id,
        execution_started_at=execution.created_at,
        execution_ended_at=job.ended_at,
    )


def pipeline_commands(pipeline: Any) -> list[Any]:
    """The commands queued on an unsent pipeline, as a flat list: count, command, args, count, ..."""
    out: list[Any] = []
    for args, _options in pipeline.command_stack:
        out.append(len(args))
        out.extend(args)
    return out


# --- rq: workers and time limits ------------------------------------------------------------


def stopped_job_id(worker: Any) -> str | None:
    """The id of the job the worker was told to stop (``rq``'s stop-job command), if any."""
    return getattr(worker, "_stopped_job_id", None)


def request_stop(worker: Any) -> None:
    """Ask a worker to leave its loop after the job in hand (warm shutdown), without a signal."""
    worker._stop_requested = True


def stop_requested(worker: Any) -> bool:
    """True once the worker was asked to stop."""
    return bool(getattr(worker, "_stop_requested", False))


def worker_state(worker: Any) -> str | None:
    """The state the worker last wrote (RQ caches it on the object)."""
    return getattr(worker, "_state", None)


def forget_horse(worker: Any) -> None:
    """Tell a forking worker its work horse is gone (reaped), as RQ does after monitoring it."""
    worker._horse_pid = 0


def subscribe(worker: Any, exception_handler: Any) -> None:
    """RQ's ``subscribe`` (the worker's command channel and its reader thread) with our handler of
    the reader's errors: RQ's own logs every reconnection attempt of an outage."""
    worker.log.info("Worker %s: subscribing to channel %s", worker.name, worker.pubsub_channel_name)
    worker.pubsub = worker.connection.pubsub()
    worker.pubsub.subscribe(**{worker.pubsub_channel_name: worker.handle_payload})
    worker.pubsub_thread = worker.pubsub.run_in_thread(
        sleep_time=60, daemon=True, exception_handler=exception_handler
    )


def death_penalty_timeout(penalty: BaseDeathPenalty) -> float:
    """The hard limit, in seconds, a death penalty was created with."""
    return float(penalty._timeout)


# --- rq's scheduler, rq-scheduler -----------------------------------------------------------


def use_queue_class_in_rq_scheduler(queue_class: type) -> None:
    """Make RQ's scheduler move due jobs through ``queue_class`` (it builds queues from a module global)."""
    rq_scheduler_module.Queue = queue_class  # type: ignore[misc,assignment]


def use_clock_in_rq_scheduler() -> None:
    """Make RQ's scheduler decide which delayed jobs are due by :mod:`app.foundation.clock` (its
    ``enqueue_scheduled_jobs`` reads a module global, ``current_timestamp``): the same whole
    seconds as RQ's own in production, a clock a test can move otherwise (idempotent)."""
    rq_scheduler_module.current_timestamp = _clock_timestamp


def _clock_timestamp() -> int:
    """RQ's ``current_timestamp`` (whole seconds since the epoch), by the app's clock."""
    return int(clock.time())


def scheduler_queue_names(scheduler: Any) -> set[str]:
    """The queues whose delayed jobs RQ's scheduler ``scheduler`` would move (if it held their locks)."""
    return set(scheduler._queue_names)


def set_scheduler_locks(scheduler: Any, names: set[str]) -> None:
    """Tell RQ's scheduler which queues' locks it holds (what its own ``acquire_locks`` records),
    and make it rebuild its registries from them on its next pass."""
    scheduler._acquired_locks = set(names)
    scheduler._scheduled_job_registries = []
    scheduler.lock_acquisition_time = datetime.now()


def share_connection(scheduler: Any, connection: Redis) -> None:
    """Make RQ's scheduler use ``connection`` rather than opening a pool of its own."""
    scheduler._connection = connection


# --- rq-dashboard ---------------------------------------------------------------------------


def make_dashboard_json_only(
    job_class: type, queue_class: type, worker_class: type, requeue: Any, describe_job: Any, current_job: Any
) -> None:
    """Point rq-dashboard's module-level names at JSON classes, so no view can unpickle; its job
    descriptions at ``describe_job`` (every view that shows a job calls it) and the workers
    list's current job at ``current_job``."""
    # rq-dashboard is imported here, not at the top: only the web process mounts it, and
    # workers and the scheduler should not pay for importing it.
    from rq_dashboard import web

    web.config.serializer = JSONSerializer
    web.Job = job_class
    web.Queue = queue_class
    web.Worker = worker_class
    web.requeue_job = requeue
    web.format_job_description = describe_job
    web.serialize_current_job = current_job


def dashboard_helpers() -> tuple[Any, Any]:
    """rq-dashboard's ``serialize_date`` and ``format_job_description`` (used by a replaced view)."""
    from rq_dashboard import web

    return web.serialize_date, web.format_job_description


def register_queues(connection: Redis, queues: list[Any]) -> None:
    """Add ``queues`` to RQ's set of known queues (``rq:queues``), which rq-dashboard and
    ``rq info`` list; RQ itself adds a queue there only when a job is first put on it."""
    if queues:
        connection.sadd(queues[0].redis_queues_keys, *[queue.key for queue in queues])


def job_hash_fields(job: Job) -> list[Any]:
    """The job's hash as RQ writes it (field, value, field, value, ...), for a Lua script's HSET."""
    from rq.scripts import _build_hset_args

    return list(_build_hset_args(job))
