"""A run's lease decides who records its outcome: the worker, or a sweep, never both.

The first tests drive the lease functions against the session's real Redis; the later
ones run real workers in this process with one Redis write made to fail (as if Redis went
away at that moment), and check that the job still ends once, right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import worker as rq_worker
from rq.executions import Execution
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import current_timestamp, now

from app.catalogue.registry import REGISTRY
from app.core import leases, outcomes
from app.core.dispatch import enqueue
from app.core.execution import ExecutingJob
from app.core.leases import Lease
from app.core.queues import JsonJob, JsonQueue, _move_first_with_data
from app.foundation.meta import Meta
from app.processes import maintenance
from app.processes.workers import JsonInlineWorker, JsonWorker

TTL = {"default_result_ttl": 600, "failure_ttl": 600}


@pytest.fixture
def conn(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _queued(conn: redis.Redis, task: str, **args: Any) -> JsonJob:
    spec = REGISTRY.get(task)
    assert spec is not None
    return enqueue(spec, spec.validate(args), conn, **TTL)  # type: ignore[return-value]


def _started(conn: redis.Redis, task: str = "add", **args: Any) -> tuple[JsonJob, Execution, JsonQueue]:
    """A job dequeued into the intermediate list and started by a claim, as a worker does."""
    job = _queued(conn, task, **(args or {"x": 1, "y": 2}))
    queue = JsonQueue(job.origin, connection=conn)
    assert _move_first_with_data(conn, [queue.key]) is not None
    pipe = leases.recorder(conn)
    execution = Execution.create(job, 20, pipeline=pipe, worker_name="w")
    job.prepare_for_execution("w", pipeline=pipe)
    assert leases.claim(conn, queue.intermediate_queue_key, job.id, leases.recorded(pipe))
    return job, execution, queue


def _expire(conn: redis.Redis, lease: Lease) -> None:
    """Make the lease's heartbeat expired, as when its worker stopped beating for a while."""
    conn.zadd(lease.key, {m: current_timestamp() - 5 for m in lease.members})


def test_a_claim_starts_a_dequeued_job_once(conn: redis.Redis) -> None:
    """It starts a job only while it is in the intermediate list: a second claim (or one after
    the sweep put the job back) writes nothing."""
    job, execution, queue = _started(conn)
    assert JsonJob.fetch(job.id, connection=conn).get_status() == JobStatus.STARTED
    assert leases.held(conn, Lease.of(job, execution))
    pipe = leases.recorder(conn)
    pipe.hset(job.key, "status", "bogus")
    assert not leases.claim(conn, queue.intermediate_queue_key, job.id, leases.recorded(pipe))
    assert JsonJob.fetch(job.id, connection=conn).get_status() == JobStatus.STARTED


def test_an_outcome_applies_once_and_ends_the_lease(conn: redis.Redis) -> None:
    """It applies recorded writes with the end of the lease; a repeat (a lost answer) finds it gone."""
    job, execution, _ = _started(conn)
    lease = Lease.of(job, execution)
    pipe = leases.recorder(conn)
    pipe.hincrby("counter", "n", 1)
    writes = leases.recorded(pipe)
    assert leases.apply(conn, lease, writes) == leases.APPLIED
    assert leases.apply(conn, lease, writes) == leases.LOST
    assert conn.hget("counter", "n") == b"1"
    assert not leases.held(conn, lease)


def test_a_non_empty_set_blocks_the_writes_and_keeps_the_lease(conn: redis.Redis) -> None:
    """It leaves everything as it was while the named set (a job's dependents) has members."""
    job, execution, _ = _started(conn)
    lease = Lease.of(job, execution)
    conn.sadd("dependents", "other")
    pipe = leases.recorder(conn)
    pipe.set("written", 1)
    assert leases.apply(conn, lease, leases.recorded(pipe), unless_members_in="dependents") == leases.BLOCKED
    assert leases.held(conn, lease) and not conn.exists("written")


def test_a_sweep_takes_only_an_expired_lease(conn: redis.Redis) -> None:
    """It requeues a run whose heartbeat expired, but not one its worker renewed meanwhile."""
    job, execution, queue = _started(conn)
    lease = Lease.of(job, execution)
    _expire(conn, lease)
    assert leases.renew(conn, lease, 20)  # the worker is back before the sweep acts
    assert maintenance.rescue_abandoned(queue) == 0
    assert JsonJob.fetch(job.id, connection=conn).get_status() == JobStatus.STARTED
    _expire(conn, lease)
    assert maintenance.rescue_abandoned(queue) == 1
    assert JsonJob.fetch(job.id, connection=conn).get_status() == JobStatus.QUEUED
    assert not leases.renew(conn, lease, 20)  # gone: the worker must drop its outcome


def test_a_late_outcome_of_a_swept_run_is_dropped(app: Flask, conn: redis.Redis) -> None:
    """It records nothing for a run whose lease a sweep took (the job is queued again, to run
    once more): no success result, no finished registry entry."""
    job, execution, queue = _started(conn)
    _expire(conn, Lease.of(job, execution))
    assert maintenance.rescue_abandoned(queue) == 1
    worker = JsonInlineWorker([queue], connection=conn)
    job.started_at = job.ended_at = job.started_at or now()
    job._result = 3
    worker.handle_job_success(job, queue, queue.started_job_registry, execution)
    assert JsonJob.fetch(job.id, connection=conn).get_status() == JobStatus.QUEUED
    assert conn.xlen(f"rq:results:{job.id}") == 0
    assert job.id not in queue.finished_job_registry.get_job_ids()
    assert conn.lrange(queue.key, 0, -1) == [job.id.encode()]


