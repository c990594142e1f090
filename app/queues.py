"""The Redis and queue layer: connections, the JSON job class, queue names.

RQ pickles by default, so anyone able to write to Redis could run code in a worker.
Everything here fixes RQ's JSONSerializer, and the job class only ever resolves
functions declared in the task registry: a forged job naming ``os.system`` fails
instead of running.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis_sentinel_url import connect as _sentinel_connect
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app import defaults, keys

if TYPE_CHECKING:
    from redis.client import Pipeline

    from app.registry import TaskSpec


class QueueName(StrEnum):
    """The queues, highest priority first."""

    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


#: Job meta keys the platform owns.
META_NO_RETRY = "no_retry"
META_REVOKED = "revoked"
META_RETRY_COUNTDOWN = "retry_countdown"
META_NEXT_RETRY_AT = "next_retry_at"


class UnknownTaskError(LookupError):
    """A job names a function that is not in the task registry."""


class JsonJob(Job):
    """An RQ job that is always JSON and only runs registered tasks."""

    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Any = None
    ) -> None:
        super().__init__(id, connection=connection, serializer=JSONSerializer)

    @property
    def func(self) -> Any:
        """The registered task function; never an arbitrary import."""
        from app.registry import REGISTRY

        name = self.func_name
        if name is None:
            return None
        task = REGISTRY.by_path(name)
        if task is None:
            raise UnknownTaskError(f"{name!r} is not a registered task; refusing to run it")
        return task.func

    def _execute(self) -> Any:
        from app.execution import execute

        return execute(self)

    @property
    def should_retry(self) -> bool:
        """RQ's retry budget, unless the task's policy or a revoke says this failure is final."""
        if self.meta.get(META_NO_RETRY) or self.meta.get(META_REVOKED):
            return False
        return super().should_retry

    def retry(self, queue: Queue, pipeline: Pipeline) -> None:
        """Schedule the next attempt after the task's back-off (with full jitter) or its own countdown.

        RQ's Retry knows only a fixed list of intervals; the delay is decided here instead,
        for failures in the task, for killed work horses and for abandoned jobs alike.
        """
        from app.registry import REGISTRY

        assert self.retries_left
        countdown = self.meta.pop(META_RETRY_COUNTDOWN, None)
        if countdown is None:
            spec = REGISTRY.by_path(self.func_name or "")
            attempt = int(self.meta.get("max_retries", 0)) - self.retries_left + 1
            countdown = spec.retry.delay(attempt, random.random()) if spec else 1.0
        self.retries_left -= 1
        from app.dispatch import whole_second_after

        when = whole_second_after(datetime.now(UTC) + timedelta(seconds=float(countdown)))
        self.meta[META_NEXT_RETRY_AT] = when.isoformat().replace("+00:00", "Z")
        self._status = JobStatus.SCHEDULED
        queue.schedule_job(self, when, pipeline=pipeline)


class JsonQueue(Queue):
    """A queue of JSON jobs, with a dequeue that loses nothing on any number of queues."""

    job_class = JsonJob

    def __init__(self, name: str = "default", connection: Redis | None = None, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = JsonJob
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
        """
        from rq.exceptions import DequeueTimeout

        queue_list = list(queues)
        queue_keys = [q.key for q in queue_list]
        bells = [keys.doorbell(q.name) for q in queue_list]
        waited = 0.0
        by_key = {q.key: q for q in queue_list}
        while True:
            found = _move_first_with_data(connection, queue_keys)
            if found is not None:
                queue_key, job_id, fields = found
                if not fields:  # the job's hash expired or was deleted: drop the stale id
                    connection.lrem(f"{queue_key}:intermediate", 1, job_id)
                    continue
                job = (job_class or JsonJob)(job_id, connection=connection)
                job.restore(fields)
                return job, by_key[queue_key]
            if timeout is None:
                return None
            if waited >= timeout:
                raise DequeueTimeout(timeout, queue_keys)
            step = min(defaults.DOORBELL_WAIT, timeout - waited)
            if connection.blpop(bells, max(step, 0.01)) is None:
                waited += step


def ring_doorbell(pipe: Any, queue_name: str) -> None:
    """Wake one idle worker of ``queue_name`` (the list is capped; a lost ring costs latency only)."""
    bell = keys.doorbell(queue_name)
    pipe.rpush(bell, 1)
    pipe.ltrim(bell, -defaults.DOORBELL_CAP, -1)


# Move the head of the first non-empty list to its ":intermediate" list and read the job's
# hash in the same call; returns {key, id, field, value, ...} (no fields: the job is gone).
# ARGV[1] is the job key prefix.
_MOVE_FIRST = """
for _, key in ipairs(KEYS) do
  local id = redis.call('LMOVE', key, key .. ':intermediate', 'LEFT', 'RIGHT')
  if id then
    local out = {key, id}
    for _, v in ipairs(redis.call('HGETALL', ARGV[1] .. id)) do table.insert(out, v) end
    return out
  end
end
return false
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _move_first_with_data(
    connection: Redis, queue_keys: list[str]
) -> tuple[str, str, dict[bytes, Any]] | None:
    script = getattr(connection, "_tasklane_move_first", None)
    if script is None:
        script = connection.register_script(_MOVE_FIRST)
        connection._tasklane_move_first = script  # type: ignore[attr-defined]
    result = script(keys=queue_keys, args=[JsonJob.redis_job_namespace_prefix])
    if not result:
        return None
    key, job_id, *flat = result
    fields = {_text(flat[n]).encode(): flat[n + 1] for n in range(0, len(flat), 2)}
    return _text(key), _text(job_id), fields


def _move_first(connection: Redis, queue_keys: list[str]) -> tuple[str, str] | None:
    """Take the first job id of the first non-empty queue into its intermediate list."""
    found = _move_first_with_data(connection, queue_keys)
    return (found[0], found[1]) if found else None


def task_spec(job: Job) -> TaskSpec | None:
    """The job's registered task, or None when it names none or is not JSON (it fails when run)."""
    from app.registry import REGISTRY

    try:
        return REGISTRY.by_path(job.func_name or "")
    except DeserializationError:
        return None


def connect(url: str, timeout: float | None = defaults.REDIS_SOCKET_TIMEOUT) -> Redis:
    """A Redis client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URLs."""
    options: dict[str, Any] = {"health_check_interval": 30}
    if timeout is not None:
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    _, client = _sentinel_connect(url, client_class=Redis, client_options=options)
    if client is None:
        raise ValueError("a redis+sentinel:// URL must name a service (redis+sentinel://host:port/service)")
    return client


def get_queue(name: str, connection: Redis) -> JsonQueue:
    """The JSON queue called ``name``."""
    return JsonQueue(name, connection=connection)


def all_queues(connection: Redis) -> list[JsonQueue]:
    """The service's queues in priority order."""
    return [get_queue(q.value, connection) for q in QueueName]


def fetch_job(job_id: str, connection: Redis) -> JsonJob:
    """Fetch a job as JSON (raises rq.exceptions.NoSuchJobError)."""
    return JsonJob.fetch(job_id, connection=connection)  # type: ignore[return-value]
