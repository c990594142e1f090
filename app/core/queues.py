"""The job and queue layer: the JSON job class, the JSON queue, and the lossless dequeue.

RQ pickles by default, so anyone able to write to Redis could run code in a worker.
Everything here fixes RQ's JSONSerializer, and the job class only ever resolves
functions declared in the task registry: a forged job naming ``os.system`` fails
instead of running.
"""

from __future__ import annotations

import calendar
import contextvars
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout, DeserializationError, DuplicateJobError, NoSuchJobError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now
from rq.utils import utcformat

from app.catalogue.registry import REGISTRY, QueueName, TaskSpec
from app.core import compat, sequences
from app.foundation import defaults, keys, outages
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta

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

    def _remove_from_registries(
        self, pipeline: Pipeline | None = None, remove_from_queue: bool = True
    ) -> None:
        """RQ's removal from the registries and (``remove_from_queue``) its queue's plain list (on a
        cancel, a delete), and from its priority or group list when it has one (:func:`lane_of`)."""
        super()._remove_from_registries(pipeline=pipeline, remove_from_queue=remove_from_queue)
        lane = lane_of(self) if remove_from_queue and self.origin else None
        if lane is not None:
            (pipeline if pipeline is not None else self.connection).lrem(
                lane_key(self.origin, lane), 1, self.id
            )

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

    def push_job_id(
        self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False, lane: Lane | None = None
    ) -> None:
        """Push the job id, and ring the queue's doorbell in the same round trip.

        A job with a priority or a group (``lane``, else the lane of the job RQ is enqueueing: every
        RQ path, retries, requeues, the scheduler's due jobs, goes through :meth:`_enqueue_async_job`)
        goes to its lane's list instead (:func:`push_lane_on`); the plain path is RQ's one push."""
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        lane = lane or _ENQUEUEING_LANE.get()
        if lane is None:
            super().push_job_id(job_id, pipeline=pipe, at_front=at_front)
        else:
            push_lane_on(pipe, self.name, job_id, lane, at_front=at_front)
        ring_doorbell(pipe, self.name)
        if pipeline is None:
            pipe.execute()

    def _enqueue_async_job(
        self, job: Job, pipeline: Pipeline | None = None, at_front: bool = False, unique: bool = False
    ) -> Job:
        """RQ's enqueue of a job, with the job's lane known to :meth:`push_job_id`. A caller's job id
        (``unique``) of a job with a lane is checked before the writes (RQ's atomic check pushes to
        the plain list)."""
        lane = lane_of(job)
        if lane is None:
            return super()._enqueue_async_job(job, pipeline=pipeline, at_front=at_front, unique=unique)
        if unique and self.connection.exists(job.key):
            raise DuplicateJobError(f"Job with ID {job.id} already exists")
        token = _ENQUEUEING_LANE.set(lane)
        try:
            return super()._enqueue_async_job(job, pipeline=pipeline, at_front=at_front, unique=False)
        finally:
            _ENQUEUEING_LANE.reset(token)

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


#: The attribute of a taken job that holds its hash as it was read at the take (after a claim made
#: in the same step): a success writes again only the fields that changed since (recording.py).
STORED = "_tasklane_stored"


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
    job.__dict__[STORED] = fields
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


def move_first_on(
    pipeline: Any, queue_keys: list[str], taker: str | None = None, claim: list[Any] | None = None
) -> None:
    """Queue the move of the first waiting job of ``queue_keys`` (in order) to its intermediate list
    on ``pipeline``; read its answer with :func:`moved`. With ``taker`` (a worker's key), the same
    script step records the job taken in that hash's :data:`TAKEN` field. With ``claim``
    (:func:`claim_ahead_args`), a job that needs no look before it starts is started (claimed) in
    that step too: :func:`claimed` tells."""
    _MOVE_FIRST.queue(pipeline, keys=queue_keys, args=_move_args(taker, claim))


#: The started registry's, an execution's and a job's executions' key prefixes (RQ's key templates).
_CLAIM_PREFIXES = (
    StartedJobRegistry.key_template.format(""),
    Execution(id="", job_id="", connection=None, worker_name="").key[: -len(":")],  # type: ignore[arg-type]
    ExecutionRegistry.key_template.format(""),
)


