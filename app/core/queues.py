"""The job and queue layer: the JSON job class, the JSON queue, and the lossless dequeue.

RQ pickles by default, so anyone able to write to Redis could run code in a worker.
Everything here fixes RQ's JSONSerializer, and the job class only ever resolves
functions declared in the task registry: a forged job naming ``os.system`` fails
instead of running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout, DeserializationError, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from app.catalogue.registry import REGISTRY, QueueName, TaskSpec
from app.core import compat, sequences
from app.foundation import defaults, keys, outages
from app.foundation.lua import LuaScript

if TYPE_CHECKING:
    from redis.client import Pipeline

log = logging.getLogger("tasklane.queues")


class UnknownTaskError(LookupError):
    """A job names a function that is not in the task registry."""


class UnreadableJob(Exception):
    """A dequeued job whose hash cannot be read (not JSON, no data, a bad status): it is never
    run; its id is still in ``queue``'s intermediate list, for app/core/outcomes.py to set aside."""

    def __init__(self, queue: JsonQueue, job_id: str, cause: str) -> None:
        super().__init__(f"job {job_id} in queue {queue.name} cannot be read ({cause})")
        self.queue = queue
        self.job_id = job_id
        self.cause = cause


class JsonJob(Job):
    """An RQ job that is always JSON and only runs registered tasks."""

    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Any = None
    ) -> None:
        super().__init__(id, connection=connection, serializer=JSONSerializer)

    @property
    def func(self) -> Any:
        """The registered task function; never an arbitrary import."""
        name = self.func_name
        if name is None:
            return None
        task = REGISTRY.by_path(name)
        if task is None:
            raise UnknownTaskError(f"{name!r} is not a registered task; refusing to run it")
        return task.func

    def revoked_ttl(self) -> int:
        """Seconds this job is kept once revoked (or expired): its task's ``revoked_ttl``, else as
        long as its failures (its failure TTL: the task's ``failure_ttl`` or FAILED_JOB_TTL)."""
        spec = task_spec(self)
        if spec is not None and spec.revoked_ttl is not None:
            return spec.revoked_ttl
        return int(self.failure_ttl or defaults.FAILED_JOB_TTL)

    def cancel(self, pipeline: Pipeline | None = None, *args: Any, **kwargs: Any) -> dict[str, list[str]]:
        """RQ's cancel, then the retention of a revoked job: its hash expires after ``revoked_ttl()``
        and its canceled-registry entry is scored with that time (RQ keeps both for ever), so the
        registry sweep prunes it as RQ prunes finished and failed jobs. Within a caller's
        pipeline the sweep gives it its retention later."""
        moved = super().cancel(pipeline, *args, **kwargs)
        if pipeline is None:
            ttl = self.revoked_ttl()
            sec, usec = self.connection.time()
            registry = JsonQueue(self.origin, connection=self.connection).canceled_job_registry
            with self.connection.pipeline() as pipe:  # MULTI: the sweep never sees one without the other
                pipe.expire(self.key, ttl)
                pipe.zadd(registry.key, {self.id: sec + usec / 1e6 + ttl}, xx=True)
                if sequences.settle_on(pipe, self):  # its sequence moves on (the sweep's, should we die now)
                    sequences.settled(self.connection, self, pipe.execute(raise_on_error=False))
                else:
                    pipe.execute()
        return moved

    def _handle_failure(self, exc_string: str, pipeline: Any, *args: Any, **kwargs: Any) -> None:
        """RQ's writes of a final failure; in RQ's transaction (a worker's failure, a failure without
        a lease), the job's sequence moves on with them (app/core/sequences.py). A lease-guarded
        failure hands on in app/core/outcomes.py. What this relies on in RQ is pinned by
        tests/test_compat.py."""
        super()._handle_failure(exc_string, pipeline, *args, **kwargs)
        if getattr(pipeline, "transaction", False):
            sequences.settle_on(pipeline, self, load_first=True)

    @classmethod
    def fetch_many(
        cls, job_ids: Iterable[str], connection: Redis, serializer: Any = None
    ) -> list[Job | None]:
        """RQ's bulk fetch, except that a job whose hash cannot be read is None, not an exception."""
        ids = list(job_ids)
        with connection.pipeline() as pipe:
            for job_id in ids:
                pipe.hgetall(cls.key_for(job_id))
            raw = pipe.execute()
        jobs: list[Job | None] = []
        for job_id, fields in zip(ids, raw, strict=True):
            jobs.append(restore_or_none(cls, job_id, fields, connection))
        return jobs


