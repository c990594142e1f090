"""Workflows at scale (issue 23): up to 10,000 steps in one request, written in a few transactions,
and a status answered from a summary by state (kept by the outcome path with each step's end)
and a page of steps, not from a read of every step. Against the session's real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app.core.queues import JsonJob, JsonQueue
from app.foundation import defaults, keys
from app.processes.workers import JsonInlineWorker, JsonThreadWorker, JsonWorker
from app.processes.workers.pooled import JsonPooledWorker

N = defaults.MAX_WORKFLOW_STEPS


def add(**args: float) -> dict[str, Any]:
    return {"task": "add", "args": args}


def _status(client: FlaskClient, auth: dict[str, str], workflow_id: str, query: str = "") -> dict[str, Any]:
    r = client.get(f"/api/v1/workflows/{workflow_id}{query}", headers=auth)
    assert r.status_code == 200, r.get_json()
    return dict(r.get_json())


def _create(client: FlaskClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/workflows", json=body, headers=auth)
    assert r.status_code == 202, r.get_json()
    return dict(r.get_json())


def _work(app: Flask, worker_class: type = JsonInlineWorker) -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        worker_class([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)


def test_a_group_of_10000_steps_is_accepted_and_its_status_is_a_summary_and_a_page(
    app: Flask, client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """10,000 steps in one request: every job is on its queue, the summary counts them all
    unfinished, the status lists the first 200 steps and pages on to the last."""
    created = _create(client, auth, {"type": "group", "steps": [add(x=i, y=1) for i in range(N)]})
    assert len(created["job_ids"]) == len(set(created["job_ids"])) == N
    assert rconn.llen(JsonQueue("default", connection=rconn).key) == N
    view = _status(client, auth, created["workflow_id"])
    assert view["state"] == "PENDING"
    assert view["progress"] == {"current": 0, "total": N, "percent": 0.0}
    assert view["counts"] == {"SUCCESS": 0, "FAILURE": 0, "REVOKED": 0, "unfinished": N}
    assert [s["job_id"] for s in view["steps"]] == created["job_ids"][: defaults.WORKFLOW_STEPS_PAGE]
    assert view["next_cursor"] == str(defaults.WORKFLOW_STEPS_PAGE)
    last = _status(client, auth, created["workflow_id"], f"?cursor={N - 50}")
    assert [s["job_id"] for s in last["steps"]] == created["job_ids"][-50:]
    assert last["next_cursor"] is None
    assert {s["state"] for s in last["steps"]} == {"PENDING"}


def test_a_chain_of_10000_steps_waits_behind_its_first_step(
    app: Flask, client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """Only the first step is queued; each other waits (deferred) on the one before it."""
    created = _create(client, auth, {"type": "chain", "steps": [add(x=1, y=1)] + [add(y=1)] * (N - 1)})
    ids = created["job_ids"]
    queue = JsonQueue("default", connection=rconn)
    assert [i.decode() for i in rconn.lrange(queue.key, 0, -1)] == [ids[0]]
    assert queue.deferred_job_registry.count == N - 1
    assert rconn.smembers(JsonJob.dependents_key_for(ids[4000])) == {ids[4001].encode()}
    view = _status(client, auth, created["workflow_id"], "?cursor=4000&limit=2")
    assert [s["job_id"] for s in view["steps"]] == ids[4000:4002]
    assert view["counts"]["unfinished"] == N


def test_one_step_more_than_the_limit_is_422_and_creates_nothing(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    r = client.post("/api/v1/workflows", json={"type": "group", "steps": [add(x=1, y=1)] * (N + 1)},
                    headers=auth)  # fmt: skip
    assert r.status_code == 422
    body = r.get_json()
    assert body["error"]["code"] == "invalid_workflow"
    assert str(N) in body["error"]["message"]
    assert body["error"]["details"] == [
        {"field": "steps", "message": f"{N + 1} steps (callbacks included): " + body["error"]["message"],
         "type": "too_many_steps"}
    ]  # fmt: skip
    assert rconn.dbsize() == 0 or not rconn.keys("rq:job:*")


@pytest.mark.parametrize(
    "worker_class",
    [JsonPooledWorker, JsonInlineWorker, JsonThreadWorker, JsonWorker],
    ids=["pooled", "inline", "threads", "fork"],
)
def test_the_summary_counts_each_step_as_it_ends(
    app: Flask, client: FlaskClient, auth: dict[str, str], rconn: redis.Redis, worker_class: type
) -> None:
    """A chord (group of 3, then its callback) run by a worker: the summary (read through a page
    of one step, so not from the steps) counts 4 successes, and the workflow is SUCCESS with its
    result. Steps with dependents end through RQ's transaction, the callback through the lease."""
    body = {"type": "chord", "steps": [add(x=1, y=1), add(x=2, y=2), add(x=3, y=3)],
            "callback": {"task": "xsum"}}  # fmt: skip
    created = _create(client, auth, body)
    _work(app, worker_class)
    view = _status(client, auth, created["workflow_id"], "?limit=1")
    assert view["counts"] == {"SUCCESS": 4, "FAILURE": 0, "REVOKED": 0, "unfinished": 0}
    assert view["state"] == "SUCCESS"
    assert view["result"] == 12
    assert len(view["steps"]) == 1 and view["next_cursor"] == "1"
    summary = rconn.hgetall(keys.workflow_summary(created["workflow_id"]))
    assert summary == {b"total": b"4", b"SUCCESS": b"4"}
    assert 0 < rconn.ttl(keys.workflow_summary(created["workflow_id"])) <= defaults.WORKFLOW_TTL