@dataclass(frozen=True)
class ClaimAhead:
    """What a claim made inside the move writes: the run's execution id, its worker, its start time
    (as RQ's :class:`~rq.executions.Execution` and ``Job.prepare_for_execution`` record it) and the
    heartbeat TTL."""

    execution_id: str
    worker_name: str
    started: datetime
    ttl: int
    #: The tasks whose jobs are not claimed ahead: those with a rate limit (its start slot is taken
    #: in Python, before the claim).
    unclaimed_tasks: tuple[str, ...] = ()

    @classmethod
    def new(cls, worker_name: str, ttl: int, unclaimed_tasks: tuple[str, ...] = ()) -> ClaimAhead:
        return cls(uuid.uuid4().hex, worker_name, rq_now(), ttl, unclaimed_tasks)

    def args(self) -> list[Any]:
        """ARGV[9] .. of the move (see _MOVE_FIRST)."""
        return [
            self.execution_id,
            self.worker_name,
            repr(self.started.timestamp()),  # as redis-py writes RQ's float
            utcformat(self.started),
            calendar.timegm(self.started.utctimetuple()),  # RQ's current_timestamp()
            self.ttl,
            *_CLAIM_PREFIXES,
            WORKER_EXECUTIONS_KEY_TEMPLATE.format(self.worker_name),
            *self.unclaimed_tasks,
        ]

    def execution(self, job: Job) -> Execution:
        """The :class:`~rq.executions.Execution` the claim wrote for ``job``, as RQ's would be."""
        run = Execution(
            id=self.execution_id, job_id=job.id, connection=job.connection, worker_name=self.worker_name
        )
        run.created_at = run.last_heartbeat = self.started
        run._job = job
        return run


def claimed(result: Any) -> str | None:
    """The execution id of the run a move's answer (:func:`move_first_on` with ``claim``) started;
    None when it moved the job only, or moved none."""
    if not result or not result[0] or len(result) < 3:
        return None
    value = _text(result[2])
    return value or None


def load_move_first(connection: Redis) -> None:
    """Load :func:`move_first_on`'s script (after a NoScriptError: a restarted or flushed server)."""
    _MOVE_FIRST.load(connection)


def moved(result: Any) -> tuple[str, str, dict[bytes, Any]] | None:
    """The queue key, job id and job hash of a move's answer (None: every queue was empty or paused)."""
    if not result or not result[0]:
        return None
    key, job_id, _claimed, *flat = result
    names = flat[0::2]
    if names and not isinstance(names[0], bytes):  # a client that decodes its answers
        names = [str(name).encode() for name in names]
    return _text(key), _text(job_id), dict(zip(names, flat[1::2], strict=True))


def ring_doorbell(pipe: Any, queue_name: str, times: int = 1) -> None:
    """Wake one idle worker of ``queue_name`` (``times``: as many, up to the cap; the list is
    capped; a lost ring costs latency only)."""
    bell = keys.doorbell(queue_name)
    pipe.rpush(bell, *[1] * max(1, min(times, defaults.DOORBELL_CAP)))
    pipe.ltrim(bell, -defaults.DOORBELL_CAP, -1)


