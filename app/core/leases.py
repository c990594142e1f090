"""A started job's lease: its run's entry in the queue's started registry.

RQ records each run of a job (an execution) in the started registry, scored with the time
its heartbeat expires; the worker running it pushes that time on while it runs. The entry
is the run's lease. Whoever records the run's outcome (the worker that ran it, or a sweep
that found its heartbeat expired) removes the entry in the same atomic step as the
outcome's writes, and only while the entry is still there (for a sweep: still expired).
So a run's outcome is recorded once, even when a Redis outage left a worker and a sweep
each believing the job was theirs to settle; the one that finds the lease gone drops what
it meant to write (the job has been handed to another run, or was settled already).

Writes are recorded with RQ's own methods on an unsent pipeline (:func:`recorder`) and
applied by one Lua call (:func:`apply`). A run starts the same way (:func:`claim`): its
start is written only if the job is still in the intermediate list its worker moved it
to, so a job the sweep has put back meanwhile is not started twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.commands.core import CoreCommands
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job

from app.core import compat
from app.foundation import clock
from app.foundation.lua import LuaScript

#: What :func:`apply` did: the writes were applied, held back by a non-empty set, or the lease was gone.
APPLIED, BLOCKED, LOST = 1, 0, -1


@dataclass(frozen=True)
class Lease:
    """Entries of a started registry (``key``) that a writer must still find there.

    With ``expired_by``, only entries whose score (heartbeat expiry) is at most that
    timestamp count: a sweep settles a run only while its worker has not renewed it.
    """

    key: str
    members: tuple[str | bytes, ...]
    expired_by: float | None = None

    @classmethod
    def of(cls, job: Job, execution: Any) -> Lease:
        """The lease of ``execution``, a run of ``job``."""
        return cls(job.started_job_registry.key, (execution.composite_key,))


def of_run(job: Job, execution: Any) -> Lease | None:
    """The lease of ``execution`` (a run of ``job``), or None when no run was started."""
    return None if execution is None else Lease.of(job, execution)


def of_started(connection: Redis, job: Job) -> Lease | None:
    """The lease of whatever run of ``job`` its queue's started registry holds now (None: no run).

    For a process that settles a run it did not start (the supervisor, after the worker
    running it died): every entry of the job counts, whoever wrote it.
    """
    key = job.started_job_registry.key
    members = started_members(connection, key, job.id)
    return Lease(key, tuple(members)) if members else None


def started_members(connection: Redis, key: str, job_id: str) -> list[bytes]:
    """The started registry's ``<job_id>:<execution_id>`` members of one job."""
    prefix = f"{job_id}:".encode()
    members: list[bytes] = connection.zrange(key, 0, -1)  # type: ignore[assignment]
    return [m for m in members if m == job_id.encode() or m.startswith(prefix)]


# KEYS[1]: the started registry; KEYS[2], if given: a set that must be empty (the job's dependents).
# ARGV[1]: the highest score an entry may have to count ('' for any); ARGV[2]: the number m of
# entries; ARGV[3 .. 2+m]: the entries; then the writes: n, command, arg..., n, command, ...
# Returns 1 (entries removed, writes applied), 0 (KEYS[2] has members) or -1 (no entry held).
_APPLY = LuaScript(
    """
local m = tonumber(ARGV[2])
local held = {}
for i = 3, 2 + m do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and (ARGV[1] == '' or tonumber(score) <= tonumber(ARGV[1])) then held[#held + 1] = ARGV[i] end
end
if #held == 0 then return -1 end
if KEYS[2] and redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(held))
local i = 3 + m
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""
)

# KEYS[1]: the started registry; ARGV[1]: the entry; ARGV[2]: its new score. 1 if it was held.
_RENEW = LuaScript(
    """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
"""
)


# KEYS[1]: a queue's intermediate list; ARGV[1]: the job id; then the writes (as for _APPLY).
# Returns 1 when the id was still in the list (removed, writes applied), else 0.
_CLAIM = LuaScript(
    """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""
)


