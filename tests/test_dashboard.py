"""rq-dashboard at /rq/: basic auth, JSON-only job access, same-origin writes."""

from __future__ import annotations

import base64
import json
import pickle
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer

from app import create_app
from app.core.queues import JsonJob, JsonQueue
from app.processes.workers import JsonWorker
from app.surfaces.dashboard import URL_PREFIX
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
    assert body["description"] == "add(x=3, y=4)"
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
    job.set_status(JobStatus.FAILED)
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


# --- awkward URLs answer 4xx, never 500 -------------------------------------------------------


def assert_error_shape(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert "details" in error


@pytest.mark.parametrize("job_id", ["a.b", "job.v2", "é", "zürich-1", "a b", "-.", "x" * 300 + "."])
def test_job_id_rq_cannot_hold_is_404(client: FlaskClient, job_id: str) -> None:
    """It answers 404 job_not_found for a job id with a dot or non-ASCII letters (RQ refuses such ids)."""
    for path in (f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"):
        assert_error_shape(client.get(path, headers=operator()), 404, "job_not_found")
    for action in ("delete", "requeue"):
        response = client.post(f"/rq/job/{job_id}/{action}", headers=operator(Origin=SAME_ORIGIN))
        assert_error_shape(response, 404, "job_not_found")


def test_execution_composite_id_still_opens_the_job(client: FlaskClient, queue: JsonQueue) -> None:
    """It still answers 200 for ``<job id>:<execution id>`` (RQ reads the job id before the colon)."""
    job = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    response = client.get(f"/rq/0/data/job/{job.id}:some-execution.json", headers=operator())
    assert response.status_code == 200
    assert response.get_json()["id"] == job.id


@pytest.mark.parametrize("registry", ["nope", "QUEUED", "failed ", "é"])
def test_unknown_registry_is_404(client: FlaskClient, registry: str) -> None:
    """It answers 404 for a job list of a registry RQ does not have, in the data and the page."""
    for path in (
        f"/rq/0/data/jobs/default/{registry}/8/asc/1.json",
        f"/rq/0/view/jobs/default/{registry}/8/asc/1",
    ):
        assert_error_shape(client.get(path, headers=operator()), 404, "not_found")


@pytest.mark.parametrize(
    ("per_page", "order", "page"),
    [
        ("0", "asc", "1"),
        ("-1", "asc", "1"),
        ("201", "asc", "1"),
        ("x", "asc", "1"),
        ("1.5", "asc", "1"),
        ("9" * 30, "asc", "1"),
        ("8", "asc", "0"),
        ("8", "asc", "-2"),
        ("8", "asc", "9" * 30),
        ("8", "asc", "x"),
        ("8", "sideways", "1"),
    ],
)
def test_bad_paging_is_400(client: FlaskClient, per_page: str, order: str, page: str) -> None:
    """It answers 400 for a page size outside 1..200, a page below 1 or absurdly high, or an unknown order."""
    for registry in ("queued", "failed"):
        response = client.get(
            f"/rq/0/data/jobs/default/{registry}/{per_page}/{order}/{page}.json", headers=operator()
        )
        assert_error_shape(response, 400, "bad_request")


@pytest.mark.parametrize(
    "registry", ["queued", "failed", "started", "finished", "deferred", "scheduled", "canceled"]
)
def test_every_registry_lists_with_both_orders(client: FlaskClient, registry: str) -> None:
    """It still answers 200 for every real registry, ascending and descending, at the UI's page sizes."""
    for per_page, order in (("1", "asc"), ("8", "dsc"), ("200", "asc")):
        response = client.get(
            f"/rq/0/data/jobs/default/{registry}/{per_page}/{order}/1.json", headers=operator()
        )
        assert response.status_code == 200, response.get_data()[:300]
        assert response.get_json()["registry_name"] == registry


def test_unknown_instance_number_is_404(client: FlaskClient) -> None:
    """It answers 404 for a Redis instance number that is not configured (only instance 0 is)."""
    for path in (
        "/rq/1/data/queues.json",
        "/rq/99/view/workers",
        "/rq/99/data/jobs/default/queued/8/asc/1.json",
    ):
        assert_error_shape(client.get(path, headers=operator()), 404, "not_found")
    assert client.get("/rq/0/data/queues.json", headers=operator()).status_code == 200


def test_compact_of_an_empty_queue_is_ok(client: FlaskClient, queue: JsonQueue, redis: Redis) -> None:
    """It answers 200 to compacting a queue that has no key (0.9's RENAME failed), and still compacts."""
    response = client.post("/rq/queue/default/compact", headers=operator(Origin=SAME_ORIGIN))
    assert response.status_code == 200, response.get_data()[:300]
    assert response.get_json() == {"status": "OK"}
    live = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    redis.rpush(queue.key, "gone-job")
    response = client.post("/rq/queue/default/compact", headers=operator(Origin=SAME_ORIGIN))
    assert response.status_code == 200
    assert queue.get_job_ids() == [live.id]


def test_url_checks_come_after_auth(client: FlaskClient) -> None:
    """It answers 401, not 404 or 400, to an awkward URL without credentials."""
    for path in (
        "/rq/99/view/workers",
        "/rq/0/data/job/a.b.json",
        "/rq/0/data/jobs/default/nope/0/asc/1.json",
    ):
        assert_unauthorized(client.get(path))


#: Awkward values for each dashboard URL part, the first of each being a sane one.
AWKWARD: dict[str, list[str]] = {
    "instance_number": ["0", "1", "99", "-1", "9" * 30],
    "queue_name": ["default", "nosuch", "a.b", "é", "%", " ", "rq:queue:default", "x" * 300],
    "registry_name": [
        *("queued", "started", "finished", "failed", "deferred", "scheduled", "canceled"),
        *("nope", "QUEUED", "é", "."),
    ],
    "per_page": ["8", "0", "-1", "1", "200", "201", "x", "1.5", "9" * 30],
    "order": ["asc", "dsc", "desc", "é", "-1"],
    "page": ["1", "0", "-1", "2", "1000", "9" * 30, "x", "1e3"],
    "job_id": ["JOB", "no-such-job", "a.b", "é", "a:b", ":", "JOB:exec", "..", "x" * 2000, "a%2Fb", "%00"],
    "filename": ["favicon.ico", "nope.js", "../../../etc/passwd", "js/../../web.py", "%00"],
}
_URL_PART = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _dashboard_urls(app: Flask, job_id: str) -> list[tuple[str, str]]:
    """(method, path) for every dashboard route with each URL part varied over AWKWARD in turn."""
    out: set[tuple[str, str]] = set()
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith(URL_PREFIX)]
    assert len(rules) > 15, [r.rule for r in rules]  # the sweep must not silently miss the dashboard
    for rule in rules:
        names = _URL_PART.findall(rule.rule)
        assert set(names) <= set(AWKWARD), f"no awkward values for {rule.rule}"
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        variants = [{n: AWKWARD[n][0] for n in names}]
        variants += [{**variants[0], name: value} for name in names for value in AWKWARD[name][1:]]
        for values in variants:
            path = _URL_PART.sub(
                lambda m, v=values: quote(v[m.group(1)].replace("JOB", job_id), safe="%/:"), rule.rule
            )
            out.update((method, path) for method in methods)
    return sorted(out)


def test_no_dashboard_url_answers_5xx(
    client: FlaskClient, app: Flask, queue: JsonQueue, redis: Redis
) -> None:
    """It answers every dashboard route, with awkward values in each URL part, without a 5xx."""
    parent = queue.enqueue_call(func=ADD, kwargs={"x": 1, "y": 2})
    queue.enqueue_job(queue.create_job(ADD, kwargs={"x": 3, "y": 4}, depends_on=parent))
    _failed_json_job(queue)
    worker = JsonWorker(["default"], connection=redis, name="dashboard-sweep-worker")
    worker.register_birth()
    try:
        urls = _dashboard_urls(app, parent.id)
        failures = []
        for method, path in urls:
            response = client.open(path, method=method, headers=operator(Origin=SAME_ORIGIN))
            if response.status_code >= 500:
                failures.append((method, path, response.status_code))
            elif response.status_code >= 400:
                assert response.is_json and "error" in response.get_json(), (
                    method,
                    path,
                    response.status_code,
                )
        assert failures == [], f"{len(failures)} of {len(urls)} answered 5xx: {failures}"
    finally:
        worker.register_death()


# --- every declared queue, readable jobs, every write covered ------------------------------


def test_every_declared_queue_is_listed_from_the_start(app: Flask, client: FlaskClient, redis: Redis) -> None:
    """rq-dashboard lists high, default and low before any job was put on them; building the app
    wrote nothing to Redis (the queues are registered by the first dashboard request)."""
    assert redis.exists("rq:queues") == 0
    create_app(app.extensions["tasklane"].settings)
    assert redis.exists("rq:queues") == 0
    assert client.get("/rq/0/data/queues.json").status_code == 401
    assert redis.exists("rq:queues") == 0
    body = client.get("/rq/0/data/queues.json", headers=operator()).get_json()
    assert sorted(q["name"] for q in body["queues"]) == ["default", "high", "low"]
    page = client.get("/rq/", headers=operator()).get_data(as_text=True)
    assert page and redis.smembers("rq:queues") == {b"rq:queue:high", b"rq:queue:default", b"rq:queue:low"}


def test_job_descriptions_are_readable_json(client: FlaskClient, queue: JsonQueue) -> None:
    """A job is listed as its task's name with its arguments as JSON: integers stay integers,
    text is quoted, a long argument is cut short."""
    queue.enqueue_call(func=ADD, kwargs={"x": 2, "y": 3})
    queue.enqueue_call(func="tests.jobs.always_fail", kwargs={"message": "héllo"})
    queue.enqueue_call(func="app.tasks.platform.xsum", kwargs={"numbers": list(range(1000))})
    jobs = client.get("/rq/0/data/jobs/default/queued/10/asc/1.json", headers=operator()).get_json()["jobs"]
    descriptions = [j["description"] for j in jobs]
    assert descriptions[0] == "add(x=2, y=3)"
    assert descriptions[1] == 'always_fail(message="héllo")'
    assert descriptions[2].startswith("xsum(numbers=[0, 1, 2,") and descriptions[2].endswith("…)")
    assert len(descriptions[2]) < 250


def test_chained_step_shows_the_value_it_received(
    app: Flask, client: FlaskClient, queue: JsonQueue, redis: Redis
) -> None:
    """A chain's second step shows where its input comes from while it waits, then the value it received."""
    from tests.servers import drain

    body = {
        "type": "chain",
        "steps": [{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"y": 5}}],
    }
    api_auth = {"Authorization": f"Bearer {TOKEN}"}
    created = client.post("/api/v1/workflows", json=body, headers=api_auth)
    first, second = created.get_json()["job_ids"]
    data = client.get(f"/rq/0/data/job/{second}.json", headers=operator()).get_json()
    assert data["description"] == f"add(x=(the result of {first}), y=5)"
    drain(app, "default")
    data = client.get(f"/rq/0/data/job/{second}.json", headers=operator()).get_json()
    assert data["description"] == "add(x=2, y=5)"
    assert data["result"] == 7
    finished = client.get("/rq/0/data/jobs/default/finished/10/asc/1.json", headers=operator()).get_json()
    assert "add(x=2, y=5)" in [j["description"] for j in finished["jobs"]]


