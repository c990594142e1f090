"""Security: every route's credentials (enumerated from the URL map), constant-time comparisons,
and pickled payloads written straight into Redis never unpickled by any process.

The dashboard's cross-site refusals are in test_dashboard.py (every state-changing route,
from the URL map), body limits in test_bodies.py, the outbound URL policy in
test_outbound.py, secrets in test_sensitive.py, the schema fuzzing in test_schema_fuzz.py.
"""

from __future__ import annotations

import ast
import base64
import hmac
import inspect
import os
import pickle
import re
import textwrap
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import rq
from flask import Flask
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.results import Result
from rq.serializers import DefaultSerializer
from rq_scheduler import Scheduler

from app import create_app
from app.core.queues import JsonJob, JsonQueue
from app.processes.scheduling import SchedulerProcess, register_periodic
from app.processes.workers import JsonInlineWorker
from app.surfaces.api import auth as api_auth
from app.surfaces.dashboard import BLUEPRINT
from tests.conftest import DASHBOARD, TOKEN, make_env
from tests.servers import Starter, enqueue

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAME_ORIGIN = "http://localhost"  # the Flask test client's host
#: Routes open without credentials, as API.md lists them (liveness, readiness, metrics, the docs).
PUBLIC = {
    "probes.healthz",
    "probes.readyz",
    "metrics.exposition",
    "docs.openapi_json",
    "docs.docs_page",
    "docs.asset",
    "static",
}
#: A value for each URL variable, so that every rule can be requested.
URL_VALUES = {
    "job_id": "some-job",
    "name": "add",
    "schedule": "health_check",
    "workflow_id": "some-workflow",
    "instance_number": "0",
    "queue_name": "default",
    "queue": "default",
    "registry_name": "failed",
    "per_page": "10",
    "order": "asc",
    "page": "1",
    "filename": "js/app.js",
    "bulk_id": "some-bulk",
    "action": "revoke",
}


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _url(rule: Any) -> str:
    """The rule's path with a sample value in each variable (a new variable name fails here)."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: URL_VALUES[m.group(1)], rule.rule)


def _requests(app: Flask, kind: str) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) of every rule and method of ``kind`` (``api``, ``console``, the dashboard)."""
    out = []
    for rule in app.url_map.iter_rules():
        prefix = "api." if kind == "api" else "console." if kind == "console" else f"{BLUEPRINT}."
        if not rule.endpoint.startswith(prefix):
            continue
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            out.append((rule.endpoint, method, _url(rule)))
    return out


def test_every_route_is_public_api_or_dashboard(app: Flask) -> None:
    """Each rule of the URL map is either a documented public route, or behind the API's bearer
    token, or behind the dashboard's basic auth (the dashboard's and the console's): a new route
    cannot escape the tests below."""
    for rule in app.url_map.iter_rules():
        guarded = rule.endpoint.startswith(("api.", f"{BLUEPRINT}.", "console."))
        assert guarded or rule.endpoint in PUBLIC, f"{rule.rule} ({rule.endpoint}) has no known guard"
        if rule.rule.startswith("/api/v1") and rule.endpoint != "docs.openapi_json":
            assert rule.endpoint.startswith("api."), rule
        if rule.rule.startswith("/rq"):
            assert rule.endpoint.startswith(f"{BLUEPRINT}."), rule
        if rule.rule.startswith("/console"):
            assert rule.endpoint.startswith("console."), rule


WRONG_API = [
    None,
    "Bearer wrong-token-000000000000",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN.upper()}",
    f"Basic {TOKEN}",
    TOKEN,
    "Bearer",
    _basic(*DASHBOARD),
]


@pytest.mark.parametrize("header", WRONG_API, ids=lambda h: "none" if h is None else h.split()[0][:12])
def test_every_api_route_and_method_refuses_missing_or_wrong_tokens(
    app: Flask, client: FlaskClient, header: str | None
) -> None:
    """Every /api/v1 rule, every method, from the URL map: 401 with a Bearer challenge and the
    error shape, before any view runs (nothing is written to Redis)."""
    redis_conn = app.extensions["tasklane"].redis
    before = sorted(redis_conn.keys("rq:*"))
    headers = {"Authorization": header} if header else {}
    sent = _requests(app, "api")
    assert {endpoint for endpoint, _, _ in sent} >= {
        "api.list_tasks",
        "api.enqueue_task",
        "api.enqueue_batch",
        "api.get_job",
        "api.revoke_job",
        "api.retry_job",
        "api.list_all_jobs",
        "api.create_workflow",
        "api.get_workflow",
        "api.list_queues",
        "api.list_workers",
        "api.list_schedules",
        "api.create_schedule",
        "api.get_schedule",
        "api.edit_schedule",
        "api.delete_schedule",
        "api.run_schedule",
        "api.schedule_history",
    }
    for endpoint, method, url in sent:
        response = client.open(url, method=method, headers=headers, json={"args": {"x": 1, "y": 2}})
        assert response.status_code == 401, (endpoint, method, url, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), endpoint
        if method != "HEAD":
            assert set(response.get_json()["error"]) == {"code", "message", "details"}
            assert response.get_json()["error"]["code"] == "unauthorized"
    assert sorted(redis_conn.keys("rq:*")) == before


