"""The JSON job and queue classes: the lossless dequeue, unreadable jobs set aside."""

from __future__ import annotations

from flask import Flask
from rq.job import JobStatus
from rq.registry import FailedJobRegistry

from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.queues import JsonJob, JsonQueue
from app.processes.workers import JsonInlineWorker


def _enqueue_add(app: Flask, x: int) -> str:
    rt = app.extensions["tasklane"]
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(spec, spec.validate({"x": x, "y": 1}), rt.redis, default_result_ttl=60, failure_ttl=600)
    return str(job.id)


def test_an_unreadable_job_is_set_aside_and_the_queue_flows_on(app: Flask) -> None:
    """A job hash with a bad status, and one with no data, are moved to the failed jobs with the
    cause; the jobs queued behind them run, and the worker keeps going (it used to quit)."""
    redis = app.extensions["tasklane"].redis
    bad_status = _enqueue_add(app, 0)
    no_data = _enqueue_add(app, 0)
    redis.hset(JsonJob.key_for(bad_status), "status", "bogus")
    redis.hdel(JsonJob.key_for(no_data), "data")
    after = [_enqueue_add(app, n) for n in range(1, 6)]

    with app.app_context():
        worker = JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis)
        worker.work(burst=True)

    assert [JsonJob.fetch(i, connection=redis).return_value() for i in after] == [2, 3, 4, 5, 6]
    failed = FailedJobRegistry("default", connection=redis).get_job_ids()
    assert set(failed) == {bad_status, no_data}
    for job_id in (bad_status, no_data):
        fields = redis.hgetall(JsonJob.key_for(job_id))
        assert fields[b"status"] == JobStatus.FAILED.value.encode()
        assert fields[b"error"], fields
    assert redis.llen("rq:queue:default:intermediate") == 0
    assert redis.llen("rq:queue:default") == 0


def test_fetch_many_gives_none_for_an_unreadable_job(app: Flask) -> None:
    """Bulk reads (listings, workflows) skip a job they cannot read instead of failing the whole read."""
    redis = app.extensions["tasklane"].redis
    good, bad = _enqueue_add(app, 1), _enqueue_add(app, 2)
    redis.hset(JsonJob.key_for(bad), "status", "bogus")
    jobs = JsonJob.fetch_many([good, bad, "missing"], connection=redis)
    assert jobs[0] is not None and jobs[0].id == good
    assert jobs[1:] == [None, None]
