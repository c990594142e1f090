"""Batch enqueue: many jobs, one round trip, through the API and the Python call."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue_many
from app.core.queues import JsonQueue
from app.processes.workers import JsonInlineWorker


def test_enqueue_many_takes_one_round_trip(app: Flask, redis_url: str) -> None:
    """It writes a whole batch with a single pipeline execution."""
    connection = redis.Redis.from_url(redis_url)
    spec = REGISTRY.get("add")
    assert spec is not None
    enqueue_many(spec, [{"x": 0, "y": 1}], connection, default_result_ttl=60, failure_ttl=60)  # warm-up
    before = _calls(connection)
    args = [{"x": n, "y": 1} for n in range(50)]
    jobs = enqueue_many(spec, args, connection, default_result_ttl=60, failure_ttl=60)
    after = _calls(connection)
    assert len({job.id for job in jobs}) == 50
    assert connection.llen("rq:queue:default") == 51
    # Every write of the 50 jobs went in one MULTI/EXEC transaction, and nothing was read.
    assert after["multi"] - before.get("multi", 0) == 1
    assert after["exec"] - before.get("exec", 0) == 1
    assert after["rpush"] - before.get("rpush", 0) >= 50
    assert after.get("hget", 0) == before.get("hget", 0)


def _calls(connection: Any) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in connection.info("commandstats").items()}


def test_batch_api_enqueues_runs_and_reports_every_job(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It answers 202 with one job id per item, in order, and each job runs with its own args."""
    response = client.post(
        "/api/v1/tasks/add/batch",
        json={"items": [{"args": {"x": n, "y": 100}} for n in range(5)]},
        headers=auth,
    )
    assert response.status_code == 202
    job_ids = response.json["job_ids"]
    assert len(job_ids) == 5
    redis_client = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis_client)], connection=redis_client).work(
            burst=True
        )
    results = [client.get(f"/api/v1/jobs/{j}", headers=auth).json["result"] for j in job_ids]
    assert results == [100, 101, 102, 103, 104]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"items": [{"args": {"x": 1, "y": 1}}, {"args": {"x": "no", "y": 1}}]}, 422, "items[1].args.x"),
        ({"items": [{"args": {"x": 1, "y": 1}}, {"wrong": 1}]}, 422, "items[1]"),
        ({"items": []}, 422, None),
        ({"things": []}, 400, None),
        ({"items": [{"args": {"x": 1, "y": 1}}], "queue": "urgent"}, 422, "queue"),
    ],
)
def test_batch_api_rejects_the_whole_batch(
    client: FlaskClient,
    auth: dict[str, str],
    redis_url: str,
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    """It enqueues nothing when any item is invalid, naming the item."""
    response = client.post("/api/v1/tasks/add/batch", json=body, headers=auth)
    assert response.status_code == status
    if field:
        assert field in [d["field"] for d in response.json["error"]["details"]]
    assert redis.Redis.from_url(redis_url).llen("rq:queue:default") == 0


def test_batch_of_a_unique_task_is_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    """It refuses a batch for a unique task, whose jobs need checking one by one."""
    response = client.post(
        "/api/v1/tasks/unique_stamp/batch", json={"items": [{"args": {"path": "p"}}]}, headers=auth
    )
    assert response.status_code == 422