# Move the head of the first non-empty list to its ":intermediate" list (LMOVE; with a claim, LPOP
# then RPUSH: a job claimed in the same step is never pushed there) and read the job's hash in the
# same call (no fields: the job is gone).
# A paused queue (its name in the set ARGV[2]; ARGV[3] is the queue key prefix) is skipped:
# when nothing moved, the answer is {"", paused name, ...}, or false when none is paused.
# ARGV[1] is the job key prefix; ARGV[8] the key of the hash that records the taker ('' for none).
# The answer is {key, id, claimed, field, value, ...}.
#
# Claimed ahead (ARGV[9] .. ARGV[18], see claim_ahead_args): the job is also started for the worker
# in the same step, with the writes of RQ's start as the worker's claim makes them (the run's
# execution, its entries in the started registry, the job's executions and the worker's, the job's
# status, started_at, last_heartbeat and worker_name, and PERSIST), unless the job needs a look
# before it starts (no data, a status other than queued, an `expires` in its meta, no task named in
# its meta, or a task named among ARGV[19..], those with a rate limit): then it is moved only, as
# without a claim. `claimed` is the execution id, or '' when it was not claimed; the
# fields answered are the hash after the claim.
#
# The plain path: while no queue is paused or has lanes (neither the paused set nor the set of laned
# queues, ARGV[7], exists), the lists are taken from in order after one EXISTS, whatever their number.
#
# Priorities and groups (see push_lane_on): a queue not in the laned set (ARGV[7]) takes from its
# plain list as ever. Otherwise its priorities are taken
# in order (5 is the plain list); at a priority with a ring of groups (ARGV[5] .. name .. ':' .. p)
# the head group gives its first job and goes back to the tail (a group found empty leaves the ring
# then); '' on the ring, while it exists, is the priority's ungrouped list, so those jobs take turns
# with the groups. Groups pushed to since the last dequeue (the pending set) join the ring first.
# A job is always moved to the parent queue's intermediate list and answered under the parent's
# key: what follows a dequeue (the start's claim, a requeue, the sweep) sees the queue it was
# enqueued on. ARGV[6] is RQ's set of queues, which lane lists leave once found empty (rq info
# lists them while they hold jobs).
_MOVE_FIRST = LuaScript(
    """
local function take(list, dest)
  if ARGV[9] then return redis.call('LPOP', list) end
  return redis.call('LMOVE', list, dest, 'LEFT', 'RIGHT')
end
local function tidy(list, key)
  if list ~= key and redis.call('LLEN', list) == 0 then redis.call('SREM', ARGV[6], list) end
end
local function level(key, name, p, dest)
  local u = key
  if p ~= '5' then u = key .. ':p' .. p end
  local ring = ARGV[5] .. name .. ':' .. p
  local members = ring .. ':members'
  local pending = ring .. ':pending'
  if redis.call('EXISTS', pending) == 1 then
    for _, g in ipairs(redis.call('SMEMBERS', pending)) do
      if redis.call('SADD', members, g) == 1 then redis.call('RPUSH', ring, g) end
    end
    redis.call('DEL', pending)
    if redis.call('SADD', members, '') == 1 then redis.call('RPUSH', ring, '') end
  end
  local g = redis.call('LPOP', ring)
  if not g then
    local id = take(u, dest)
    if id then tidy(u, key) end
    return id
  end
  while g do
    local list = u
    if g ~= '' then list = u .. ':g:' .. g end
    local id = take(list, dest)
    if id then
      if g ~= '' or redis.call('LLEN', ring) > 0 then
        redis.call('RPUSH', ring, g)
      else
        redis.call('SREM', members, g)
      end
      return id
    end
    if g == '' and redis.call('LLEN', ring) > 0 then
      redis.call('RPUSH', ring, g)
    else
      redis.call('SREM', members, g)
      tidy(list, key)
    end
    g = redis.call('LPOP', ring)
  end
  return false
end
local function claimable(fields)
  local data, queued, named = false, false, false
  local limited = {}
  for i = 19, #ARGV do limited[ARGV[i]] = true end
  for i = 1, #fields, 2 do
    local f = fields[i]
    if f == 'data' then data = true
    elseif f == 'status' then queued = fields[i + 1] == 'queued'
    elseif f == 'meta' then
      local meta = fields[i + 1]
      if string.find(meta, '"expires"', 1, true) then return false end
      for name in string.gmatch(meta, '"task": "([^"]*)"') do
        if limited[name] then return false end
        named = true
      end
    end
  end
  return data and queued and named
end
local function claim(key, id, jkey, fields)
  local run = id .. ':' .. ARGV[9]
  local ttl = tonumber(ARGV[14])
  local ts = tonumber(ARGV[13])
  redis.call('HSET', ARGV[16] .. run, 'id', ARGV[9], 'job_id', id, 'created_at', ARGV[11],
    'last_heartbeat', ARGV[11], 'worker_name', ARGV[10])
  redis.call('EXPIRE', ARGV[16] .. run, ttl)
  redis.call('ZADD', ARGV[17] .. id, ts + ttl + 60, ARGV[9])
  redis.call('EXPIRE', ARGV[17] .. id, ttl + 60)
  redis.call('ZADD', ARGV[15] .. string.sub(key, #ARGV[3] + 1), ts + ttl, run)
  redis.call('SADD', ARGV[18], run)
  redis.call('EXPIRE', ARGV[18], ttl + 60)
  local start = {last_heartbeat = ARGV[12], status = 'started', started_at = ARGV[12], worker_name = ARGV[10]}
  redis.call('HSET', jkey, 'last_heartbeat', ARGV[12], 'status', 'started', 'started_at', ARGV[12],
    'worker_name', ARGV[10])
  redis.call('PERSIST', jkey)
  for i = 1, #fields, 2 do
    local v = start[fields[i]]
    if v then fields[i + 1] = v; start[fields[i]] = nil end
  end
  for f, v in pairs(start) do table.insert(fields, f); table.insert(fields, v) end
end
local function found(key, id)
  if ARGV[8] ~= '' then redis.call('HSET', ARGV[8], 'tasklane_taken', id) end
  local jkey = ARGV[1] .. id
  local fields = redis.call('HGETALL', jkey)
  local claimed = ''
  if ARGV[9] then
    if claimable(fields) then
      claim(key, id, jkey, fields)
      claimed = ARGV[9]
    else
      redis.call('RPUSH', key .. ':intermediate', id)
    end
  end
  local out = {key, id, claimed}
  for _, v in ipairs(fields) do table.insert(out, v) end
  return out
end
if redis.call('EXISTS', ARGV[2], ARGV[7]) == 0 then
  for _, key in ipairs(KEYS) do
    local id = take(key, key .. ':intermediate')
    if id then return found(key, id) end
  end
  return false
end
local paused = {''}
for _, key in ipairs(KEYS) do
  local name = string.sub(key, #ARGV[3] + 1)
  if redis.call('SISMEMBER', ARGV[2], name) == 1 then
    table.insert(paused, name)
  else
    local dest = key .. ':intermediate'
    local lanes = ARGV[4] .. name
    local levels = {}
    if redis.call('SISMEMBER', ARGV[7], name) == 1 then
      levels = redis.call('ZRANGE', lanes, 0, -1)
      if #levels == 0 then redis.call('SREM', ARGV[7], name) end
    end
    local id = false
    if #levels == 0 then
      id = take(key, dest)
    else
      local plain = false
      for _, p in ipairs(levels) do
        if not plain and tonumber(p) >= 5 then
          plain = true
          if p ~= '5' then id = take(key, dest) end
        end
        if not id then
          id = level(key, name, p, dest)
          if not id then redis.call('ZREM', lanes, p) end
        end
        if id then break end
      end
      if not id and not plain then id = take(key, dest) end
      if redis.call('EXISTS', lanes) == 0 then redis.call('SREM', ARGV[7], name) end
    end
    if id then return found(key, id) end
  end
end
if #paused > 1 then return paused end
return false
"""
)