def test_a_failed_step_and_the_steps_it_revokes_are_counted(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """chain(add, always_fail, add, add): one success, one failure (the failed step named from the
    summary), two revoked; the same counts whether read from the summary or from every step."""
    body = {"type": "chain", "steps": [add(x=1, y=2), {"task": "always_fail", "args": {"message": "boom"}},
                                       add(y=1), add(y=1)]}  # fmt: skip
    created = _create(client, auth, body)
    _work(app)
    paged = _status(client, auth, created["workflow_id"], "?limit=1")
    whole = _status(client, auth, created["workflow_id"])
    expected = {"SUCCESS": 1, "FAILURE": 1, "REVOKED": 2, "unfinished": 0}
    assert paged["counts"] == whole["counts"] == expected
    assert paged["state"] == whole["state"] == "FAILURE"
    failed = created["job_ids"][1]
    assert paged["failed_step"] == whole["failed_step"]
    assert paged["failed_step"]["job_id"] == failed
    assert paged["error"]["message"] == "boom"
    # Retried (by hand), the failed step is no longer counted as failed.
    assert client.post(f"/api/v1/jobs/{failed}/retry", headers=auth).status_code == 202
    assert _status(client, auth, created["workflow_id"], "?limit=1")["counts"]["FAILURE"] == 0


def test_a_bad_page_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    created = _create(client, auth, {"type": "group", "steps": [add(x=1, y=1)]})
    for query in ("?cursor=-1", "?cursor=x", "?limit=0", f"?limit={defaults.WORKFLOW_STEPS_PAGE + 1}"):
        r = client.get(f"/api/v1/workflows/{created['workflow_id']}{query}", headers=auth)
        assert r.status_code == 400, query
        assert r.get_json()["error"]["code"] in ("bad_cursor", "bad_limit")


def test_a_finished_large_group_answers_its_result_in_a_few_round_trips(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A succeeded group of 1,200 steps (beyond a page): its result lists every step's result, read in
    pipelines of 500 jobs, not step by step (a finished 10,000-step group took 4 s a status call)."""
    steps = 1_200
    created = _create(client, auth, {"type": "group", "steps": [add(x=i, y=1) for i in range(steps)]})
    _work(app)
    trips = []
    real_command, real_execute = redis.Redis.execute_command, redis.client.Pipeline.execute

    def command(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(args[0])
        return real_command(self, *args, **kwargs)

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append("pipeline")
        return real_execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    view = _status(client, auth, created["workflow_id"], "?limit=1")
    monkeypatch.undo()
    assert view["state"] == "SUCCESS" and view["result"] == [i + 1 for i in range(steps)]
    # A few pipelines per 500 steps, not one per step (1,203 before); the app's own bookkeeping adds a few.
    assert len(trips) <= 30, trips