def test_orphaned_with_a_lease_requeues_once(conn: redis.Redis) -> None:
    """It puts a run back once, however many parties try (the worker and a sweep, say)."""
    job, execution, queue = _started(conn)
    lease = Lease.of(job, execution)
    assert outcomes.orphaned(job, queue, lease=lease, cause=outcomes.OUTCOME_LOST)
    again = JsonJob.fetch(job.id, connection=conn)
    assert not outcomes.orphaned(again, queue, lease=lease)
    assert conn.lrange(queue.key, 0, -1) == [job.id.encode()]
    attempts = JsonJob.fetch(job.id, connection=conn).meta[Meta.ATTEMPTS]
    assert [a["type"] for a in attempts] == ["RedisUnavailable"]


# --- workers whose Redis write fails at a chosen moment --------------------------------------------


def _fail_once(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, marker: Path | None = None, landed: bool = False
) -> None:
    """Make ``owner.name`` raise a Redis connection error on its first call, before the write
    reaches Redis or (``landed``) after it was applied, as when only the answer is lost. With
    ``marker``, "first" is per that file: a forked work horse sees it, not this process's memory."""
    original = getattr(owner, name)
    calls: list[int] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        first = not marker.exists() if marker is not None else not calls
        calls.append(1)
        if not first:
            return original(*args, **kwargs)
        if marker is not None:
            marker.write_text("failed once")
        if landed:
            original(*args, **kwargs)
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(owner, name, failing)


def _work(app: Flask, conn: redis.Redis, worker_class: type) -> Any:
    with app.app_context():
        worker = worker_class(
            [JsonQueue("default", connection=conn)],
            connection=conn,
            job_class=ExecutingJob,
            serializer=JSONSerializer,
        )
        worker.work(burst=True)
    return worker


@pytest.mark.parametrize("landed", [False, True], ids=["not-written", "answer-lost"])
def test_inline_success_written_after_redis_returns(
    app: Flask,
    conn: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    landed: bool,
) -> None:
    """An inline worker whose success write meets an outage waits for Redis and writes it then
    (or finds it written, when only the answer was lost): the job succeeds once (one result),
    without running again."""
    job = _queued(conn, "add", x=2, y=5)
    _fail_once(monkeypatch, leases, "apply", landed=landed)
    _work(app, conn, JsonInlineWorker)
    done = JsonJob.fetch(job.id, connection=conn)
    assert done.get_status() == JobStatus.FINISHED and done.return_value() == 7
    assert conn.xlen(f"rq:results:{job.id}") == 1
    assert not done.meta.get(Meta.ATTEMPTS)
    assert "Redis unreachable" in caplog.text and "Redis reachable again" in caplog.text


def test_inline_failure_not_written_is_run_again_and_recorded_once(
    app: Flask, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inline worker that could not write a failure puts the job back once Redis answers
    (not a failure of the job, no retry spent); the next run's failure is recorded, once."""
    job = _queued(conn, "always_fail", message="boom")
    _fail_once(monkeypatch, rq_worker.base.BaseWorker, "handle_job_failure")
    _work(app, conn, JsonInlineWorker)
    done = JsonJob.fetch(job.id, connection=conn)
    assert done.get_status() == JobStatus.FAILED
    attempts = [a["type"] for a in done.meta[Meta.ATTEMPTS]]
    assert attempts == ["RuntimeError", "RedisUnavailable", "RuntimeError"]
    assert conn.xlen(f"rq:results:{job.id}") == 1


def test_fork_horse_leaves_an_unwritten_outcome_to_its_worker(
    app: Flask, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A work horse that cannot write its job's success exits (EX_OUTCOME_LOST) instead of
    waiting; its worker puts the job back once Redis answers, and the next run succeeds, once."""
    mark = tmp_path / "out"
    job = _queued(conn, "touch", path=str(mark))
    _fail_once(monkeypatch, leases, "apply", marker=tmp_path / "failed")
    _work(app, conn, JsonWorker)
    done = JsonJob.fetch(job.id, connection=conn)
    assert done.get_status() == JobStatus.FINISHED, done.meta
    assert [a["type"] for a in done.meta[Meta.ATTEMPTS]] == ["RedisUnavailable"]
    assert conn.xlen(f"rq:results:{job.id}") == 1
    assert mark.read_text() == "ran"


@pytest.mark.parametrize("landed", [False, True], ids=["not-written", "answer-lost"])
def test_a_claim_cut_short_by_an_outage_is_resolved(
    app: Flask, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """A worker whose start claim met an outage checks, once Redis answers, whether it landed
    (then runs the job) or not (then claims again): either way the job runs once."""
    job = _queued(conn, "add", x=1, y=1)
    _fail_once(monkeypatch, leases, "claim", landed=landed)
    _work(app, conn, JsonInlineWorker)
    done = JsonJob.fetch(job.id, connection=conn)
    assert done.get_status() == JobStatus.FINISHED and done.return_value() == 2
    assert conn.llen("rq:queue:default:intermediate") == 0
    assert conn.xlen(f"rq:results:{job.id}") == 1
    assert not done.meta.get(Meta.ATTEMPTS)