def _move_args(taker: str | None = None, claim: list[Any] | None = None) -> list[Any]:
    prefixes = [
        JsonJob.redis_job_namespace_prefix,
        keys.paused_queues(),
        JsonQueue.redis_queue_namespace_prefix,
        keys.lanes(""),
        _RING_PREFIX,
        JsonQueue.redis_queues_keys,
        keys.laned_queues(),
    ]
    return [*prefixes, taker or "", *(claim or [])]


#: What the ring keys of every queue start with (``keys.ring(queue, p)`` is this, the queue, ``:p``).
_RING_PREFIX = keys.ring("", "")[: -len(":")]


@dataclass(frozen=True)
class Lane:
    """Where a waiting job of a queue stands apart from its plain list: a priority other than the
    default (0 first .. 9 last) and/or a fairness group."""

    priority: int = defaults.DEFAULT_PRIORITY
    group: str | None = None


#: The lane of the job RQ is enqueueing (set by JsonQueue._enqueue_async_job for push_job_id).
_ENQUEUEING_LANE: contextvars.ContextVar[Lane | None] = contextvars.ContextVar("tasklane_lane", default=None)


def make_lane(priority: int | None, group: str | None) -> Lane | None:
    """The lane of a job with ``priority`` and ``group``; None for the plain path (5, no group)."""
    p = defaults.DEFAULT_PRIORITY if priority is None else int(priority)
    if p == defaults.DEFAULT_PRIORITY and not group:
        return None
    return Lane(p, group or None)


def lane_of(job: Job) -> Lane | None:
    """The job's lane from its meta (``priority``, ``group``); None for the plain path."""
    meta = job.meta or {}
    priority, group = meta.get(Meta.PRIORITY), meta.get(Meta.GROUP)
    if priority is None and not group:
        return None
    try:
        return make_lane(priority, group)
    except (TypeError, ValueError):
        return None


