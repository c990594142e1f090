"""rq-dashboard at /rq/: basic auth, JSON-only job access, same-origin writes."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer

from app import create_app
from app.queues import JsonJob, JsonQueue
from app.workers import JsonWorker
from tests.conftest import DASHBOARD, TOKEN, make_env

ADD = "app.tasks.platform.add"
SAME_ORIGIN = "http://localhost"  # the Flask test client's host


def basic(username: str, password: str, **extra: str) -> dict[str, str]:
    """Headers with HTTP basic credentials (and any extra headers)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", **extra}


def operator(**extra: str) -> dict[str, str]:
    """The dashboard operator's credentials."""
    return basic(*DASHBOARD, **extra)


@pytest.fixture
def redis(app: Flask) -> Redis:
    return app.extensions["tasklane"].redis


@pytest.fixture
def queue(redis: Redis) -> JsonQueue:
    return JsonQueue("default", connection=redis)


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    error = response.get_json()["error"]
    assert error["code"] == "unauthorized"
    assert error["message"]
    assert "details" in error


# --- basic auth --------------------------------------------------------------------------


def test_no_credentials_is_401(client: FlaskClient) -> None:
    """It answers 401 with a Basic challenge and the JSON error shape when no credentials are sent."""
    assert_unauthorized(client.get("/rq/"))


def test_wrong_username_is_401(client: FlaskClient) -> None:
    """It answers 401 when the username is wrong although the password is right."""
    assert_unauthorized(client.get("/rq/", headers=basic("intruder", DASHBOARD[1])))


def test_wrong_password_is_401(client: FlaskClient) -> None:
    """It answers 401 when the password is wrong although the username is right."""
    assert_unauthorized(client.get("/rq/", headers=basic(DASHBOARD[0], DASHBOARD[1] + "x")))


def test_api_bearer_token_does_not_open_dashboard(client: FlaskClient) -> None:
    """It answers 401 to an API bearer token: only the dashboard credentials open /rq/."""
    assert_unauthorized(client.get("/rq/", headers={"Authorization": f"Bearer {TOKEN}"}))


def test_every_dashboard_route_is_guarded(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 401 without credentials on the data, job and action routes too, not only on /rq/."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    for path in (
        "/rq/0/data/queues.json",
        "/rq/0/data/workers.json",
        "/rq/0/data/jobs/default/queued/10/asc/1.json",
        f"/rq/0/data/job/{job.id}.json",
        f"/rq/0/view/job/{job.id}",
    ):
        assert_unauthorized(client.get(path))
    assert_unauthorized(client.post(f"/rq/job/{job.id}/delete", headers={"Origin": SAME_ORIGIN}))
    assert JsonJob.exists(job.id, connection=queue.connection)


def test_right_credentials_open_dashboard(client: FlaskClient) -> None:
    """It answers 200 with the dashboard page for the configured username and password."""
    response = client.get("/rq/", headers=operator())
    assert response.status_code == 200
    assert "RQ dashboard" in response.get_data(as_text=True)


def test_no_configured_credentials_means_no_entry(tmp_path: Path, redis_url: str) -> None:
    """It answers 401 even to empty basic credentials when no dashboard credentials are configured."""
    app = create_app(make_env(tmp_path, redis_url, DASHBOARD_USERNAME="", DASHBOARD_PASSWORD=""))
    client = app.test_client()
    assert_unauthorized(client.get("/rq/", headers=basic("", "")))
    assert_unauthorized(client.get("/rq/"))


# --- JSON jobs, including dependencies ------------------------------------------------------