# Take back a claim made ahead (app/core/queues.py's move with a claim) of a job that never ran.
# KEYS: the started registry, the queue's intermediate list, the job's hash, the job's executions,
# the execution's hash, the worker's executions. ARGV: the job id, the execution id. Only while the
# run's entry is in the started registry and the job is still "started": the entry and the
# execution's records go, the job is "queued" again and back in the intermediate list, as a job
# moved only is (its started_at, worker_name and last_heartbeat stay, as on any requeue). 1 when
# taken back, else 0 (settled meanwhile: the sweep, or a second call).
_RELEASE_CLAIM = LuaScript(
    """
local run = ARGV[1] .. ':' .. ARGV[2]
if redis.call('HGET', KEYS[3], 'status') ~= 'started' then return 0 end
if redis.call('ZREM', KEYS[1], run) == 0 then return 0 end
redis.call('DEL', KEYS[5])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('SREM', KEYS[6], run)
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""
)


def release_claim(connection: Redis, queue: Any, job_id: str, execution_id: str, worker_name: str) -> bool:
    """Take back the claim made ahead for ``job_id`` (run ``execution_id`` of ``worker_name``),
    which never ran: it waits in ``queue``'s intermediate list again, for a put-back or a set-aside
    (see :data:`_RELEASE_CLAIM`). False when the run was settled meanwhile."""
    job = Job(job_id, connection=connection)
    run = Execution(id=execution_id, job_id=job_id, connection=connection, worker_name=worker_name)
    keys = [
        queue.started_job_registry.key,
        queue.intermediate_queue_key,
        job.key,
        ExecutionRegistry(job_id=job_id, connection=connection).key,
        run.key,
        run.worker_executions_key,
    ]
    return bool(_RELEASE_CLAIM(connection, keys=keys, args=[job_id, execution_id]))


class Recorder(CoreCommands):
    """Where RQ's methods record a run's start or success for :func:`claim` or :func:`apply`: it
    takes redis-py's command methods (the same arguments as a pipeline's) and keeps the commands,
    without a pipeline's bookkeeping per command (about a tenth of a pooled child's CPU per job).
    Only for writes that are never sent as they are; :func:`recorder` is a real unsent pipeline."""

    _event_dispatcher: Any = None  # redis-py's, for commands that are sent; nothing is sent here

    def __init__(self) -> None:
        self.command_stack: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **options: Any) -> Recorder:
        self.command_stack.append((args, options))
        return self


def light_recorder() -> Any:
    """A :class:`Recorder` (typed as the pipeline RQ's methods take)."""
    return Recorder()


def recorder(connection: Redis) -> Any:
    """An unsent pipeline to record writes on (see :func:`recorded`)."""
    return connection.pipeline(transaction=False)


def recorded(pipeline: Any) -> list[Any]:
    """The writes recorded on ``pipeline``, flattened for :func:`apply` or :func:`claim`; empties it."""
    try:
        return compat.pipeline_commands(pipeline)
    finally:
        if isinstance(pipeline, Recorder):
            pipeline.command_stack = []
        else:
            pipeline.reset()


def apply(connection: Redis, lease: Lease, writes: list[Any], unless_members_in: str | None = None) -> int:
    """Apply ``writes`` (see :func:`recorded`) and end ``lease``, atomically, if it is still held.

    With ``unless_members_in``, nothing is applied while that set has members (BLOCKED).
    Safe to repeat after a lost answer: a repeat finds the lease gone (LOST).
    """
    limit = "" if lease.expired_by is None else repr(float(lease.expired_by))
    keys = [lease.key] if unless_members_in is None else [lease.key, unless_members_in]
    return int(_APPLY(connection, keys=keys, args=[limit, len(lease.members), *lease.members, *writes]))


def apply_on(pipeline: Any, lease: Lease, writes: list[Any], unless_members_in: str | None = None) -> None:
    """:func:`apply`, queued on ``pipeline`` (sent with other commands in one round trip); its
    answer, in the pipeline's results, is what :func:`apply` returns."""
    limit = "" if lease.expired_by is None else repr(float(lease.expired_by))
    keys = [lease.key] if unless_members_in is None else [lease.key, unless_members_in]
    _APPLY.queue(pipeline, keys=keys, args=[limit, len(lease.members), *lease.members, *writes])


def load_apply(connection: Redis) -> None:
    """Load :func:`apply_on`'s script (after a NoScriptError: a restarted or flushed server)."""
    _APPLY.load(connection)


def claim(connection: Redis, intermediate_key: str, job_id: str, writes: list[Any]) -> bool:
    """Start a run: apply ``writes`` only if the job is still in the intermediate list its worker
    dequeued it into (removing it), so that a job the sweep already put back is not started too."""
    return bool(_CLAIM(connection, keys=[intermediate_key], args=[job_id, *writes]))


def renew(connection: Redis, lease: Lease, ttl: float) -> bool:
    """Push the lease's (first) entry ``ttl`` s into the future if it is still held; False if it is gone.

    After a renewal a sweep leaves the run alone for ``ttl`` s, so its worker may record
    the outcome with RQ's own (unconditional) writes meanwhile.
    """
    member = lease.members[0]
    return bool(_RENEW(connection, keys=[lease.key], args=[member, clock.time() + ttl]))


def held(connection: Redis, lease: Lease) -> bool:
    """True while any of the lease's entries is in the started registry."""
    return any(connection.zscore(lease.key, member) is not None for member in lease.members)
