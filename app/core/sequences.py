"""Sequences (the ``sequence`` enqueue option): jobs with the same key run one at a time, in the
order their enqueues were acknowledged, on any worker and host.

Stored as one Redis list per key (``keys.sequence(key)``) of job ids in enqueue order, and the set
``keys.sequences()`` of the keys that hold jobs. The list's head is the job whose turn it is
(queued, scheduled, started, or waiting for a retry); every other job waits in RQ's DEFERRED
state, in its queue's deferred registry, so ``rq info``, rq-dashboard and ``GET /api/v1/queues``
count it and the job view shows it ``PENDING`` with its place. A waiting job costs no worker
time: no worker sees it until it is pushed onto its queue.

- :func:`join_on` (the enqueue): in the same MULTI as the job's hash, one script appends the id and,
  when it is the head, puts it on its queue (or in the scheduled registry for a later start).
  Concurrent enqueuers of one key are ordered by that script: the order of the list is the order
  of the acknowledgements.
- :func:`settle_on` / :func:`settle` (the hand-on): one script drops ended jobs (finished, failed,
  stopped, canceled, gone) from the list and pushes the next one onto its queue. It reads the
  state, so it is safe anywhere and any number of times: app/core/outcomes.py queues it in the
  same transaction as a job's end, and the sweep (:func:`settle_all`) runs it for every key, so
  a process that died between an end and its hand-on leaves nothing stuck.

No RQ ``depends_on``: a dependency chain would need the tail of the sequence anyway, our revoke
revokes dependents (a sequence must go on), the success fast path is held back for jobs with
dependents, and rq-dashboard 0.9's job page fails (500) for a job with ``depends_on``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis import Redis
from redis.exceptions import NoScriptError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry

from app.core import compat
from app.foundation import clock, defaults, keys
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta

#: The job-hash field holding a sequence job's own start time (``countdown``/``eta``), read when
#: its turn comes: it then waits in the scheduled registry until that time.
START_AT = "tasklane_sequence_at"

# ARGV[1..9]: the common part (see _common_args); the scripts' own arguments follow.
_SETTLE_FUNCTION = (
    """
local function ended(status)
  return status == false or status == 'finished' or status == 'failed' or status == 'stopped'
    or status == 'canceled'
end
local function settle(seq)
  while true do
    local head = redis.call('LINDEX', seq, 0)
    if not head then
      redis.call('SREM', ARGV[8], seq)
      return false
    end
    local f = redis.call('HMGET', ARGV[1] .. head, 'status', 'origin', '"""
    + START_AT
    + """')
    if f[1] == 'deferred' and f[2] then
      local origin = f[2]
      redis.call('ZREM', ARGV[3] .. origin, head)
      local at = tonumber(f[3])
      if at and at > tonumber(ARGV[9]) then
        redis.call('HSET', ARGV[1] .. head, 'status', 'scheduled')
        redis.call('ZADD', ARGV[4] .. origin, at, head)
      else
        local queue = ARGV[2] .. origin
        redis.call('HSET', ARGV[1] .. head, 'status', 'queued')
        redis.call('RPUSH', queue, head)
        redis.call('SADD', ARGV[7], queue)
        local bell = ARGV[5] .. origin
        redis.call('RPUSH', bell, 1)
        redis.call('LTRIM', bell, -tonumber(ARGV[6]), -1)
      end
      return head
    elseif ended(f[1]) then
      redis.call('LPOP', seq)
    else
      return false
    end
  end
end
"""
)

# KEYS[1]: the sequence; ARGV[10]: the job id (its hash already written, status deferred);
# ARGV[11]: its queue. Returns how many jobs are ahead of it.
_JOIN = LuaScript(
    _SETTLE_FUNCTION
    + """
redis.call('RPUSH', KEYS[1], ARGV[10])
redis.call('SADD', ARGV[8], KEYS[1])
redis.call('ZADD', ARGV[3] .. ARGV[11], ARGV[9], ARGV[10])
settle(KEYS[1])
return redis.call('LPOS', KEYS[1], ARGV[10])
"""
)

# KEYS: sequences; ARGV[10]: a job that may have ended ('' for none): taken out of them if it has.
# Returns the ids pushed onto their queues.
_SETTLE = LuaScript(
    _SETTLE_FUNCTION
    + """
local moved = {}
for _, seq in ipairs(KEYS) do
  if ARGV[10] ~= '' and ended(redis.call('HGET', ARGV[1] .. ARGV[10], 'status')) then
    redis.call('LREM', seq, 0, ARGV[10])
  end
  local next_id = settle(seq)
  if next_id then table.insert(moved, next_id) end
end
return moved
"""
)


def _common_args() -> list[Any]:
    return [
        Job.redis_job_namespace_prefix,
        Queue.redis_queue_namespace_prefix,
        DeferredJobRegistry.key_template.format(""),
        ScheduledJobRegistry.key_template.format(""),
        keys.doorbell(""),
        defaults.DOORBELL_CAP,
        Queue.redis_queues_keys,
        keys.sequences(),
        repr(clock.time()),
    ]


