"""``sequence``: jobs with the same key run one at a time, in enqueue order, on any worker; a job that
ends (success, final failure, revoke, expiry) hands on to the next; nothing gets stuck."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.core.queues import JsonJob, JsonQueue
from app.foundation import keys
from app.processes.workers import JsonInlineWorker
from tests.jobs import StepInput
from tests.servers import enqueue, get_job


def _work(app: Flask, queue: str = "default") -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue(queue, connection=redis_)], connection=redis_).work(burst=True)


def _step(
    client: FlaskClient, auth: dict[str, str], path: Path, label: str, key: str = "k", **args: Any
) -> str:
    """Enqueue a ``sequence_step`` in sequence ``key``."""
    return enqueue(client, auth, "sequence_step", {"path": str(path), "label": label, **args}, sequence=key)


def runs(path: Path) -> list[tuple[str, str]]:
    """(event, label) of every line the steps wrote, in the order written."""
    if not path.exists():
        return []
    return [(line.split()[0], line.split()[1]) for line in path.read_text().splitlines()]


def assert_one_at_a_time(path: Path, labels: list[str]) -> None:
    """Every label ran, in this order, each one's start after the previous one's end."""
    events = [(e, label) for e, label in runs(path) if e in ("start", "end")]
    expected = [(e, label) for label in labels for e in ("start", "end")]
    assert events == expected, events


def test_jobs_of_a_key_wait_deferred_and_run_in_order(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Only the head is on the queue; the others are DEFERRED (counted, PENDING, with their place);
    a burst worker runs them one after another in enqueue order; another key is not held back."""
    redis_ = app.extensions["tasklane"].redis
    log = tmp_path / "log"
    ids = [_step(client, auth, log, f"a{n}") for n in range(4)]
    other = _step(client, auth, tmp_path / "other", "b0", key="other")
    queue = JsonQueue("default", connection=redis_)
    assert queue.get_job_ids() == [ids[0], other]
    assert set(queue.deferred_job_registry.get_job_ids()) == set(ids[1:])
    views = [get_job(client, auth, j) for j in ids]
    assert [v["state"] for v in views] == ["PENDING"] * 4
    assert [v["status"] for v in views] == ["queued", "deferred", "deferred", "deferred"]
    assert [v["sequence"] for v in views] == [{"key": "k", "ahead": n} for n in range(4)]
    counts = {q["name"]: q for q in client.get("/api/v1/queues", headers=auth).get_json()["queues"]}
    assert counts["default"]["deferred"] == 3 and counts["default"]["waiting"] == 2
    _work(app)
    assert_one_at_a_time(log, ["a0", "a1", "a2", "a3"])
    assert [get_job(client, auth, j)["state"] for j in [*ids, other]] == ["SUCCESS"] * 5
    assert get_job(client, auth, ids[3])["sequence"] == {"key": "k", "ahead": None}
    assert not redis_.exists(keys.sequence("k")) and not redis_.smembers(keys.sequences())
    assert queue.deferred_job_registry.count == 0


def test_a_final_failure_a_revoke_and_an_expiry_hand_on(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """The head fails for good (after its retry): the next runs. A waiting one revoked and another
    that expired while waiting are skipped; the rest runs in order."""
    log = tmp_path / "log"
    failing = _step(client, auth, log, "f", fail=True)
    revoked = _step(client, auth, log, "r")
    past = (datetime.now(UTC) + timedelta(milliseconds=200)).isoformat()
    expired = enqueue(client, auth, "sequence_step", {"path": str(log), "label": "x"}, sequence="k",
                      expires=past)  # fmt: skip
    last = _step(client, auth, log, "z")
    assert client.delete(f"/api/v1/jobs/{revoked}", headers=auth).status_code == 202
    assert get_job(client, auth, last)["sequence"]["ahead"] == 2  # the revoked one left at once
    while datetime.now(UTC) < datetime.fromisoformat(past):
        app.extensions["tasklane"].redis.blpop(["tasklane:test-never-rung"], 0.05)
    _work(app)  # f fails; its retry waits in the scheduled registry, holding the sequence
    assert get_job(client, auth, last)["status"] == "deferred"
    app.extensions["tasklane"].redis.blpop(["tasklane:test-never-rung"], 0.3)
    _enqueue_due(app)
    _work(app)  # f fails for good; x expires at its start; z runs
    assert get_job(client, auth, failing)["state"] == "FAILURE"
    assert get_job(client, auth, revoked)["state"] == "REVOKED"
    view = get_job(client, auth, expired)
    assert (view["state"], view["error"]["type"]) == ("REVOKED", "expired")
    assert get_job(client, auth, last)["state"] == "SUCCESS"
    assert [label for e, label in runs(log) if e == "start"] == ["f", "f", "z"]


def _enqueue_due(app: Flask) -> None:
    """Move due scheduled jobs (a retry) onto their queues, as the scheduler does."""
    from rq.registry import ScheduledJobRegistry

    redis_ = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis_)
    registry = ScheduledJobRegistry(queue=queue)
    for job_id in registry.get_jobs_to_schedule(int(datetime.now(UTC).timestamp()) + 1):
        queue.enqueue_job(JsonJob.fetch(job_id, connection=redis_))
        registry.remove(job_id)


