"""Enqueueing: idempotency keys and unique tasks decided in one Redis transaction."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

import tests.jobs  # noqa: F401  (registers the test-only tasks)
from app.catalogue.registry import REGISTRY
from app.core.dispatch import (
    EnqueueOptions,
    Idempotency,
    IdempotencyConflict,
    JobExistsError,
    digest,
    enqueue,
)

TTL = {"default_result_ttl": 60, "failure_ttl": 60}


@pytest.fixture
def real_redis(redis_url: str) -> Any:
    return redis.Redis.from_url(redis_url)


def _add(connection: Any, x: int, idem: Idempotency | None = None) -> Any:
    spec = REGISTRY.get("add")
    assert spec is not None
    return enqueue(spec, spec.validate({"x": x, "y": 1}), connection, idempotency=idem, **TTL)


def test_racing_requests_with_one_key_create_one_job(redis_url: str) -> None:
    """It gives every racing request with the same key and body the same single job."""
    ids: list[str] = []
    barrier = threading.Barrier(12)

    def go() -> None:
        connection = redis.Redis.from_url(redis_url)
        barrier.wait()
        ids.append(_add(connection, 1, Idempotency("caller", "key-1", digest(["add", 1]))).id)

    threads = [threading.Thread(target=go) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 12
    assert len(set(ids)) == 1
    assert redis.Redis.from_url(redis_url).llen("rq:queue:default") == 1


def test_key_reused_with_another_body_conflicts(real_redis: Any) -> None:
    """It refuses a key reused with a different request."""
    _add(real_redis, 1, Idempotency("caller", "key-2", "digest-a"))
    with pytest.raises(IdempotencyConflict):
        _add(real_redis, 2, Idempotency("caller", "key-2", "digest-b"))


def test_keys_are_per_caller(real_redis: Any) -> None:
    """It keeps one caller's keys apart from another's."""
    first = _add(real_redis, 1, Idempotency("alice", "same", "d"))
    second = _add(real_redis, 1, Idempotency("bob", "same", "d"))
    assert first.id != second.id


def test_unique_task_returns_the_waiting_job(real_redis: Any) -> None:
    """It returns the first job for identical arguments while it waits, a new one for others."""
    spec = REGISTRY.get("unique_stamp")
    assert spec is not None
    first = enqueue(spec, spec.validate({"path": "p", "seconds": 0}), real_redis, **TTL)
    again = enqueue(spec, spec.validate({"path": "p", "seconds": 0}), real_redis, **TTL)
    other = enqueue(spec, spec.validate({"path": "q", "seconds": 0}), real_redis, **TTL)
    assert again.id == first.id
    assert other.id != first.id


def test_explicit_job_id_is_never_overwritten(real_redis: Any) -> None:
    """It raises JobExistsError for a taken job id, with and without an idempotency key."""
    spec = REGISTRY.get("add")
    assert spec is not None
    args = spec.validate({"x": 1, "y": 1})
    enqueue(spec, args, real_redis, EnqueueOptions(job_id="fixed"), **TTL)
    with pytest.raises(JobExistsError):
        enqueue(spec, args, real_redis, EnqueueOptions(job_id="fixed"), **TTL)
    with pytest.raises(JobExistsError):
        enqueue(
            spec,
            args,
            real_redis,
            EnqueueOptions(job_id="fixed"),
            idempotency=Idempotency("c", "k", "d"),
            **TTL,
        )


@pytest.mark.parametrize("countdown", [None, 30])
def test_a_concurrency_capped_task_takes_an_idempotency_key(real_redis: Any, countdown: int | None) -> None:
    """A task with a concurrency cap enqueues under an Idempotency-Key (RQ refuses a rate-limited
    job inside a pipeline: this was a 500, found by schemathesis), and the key still gives one job."""
    spec = REGISTRY.get("one_at_a_time")
    assert spec is not None and spec.concurrency
    args = spec.validate({"path": "/tmp/x", "seconds": 0.1})
    options = EnqueueOptions(countdown=countdown)
    idem = Idempotency("caller", "capped-1", digest(["one_at_a_time", 1]))
    first = enqueue(spec, args, real_redis, idempotency=idem, options=options, **TTL)
    again = enqueue(spec, args, real_redis, idempotency=idem, options=options, **TTL)
    assert again.id == first.id
    assert first.get_status() in ("queued", "scheduled")