def restore_or_none(
    job_class: type[Job], job_id: str, fields: dict[bytes, Any], connection: Redis
) -> Job | None:
    """A job built from its stored hash, or None when the hash is missing or unreadable."""
    if not fields:
        return None
    job = job_class(job_id, connection=connection)
    try:
        job.restore(fields)
    except (NoSuchJobError, ValueError, KeyError, TypeError, DeserializationError):
        return None
    return job


class JsonQueue(Queue):
    """A queue of JSON jobs, with a dequeue that loses nothing on any number of queues."""

    job_class = JsonJob

    def __init__(self, name: str = "default", connection: Redis | None = None, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = kwargs.get("job_class") or JsonJob
        super().__init__(name, connection=connection, **kwargs)

    def push_job_id(self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False) -> None:
        """Push the job id, and ring the queue's doorbell in the same round trip."""
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        super().push_job_id(job_id, pipeline=pipe, at_front=at_front)
        ring_doorbell(pipe, self.name)
        if pipeline is None:
            pipe.execute()

    @classmethod
    def dequeue_any(
        cls,
        queues: Any,
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        """Take the first job of the first non-empty queue, moving it atomically to that
        queue's intermediate list, so that a worker dying between dequeue and start
        loses nothing (RQ itself uses BLPOP, which is lossy, when it listens on several
        queues). When all are empty, wait on the queues' doorbells (or poll each second).

        A job whose hash cannot be read (no data, a bad status) is handed to
        :meth:`unreadable` (the workers' queue class sets it aside as failed, with the cause,
        through app/core/outcomes.py), and the queue flows on.

        Redis going away raises :class:`app.outages.RedisUnavailable`, which RQ's worker loop
        lets through (it would retry a redis-py error itself, logging every attempt): the
        worker rides the outage out (app/processes/workers/redis_outages.py). A job moved before
        the answer was lost stays in the intermediate list, where the sweep finds it.

        A paused queue (:func:`pause`) is skipped inside the move itself, so every worker mode
        (and the pooled prefetch, which runs the same move) honours a pause from its next dequeue;
        while waiting, a worker listens to a paused queue's resume bell instead of its doorbell.
        """
        try:
            return cls._dequeue_any(queues, timeout, connection, job_class)
        except outages.REDIS_DOWN as exc:
            raise outages.RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def unreadable(cls, found: UnreadableJob) -> None:
        """A dequeued job cannot be read. Only workers dequeue, and their queue class sets it aside
        (app/processes/workers/base.py); anything else dequeuing stops here, the id left in the
        intermediate list."""
        raise found

    @classmethod
    def _dequeue_any(
        cls, queues: Any, timeout: int | None, connection: Redis, job_class: type[Job] | None
    ) -> tuple[Job, Queue] | None:
        queue_list = list(queues)
        queue_keys = [q.key for q in queue_list]
        waited = 0.0
        by_key = {q.key: q for q in queue_list}
        while True:
            answer = _MOVE_FIRST(connection, keys=queue_keys, args=_move_args())
            found = moved(answer)
            if found is not None:
                try:
                    taken = take_moved(found, by_key, connection, job_class)
                except UnreadableJob as exc:
                    cls.unreadable(exc)
                    continue
                if taken is None:
                    continue
                return taken
            if timeout is None:
                return None
            if waited >= timeout:
                raise DequeueTimeout(timeout, queue_keys)
            step = min(defaults.DOORBELL_WAIT, timeout - waited)
            # A paused queue's doorbell (rung by each enqueue) is not listened to: its resume bell is.
            paused = paused_in(answer)
            bells = [(keys.resume_bell if q.name in paused else keys.doorbell)(q.name) for q in queue_list]
            if connection.blpop(bells, max(step, 0.01)) is None:
                waited += step


def _require_json(job: Job) -> None:
    """Raise DeserializationError unless the job's payload and meta are JSON (read as JSON only:
    a pickle written by something else is set aside before any code of the run touches it)."""
    try:
        job.func_name  # noqa: B018 - decodes the payload now
    except (DeserializationError, ValueError) as exc:
        raise DeserializationError("the job is not stored as JSON; it is never unpickled") from exc
    if compat.meta_unreadable(job):  # restore tried its meta as JSON already and kept it aside
        raise DeserializationError("the job is not stored as JSON; it is never unpickled")


def take_moved(
    found: tuple[str, str, dict[bytes, Any]], by_key: dict[str, Any], connection: Redis, job_class: Any = None
) -> tuple[Job, Any] | None:
    """The job a move (:func:`move_first_on`) took, read from its hash; None when its hash is gone
    (the stale id is dropped). Raises :class:`UnreadableJob` when it cannot be read."""
    queue_key, job_id, fields = found
    queue = by_key[queue_key]
    if not fields:  # the job's hash expired or was deleted: drop the stale id
        connection.lrem(queue.intermediate_queue_key, 1, job_id)
        return None
    job = (job_class or JsonJob)(job_id, connection=connection)
    try:
        job.restore(fields)
        _require_json(job)
    except NoSuchJobError as exc:  # RQ's message quotes the whole hash (arguments included): not kept
        raise UnreadableJob(queue, job_id, "NoSuchJobError: the job's hash has no data") from exc
    except Exception as exc:
        raise UnreadableJob(queue, job_id, f"{type(exc).__name__}: {exc}") from exc
    return job, queue


#: The field of a worker's hash (``rq:worker:<name>``) that names the job it last took ahead
#: (:func:`move_first_on` with ``taker``): written by the move itself, so whoever settles a dead
#: worker knows what it took even if it died before it heard the answer.
TAKEN = "tasklane_taken"


def move_first_on(pipeline: Any, queue_keys: list[str], taker: str | None = None) -> None:
    """Queue the move of the first waiting job of ``queue_keys`` (in order) to its intermediate list
    on ``pipeline``; read its answer with :func:`moved`. With ``taker`` (a worker's key), the same
    script step records the job taken in that hash's :data:`TAKEN` field."""
    _MOVE_FIRST.queue(pipeline, keys=queue_keys, args=_move_args(taker))


def load_move_first(connection: Redis) -> None:
    """Load :func:`move_first_on`'s script (after a NoScriptError: a restarted or flushed server)."""
    _MOVE_FIRST.load(connection)


def moved(result: Any) -> tuple[str, str, dict[bytes, Any]] | None:
    """The queue key, job id and job hash of a move's answer (None: every queue was empty or paused)."""
    if not result or not result[0]:
        return None
    key, job_id, *flat = result
    fields = {_text(flat[n]).encode(): flat[n + 1] for n in range(0, len(flat), 2)}
    return _text(key), _text(job_id), fields


def ring_doorbell(pipe: Any, queue_name: str, times: int = 1) -> None:
    """Wake one idle worker of ``queue_name`` (``times``: as many, up to the cap; the list is
    capped; a lost ring costs latency only)."""
    bell = keys.doorbell(queue_name)
    pipe.rpush(bell, *[1] * max(1, min(times, defaults.DOORBELL_CAP)))
    pipe.ltrim(bell, -defaults.DOORBELL_CAP, -1)


# Move the head of the first non-empty list to its ":intermediate" list and read the job's
# hash in the same call; returns {key, id, field, value, ...} (no fields: the job is gone).
# A paused queue (its name in the set ARGV[2]; ARGV[3] is the queue key prefix) is skipped:
# when nothing moved, the answer is {"", paused name, ...}, or false when none is paused.
# ARGV[1] is the job key prefix; ARGV[4], if given, the key of the hash that records the taker.
_MOVE_FIRST = LuaScript(
    """
local paused = {''}
for _, key in ipairs(KEYS) do
  local name = string.sub(key, #ARGV[3] + 1)
  if redis.call('SISMEMBER', ARGV[2], name) == 1 then
    table.insert(paused, name)
  else
    local id = redis.call('LMOVE', key, key .. ':intermediate', 'LEFT', 'RIGHT')
    if id then
      if ARGV[4] then redis.call('HSET', ARGV[4], 'tasklane_taken', id) end
      local out = {key, id}
      for _, v in ipairs(redis.call('HGETALL', ARGV[1] .. id)) do table.insert(out, v) end
      return out
    end
  end
end
if #paused > 1 then return paused end
return false
"""
)


def _move_args(taker: str | None = None) -> list[str]:
    prefixes = [
        JsonJob.redis_job_namespace_prefix,
        keys.paused_queues(),
        JsonQueue.redis_queue_namespace_prefix,
    ]
    return [*prefixes, *([taker] if taker else [])]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _move_first_with_data(
    connection: Redis, queue_keys: list[str]
) -> tuple[str, str, dict[bytes, Any]] | None:
    return moved(_MOVE_FIRST(connection, keys=queue_keys, args=_move_args()))


def paused_in(result: Any) -> set[str]:
    """The names of the paused queues a move found nothing in (empty when it moved a job)."""
    if not result or result[0]:
        return set()
    return {_text(name) for name in result[1:]}


def task_spec(job: Job) -> TaskSpec | None:
    """The job's registered task, or None when it names none or is not JSON (it fails when run).

    Looked up once per job object: every later step of the run reads it from the job.
    """
    cached: Any = job.__dict__.get("_tasklane_spec", _UNSET)
    if cached is not _UNSET:
        return cached
    try:
        spec = REGISTRY.by_path(job.func_name or "")
    except DeserializationError:
        spec = None
    job.__dict__["_tasklane_spec"] = spec
    return spec


_UNSET = object()


class UnknownQueueError(LookupError):
    """A queue name that is not one of the service's queues."""


def _known(name: str) -> str:
    if name not in {q.value for q in QueueName}:
        known = ", ".join(q.value for q in QueueName)
        raise UnknownQueueError(f"no queue named {name!r}; the queues are {known}")
    return name


#: Seconds a resume's rings are kept for the workers that were waiting on the paused queue.
RESUME_BELL_TTL = 5


def pause(connection: Redis, name: str) -> None:
    """Stop every worker, on every host, taking jobs from queue ``name`` (from its next dequeue; a job
    in hand finishes). Kept in Redis, so it outlives worker restarts; enqueues still land."""
    with connection.pipeline() as pipe:  # MULTI
        pipe.sadd(keys.paused_queues(), _known(name))
        pipe.delete(keys.resume_bell(name))
        pipe.execute()


def resume(connection: Redis, name: str) -> None:
    """Let workers take jobs from queue ``name`` again, and wake its idle ones at once."""
    bell = keys.resume_bell(_known(name))
    with connection.pipeline() as pipe:  # MULTI
        pipe.srem(keys.paused_queues(), name)
        pipe.delete(bell)
        pipe.rpush(bell, *([1] * defaults.DOORBELL_CAP))  # one ring per waiting worker (BLPOP takes one)
        pipe.expire(bell, RESUME_BELL_TTL)
        ring_doorbell(pipe, name)
        pipe.execute()


def paused_queues(connection: Redis) -> set[str]:
    """The names of the paused queues."""
    return {_text(name) for name in connection.smembers(keys.paused_queues())}


def get_queue(name: str, connection: Redis) -> JsonQueue:
    """The JSON queue called ``name``."""
    return JsonQueue(name, connection=connection)


def all_queues(connection: Redis) -> list[JsonQueue]:
    """The service's queues in priority order."""
    return [get_queue(q.value, connection) for q in QueueName]


def fetch_job(job_id: str, connection: Redis) -> JsonJob:
    """Fetch a job and decode its data now, as JSON or not at all.

    Raises NoSuchJobError (also for an id RQ refuses), DeserializationError for a job that is
    not stored as JSON (written by something else: it is never unpickled).
    """
    try:
        job: JsonJob = JsonJob.fetch(job_id, connection=connection)  # type: ignore[assignment]
    except ValueError:
        raise NoSuchJobError(f"no job with id {job_id!r}") from None
    job.func_name  # noqa: B018 - decodes the job data now
    return job