def test_bad_values_are_422_naming_the_field_and_store_nothing(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    for bad in ("", 7, "x" * 201, "line\nbreak", None if False else ["k"], {"key": "k"}, True):
        body = {"args": {"x": 1, "y": 2}, "options": {"sequence": bad}}
        answer = client.post("/api/v1/tasks/add", json=body, headers=auth)
        assert answer.status_code == 422, (bad, answer.get_json())
        assert [d["field"] for d in answer.get_json()["error"]["details"]] == ["options.sequence"], bad
        batch = {"items": [{"args": {"x": 1, "y": 2}}], "options": {"sequence": bad}}
        answer = client.post("/api/v1/tasks/add/batch", json=batch, headers=auth)
        assert answer.status_code == 422, (bad, answer.get_json())
        assert "options.sequence" in [d["field"] for d in answer.get_json()["error"]["details"]], bad
    assert redis_.llen("rq:queue:default") == 0 and not redis_.keys("rq:job:*")
    assert not redis_.keys("tasklane:sequence*")


def test_batch_items_join_in_order_and_every_way_in(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """``/batch`` items join their sequence in the order given (after a job enqueued before them);
    apply_async, a signature's .set(), the HTTP client and ``flask tasks enqueue --sequence`` join
    the same sequence; the OpenAPI document declares the option."""
    import httpx

    from app.calling.canvas import Signature
    from app.client import Client
    from app.tasks import sequence_step  # type: ignore[attr-defined]
    from tests.conftest import TOKEN

    redis_ = app.extensions["tasklane"].redis
    log = str(tmp_path / "log")
    first = _step(client, auth, tmp_path / "log", "api")
    items = [{"args": {"path": log, "label": f"batch{n}"}} for n in range(3)]
    body = {"items": items, "options": {"sequence": "k"}}
    answer = client.post("/api/v1/tasks/sequence_step/batch", json=body, headers=auth)
    assert answer.status_code == 202, answer.get_json()
    batch = answer.get_json()["job_ids"]
    with app.app_context():
        by_call = sequence_step.apply_async(kwargs={"path": log, "label": "call"}, sequence="k")
        by_sig = Signature(sequence_step, (), {"path": log, "label": "sig"}).set(sequence="k").apply_async()
    http = Client("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    over_http = http.enqueue("sequence_step", {"path": log, "label": "http"}, sequence="k")
    runner = app.test_cli_runner()
    command = ["tasks", "enqueue", "sequence_step", f"path={log}", "label=cli", "--sequence", "k"]
    printed = runner.invoke(args=command)
    assert printed.exit_code == 0, printed.output
    refused = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--sequence", ""])
    assert refused.exit_code != 0 and "sequence" in refused.output
    expected = [first, *batch, by_call.id, by_sig.id, over_http, printed.output.strip()]
    assert [i.decode() for i in redis_.lrange(keys.sequence("k"), 0, -1)] == expected
    _work(app)
    labels = ["api", "batch0", "batch1", "batch2", "call", "sig", "http", "cli"]
    assert_one_at_a_time(tmp_path / "log", labels)

    doc = client.get("/api/v1/openapi.json").get_json()
    for name in ("EnqueueOptions", "BatchOptions"):
        declared = doc["components"]["schemas"][name]["properties"]["sequence"]
        string = declared["anyOf"][0]
        assert (string["type"], string["minLength"], string["maxLength"]) == ("string", 1, 200), declared
    assert doc["paths"]["/api/v1/tasks/add"]["post"]["x-tasklane-policy"]["sequence_key"] is None
    assert "sequence" in doc["components"]["schemas"]["Job"]["properties"]


def test_the_tasks_default_sequence_key_and_task_overrides(tmp_path: Path, redis_url: str) -> None:
    """``sequence_key="path"`` in TASK_OVERRIDES (as in a declaration): jobs with the same value of that
    argument share a sequence named after the task and the value; the call's own ``sequence`` wins;
    an unknown field is refused at start."""
    from app import create_app
    from app.catalogue.registry import TaskRegistry, task
    from tests.conftest import TOKEN, make_env

    registry = TaskRegistry(None)

    @task(input=StepInput, sequence_key="path", registry=registry)
    def per_file(path: str, label: str, seconds: float, fail: bool) -> None:
        """One at a time per file."""

    spec = registry.get("per_file")
    assert spec is not None and spec.describe()["sequence_key"] == "path"
    with pytest.raises(ValueError, match="sequence_key"):
        task("bad_sequence", sequence_key="nope", registry=registry)(lambda: None)

    overrides = json.dumps({"sequence_step": {"sequence_key": "path"}})
    app = create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=overrides))
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    redis_ = app.extensions["tasklane"].redis
    log_a, log_b = str(tmp_path / "a"), str(tmp_path / "b")
    a1 = enqueue(client, auth, "sequence_step", {"path": log_a, "label": "1"})
    b1 = enqueue(client, auth, "sequence_step", {"path": log_b, "label": "1"})
    a2 = enqueue(client, auth, "sequence_step", {"path": log_a, "label": "2"})
    own = enqueue(client, auth, "sequence_step", {"path": log_a, "label": "3"}, sequence="mine")
    assert [i.decode() for i in redis_.lrange(keys.sequence(f"sequence_step:{log_a}"), 0, -1)] == [a1, a2]
    assert get_job(client, auth, a2)["sequence"] == {"key": f"sequence_step:{log_a}", "ahead": 1}
    assert get_job(client, auth, b1)["sequence"]["ahead"] == 0
    assert get_job(client, auth, own)["sequence"] == {"key": "mine", "ahead": 0}
    shown = {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}
    assert shown["sequence_step"]["overridden"]["sequence_key"] == {"declared": None, "in_force": "path"}
    for bad in ({"sequence_key": "nope"}, {"sequence_key": 3}):
        with pytest.raises(Exception, match="sequence_key"):
            create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"sequence_step": bad})))
