"""/metrics: job outcomes and durations counted in Redis, queues, workers and API requests."""

from __future__ import annotations

from pathlib import Path

import fakeredis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.ops import metrics
from app.surfaces.api.metrics import EXTENSION
from tests.conftest import make_env


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly these labels, parsed as Prometheus parses it."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_job_outcomes_and_durations_are_exposed(app: Flask, client: FlaskClient) -> None:
    """Counts by task and outcome, and a cumulative duration histogram, as recorded by any host."""
    redis = app.extensions["tasklane"].redis
    with redis.pipeline() as pipe:
        metrics.record_job(pipe, "add", "success", 0.003)
        metrics.record_job(pipe, "add", "success", 0.2)
        metrics.record_job(pipe, "add", "failure")
        pipe.execute()
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "tasklane_jobs_total", task="add", outcome="success") == 2
    assert _sample(text, "tasklane_jobs_total", task="add", outcome="failure") == 1
    assert _sample(text, "tasklane_job_duration_seconds_bucket", task="add", le="0.005") == 1
    assert _sample(text, "tasklane_job_duration_seconds_bucket", task="add", le="0.25") == 2
    assert _sample(text, "tasklane_job_duration_seconds_bucket", task="add", le="+Inf") == 2
    assert _sample(text, "tasklane_job_duration_seconds_count", task="add") == 2
    assert abs((_sample(text, "tasklane_job_duration_seconds_sum", task="add") or 0) - 0.203) < 1e-6


def test_queues_workers_and_requests_are_exposed(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """Queue depths with the oldest waiting job's age, workers by state, requests by route and status."""
    for n in range(3):
        assert (
            client.post("/api/v1/tasks/add", json={"args": {"x": n, "y": 1}}, headers=auth).status_code == 202
        )
    assert client.post("/api/v1/tasks/add", json={"args": {"x": "no"}}, headers=auth).status_code == 422
    app.extensions[EXTENSION].flush()
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "tasklane_queue_jobs", queue="default", state="waiting") == 3
    assert _sample(text, "tasklane_queue_jobs", queue="low", state="waiting") == 0
    assert (_sample(text, "tasklane_queue_oldest_waiting_seconds", queue="default") or -1) >= 0
    assert _sample(text, "tasklane_workers", state="idle") == 0
    route = "/api/v1/tasks/<name>"
    assert _sample(text, "tasklane_http_requests_total", method="POST", route=route, status="202") == 3
    assert _sample(text, "tasklane_http_requests_total", method="POST", route=route, status="422") == 1
    assert _sample(text, "tasklane_http_request_duration_seconds_count", route=route) == 4


def test_a_metrics_token_guards_the_endpoint(tmp_path: Path, redis_url: str) -> None:
    """With METRICS_TOKEN set, /metrics answers 401 without it and 200 with it."""
    client = create_app(make_env(tmp_path, redis_url, METRICS_TOKEN="scrape-secret-0123")).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123"}).status_code == 200


def test_a_worker_counts_every_outcome_where_the_lifecycle_sees_it(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """Successes (with their run time, written with the success itself), failures and retries,
    counted by an inline worker, agree with what ran."""
    from app.catalogue.registry import REGISTRY
    from app.core.dispatch import enqueue
    from app.core.queues import JsonQueue
    from app.processes.workers import JsonInlineWorker

    redis = app.extensions["tasklane"].redis
    calls = [("add", {"x": 1, "y": 2})] * 3 + [("always_fail", {"message": "no"})]
    calls.append(("flaky", {"path": str(tmp_path / "n"), "failures": 1}))
    for name, args in calls:
        spec = REGISTRY.get(name)
        assert spec is not None
        enqueue(spec, spec.validate(args), redis, default_result_ttl=60, failure_ttl=60)
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "tasklane_jobs_total", task="add", outcome="success") == 3
    assert _sample(text, "tasklane_job_duration_seconds_count", task="add") == 3
    assert _sample(text, "tasklane_jobs_total", task="always_fail", outcome="failure") == 1
    assert _sample(text, "tasklane_jobs_total", task="flaky", outcome="retry") == 1


def test_metrics_answer_with_prometheus_content_type(client: FlaskClient) -> None:
    """One charset, as Prometheus's text format declares it."""
    from prometheus_client import CONTENT_TYPE_LATEST

    assert client.get("/metrics").headers["Content-Type"] == CONTENT_TYPE_LATEST


def test_a_batch_of_outcomes_counts_as_the_same_outcomes_one_by_one() -> None:
    """A pooled worker's batched counters (record_jobs) write what record_job writes per job,
    the hourly hash that analytics_aggregation rolls up included."""

    one_by_one, batched = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    seconds = [0.003, 0.2, 0.21, 7.5]
    with one_by_one.pipeline() as pipe:
        for s in seconds:
            metrics.record_job(pipe, "add", "success", s)
        pipe.execute()
    with batched.pipeline() as pipe:
        metrics.record_jobs(pipe, "add", "success", seconds)
        pipe.execute()

    def contents(conn: fakeredis.FakeRedis) -> dict[bytes, dict[bytes, float]]:
        return {k: {f: round(float(v), 6) for f, v in conn.hgetall(k).items()} for k in conn.scan_iter()}

    assert contents(batched) == contents(one_by_one)
    hourly = [k for k in batched.scan_iter() if b"hour" in k]
    assert hourly and all(batched.ttl(k) > 0 for k in hourly)