def test_job_with_dependency_page_and_data(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 200 for a dependent job's page and data, and the data lists the dependency id."""
    parent = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    child = queue.enqueue_job(queue.create_job(ADD, kwargs={"x": 3, "y": 4}, depends_on=parent))
    assert child.get_status() == "deferred"

    page = client.get(f"/rq/0/view/job/{child.id}", headers=operator())
    assert page.status_code == 200
    assert child.id in page.get_data(as_text=True)

    data = client.get(f"/rq/0/data/job/{child.id}.json", headers=operator())
    assert data.status_code == 200
    body = data.get_json()
    assert body["id"] == child.id
    assert body["status"] == "deferred"
    assert body["depends_on"] == [parent.id]
    assert body["depends_on_status"] == ["active"]
    assert body["description"] == f"{ADD}(x=3, y=4)"
    assert "no-store" in data.headers["Cache-Control"]


def test_job_data_without_dependency_has_no_depends_on(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 200 for a plain JSON job's data, with its meta as JSON and no depends_on key."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2}, meta={"task": "add"})
    response = client.get(f"/rq/0/data/job/{job.id}.json", headers=operator())
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "queued"
    assert json.loads(body["metadata"]) == {"task": "add"}
    assert "depends_on" not in body


def test_unknown_job_data_is_404(client: FlaskClient) -> None:
    """It answers 404 in the JSON error shape for a job id that does not exist."""
    response = client.get("/rq/0/data/job/no-such-job.json", headers=operator())
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "job_not_found"


def test_queue_jobs_and_workers_json(client: FlaskClient, queue: JsonQueue, redis: Redis) -> None:
    """It answers 200 for the queues, queued-jobs and workers JSON with JSON jobs and a live worker."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    worker = JsonWorker(["default"], connection=redis, name="dashboard-test-worker")
    worker.register_birth()
    try:
        worker.heartbeat()
        queues = client.get("/rq/0/data/queues.json", headers=operator())
        assert queues.status_code == 200
        by_name = {q["name"]: q for q in queues.get_json()["queues"]}
        assert by_name["default"]["count"] == 1

        jobs = client.get("/rq/0/data/jobs/default/queued/10/asc/1.json", headers=operator())
        assert jobs.status_code == 200
        assert [j["id"] for j in jobs.get_json()["jobs"]] == [job.id]

        workers = client.get("/rq/0/data/workers.json", headers=operator())
        assert workers.status_code == 200
        listed = workers.get_json()["workers"]
        assert [w["name"] for w in listed] == ["dashboard-test-worker"]
        assert listed[0]["queues"] == ["default"]
    finally:
        worker.register_death()


# --- nothing is ever unpickled ---------------------------------------------------------------


@pytest.fixture
def unpickle_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every call of pickle.loads / RQ's pickle serializer from now on (still delegating)."""
    calls: list[bytes] = []
    original = pickle.loads

    def recording_loads(data: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(data)
        return original(data, *args, **kwargs)

    monkeypatch.setattr(pickle, "loads", recording_loads)
    monkeypatch.setattr(DefaultSerializer, "loads", staticmethod(recording_loads))
    return calls


def _pickled_job(redis: Redis, failed: bool) -> Job:
    """A job written with RQ's pickle serializer (payload and meta), queued or failed."""
    pickled_queue = Queue("default", connection=redis, serializer=DefaultSerializer)
    job = pickled_queue.enqueue_call(func="os.getcwd", meta={"secret": "unpickled-meta-value"})
    if failed:
        pickled_queue.remove(job)
        FailedJobRegistry("default", connection=redis, serializer=DefaultSerializer).add(
            job, ttl=600, exc_string="boom"
        )
    return job


def test_recorder_sees_pickle_loads(redis: Redis, unpickle_calls: list[bytes]) -> None:
    """It records a pickle read, so that the no-unpickling tests below can fail."""
    job = _pickled_job(redis, failed=False)
    Job.fetch(job.id, connection=redis, serializer=DefaultSerializer)
    assert unpickle_calls


def test_dashboard_never_unpickles_a_queued_pickled_job(
    client: FlaskClient, redis: Redis, unpickle_calls: list[bytes]
) -> None:
    """It never unpickles a pickled job in a queue: job page, job data, list and requeue."""
    job = _pickled_job(redis, failed=False)
    responses = {
        "page": client.get(f"/rq/0/view/job/{job.id}", headers=operator()),
        "data": client.get(f"/rq/0/data/job/{job.id}.json", headers=operator()),
        "list": client.get("/rq/0/data/jobs/default/queued/10/asc/1.json", headers=operator()),
        "queues": client.get("/rq/0/data/queues.json", headers=operator()),
        "requeue": client.post(f"/rq/job/{job.id}/requeue", headers=operator(Origin=SAME_ORIGIN)),
    }
    assert unpickle_calls == []
    for response in responses.values():
        assert b"unpickled-meta-value" not in response.get_data()
    assert responses["data"].status_code == 422
    assert responses["data"].get_json()["error"]["code"] == "job_not_json"
    assert responses["requeue"].status_code == 422
    assert redis.lrange("rq:queue:default", 0, -1) == [job.id.encode()]


def test_dashboard_never_unpickles_or_requeues_a_failed_pickled_job(
    client: FlaskClient, redis: Redis, unpickle_calls: list[bytes]
) -> None:
    """It never unpickles a failed pickled job and refuses to requeue it (it stays failed)."""
    job = _pickled_job(redis, failed=True)
    responses = [
        client.get(f"/rq/0/view/job/{job.id}", headers=operator()),
        client.get(f"/rq/0/data/job/{job.id}.json", headers=operator()),
        client.get("/rq/0/data/jobs/default/failed/10/asc/1.json", headers=operator()),
        client.post(f"/rq/job/{job.id}/requeue", headers=operator(Origin=SAME_ORIGIN)),
        client.post("/rq/requeue/default", headers=operator(Origin=SAME_ORIGIN)),
    ]
    assert unpickle_calls == []
    for response in responses:
        assert b"unpickled-meta-value" not in response.get_data()
    assert responses[1].status_code == 422
    assert responses[3].status_code == 422
    assert redis.llen("rq:queue:default") == 0
    assert FailedJobRegistry("default", connection=redis).get_job_ids() == [job.id]


# --- writes: same origin only ---------------------------------------------------------------


def test_delete_without_origin_is_403(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 403 and keeps the job when a delete has correct credentials but no Origin/Referer."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    response = client.post(f"/rq/job/{job.id}/delete", headers=operator())
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert JsonJob.exists(job.id, connection=queue.connection)
    assert queue.count == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/rq/"},
        {"Origin": "http://evil.example", "Referer": "http://localhost/rq/"},
    ],
)
def test_delete_from_foreign_origin_is_403(
    client: FlaskClient, queue: JsonQueue, headers: dict[str, str]
) -> None:
    """It answers 403 and keeps the job when a delete comes from another origin."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    response = client.post(f"/rq/job/{job.id}/delete", headers=operator(**headers))
    assert response.status_code == 403
    assert JsonJob.exists(job.id, connection=queue.connection)


def test_delete_from_same_origin_works(client: FlaskClient, queue: JsonQueue) -> None:
    """It deletes the job when the delete comes with the dashboard's own Origin."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    response = client.post(f"/rq/job/{job.id}/delete", headers=operator(Origin=SAME_ORIGIN))
    assert response.status_code == 200
    assert response.get_json() == {"status": "OK"}
    assert not JsonJob.exists(job.id, connection=queue.connection)
    assert queue.count == 0


def test_delete_with_same_origin_referer_works(client: FlaskClient, queue: JsonQueue) -> None:
    """It deletes the job when the only source header is a Referer from the dashboard itself."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    response = client.post(f"/rq/job/{job.id}/delete", headers=operator(Referer="http://localhost/rq/"))
    assert response.status_code == 200
    assert not JsonJob.exists(job.id, connection=queue.connection)


def _failed_json_job(queue: JsonQueue) -> Job:
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    queue.remove(job)
    FailedJobRegistry("default", connection=queue.connection, serializer=queue.serializer).add(
        job, ttl=600, exc_string="boom"
    )
    return job


def test_requeue_cross_site_is_403_and_same_origin_works(client: FlaskClient, queue: JsonQueue) -> None:
    """It refuses a cross-site requeue of a failed job (403, still failed) and requeues it same-origin."""
    job = _failed_json_job(queue)
    failed = FailedJobRegistry("default", connection=queue.connection)

    refused = client.post(f"/rq/job/{job.id}/requeue", headers=operator(Origin="http://evil.example"))
    assert refused.status_code == 403
    assert failed.get_job_ids() == [job.id]
    assert queue.count == 0

    accepted = client.post(f"/rq/job/{job.id}/requeue", headers=operator(Origin=SAME_ORIGIN))
    assert accepted.status_code == 200
    assert failed.get_job_ids() == []
    assert queue.get_job_ids() == [job.id]


def test_requeue_all_refuses_get(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 405 to GET /rq/requeue/<queue> (a link or image could trigger it) and requeues nothing."""
    job = _failed_json_job(queue)
    for headers in (operator(), operator(Referer="http://localhost/rq/")):
        response = client.get("/rq/requeue/default", headers=headers)
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"
    assert FailedJobRegistry("default", connection=queue.connection).get_job_ids() == [job.id]
    assert queue.count == 0


def test_requeue_all_needs_same_origin_post(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 403 to a requeue-all POST without Origin, and requeues every failed job same-origin."""
    job = _failed_json_job(queue)
    assert client.post("/rq/requeue/default", headers=operator()).status_code == 403
    assert queue.count == 0
    response = client.post("/rq/requeue/default", headers=operator(Origin=SAME_ORIGIN))
    assert response.status_code == 200
    assert response.get_json() == {"status": "OK", "count": 1}
    assert queue.get_job_ids() == [job.id]


def test_empty_queue_cross_site_is_403(client: FlaskClient, queue: JsonQueue) -> None:
    """It answers 403 and keeps the queue when emptying it comes from another origin."""
    queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    response = client.post("/rq/queue/default/queued/empty", headers=operator(Origin="http://evil.example"))
    assert response.status_code == 403
    assert queue.count == 1
