"""The inline worker's short bookkeeping leaves Redis exactly as RQ's own would."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask
from rq import SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.execution import ExecutingJob
from app.core.queues import JsonJob, JsonQueue
from app.processes.workers import JsonInlineWorker

TTL = {"default_result_ttl": 600, "failure_ttl": 600}


def _snapshot(connection: Any, job_id: str) -> dict[str, Any]:
    """What RQ's readers look at after a job succeeded."""
    job = JsonJob.fetch(job_id, connection=connection)
    queue = JsonQueue("default", connection=connection)
    return {
        "status": job.get_status(),
        "result": job.return_value(),
        "finished": job_id in queue.finished_job_registry.get_job_ids(),
        "started": queue.started_job_registry.get_job_ids(),
        "job_ttl": connection.ttl(job.key) > 0,
        "result_ttl": connection.ttl(f"rq:results:{job_id}") > 0,
        "executions": connection.exists(f"rq:executions:{job_id}"),
        "intermediate": connection.llen("rq:queue:default:intermediate"),
    }


def _run(app: Flask, connection: Any, worker_class: type) -> Any:
    with app.app_context():
        worker = worker_class(
            [JsonQueue("default", connection=connection)],
            connection=connection,
            job_class=ExecutingJob,
            serializer=JSONSerializer,
        )
        worker.work(burst=True)
    return worker


def test_success_leaves_the_same_state_as_rq(app: Flask, redis_url: str) -> None:
    """It stores result, registries, expiries and worker counts as RQ's SimpleWorker does."""
    connection = redis.Redis.from_url(redis_url)
    spec = REGISTRY.get("add")
    assert spec is not None
    ours = enqueue(spec, spec.validate({"x": 1, "y": 2}), connection, **TTL)
    ours_worker = _run(app, connection, JsonInlineWorker)
    theirs = enqueue(spec, spec.validate({"x": 3, "y": 4}), connection, **TTL)
    _run(app, connection, SimpleWorker)
    a, b = _snapshot(connection, ours.id), _snapshot(connection, theirs.id)
    assert a["result"] == 3 and b["result"] == 7
    a.pop("result"), b.pop("result")
    assert a == b
    assert a["status"] == JobStatus.FINISHED and a["finished"] and a["started"] == []
    refreshed = JsonJob.fetch(ours.id, connection=connection)
    assert refreshed.worker_name == ours_worker.name
    assert connection.hget(f"rq:worker:{ours_worker.name}", "successful_job_count") == b"1"


def test_a_job_with_dependents_moves_them_on(app: Flask, redis_url: str) -> None:
    """It hands a job that others wait for to RQ's own path, which enqueues the dependents."""
    connection = redis.Redis.from_url(redis_url)
    spec = REGISTRY.get("add")
    assert spec is not None
    parent = enqueue(spec, spec.validate({"x": 1, "y": 1}), connection, **TTL)
    child = enqueue(spec, spec.validate({"x": 2, "y": 2}), connection, depends_on=[parent.id], **TTL)
    assert JsonJob.fetch(child.id, connection=connection).get_status() == JobStatus.DEFERRED
    _run(app, connection, JsonInlineWorker)
    assert JsonJob.fetch(parent.id, connection=connection).return_value() == 2
    assert JsonJob.fetch(child.id, connection=connection).return_value() == 4


def _hincrbys(connection: Any) -> int:
    return int(connection.info("commandstats").get("cmdstat_hincrby", {}).get("calls", 0))


def test_success_counters_are_batched_and_exact_when_idle(app: Flask, redis_url: str) -> None:
    """Inline and threads workers batch their success counters as pooled children do (issue 23): 60
    jobs cost a few HINCRBYs, not a dozen per job, and once the queue is empty the worker's and the
    task's counts are exact."""
    from app.ops import metrics
    from app.processes.workers import ThreadPool

    connection = redis.Redis.from_url(redis_url)
    spec = REGISTRY.get("add")
    assert spec is not None
    for mode in ("inline", "threads"):
        connection.flushdb()
        for i in range(60):
            enqueue(spec, spec.validate({"x": i, "y": 1}), connection, **TTL)
        connection.config_resetstat()
        if mode == "inline":
            _run(app, connection, JsonInlineWorker)
        else:
            assert ThreadPool(app, ["default"], 2, burst=True, logging_level="WARNING").run() == 0
        workers = [k for k in connection.keys("rq:worker:*") if connection.type(k) == b"hash"]
        counted = sum(int(connection.hget(k, "successful_job_count") or 0) for k in workers)
        assert counted == 60, mode
        assert metrics.job_counts(connection)[("add", "success")] == 60, mode
        # Unbatched, each success writes the worker's count and about ten metrics HINCRBYs.
        assert _hincrbys(connection) < 60, (mode, _hincrbys(connection))
