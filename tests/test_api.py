"""The HTTP API of API.md: auth, enqueue, job status and the one error shape."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.foundation.clock import ManualClock
from app.surfaces.api.errors import OUTAGE_LOG_EVERY
from tests.conftest import make_env
from tests.servers import drain, free_port


def assert_error(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


def test_healthz_needs_no_token(client: FlaskClient) -> None:
    """It answers liveness without authentication."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token-000000000000", "Basic dXNlcjpwYXNz", "Bearer", "test-token-0123456789abcdef"],
)
def test_every_api_route_needs_a_bearer_token(client: FlaskClient, header: str | None) -> None:
    """It answers 401 with WWW-Authenticate without a valid bearer token."""
    headers = {"Authorization": header} if header else {}
    for method, path in [("GET", "/api/v1/tasks"), ("POST", "/api/v1/tasks/add"), ("GET", "/api/v1/jobs/x")]:
        response = client.open(path, method=method, headers=headers, json={"args": {"x": 1, "y": 2}})
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(response.json, "unauthorized")


def test_catalogue_lists_tasks_with_schema_and_policy(client: FlaskClient, auth: dict[str, str]) -> None:
    """It describes each task: queue, input JSON Schema, retry, limits, schedule."""
    response = client.get("/api/v1/tasks", headers=auth)
    assert response.status_code == 200
    tasks = {t["name"]: t for t in response.json["tasks"]}
    assert tasks["add"]["queue"] == "default"
    assert set(tasks["add"]["input_schema"]["required"]) == {"x", "y"}
    assert tasks["health_check"]["schedule"]["interval"] == 300
    assert tasks["health_check"]["retry"]["max_retries"] == 1