#: rq-dashboard 0.9's routes that only read (GET): anything else must be a same-origin POST.
READ_ONLY = {
    "rq_dashboard.favicon",
    "rq_dashboard.queues_overview",
    "rq_dashboard.workers_overview",
    "rq_dashboard.jobs_overview",
    "rq_dashboard.job_view",
    "rq_dashboard.list_queues",
    "rq_dashboard.list_jobs",
    "rq_dashboard.job_info",
    "rq_dashboard.list_workers",
    "rq_dashboard.static",
}


def test_every_state_changing_route_refuses_cross_site_requests(app: Flask, client: FlaskClient) -> None:
    """Every dashboard route is either one of the known read-only views, or changes state only
    on a same-origin POST: a cross-site POST is 403 and a GET (or HEAD) is 405."""
    from app.surfaces.dashboard import _STATE_CHANGING_GET

    writes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "rq_dashboard" or rule.endpoint in READ_ONLY:
            continue
        methods = set(rule.methods or ()) - {"OPTIONS"}
        assert "POST" in methods, rule
        if "GET" in methods:
            assert rule.endpoint in _STATE_CHANGING_GET, rule
        writes.append(rule)
    assert {r.endpoint.split(".")[1] for r in writes} >= {
        "delete_job_view",
        "requeue_job_view",
        "requeue_all",
        "empty_queue",
        "compact_queue",
    }
    values = {"job_id": "some-job", "queue_name": "default", "registry_name": "failed"}
    for rule in writes:
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule.rule)
        for origin in ("http://evil.example", None):
            headers = operator(Origin=origin) if origin else operator()
            assert client.post(url, headers=headers).status_code == 403, (url, origin)
        if "GET" in (rule.methods or ()):
            assert client.get(url, headers=operator()).status_code == 405, url
            assert client.head(url, headers=operator()).status_code == 405, url


def test_job_page_data_is_html_escaped(client: FlaskClient, queue: JsonQueue, redis: Redis) -> None:
    """0.9's job page inserts description, result, metadata and error unescaped: every text of
    them is escaped, so arguments an API caller chose cannot script the operator's browser."""
    evil = "<img src=x onerror=alert(1)>"
    job = queue.enqueue_call(func="tests.jobs.always_fail", kwargs={"message": evil}, meta={"note": evil})
    data = client.get(f"/rq/0/data/job/{job.id}.json", headers=operator()).get_json()
    assert "<img" not in json.dumps(data)
    assert "&lt;img src=x onerror=alert(1)&gt;" in data["description"]
    assert json.loads(data["metadata"])["note"] == "&lt;img src=x onerror=alert(1)&gt;"
    job = _failed_json_job(queue)
    redis.hset(job.key, "description", evil)
    assert "<img" not in client.get(f"/rq/0/data/job/{job.id}.json", headers=operator()).get_data(
        as_text=True
    )