def key_of(job: Job) -> str | None:
    """The sequence ``job`` belongs to (its ``sequence`` key), or None."""
    value = job.meta.get(Meta.SEQUENCE)
    return None if value is None else str(value)


def join_on(pipe: Any, job: Job, sequence: str, run_at: datetime | None) -> None:
    """Queue on ``pipe`` (a MULTI) the job's hash, DEFERRED, and its place at the end of ``sequence``:
    when no job of the sequence is waiting or running, it goes on its queue (or, with ``run_at``
    in the future, into the scheduled registry) in the same step. Send with :func:`execute`."""
    job.meta[Meta.SEQUENCE] = sequence
    compat.set_job_status(job, JobStatus.DEFERRED)
    job.enqueued_at = clock.now()
    job.save(pipeline=pipe)
    if run_at is not None:
        pipe.hset(job.key, START_AT, repr(run_at.timestamp()))
    _JOIN.queue(pipe, keys=[keys.sequence(sequence)], args=[*_common_args(), job.id, job.origin])


def execute(pipe: Any, connection: Redis, job: Job, sequence: str) -> list[Any]:
    """Send ``pipe`` (holding :func:`join_on`'s writes); a server that lacked the script (restarted,
    flushed) has it loaded and the join run alone after the hash it already wrote."""
    try:
        return list(pipe.execute())
    except NoScriptError:
        _JOIN.load(connection)
        _JOIN(connection, keys=[keys.sequence(sequence)], args=[*_common_args(), job.id, job.origin])
        return []


def execute_many(pipe: Any, connection: Redis, jobs: Sequence[Job]) -> None:
    """Send ``pipe`` holding several jobs' :func:`join_on` (a batch); as :func:`execute`, the joins
    run again, in order, on a server that lacked the script."""
    try:
        pipe.execute()
    except NoScriptError:
        _JOIN.load(connection)
        for job in jobs:
            if (sequence := key_of(job)) is not None:
                _JOIN(connection, keys=[keys.sequence(sequence)], args=[*_common_args(), job.id, job.origin])


def settle_on(pipe: Any, job: Job, load_first: bool = False) -> bool:
    """Queue the hand-on after ``job``'s end on ``pipe`` (a MULTI, after the end's writes): if the job
    has ended, it leaves its sequence and the next job goes on its queue. False (nothing queued)
    for a job in no sequence. Harmless when the job did not end (a retry, a requeue).
    ``load_first``: for a transaction whose answers are not ours to read (RQ's), the script is
    loaded first (one round trip), so that it cannot fail there for want of it."""
    sequence = key_of(job)
    if sequence is None:
        return False
    if load_first:
        _SETTLE.load(job.connection)
    _SETTLE.queue(pipe, keys=[keys.sequence(sequence)], args=[*_common_args(), job.id])
    return True


def settled(connection: Redis, job: Job, answers: Sequence[Any]) -> None:
    """Check the answers of a pipeline sent with ``raise_on_error=False`` whose last command is
    :func:`settle_on`'s: an error of the others is raised; a server without the script gets it
    loaded and the hand-on is run now."""
    *others, handed = answers
    for answer in others:
        if isinstance(answer, Exception):
            raise answer
    if isinstance(handed, NoScriptError):
        _SETTLE.load(connection)
        settle(connection, job)
    elif isinstance(handed, Exception):
        raise handed


def settle(connection: Redis, job: Job) -> list[str]:
    """The hand-on after ``job`` ended, on its own (see :func:`settle_on`); the ids pushed on."""
    sequence = key_of(job)
    if sequence is None:
        return []
    return _texts(_SETTLE(connection, keys=[keys.sequence(sequence)], args=[*_common_args(), job.id]))


def settle_keys(connection: Redis, sequence_keys: Sequence[str]) -> list[str]:
    """Settle the named sequences (Redis keys): ended heads dropped, the next job pushed on."""
    if not sequence_keys:
        return []
    return _texts(_SETTLE(connection, keys=list(sequence_keys), args=[*_common_args(), ""]))


def settle_all(connection: Redis, batch: int = 200) -> list[str]:
    """The sweep's part: settle every sequence that holds jobs (one script per ``batch`` keys). A job
    whose end was written by a process that died before its hand-on, a job deleted or lost, never
    holds its sequence past the next sweep. Returns the ids pushed on."""
    moved: list[str] = []
    cursor = 0
    while True:
        cursor, found = connection.sscan(keys.sequences(), cursor, count=batch)
        moved += settle_keys(connection, _texts(found))
        if cursor == 0:
            return moved


def ahead(connection: Redis, job: Job) -> int | None:
    """How many jobs of its sequence are before ``job`` (0: its turn), or None when it is in none."""
    sequence = key_of(job)
    if sequence is None:
        return None
    place = connection.lpos(keys.sequence(sequence), job.id)
    return None if place is None else int(place)  # type: ignore[arg-type]


def _texts(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values or []]