def test_enqueue_then_poll_to_success(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 202 with Location, then the job reaches SUCCESS with its result."""
    response = client.post("/api/v1/tasks/add", json={"args": {"x": 2, "y": 3}}, headers=auth)
    assert response.status_code == 202
    body = response.json
    assert body["task"] == "add" and body["state"] == "PENDING"
    assert response.headers["Location"] == f"/api/v1/jobs/{body['job_id']}" == body["links"]["self"]
    pending = client.get(response.headers["Location"], headers=auth).json
    assert (pending["state"], pending["status"], pending["queue"]) == ("PENDING", "queued", "default")
    drain(app)
    done = client.get(response.headers["Location"], headers=auth).json
    assert done["state"] == "SUCCESS" and done["status"] == "finished"
    assert done["result"] == 5
    assert done["error"] is None and done["worker"]
    assert done["enqueued_at"] <= done["started_at"] <= done["ended_at"]


def test_failed_job_shows_error_with_traceback(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """It reports FAILURE with the exception's type, message and traceback."""
    response = client.post("/api/v1/tasks/always_fail", json={"args": {"message": "boom 42"}}, headers=auth)
    drain(app)
    job = client.get(response.headers["Location"], headers=auth).json
    assert job["state"] == "FAILURE" and job["status"] == "failed"
    assert job["error"]["type"] == "RuntimeError"
    assert job["error"]["message"] == "boom 42"
    assert "Traceback" in job["error"]["traceback"]


def test_malformed_json_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 400 for a body that is not JSON, or not an object."""
    for data in ["{", "[1, 2]", '"text"']:
        response = client.post(
            "/api/v1/tasks/add", data=data, headers={**auth, "Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert_error(response.json, "malformed_json")


def test_unknown_task_and_job_are_404(client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 404 for a task or a job that does not exist."""
    assert_error(client.post("/api/v1/tasks/nope", json={}, headers=auth).json, "unknown_task")
    response = client.get("/api/v1/jobs/does-not-exist", headers=auth)
    assert response.status_code == 404
    assert_error(response.json, "job_not_found")


def test_invalid_args_are_422_with_field_errors(client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 422 naming each bad field, and enqueues nothing."""
    redis_keys_before = set(client.application.extensions["tasklane"].redis.keys("rq:job:*"))
    response = client.post(
        "/api/v1/tasks/add", json={"args": {"x": "two", "z": 1}, "options": {"countdown": -1}}, headers=auth
    )
    assert response.status_code == 422
    error = assert_error(response.json, "invalid_arguments")
    fields = {d["field"] for d in error["details"]}
    assert {"args.x", "args.y", "args.z", "options.countdown"} <= fields
    assert set(client.application.extensions["tasklane"].redis.keys("rq:job:*")) == redis_keys_before


def test_body_over_limit_is_413(tmp_path: Path, redis_url: str, auth: dict[str, str]) -> None:
    """It answers 413 for a body over MAX_REQUEST_BYTES."""
    small = create_app(make_env(tmp_path, redis_url, MAX_REQUEST_BYTES="2048")).test_client()
    response = small.post(
        "/api/v1/tasks/add", json={"args": {"x": 1, "y": 2, "pad": "a" * 4096}}, headers=auth
    )
    assert response.status_code == 413
    assert_error(response.json, "payload_too_large")


def test_redis_unreachable_is_503_within_seconds(tmp_path: Path, auth: dict[str, str]) -> None:
    """It answers 503 quickly when Redis does not answer."""
    down = create_app(make_env(tmp_path, f"redis://127.0.0.1:{free_port()}/0")).test_client()
    started = time.monotonic()
    response = down.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=auth)
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert_error(response.json, "redis_unavailable")
    # An enqueue may have been stored before the connection went: the answer says how to repeat it.
    assert "Idempotency-Key" in response.json["error"]["message"]
    read = down.get("/api/v1/jobs/some-job", headers=auth)
    assert read.status_code == 503 and "Idempotency-Key" not in read.json["error"]["message"]
    # A batch takes no Idempotency-Key: its answer does not ask for one.
    batch = down.post("/api/v1/tasks/add/batch", json={"items": [{"args": {"x": 1, "y": 2}}]}, headers=auth)
    assert batch.status_code == 503 and "Idempotency-Key" not in batch.json["error"]["message"]


def test_a_redis_outage_is_logged_once_per_interval_not_once_per_request(
    tmp_path: Path, auth: dict[str, str], manual_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every refused request is a 503; the log says so once, then once per OUTAGE_LOG_EVERY s with a count."""
    down = create_app(make_env(tmp_path, f"redis://127.0.0.1:{free_port()}/0")).test_client()

    def refused_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]

    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            assert down.get("/api/v1/queues", headers=auth).status_code == 503
        (first,) = refused_lines()
        assert first.startswith("redis unreachable:")
        manual_clock.advance(OUTAGE_LOG_EVERY + 0.5)
        assert down.get("/api/v1/queues", headers=auth).status_code == 503
        lines = refused_lines()
        assert len(lines) == 2 and "(5 more requests answered 503)" in lines[1], lines
        manual_clock.advance(3 * OUTAGE_LOG_EVERY)  # quiet for long: the next refusal is a new outage
        assert down.get("/api/v1/queues", headers=auth).status_code == 503
        assert len(refused_lines()) == 3 and refused_lines()[2].startswith("redis unreachable:")


def test_options_schedule_and_choose_queue(client: FlaskClient, auth: dict[str, str]) -> None:
    """It honours countdown, queue, job_id and result_ttl options."""
    response = client.post(
        "/api/v1/tasks/add",
        json={"args": {"x": 1, "y": 1}, "options": {"countdown": 60, "queue": "low", "job_id": "my-job-1"}},
        headers=auth,
    )
    assert response.status_code == 202
    assert response.json["job_id"] == "my-job-1"
    job = client.get("/api/v1/jobs/my-job-1", headers=auth).json
    assert (job["state"], job["status"], job["queue"]) == ("PENDING", "scheduled", "low")


def test_reused_job_id_is_409(client: FlaskClient, auth: dict[str, str]) -> None:
    """It refuses to overwrite an existing job through options.job_id."""
    body = {"args": {"x": 1, "y": 1}, "options": {"job_id": "dup-1"}}
    assert client.post("/api/v1/tasks/add", json=body, headers=auth).status_code == 202
    response = client.post("/api/v1/tasks/add", json=body, headers=auth)
    assert response.status_code == 409
    assert_error(response.json, "job_exists")


def test_countdown_and_eta_are_exclusive(client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 422 for both countdown and eta, or an eta without a zone."""
    both = {"countdown": 5, "eta": "2030-01-01T00:00:00Z"}
    naive = {"eta": "2030-01-01T00:00:00"}
    for options in (both, naive):
        response = client.post(
            "/api/v1/tasks/add", json={"args": {"x": 1, "y": 1}, "options": options}, headers=auth
        )
        assert response.status_code == 422


def test_unknown_route_and_method_use_the_error_shape(client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 404 and 405 in the same JSON shape."""
    assert_error(client.get("/api/v1/nothing", headers=auth).json, "not_found")
    response = client.delete("/api/v1/tasks", headers=auth)
    assert response.status_code == 405
    assert_error(response.json, "method_not_allowed")


def test_eta_is_bounded_like_countdown(client: FlaskClient, auth: dict[str, str]) -> None:
    """An eta more than 366 days ahead is a 422, as a countdown that long is."""
    far = {"args": {"x": 1, "y": 1}, "options": {"eta": "9999-12-31T23:59:59Z"}}
    response = client.post("/api/v1/tasks/add", json=far, headers=auth)
    assert response.status_code == 422, response.get_json()
    assert "366 days" in str(response.get_json()["error"]["details"])
