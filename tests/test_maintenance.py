"""Registry maintenance: orphans requeued (not failed), stuck dequeues rescued, nothing left behind."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from rq.executions import Execution
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation import defaults, keys, outages
from app.foundation.meta import Meta
from app.processes import maintenance
from app.processes.maintenance import rescue_abandoned, rescue_intermediate, sweep


def _job(app: Flask, task: str = "add", **args: object) -> JsonJob:
    spec = REGISTRY.get(task)
    assert spec is not None
    redis = app.extensions["tasklane"].redis
    job = enqueue(
        spec, spec.validate(args or {"x": 1, "y": 2}), redis, default_result_ttl=60, failure_ttl=600
    )
    return job  # type: ignore[return-value]


def _start_as_a_worker_that_dies(queue: JsonQueue, job: JsonJob) -> None:
    """Dequeue ``job`` and mark it started with a heartbeat that has already expired."""
    redis = queue.connection
    redis.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    with redis.pipeline() as pipe:
        execution = Execution.create(job, ttl=1, pipeline=pipe)
        job.prepare_for_execution("dead-worker", pipeline=pipe)
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.execute()
    registry = StartedJobRegistry(queue.name, connection=redis)
    redis.zadd(registry.key, {execution.composite_key: time.time() - 5})


def test_an_orphaned_job_is_requeued_without_spending_a_retry(app: Flask) -> None:
    """A job whose worker died goes back to the head of its queue; its retries are untouched."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    job = _job(app)
    _start_as_a_worker_that_dies(queue, job)

    assert rescue_abandoned(queue) == 1
    job = JsonJob.fetch(job.id, connection=redis)  # type: ignore[assignment]
    assert job.get_status() == JobStatus.QUEUED
    assert queue.get_job_ids() == [job.id]
    assert job.meta[Meta.ORPHANED] == 1
    assert job.meta[Meta.ATTEMPTS][-1]["type"] == "WorkerLostError"
    assert StartedJobRegistry("default", connection=redis).count == 0


def test_a_job_that_keeps_killing_its_worker_fails_as_a_poison_job(app: Flask) -> None:
    """Past MAX_ORPHAN_REQUEUES deaths the job fails for good, with that cause, and leaves the queue."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    job = _job(app)
    for _ in range(defaults.MAX_ORPHAN_REQUEUES):
        _start_as_a_worker_that_dies(queue, job)
        assert rescue_abandoned(queue) == 1
    _start_as_a_worker_that_dies(queue, job)
    assert rescue_abandoned(queue) == 0

    job = JsonJob.fetch(job.id, connection=redis)  # type: ignore[assignment]
    assert job.get_status() == JobStatus.FAILED
    assert job.meta[Meta.ERROR]["type"] == "WorkerLostError"
    assert "poison" in job.meta[Meta.ERROR]["message"]
    assert queue.count == 0
    assert job.id in queue.failed_job_registry.get_job_ids()


def test_rescuing_stuck_dequeues_leaves_no_bookkeeping_behind(app: Flask) -> None:
    """A dequeued-never-started job is requeued; finished jobs are dropped from the list; RQ's
    per-job first_seen keys are never written and the sweep's own record is pruned."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    stuck, finished = _job(app), _job(app)
    redis.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    redis.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    redis.hset(JsonJob.key_for(finished.id), "status", JobStatus.FINISHED.value)

    assert rescue_intermediate(queue, older_than=0) == 0  # first sight: noted, not yet requeued
    assert redis.lrange(queue.intermediate_queue_key, 0, -1) == [stuck.id.encode()]
    assert rescue_intermediate(queue, older_than=0) == 1
    assert queue.get_job_ids() == [stuck.id]
    assert redis.llen(queue.intermediate_queue_key) == 0
    assert not redis.keys("*first_seen*")
    assert redis.hlen(keys.intermediate_seen("default")) == 0


def test_no_run_is_judged_by_its_lease_just_after_redis_comes_back(
    app: Flask, manual_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease that ran out while Redis was away (restarted from its append-only file, or out of
    reach) says nothing about its worker: for OUTAGE_GRACE seconds after Redis came back the sweep
    leaves it to the worker to renew it or record its run (found trying it as a new user: a job that
    had succeeded was requeued as 'worker died' and run again after a 31 s outage)."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    job = _job(app)
    _start_as_a_worker_that_dies(queue, job)
    outage = outages.Outage()
    monkeypatch.setattr(outages, "OUTAGE", outage)

    assert maintenance.redis_uptime(redis) >= 0
    # Redis just (re)started: its uptime is below the grace.
    monkeypatch.setattr(maintenance, "redis_uptime", lambda _connection: defaults.OUTAGE_GRACE - 1)
    sweep(redis)
    assert JsonJob.fetch(job.id, connection=redis).get_status() == JobStatus.STARTED

    # Redis has run for long, but this process just saw it again after an outage.
    monkeypatch.setattr(maintenance, "redis_uptime", lambda _connection: 3600.0)
    outage.failed(ConnectionError("gone"))
    outage.recovered()
    sweep(redis)
    assert JsonJob.fetch(job.id, connection=redis).get_status() == JobStatus.STARTED
    manual_clock.advance(defaults.OUTAGE_GRACE - 1)
    sweep(redis)
    assert JsonJob.fetch(job.id, connection=redis).get_status() == JobStatus.STARTED

    # The grace is over: a lease still expired is a dead worker's.
    manual_clock.advance(1)
    sweep(redis)
    assert JsonJob.fetch(job.id, connection=redis).get_status() == JobStatus.QUEUED
    assert queue.get_job_ids() == [job.id]
