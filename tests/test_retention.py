"""Retention per state: how long succeeded, failed and revoked jobs stay, per task (declaration and
TASK_OVERRIDES); revoked jobs are pruned (RQ kept them forever); outcome counters outlive the jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq.registry import CanceledJobRegistry, FailedJobRegistry
from rq.serializers import JSONSerializer

from app import create_app
from app.catalogue.registry import REGISTRY
from app.core.execution import ExecutingJob
from app.core.queues import JsonQueue
from app.foundation import keys
from app.foundation.config import ConfigError, Settings
from app.processes.maintenance import prune_revoked
from app.processes.workers import JsonInlineWorker
from tests.conftest import TOKEN, make_env
from tests.servers import enqueue

OVERRIDES = {
    "always_fail": {"failure_ttl": 120},
    "add": {"revoked_ttl": 300, "result_ttl": 30},
}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def kept_app(tmp_path: Path, redis_url: str) -> Flask:
    return create_app(
        make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps(OVERRIDES), FAILED_JOB_TTL="3600")
    )


def drain(app: Flask) -> None:
    """Run the waiting jobs of the default queue here, with the service's own worker (which counts)."""
    redis_client = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker(
            [JsonQueue("default", connection=redis_client)],
            connection=redis_client,
            job_class=ExecutingJob,
            serializer=JSONSerializer,
        ).work(burst=True)


def _near(value: float, expected: float) -> bool:
    return expected - 5 <= value <= expected + 1


def test_each_state_keeps_a_job_as_long_as_its_task_says(kept_app: Flask, rconn: redis.Redis) -> None:
    """A failure stays failure_ttl, a success result_ttl, a revoke revoked_ttl: in the job's hash and
    its registry entry; a task that says nothing keeps a revoked job as long as its failures."""
    client = kept_app.test_client()
    failed = enqueue(client, AUTH, "always_fail", {"message": "no"})
    done = enqueue(client, AUTH, "add", {"x": 1, "y": 2})
    drain(kept_app)
    now = time.time()
    assert _near(rconn.ttl(f"rq:job:{failed}"), 120)
    assert _near(rconn.zscore(FailedJobRegistry("default", connection=rconn).key, failed) or 0, now + 120)
    assert _near(rconn.ttl(f"rq:job:{done}"), 30)

    waiting = enqueue(client, AUTH, "add", {"x": 1, "y": 2}, countdown=600)
    other = enqueue(client, AUTH, "xsum", {"numbers": [1]}, countdown=600)
    for job_id in (waiting, other):
        assert client.delete(f"/api/v1/jobs/{job_id}", headers=AUTH).status_code == 202
    canceled = CanceledJobRegistry("default", connection=rconn).key
    now = time.time()
    assert _near(rconn.ttl(f"rq:job:{waiting}"), 300)
    assert _near(rconn.zscore(canceled, waiting) or 0, now + 300)
    assert _near(rconn.ttl(f"rq:job:{other}"), 3600)  # FAILED_JOB_TTL
    assert _near(rconn.zscore(canceled, other) or 0, now + 3600)

    catalogue = {t["name"]: t for t in client.get("/api/v1/tasks", headers=AUTH).get_json()["tasks"]}
    assert (catalogue["add"]["revoked_ttl"], catalogue["always_fail"]["failure_ttl"]) == (300, 120)
    assert catalogue["add"]["overridden"]["revoked_ttl"] == {"declared": None, "in_force": 300}


def test_the_sweep_prunes_revoked_jobs_once_their_retention_passed(
    kept_app: Flask, rconn: redis.Redis
) -> None:
    """A revoked job's canceled-registry entry goes when its time is up; one revoked before retention
    existed (no TTL on its hash, scored with its revoke time) is pruned the task's retention later."""
    client = kept_app.test_client()
    queue = JsonQueue("default", connection=rconn)
    canceled = CanceledJobRegistry("default", connection=rconn).key
    old = enqueue(client, AUTH, "add", {"x": 1, "y": 2}, countdown=600)
    new = enqueue(client, AUTH, "add", {"x": 2, "y": 2}, countdown=600)
    for job_id in (old, new):
        client.delete(f"/api/v1/jobs/{job_id}", headers=AUTH)
    revoked_at = time.time() - 100
    rconn.persist(f"rq:job:{old}")  # as an older release left it: kept forever
    rconn.zadd(canceled, {old: revoked_at})
    with kept_app.app_context():
        assert prune_revoked(queue) == 0  # 300 s not yet passed for either
        assert rconn.ttl(f"rq:job:{old}") > 0  # the old one has its retention now
        assert prune_revoked(queue, timestamp=revoked_at + 301) == 1
    assert rconn.exists(f"rq:job:{old}") == 0
    assert rconn.zrange(canceled, 0, -1) == [new.encode()]
    rconn.delete(f"rq:job:{new}")  # Redis expired it
    with kept_app.app_context():
        assert prune_revoked(queue, timestamp=time.time() + 301) == 1
    assert rconn.zcard(canceled) == 0


def test_outcome_counters_outlive_the_jobs(kept_app: Flask, rconn: redis.Redis) -> None:
    """/metrics and the hourly counters (charts, analytics) still count jobs their retention removed."""
    client: FlaskClient = kept_app.test_client()
    enqueue(client, AUTH, "always_fail", {"message": "no"})
    enqueue(client, AUTH, "add", {"x": 1, "y": 2})
    drain(kept_app)
    for key in rconn.scan_iter("rq:job:*"):
        rconn.delete(key)  # every job's retention passed
    text = client.get("/metrics").get_data(as_text=True)
    assert 'tasklane_jobs_total{outcome="failure",task="always_fail"} 1.0' in text, text
    assert 'tasklane_jobs_total{outcome="success",task="add"} 1.0' in text
    hour = time.strftime("%Y%m%d%H", time.gmtime())
    hourly = rconn.hgetall(keys.hourly_jobs(hour))
    assert hourly[b"always_fail|failure"] == b"1" and hourly[b"add|success"] == b"1"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('{"add": {"failure_ttl": 5}}', ["'add'", "failure_ttl", "at least 60"]),
        ('{"add": {"revoked_ttl": "1d"}}', ["'add'", "revoked_ttl", "whole number"]),
    ],
)
def test_a_bad_retention_override_names_task_and_field(value: str, words: list[str]) -> None:
    """TASK_OVERRIDES with a retention that is not a number of seconds (at least 60) is refused at start."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TASK_OVERRIDES": value})
    for word in words:
        assert word in str(caught.value)


def test_a_declaration_with_a_retention_under_a_second_is_refused() -> None:
    """The declaration checks its retention too."""
    from app.catalogue.registry import TaskRegistry, task

    with pytest.raises(ValueError, match="revoked_ttl must be at least 1 second"):
        task("keep_nothing", revoked_ttl=0, registry=TaskRegistry(None))(lambda: None)
    assert REGISTRY.declared("add") is not None
