"""The JSON job and queue classes: the lossless dequeue, unreadable jobs set aside."""

from __future__ import annotations

import rq
from flask import Flask
from flask.testing import FlaskClient
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer

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


def test_a_job_set_aside_unread_expires_is_listed_with_its_cause_and_can_be_deleted(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """Issue 18, defect 3: a corrupt job hash set aside by a worker expires after FAILED_JOB_TTL (it
    never did: TTL -1), is listed under ?state=FAILURE and by `flask jobs failed` with the recorded
    cause, GET answers it (was 409), retry still refuses it, and DELETE removes it (was 409)."""
    redis = app.extensions["tasklane"].redis
    no_data = _enqueue_add(app, 0)
    redis.hdel(JsonJob.key_for(no_data), "data")
    pickled = rq.Queue("default", connection=redis, serializer=DefaultSerializer).enqueue("os.getcwd")
    good = _enqueue_add(app, 1)
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)

    ttl = app.extensions["tasklane"].settings.failed_job_ttl
    for job_id in (no_data, pickled.id):
        assert 0 < redis.ttl(JsonJob.key_for(job_id)) <= ttl, job_id
        view = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
        assert view.status_code == 200, view.get_json()
        body = view.get_json()
        assert (body["state"], body["queue"], body["task"]) == ("FAILURE", "default", None)
        assert body["error"]["type"] in ("NoSuchJobError", "DeserializationError"), body["error"]
    assert (
        "not stored as JSON"
        in client.get(f"/api/v1/jobs/{pickled.id}", headers=auth).json["error"]["message"]
    )

    listed = client.get("/api/v1/jobs?state=FAILURE", headers=auth).get_json()["jobs"]
    assert {j["job_id"] for j in listed} == {no_data, pickled.id}
    assert client.get("/api/v1/jobs?state=FAILURE&task=add", headers=auth).get_json()["jobs"] == []
    assert {j["job_id"] for j in client.get("/api/v1/jobs", headers=auth).get_json()["jobs"]} >= {
        no_data,
        pickled.id,
        good,
    }
    out = app.test_cli_runner().invoke(args=["jobs", "failed"])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.strip()}
    assert "DeserializationError: the job is not stored as JSON" in lines[pickled.id], out.output
    assert "NoSuchJobError: the job's hash has no data" in lines[no_data], out.output

    assert client.post(f"/api/v1/jobs/{pickled.id}/retry", headers=auth).status_code == 409
    for job_id in (no_data, pickled.id):
        deleted = client.delete(f"/api/v1/jobs/{job_id}", headers=auth)
        assert deleted.status_code == 202, deleted.get_json()
        assert not redis.exists(JsonJob.key_for(job_id))
        assert client.get(f"/api/v1/jobs/{job_id}", headers=auth).status_code == 404
    assert FailedJobRegistry("default", connection=redis).get_job_ids() == []
    assert client.delete(f"/api/v1/jobs/{good}", headers=auth).status_code == 409  # finished: as before
