"""The Redis and queue layer: connections, the JSON job class, queue names.

RQ pickles by default, so anyone able to write to Redis could run code in a worker.
Everything here fixes RQ's JSONSerializer, and the job class only ever resolves
functions declared in the task registry: a forged job naming ``os.system`` fails
instead of running.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from redis import Redis
from redis_sentinel_url import connect as _sentinel_connect
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from app import defaults


class QueueName(StrEnum):
    """The queues, highest priority first."""

    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


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


class JsonQueue(Queue):
    """A queue of JSON jobs."""

    job_class = JsonJob

    def __init__(self, name: str = "default", connection: Redis | None = None, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = JsonJob
        super().__init__(name, connection=connection, **kwargs)


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


class JsonWorker(Worker):
    """RQ's forking worker (one work horse per job), always JSON, only registered tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = kwargs.get("job_class") or JsonJob
        kwargs["queue_class"] = kwargs.get("queue_class") or JsonQueue
        super().__init__(*args, **kwargs)