def lane_queue_name(queue: str, lane: Lane) -> str:
    """The RQ queue name of a lane's list: ``default:p0``, ``default:g:acme``, ``default:p0:g:acme``."""
    base = queue if lane.priority == defaults.DEFAULT_PRIORITY else f"{queue}:p{lane.priority}"
    return f"{base}:g:{lane.group}" if lane.group else base


def lane_key(queue: str, lane: Lane) -> str:
    """The Redis list of a lane (an RQ queue's key, so ``rq info`` counts its jobs)."""
    return JsonQueue.redis_queue_namespace_prefix + lane_queue_name(queue, lane)


def parse_lane(queue: str, name: str) -> Lane | None:
    """The lane of RQ queue ``name`` under ``queue`` (None when it is not one of its lanes)."""
    if not name.startswith(queue + ":"):
        return None
    parts = name[len(queue) + 1 :].split(":")
    priority = defaults.DEFAULT_PRIORITY
    if parts and len(parts[0]) == 2 and parts[0][0] == "p" and parts[0][1].isdigit():
        priority, parts = int(parts[0][1]), parts[1:]
    if not parts:
        return Lane(priority) if priority != defaults.DEFAULT_PRIORITY else None
    if len(parts) == 2 and parts[0] == "g" and parts[1]:
        return Lane(priority, parts[1])
    return None


def lane_push_commands(queue: str, job_id: str, lane: Lane, at_front: bool = False) -> list[tuple[Any, ...]]:
    """The writes that put ``job_id`` on ``lane`` of ``queue``: the push, the lane list in RQ's set of
    queues, its priority in the queue's lanes (and the queue among the laned ones), its group among
    the ring's pending ones. Plain writes,
    no condition, so they fit a MULTI, a lease-guarded recording and a script's ARGV alike."""
    key = lane_key(queue, lane)
    commands: list[tuple[Any, ...]] = [
        ("LPUSH" if at_front else "RPUSH", key, job_id),
        ("SADD", JsonQueue.redis_queues_keys, key),
        ("ZADD", keys.lanes(queue), lane.priority, lane.priority),
        ("SADD", keys.laned_queues(), queue),
    ]
    if lane.group:
        commands.append(("SADD", keys.ring_pending(queue, lane.priority), lane.group))
    return commands


def push_lane_on(pipe: Any, queue: str, job_id: str, lane: Lane, at_front: bool = False) -> None:
    """Queue the writes of :func:`lane_push_commands` on ``pipe`` (O(1) each)."""
    for command in lane_push_commands(queue, job_id, lane, at_front):
        pipe.execute_command(*command)


def lane_lists(connection: Redis, queue: str) -> list[tuple[str, Lane]]:
    """The lane lists of ``queue`` that RQ's set of queues names (those that held jobs lately)."""
    prefix = JsonQueue.redis_queue_namespace_prefix
    found = []
    for raw in connection.smembers(JsonQueue.redis_queues_keys):
        key = _text(raw)
        lane = parse_lane(queue, key[len(prefix) :]) if key.startswith(prefix) else None
        if lane is not None:
            found.append((key, lane))
    return sorted(found, key=lambda item: (item[1].priority, item[1].group or ""))


#: How many group lists of a queue the job listing reads (those next in turn): each is a source
#: of every page, and a page's cursor holds a position per source.
LISTED_GROUPS = 20


def listed_lanes(connection: Redis, queue: str) -> list[tuple[str, Lane]]:
    """The lane lists of ``queue`` the job listing pages through, read in slices (no whole set or
    list): its priorities' ungrouped lists, and up to :data:`LISTED_GROUPS` group lists, those
    next in turn on the rings (then ones just pushed to)."""
    found_levels: list[bytes] = connection.zrange(keys.lanes(queue), 0, 9)  # type: ignore[assignment]
    levels = [int(p) for p in found_levels]
    with connection.pipeline(transaction=False) as pipe:
        for p in levels:
            pipe.lrange(keys.ring(queue, p), 0, LISTED_GROUPS - 1)
            pipe.srandmember(keys.ring_pending(queue, p), LISTED_GROUPS)
        found = pipe.execute()
    out: list[tuple[str, Lane]] = []
    groups: list[Lane] = []
    for n, p in enumerate(levels):
        if p != defaults.DEFAULT_PRIORITY:
            out.append((lane_key(queue, Lane(p)), Lane(p)))
        for g in dict.fromkeys(_text(g) for g in [*found[2 * n], *found[2 * n + 1]]):
            if g:
                groups.append(Lane(p, g))
    out += [(lane_key(queue, lane), lane) for lane in groups[:LISTED_GROUPS]]
    return out


