"""``expires``: a job not started by then never runs; it ends REVOKED with error.type ``expired``,
whether a worker about to start it or the sweep meets it first; on every way in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.calling.canvas import Signature
from app.catalogue.registry import REGISTRY, TaskRegistry, task
from app.core import outcomes
from app.core import queues as queue_store
from app.core.queues import JsonJob, JsonQueue
from app.foundation import keys
from app.foundation.clock import ManualClock
from app.foundation.meta import Meta
from app.ops import metrics
from app.processes import maintenance
from app.processes.workers import JsonInlineWorker
from tests.conftest import TOKEN, make_env
from tests.servers import FINAL, Starter, enqueue, get_job, start_worker, wait_state


def _past() -> str:
    return (datetime.now(UTC) - timedelta(seconds=5)).isoformat()


def _work(app: Flask, queue: str = "default") -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue(queue, connection=redis_)], connection=redis_).work(burst=True)


def _expired(view: dict[str, Any]) -> bool:
    return view["state"] == "REVOKED" and view["error"]["type"] == "expired" and view["result"] is None


def _expiry(redis_: redis.Redis, job_id: str) -> datetime:
    return datetime.fromisoformat(JsonJob.fetch(job_id, connection=redis_).meta[Meta.EXPIRES])


def test_an_expired_job_never_runs_and_ends_revoked(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """At its start a job past its expires is ended, not run: REVOKED, error.type expired, counted
    as expired; a job within its expires runs as usual."""
    redis_ = app.extensions["tasklane"].redis
    marker = tmp_path / "ran"
    gone = enqueue(
        client, auth, "slow_touch", {"path": str(marker), "seconds": 0.1, "steps": 1}, expires=_past()
    )
    kept = enqueue(client, auth, "add", {"x": 1, "y": 2}, expires=60)
    _work(app)
    view = get_job(client, auth, gone)
    assert _expired(view), view
    assert "never run" in view["error"]["message"] and not marker.exists()
    assert get_job(client, auth, kept)["result"] == 3
    assert metrics.job_counts(redis_)[("slow_touch", "expired")] == 1
    assert redis_.zscore(keys.expiries(), gone) is None  # its index entry went with it
    assert redis_.zscore("rq:canceled:default", gone) is not None  # kept as a revoked job is
    assert 0 < redis_.ttl(JsonJob.key_for(gone)) <= 7 * 24 * 3600
    listed = client.get("/api/v1/jobs?state=REVOKED", headers=auth).get_json()
    assert gone in [j["job_id"] for j in listed["jobs"]]


def test_seconds_are_counted_from_the_enqueue_and_bad_values_are_422(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    before = datetime.now(UTC)
    job_id = enqueue(client, auth, "add", {"x": 1, "y": 2}, expires=90)
    assert timedelta(seconds=89) <= _expiry(redis_, job_id) - before <= timedelta(seconds=92)
    assert redis_.zscore(keys.expiries(), job_id) == pytest.approx(_expiry(redis_, job_id).timestamp())
    at = "2031-02-03T04:05:06+02:00"
    job_id = enqueue(client, auth, "add", {"x": 1, "y": 2}, expires=at)
    assert _expiry(redis_, job_id) == datetime.fromisoformat(at)
    # The last two are times Python cannot read in UTC (they were a 500, not a 422).
    edge = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")
    for bad in (0, -5, "soon", "2031-02-03T04:05:06", 400 * 24 * 3600, True, *edge):
        body = {"args": {"x": 1, "y": 2}, "options": {"expires": bad}}
        answer = client.post("/api/v1/tasks/add", json=body, headers=auth)
        assert answer.status_code == 422, (bad, answer.get_json())
        fields = {d["field"] for d in answer.get_json()["error"]["details"]}
        assert any(f.startswith("options.expires") for f in fields), (bad, fields)
    for path, body in (
        ("/api/v1/tasks/add", {"args": {"x": 1, "y": 2}, "options": {"eta": edge[0]}}),
        ("/api/v1/tasks/add/batch", {"items": [{"args": {"x": 1, "y": 2}}], "options": {"expires": edge[0]}}),
    ):
        answer = client.post(path, json=body, headers=auth)
        assert answer.status_code == 422 and "out of range" in answer.get_data(as_text=True), (
            answer.get_json()
        )
    refused = app.test_cli_runner().invoke(
        args=["tasks", "enqueue", "add", "x=1", "y=2", "--expires", edge[0]]
    )
    assert refused.exit_code != 0 and "Traceback" not in refused.output and "out of range" in refused.output
    assert redis_.llen("rq:queue:default") == 2  # nothing of the refused ones was stored


def test_the_sweep_ends_waiting_jobs_past_their_expiry(
    app: Flask, client: FlaskClient, auth: dict[str, str], manual_clock: ManualClock
) -> None:
    """Jobs a worker would meet late (a paused queue, scheduled after their expiry) are ended by the
    sweep once their time passes, off their list or registry; one within its time stays; the index
    entry of a job that already ended is dropped."""
    redis_ = app.extensions["tasklane"].redis
    queue_store.pause(redis_, "default")
    waiting = enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=30)
    later = enqueue(client, auth, "add", {"x": 2, "y": 1}, expires=30, countdown=3600)
    longer = enqueue(client, auth, "add", {"x": 3, "y": 1}, expires=300)
    ran = enqueue(client, auth, "add", {"x": 4, "y": 1}, expires=30, queue="high")
    _work(app, "high")
    assert get_job(client, auth, ran)["result"] == 5

    maintenance.sweep(redis_)
    assert [get_job(client, auth, j)["state"] for j in (waiting, later, longer)] == ["PENDING"] * 3
    manual_clock.advance(31)
    maintenance.sweep(redis_)
    assert _expired(get_job(client, auth, waiting)) and _expired(get_job(client, auth, later))
    assert get_job(client, auth, longer)["state"] == "PENDING"
    assert [i.decode() for i in redis_.lrange("rq:queue:default", 0, -1)] == [longer]
    assert redis_.zcard("rq:scheduled:default") == 0
    assert {i.decode() for i in redis_.zrange(keys.expiries(), 0, -1)} == {longer}  # `ran`'s went too
    assert metrics.job_counts(redis_)[("add", "expired")] == 2


def test_a_worker_and_the_sweep_never_both_end_it(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """Once ended (by either), the other finds nothing to do: counted once; a job that started once
    (a retry waiting, a requeued orphan) is not expired."""
    redis_ = app.extensions["tasklane"].redis
    job_id = enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=_past())
    job = JsonJob.fetch(job_id, connection=redis_)
    queue = JsonQueue("default", connection=redis_)
    assert outcomes.expire(job) is True
    again = JsonJob.fetch(job_id, connection=redis_)
    assert outcomes.expire(again) is False and outcomes.expire_due(redis_) == 0
    assert metrics.job_counts(redis_)[("add", "expired")] == 1

    retried = JsonJob.fetch(
        enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=_past()), connection=redis_
    )
    retried.meta[Meta.ATTEMPTS] = [
        {"attempt": 1, "type": "WorkerLostError", "message": "died", "at": _past()}
    ]
    retried.save_meta()
    assert outcomes.expire_if_due(retried, queue) is False
    snoozed = JsonJob.fetch(
        enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=_past()), connection=redis_
    )
    snoozed.meta[Meta.SNOOZED] = 1
    snoozed.save_meta()
    assert outcomes.expire_if_due(snoozed, queue) is False
    assert outcomes.expire_due(redis_) == 0 and redis_.zcard(keys.expiries()) == 0


def test_what_waited_on_an_expired_job_is_revoked(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    first = JsonJob.fetch(enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=_past()), connection=redis_)
    queue = JsonQueue("default", connection=redis_)
    spec = REGISTRY.get("add")
    assert spec is not None
    from app.core.dispatch import enqueue as core_enqueue

    second = core_enqueue(
        spec, {"x": 2, "y": 2}, redis_, default_result_ttl=60, failure_ttl=60, depends_on=[first]
    )
    _work(app)
    assert _expired(get_job(client, auth, first.id))
    assert get_job(client, auth, second.id)["state"] == "REVOKED"
    assert queue.count == 0


def test_batch_takes_expires_once_for_all_items(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    items = [{"args": {"x": n, "y": 1}} for n in range(3)]
    answer = client.post("/api/v1/tasks/add/batch", json={"items": items, "options": {"expires": _past()}},
                         headers=auth)  # fmt: skip
    assert answer.status_code == 202, answer.get_json()
    ids = answer.get_json()["job_ids"]
    assert redis_.zcard(keys.expiries()) == 3
    _work(app)
    assert all(_expired(get_job(client, auth, j)) for j in ids)
    body = {"items": items, "options": {"expires": -1, "countdown": 3}}
    bad = client.post("/api/v1/tasks/add/batch", json=body, headers=auth)
    assert bad.status_code == 422
    assert {d["field"] for d in bad.get_json()["error"]["details"]} >= {
        "options.expires",
        "options.countdown",
    }


def test_the_tasks_default_from_its_declaration_and_task_overrides(tmp_path: Path, redis_url: str) -> None:
    """A task's declared ``expires`` (and TASK_OVERRIDES' ``expires``) applies when the call gives
    none; the call's own wins; the catalogue shows the policy in force."""
    registry = TaskRegistry(None)

    @task(expires=120, registry=registry)
    def digest() -> None:
        """A digest that is useless an hour late."""

    spec = registry.get("digest")
    assert spec is not None and spec.expires == 120 and spec.describe()["expires"] == 120
    with pytest.raises(ValueError, match="expires"):
        task("bad_expiry", expires=0, registry=registry)(lambda: None)

    overrides = json.dumps({"add": {"expires": 45}})
    app = create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=overrides))
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    redis_ = app.extensions["tasklane"].redis
    before = datetime.now(UTC)
    by_default = enqueue(client, auth, "add", {"x": 1, "y": 1})
    assert timedelta(seconds=44) <= _expiry(redis_, by_default) - before <= timedelta(seconds=47)
    own = enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=600)
    assert _expiry(redis_, own) - before >= timedelta(seconds=599)
    shown = {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}["add"]
    assert shown["expires"] == 45 and shown["overridden"]["expires"] == {"declared": None, "in_force": 45}
    with pytest.raises(Exception, match="expires"):
        create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"add": {"expires": 0}})))