def test_the_right_token_opens_every_api_route(app: Flask, client: FlaskClient) -> None:
    """The same requests with a valid token are not refused (so the 401s above are the guard's)."""
    for endpoint, method, url in _requests(app, "api"):
        response = client.open(url, method=method, headers=AUTH, json={"args": {"x": 1, "y": 2}})
        assert response.status_code not in (401, 403), (endpoint, method, url)
        # (A 503 for a service that is not configured is an answer; an internal error is not.)
        assert response.status_code != 500, (endpoint, method, url, response.get_data(as_text=True))


WRONG_DASHBOARD = [
    None,
    _basic(DASHBOARD[0], "wrong-password"),
    _basic("someone", DASHBOARD[1]),
    _basic(DASHBOARD[0], DASHBOARD[1] + "x"),
    _basic(DASHBOARD[0].upper(), DASHBOARD[1]),
    _basic(DASHBOARD[0], ""),
    _basic(DASHBOARD[0], TOKEN),
    f"Bearer {TOKEN}",
    f"Bearer {DASHBOARD[1]}",
]


@pytest.mark.parametrize("header", WRONG_DASHBOARD, ids=lambda h: "none" if h is None else h[:14])
def test_every_dashboard_route_and_method_refuses_missing_or_wrong_credentials(
    app: Flask, client: FlaskClient, header: str | None
) -> None:
    """Every /rq rule, every method (static files too), from the URL map: 401 with a Basic
    challenge; a write with its own Origin is refused for the credentials, not the origin."""
    redis_conn = app.extensions["tasklane"].redis
    failed = rq.Queue("default", connection=redis_conn).enqueue_call(func="os.getcwd")
    before = sorted(redis_conn.keys("rq:*"))
    headers = {"Origin": SAME_ORIGIN}
    if header:
        headers["Authorization"] = header
    sent = _requests(app, "dashboard")
    assert len({endpoint for endpoint, _, _ in sent}) >= 14
    for endpoint, method, url in sent:
        # A routing redirect (a rule that also answers with a slash) may come first; it shows nothing.
        response = client.open(
            url.replace("some-job", failed.id), method=method, headers=headers, follow_redirects=True
        )
        assert response.status_code == 401, (endpoint, method, url, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Basic "), endpoint
    assert sorted(redis_conn.keys("rq:*")) == before


@pytest.mark.parametrize("header", WRONG_DASHBOARD, ids=lambda h: "none" if h is None else h[:14])
def test_every_console_route_and_method_refuses_missing_or_wrong_credentials(
    app: Flask, client: FlaskClient, header: str | None
) -> None:
    """Every /console rule, every method (static files too), from the URL map: 401 with a Basic
    challenge, a write with its own Origin too; nothing changes in Redis."""
    redis_conn = app.extensions["tasklane"].redis
    job = rq.Queue("default", connection=redis_conn).enqueue_call(func="os.getcwd")
    before = _console_state(redis_conn)
    headers = {"Origin": SAME_ORIGIN}
    if header:
        headers["Authorization"] = header
    sent = _requests(app, "console")
    assert {e for e, _, _ in sent} >= {
        "console.overview",
        "console.jobs",
        "console.bulk_action",
        "console.static",
    }
    for endpoint, method, url in sent:
        response = client.open(
            url.replace("some-job", job.id),
            method=method,
            headers=headers,
            json={"action": "delete", "q": ""},
        )
        assert response.status_code == 401, (endpoint, method, url, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Basic "), endpoint
    assert _console_state(redis_conn) == before


def _console_state(redis_conn: Any) -> list[bytes]:
    """What a console action could change: RQ's keys, bulk actions, the console's audit, pauses."""
    return sorted(
        redis_conn.keys("rq:*")
        + redis_conn.keys("tasklane:bulk:*")
        + redis_conn.keys("tasklane:console:*")
        + redis_conn.keys("tasklane:queues:*")  # a queue paused
    )


def test_every_console_write_refuses_another_origin_or_no_token(app: Flask, client: FlaskClient) -> None:
    """Every console rule that takes a POST refuses it from another site, or without the page's
    token, with the operator's own credentials (403, nothing changed)."""
    redis_conn = app.extensions["tasklane"].redis
    job = rq.Queue("default", connection=redis_conn).enqueue_call(func="os.getcwd")
    before = _console_state(redis_conn)
    writes = [(e, u) for e, m, u in _requests(app, "console") if m == "POST"]
    assert {e for e, _ in writes} == {
        "console.bulk_action",
        "console.job_action",
        "console.schedule_action",
        "console.queue_action",
    }
    operator = {"Authorization": _basic(*DASHBOARD)}
    for _, url in writes:
        for extra in ({"Origin": "http://evil.example"}, {}, {"Origin": SAME_ORIGIN}):
            response = client.post(
                url.replace("some-job", job.id),
                headers={**operator, **extra},
                json={"action": "delete", "q": ""},
            )
            assert response.status_code == 403, (url, extra)
    assert _console_state(redis_conn) == before


def test_api_tokens_are_compared_in_constant_time(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request compares the given token with every configured token through
    hmac.compare_digest, never stopping at the first match or mismatch."""
    tokens = [f"first-token-{'a' * 20}", f"second-token-{'b' * 20}", f"third-token-{'c' * 20}"]
    client = create_app(make_env(tmp_path, redis_url, API_TOKENS=",".join(tokens))).test_client()
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    for given, status in [("nope", 401), (tokens[0], 200), (tokens[2], 200), (tokens[1][:-1], 401)]:
        calls.clear()
        response = client.get("/api/v1/queues", headers={"Authorization": f"Bearer {given}"})
        assert response.status_code == status, given
        assert calls == [(given.encode(), t.encode()) for t in tokens], given


def test_dashboard_credentials_are_compared_in_constant_time(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Username and password are both compared through hmac.compare_digest, the password
    also when the username is already wrong."""
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    user, password = (v.encode() for v in DASHBOARD)
    for given_user, given_pass, status in [("x", "y", 401), (DASHBOARD[0], "y", 401), (*DASHBOARD, 200)]:
        calls.clear()
        response = client.get(
            "/rq/0/data/queues.json", headers={"Authorization": _basic(given_user, given_pass)}
        )
        assert response.status_code == status
        assert calls == [(given_user.encode(), user), (given_pass.encode(), password)]


def _equality_on_secrets(function: Any) -> list[str]:
    """Source of every ``==``/``!=``/``in`` comparison in ``function`` that touches a credential name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            text = ast.unparse(node)
            if re.search(r"token|password|candidate|given|username", text, re.IGNORECASE):
                found.append(text)
    return found


def _leaky(token: str, given: str) -> bool:
    """What the check below must catch."""
    return given == token


def test_no_credential_is_compared_with_plain_equality() -> None:
    """The comparison path has no ``==`` or ``in`` on a token or password (those stop at the first
    differing byte); only hmac.compare_digest compares them."""
    from app.surfaces import dashboard
    from app.surfaces.api import metrics

    assert _equality_on_secrets(_leaky) == ["given == token"]  # the check sees a plain comparison
    assert "compare_digest" in inspect.getsource(metrics.exposition)  # METRICS_TOKEN
    assert _equality_on_secrets(metrics.exposition) == []
    assert "compare_digest" in inspect.getsource(api_auth._matches)
    assert _equality_on_secrets(api_auth._matches) == []
    assert _equality_on_secrets(api_auth.require_token) == []
    assert "compare_digest" in inspect.getsource(dashboard.init_app)
    assert _equality_on_secrets(dashboard.init_app) == []


# --- pickled payloads written straight into Redis ------------------------------------------------


class _RunOnUnpickle:
    """Unpickling this runs a shell command: what someone able to write to Redis would plant."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def _poison(conn: redis.Redis, job_id: str, marker: Path) -> None:
    """Replace the job's payload and meta with pickles that create ``marker`` when unpickled."""
    payload = pickle.dumps(_RunOnUnpickle(f"touch {marker}"))
    conn.hset(rq.job.Job.key_for(job_id), mapping={"data": zlib.compress(payload), "meta": payload})


def _cause(conn: redis.Redis, job_id: str) -> str:
    """The failure recorded for a job: its latest result's traceback, or the job's error field."""
    fields = conn.hgetall(rq.job.Job.key_for(job_id))
    text = (fields.get(b"exc_info") or b"").decode() + (fields.get(b"error") or b"").decode()
    for _, entry in conn.xrevrange(Result.get_key(job_id), count=1):
        if entry.get(b"exc_string"):
            text += zlib.decompress(base64.b64decode(entry[b"exc_string"])).decode()
    return text


def test_the_planted_pickle_would_run_if_unpickled(rconn: redis.Redis, tmp_path: Path) -> None:
    """The control: unpickling the planted payload does create the marker, so its absence below
    means nothing unpickled it."""
    job = rq.Queue("default", connection=rconn, serializer=DefaultSerializer).enqueue("os.getcwd")
    marker = tmp_path / "control"
    _poison(rconn, job.id, marker)
    pickle.loads(zlib.decompress(rconn.hget(job.key, "data")))
    assert marker.exists()


@pytest.mark.parametrize("field", ["data", "meta"])
def test_an_inline_worker_sets_a_pickled_job_aside_and_goes_on(
    app: Flask, tmp_path: Path, field: str
) -> None:
    """A job whose payload or meta is a pickle is set aside at dequeue (failed, with the cause)
    before any code reads it; the job behind it runs. With pickled meta the inline worker used
    to stop in the failure bookkeeping and leave the rest of the queue waiting."""
    conn = app.extensions["tasklane"].redis
    job = rq.Queue("default", connection=conn, serializer=DefaultSerializer).enqueue("os.getcwd")
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_RunOnUnpickle(f"touch {marker}"))
    conn.hset(job.key, field, zlib.compress(payload) if field == "data" else payload)
    queue = JsonQueue("default", connection=conn)
    behind = queue.enqueue_call(func="app.tasks.platform.add", kwargs={"x": 1, "y": 2})
    with app.app_context():
        JsonInlineWorker([queue], connection=conn).work(burst=True)
    assert JsonJob.fetch(behind.id, connection=conn).return_value() == 3
    assert job.id in FailedJobRegistry("default", connection=conn).get_job_ids()
    assert "not stored as JSON" in _cause(conn, job.id)
    assert not marker.exists()


def test_scheduler_drops_a_pickled_periodic_entry_and_goes_on(app: Flask, tmp_path: Path) -> None:
    """A pickled entry among the periodic ones (due now, and one under a catalogue entry's own id)
    is removed unread; the pass goes on and the catalogue's entries still run (it used to stop
    the scheduler with DeserializationError)."""
    conn = app.extensions["tasklane"].redis
    process = SchedulerProcess(conn)
    register_periodic(process.periodic)
    past = datetime.now(UTC) - timedelta(seconds=5)
    planted = Scheduler(queue_name="default", connection=conn).enqueue_at(past, "os.getcwd")
    _poison(conn, planted.id, tmp_path / "unpickled-tick")
    _poison(conn, "periodic-health_check", tmp_path / "unpickled-registration")
    assert register_periodic(process.periodic)  # the poisoned catalogue entry is replaced
    process.tick()
    assert planted.id.encode() not in conn.zrange(process.periodic.scheduled_jobs_key, 0, -1)
    assert JsonQueue("high", connection=conn).count == 1  # health_check's run, from its new entry
    assert not list(tmp_path.glob("unpickled-*"))


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_no_process_ever_unpickles_a_job_planted_in_redis(
    start: Starter, rconn: redis.Redis, client: FlaskClient, tmp_path: Path
) -> None:
    """Pickled jobs planted in every place a process reads (each queue, the delayed jobs, the
    periodic entries, the failed jobs) are set aside by the scheduler, a worker of each mode,
    the API and the dashboard; nothing creates the marker, every process keeps going."""
    markers: dict[str, Path] = {}

    def plant(place: str, job: rq.job.Job) -> str:
        markers[place] = tmp_path / f"unpickled-{place}"
        _poison(rconn, job.id, markers[place])
        return str(job.id)

    modes = {"fork": "high", "inline": "default", "threads": "low"}
    planted: dict[str, str] = {}
    legit: dict[str, Path] = {}
    for mode, queue in modes.items():
        pickled_queue = rq.Queue(queue, connection=rconn, serializer=DefaultSerializer)
        planted[mode] = plant(mode, pickled_queue.enqueue("os.getcwd"))
        legit[mode] = tmp_path / f"legit-{mode}"
        enqueue(client, AUTH, "touch", {"path": str(legit[mode])}, queue=queue)
    past = datetime.now(UTC) - timedelta(seconds=5)
    default_pickled = rq.Queue("default", connection=rconn, serializer=DefaultSerializer)
    planted["delayed"] = plant("delayed", default_pickled.enqueue_at(past, "os.getcwd"))
    assert ScheduledJobRegistry("default", connection=rconn).get_job_ids() == [planted["delayed"]]
    periodic = Scheduler(queue_name="default", connection=rconn).enqueue_at(past, "os.getcwd")
    planted["periodic"] = plant("periodic", periodic)
    failed = default_pickled.enqueue("os.getcwd")
    default_pickled.remove(failed)
    FailedJobRegistry("default", connection=rconn, serializer=DefaultSerializer).add(failed, ttl=600)
    planted["failed"] = plant("failed", failed)

    # The scheduler: one pass over the due delayed job and the periodic entry.
    scheduler = start("scheduler.py", "--burst")
    assert start.wait(scheduler, 30) == 0, start.output(scheduler)[-3000:]
    # A worker of each mode, all at once, each on the queue with its planted job.
    workers = {m: start("worker.py", q, "--burst", "--mode", m) for m, q in modes.items()}
    for mode, worker in workers.items():
        assert start.wait(worker, 40) == 0, (mode, start.output(worker)[-3000:])
        assert legit[mode].read_text() == "ran", mode  # the queue flowed on past the planted job
        failed_ids = FailedJobRegistry(modes[mode], connection=rconn).get_job_ids()
        assert planted[mode] in failed_ids, (mode, start.output(worker)[-3000:])
        assert rconn.hget(rq.job.Job.key_for(planted[mode]), "status") == b"failed"
        assert "DeserializationError" in _cause(rconn, planted[mode]), mode
    # The delayed pickle was moved to its queue, where the inline worker set it aside.
    assert planted["delayed"] in FailedJobRegistry("default", connection=rconn).get_job_ids()

    # The API: a planted job a worker set aside answers as a failure with its cause (issue 18,
    # defect 3: read from its raw fields, never unpickled) and is listed among the failed jobs;
    # any other answers 409 job_unreadable (or 404) and the lists skip it.
    set_aside = {planted[mode] for mode in modes} | {planted["delayed"]}
    for place, job_id in planted.items():
        response = client.get(f"/api/v1/jobs/{job_id}", headers=AUTH)
        if job_id in set_aside:
            assert response.status_code == 200, (place, response.get_json())
            assert response.get_json()["state"] == "FAILURE", place
            assert response.get_json()["error"]["type"] == "DeserializationError", place
            continue
        assert response.status_code in (404, 409), (place, response.status_code)
        assert response.get_json()["error"]["code"] in ("job_unreadable", "job_not_found"), place
    expected = {
        "": set_aside,
        "?state=FAILURE": set_aside,
        "?state=PENDING": set(),
        "?queue=default": {planted["inline"], planted["delayed"]},
        "?task=touch": set(),
    }
    for query, listed_planted in expected.items():
        response = client.get(f"/api/v1/jobs{query}{'&' if query else '?'}limit=500", headers=AUTH)
        assert response.status_code == 200, (query, response.get_data(as_text=True))
        assert set(planted.values()) & {j["job_id"] for j in response.get_json()["jobs"]} == listed_planted, (
            query
        )
    for path in ("/api/v1/schedules", "/api/v1/queues", "/api/v1/workers"):
        assert client.get(path, headers=AUTH).status_code == 200, path
    for job_id in planted.values():
        response = client.post(f"/api/v1/jobs/{job_id}/retry", headers=AUTH)
        assert response.status_code in (404, 409), ("retry", job_id, response.status_code)

    # The dashboard: pages, data, lists and actions on the planted jobs.
    operator = {"Authorization": _basic(*DASHBOARD), "Origin": SAME_ORIGIN}
    pages = ["/rq/", "/rq/0/data/queues.json", "/rq/0/data/workers.json"]
    for queue in modes.values():
        for registry in ("queued", "failed", "scheduled", "finished"):
            pages.append(f"/rq/0/data/jobs/{queue}/{registry}/20/asc/1.json")
    for job_id in planted.values():
        pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
    for page in pages:
        assert client.get(page, headers=operator).status_code < 500, page
    for job_id in planted.values():
        assert client.post(f"/rq/job/{job_id}/requeue", headers=operator).status_code < 500
    assert client.post("/rq/requeue/default", headers=operator).status_code < 500

    # DELETE removes a job set aside (it used to answer 409, so nothing could); any other planted
    # job answers 404/409 as before.
    for job_id in planted.values():
        response = client.delete(f"/api/v1/jobs/{job_id}", headers=AUTH)
        assert response.status_code == (202 if job_id in set_aside else 409) or (
            job_id not in set_aside and response.status_code == 404
        ), ("delete", job_id, response.status_code)
        if job_id in set_aside:
            assert not rconn.exists(rq.job.Job.key_for(job_id)), job_id
    assert [place for place, marker in markers.items() if marker.exists()] == []