def waiting(connection: Redis, queue: str) -> dict[str, Any]:
    """The waiting jobs of ``queue``: ``total`` (its plain list and every lane), ``by_priority``
    (priority -> jobs, those with any) and ``groups`` (groups with waiting jobs)."""
    lists = lane_lists(connection, queue)
    with connection.pipeline(transaction=False) as pipe:
        pipe.llen(JsonQueue.redis_queue_namespace_prefix + queue)
        for key, _ in lists:
            pipe.llen(key)
        counts = pipe.execute()
    by_priority: dict[str, int] = {}
    if counts[0]:
        by_priority[str(defaults.DEFAULT_PRIORITY)] = counts[0]
    groups = set()
    for (_, lane), count in zip(lists, counts[1:], strict=True):
        if count:
            by_priority[str(lane.priority)] = by_priority.get(str(lane.priority), 0) + count
            if lane.group:
                groups.add(lane.group)
    ordered = {p: by_priority[p] for p in sorted(by_priority)}
    return {"total": sum(counts), "by_priority": ordered, "groups": len(groups)}


# Put right what a fault could leave of a queue's lanes (nothing the code writes does: the pushes
# are one MULTI and the dequeue one script). ARGV[1]: the queue name; ARGV[2], [3]: the lanes key
# and the ring prefix; ARGV[4]: RQ's set of queues; ARGV[5]: the set of laned queues; then triples
# (list key, priority, group or ''). A lane list with jobs gets its priority back in the lanes and
# its group among the pending; an empty one leaves RQ's set; a ring member missing from its ring is
# put back; a queue with lanes is among the laned ones (the dequeue looks at lanes of those only).
# Returns the fixes.
_REPAIR_LANES = LuaScript(
    """
local fixed = 0
for i = 6, #ARGV, 3 do
  local list, p, g = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ring = ARGV[3] .. ARGV[1] .. ':' .. p
  if redis.call('LLEN', list) > 0 then
    if redis.call('ZADD', ARGV[2], p, p) == 1 then fixed = fixed + 1 end
    if g ~= '' and redis.call('SISMEMBER', ring .. ':members', g) == 0 then
      fixed = fixed + redis.call('SADD', ring .. ':pending', g)
    end
  else
    redis.call('SREM', ARGV[4], list)
  end
end
for p = 0, 9 do
  local ring = ARGV[3] .. ARGV[1] .. ':' .. p
  local members = redis.call('SMEMBERS', ring .. ':members')
  if #members > 0 then
    local on = {}
    for _, g in ipairs(redis.call('LRANGE', ring, 0, -1)) do on[g] = true end
    for _, g in ipairs(members) do
      if not on[g] then
        redis.call('SREM', ring .. ':members', g)
        redis.call('SADD', ring .. ':pending', g)
        redis.call('ZADD', ARGV[2], p, p)
        fixed = fixed + 1
      end
    end
  end
end
if redis.call('EXISTS', ARGV[2]) == 1 then fixed = fixed + redis.call('SADD', ARGV[5], ARGV[1]) end
return fixed
"""
)


def repair_lanes(connection: Redis, queue: str) -> int:
    """Check ``queue``'s lanes against its lane lists (the maintenance sweep, after a fault such as a
    Redis restart that kept only part of its writes); returns how many entries were put right."""
    lists = lane_lists(connection, queue)
    if not lists:  # no lane has held a job lately: nothing to check (one SMEMBERS per sweep)
        return 0
    args: list[Any] = [queue, keys.lanes(queue), _RING_PREFIX, JsonQueue.redis_queues_keys]
    args.append(keys.laned_queues())
    for key, lane in lists:
        args += [key, lane.priority, lane.group or ""]
    return int(_REPAIR_LANES(connection, args=args) or 0)


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