def test_apply_async_the_canvas_the_http_client_and_the_cli(app: Flask, auth: dict[str, str]) -> None:
    """The same option from Python (apply_async, a signature's .set()), the HTTP client and
    ``flask tasks enqueue --expires``."""
    from app.client import Client
    from app.tasks import add

    redis_ = app.extensions["tasklane"].redis
    now = datetime.now(UTC)
    with app.app_context():
        by_call = add.apply_async((1, 2), expires=30)
        naive = add.apply_async((1, 2), expires=datetime(2031, 1, 1, 12))  # naive: UTC
        by_sig = Signature(add, (1, 2)).set(expires=40).apply_async()
    assert timedelta(seconds=29) <= _expiry(redis_, by_call.id) - now <= timedelta(seconds=32)
    assert _expiry(redis_, naive.id) == datetime(2031, 1, 1, 12, tzinfo=UTC)
    assert timedelta(seconds=39) <= _expiry(redis_, by_sig.id) - now <= timedelta(seconds=42)
    with pytest.raises(ValueError, match="expires"):
        Signature(add, (1, 2)).set(expires=40).node(False)

    client = Client("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    over_http = client.enqueue("add", {"x": 1, "y": 2}, expires=datetime(2031, 5, 1, tzinfo=UTC))
    assert _expiry(redis_, over_http) == datetime(2031, 5, 1, tzinfo=UTC)

    runner = app.test_cli_runner()
    printed = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--expires", "50"])
    assert printed.exit_code == 0, printed.output
    assert timedelta(seconds=49) <= _expiry(redis_, printed.output.strip()) - now <= timedelta(seconds=53)
    at = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--expires", "2031-06-01T00:00:00Z"])
    assert _expiry(redis_, at.output.strip()) == datetime(2031, 6, 1, tzinfo=UTC)
    refused = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--expires", "later"])
    assert refused.exit_code != 0 and "expires" in refused.output


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_real_worker_never_runs_an_expired_job(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A pooled worker process: a job that expired while its queue was paused ends REVOKED/expired
    and its body never runs; the job behind it runs."""
    start_worker(start, rconn, "default", "--mode", "pooled")
    assert client.post("/api/v1/queues/default/pause", headers=auth).status_code == 200
    marker = tmp_path / "ran"
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    gone = enqueue(
        client, auth, "slow_touch", {"path": str(marker), "seconds": 0.1, "steps": 1}, expires=soon
    )
    kept = enqueue(client, auth, "add", {"x": 2, "y": 2}, expires=600)
    wait_for_past = datetime.fromisoformat(soon) + timedelta(seconds=0.2)
    while datetime.now(UTC) < wait_for_past:
        rconn.blpop(["tasklane:test-never-rung"], 0.2)
    assert client.post("/api/v1/queues/default/resume", headers=auth).status_code == 200
    assert wait_state(client, auth, kept, FINAL)["result"] == 4
    view = wait_state(client, auth, gone, FINAL)
    assert _expired(view), view
    assert not marker.exists()


def test_the_openapi_document_declares_it(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    for name in ("EnqueueOptions", "BatchOptions"):
        kinds = schemas[name]["properties"]["expires"]["anyOf"]
        assert {"type": "number"} in kinds and {"type": "string", "format": "date-time"} in kinds
    batch = doc["paths"]["/api/v1/tasks/add/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["properties"]["options"] == {"$ref": "#/components/schemas/BatchOptions"}
    assert doc["paths"]["/api/v1/tasks/add"]["post"]["x-tasklane-policy"]["expires"] is None
