"""Pausing a queue (POST /api/v1/queues/<name>/pause|resume): no worker on any host takes its jobs,
enqueues still land, the state lives in Redis; the API, the CLI, /metrics and the console show it."""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq.exceptions import DequeueTimeout

from app.catalogue.registry import REGISTRY
from app.core import queues as queue_store
from app.core.dispatch import enqueue as core_enqueue
from app.core.queues import JsonQueue, move_first_on, moved, paused_in
from app.processes.workers import JsonInlineWorker
from tests.conftest import DASHBOARD, TOKEN
from tests.servers import FINAL, Starter, enqueue, get_job, start_worker, wait_state


def _add(app: Flask, x: int) -> str:
    rt = app.extensions["tasklane"]
    spec = REGISTRY.get("add")
    assert spec is not None
    job = core_enqueue(
        spec, spec.validate({"x": x, "y": 1}), rt.redis, default_result_ttl=60, failure_ttl=600
    )
    return str(job.id)


def _queues(client: FlaskClient, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in client.get("/api/v1/queues", headers=auth).get_json()["queues"]}


def test_pause_and_resume_through_the_api(client: FlaskClient, auth: dict[str, str]) -> None:
    """200 with the new state, shown by GET /api/v1/queues; 404 in the error shape for an unknown
    queue; 401 without a token."""
    assert {q["paused"] for q in _queues(client, auth).values()} == {False}
    paused = client.post("/api/v1/queues/default/pause", headers=auth)
    assert paused.status_code == 200 and paused.get_json() == {"name": "default", "paused": True}
    shown = _queues(client, auth)
    assert shown["default"]["paused"] is True and shown["high"]["paused"] is False
    again = client.post("/api/v1/queues/default/pause", headers=auth)  # idempotent
    assert again.status_code == 200 and _queues(client, auth)["default"]["paused"] is True
    resumed = client.post("/api/v1/queues/default/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.get_json() == {"name": "default", "paused": False}
    assert _queues(client, auth)["default"]["paused"] is False

    unknown = client.post("/api/v1/queues/nope/pause", headers=auth)
    assert unknown.status_code == 404
    assert (
        unknown.get_json()["error"]["code"] == "unknown_queue"
        and "nope" in unknown.get_json()["error"]["message"]
    )
    assert client.post("/api/v1/queues/default/pause").status_code == 401


def test_a_paused_queue_takes_enqueues_but_no_worker_takes_its_jobs(app: Flask, auth: dict[str, str]) -> None:
    """A worker on a paused queue runs nothing (its jobs stay waiting, none moved aside); one on
    several queues goes on with the others; after a resume the jobs run, in order."""
    redis_ = app.extensions["tasklane"].redis
    client = app.test_client()
    assert client.post("/api/v1/queues/default/pause", headers=auth).status_code == 200
    waiting = [enqueue(client, auth, "add", {"x": n, "y": 1}) for n in range(3)]
    urgent = enqueue(client, auth, "add", {"x": 10, "y": 1}, queue="high")
    with app.app_context():
        queues = [JsonQueue(name, connection=redis_) for name in ("high", "default")]
        JsonInlineWorker(queues, connection=redis_).work(burst=True)
    assert get_job(client, auth, urgent)["result"] == 11
    assert [get_job(client, auth, j)["state"] for j in waiting] == ["PENDING"] * 3
    assert redis_.llen("rq:queue:default") == 3 and redis_.llen("rq:queue:default:intermediate") == 0
    assert _queues(client, auth)["default"]["waiting"] == 3

    assert client.post("/api/v1/queues/default/resume", headers=auth).status_code == 200
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)
    assert [get_job(client, auth, j)["result"] for j in waiting] == [1, 2, 3]


def test_the_pooled_prefetch_honours_a_pause(app: Flask, auth: dict[str, str]) -> None:
    """The move a pooled worker pipelines with a success (to take the next job) skips a paused
    queue too, and says which of its queues were paused."""
    redis_ = app.extensions["tasklane"].redis
    client = app.test_client()
    enqueue(client, auth, "add", {"x": 1, "y": 1})
    queue_store.pause(redis_, "default")
    keys = ["rq:queue:high", "rq:queue:default"]
    with redis_.pipeline(transaction=False) as pipe:
        move_first_on(pipe, keys)
        (answer,) = pipe.execute()
    assert moved(answer) is None and paused_in(answer) == {"default"}
    queue_store.resume(redis_, "default")
    with redis_.pipeline(transaction=False) as pipe:
        move_first_on(pipe, keys)
        (answer,) = pipe.execute()
    found = moved(answer)
    assert found is not None and found[0] == "rq:queue:default" and paused_in(answer) == set()


def test_an_idle_worker_listens_to_the_resume_bell_of_a_paused_queue(app: Flask) -> None:
    """Waiting on a paused queue: an enqueue there does not wake the worker (its doorbell is not
    listened to), a resume does, at once."""
    redis_ = app.extensions["tasklane"].redis
    queue_store.pause(redis_, "default")
    queue = JsonQueue("default", connection=redis_)
    redis_.delete("tasklane:doorbell:default")
    redis_.rpush("tasklane:doorbell:default", 1)  # a ring from an enqueue into the paused queue
    began = time.monotonic()
    with pytest.raises(DequeueTimeout):
        JsonQueue.dequeue_any([queue], 1, connection=redis_)
    assert time.monotonic() - began >= 0.9  # it waited; the ring stayed unheard
    assert redis_.llen("tasklane:doorbell:default") == 1

    _add(app, 4)
    queue_store.resume(redis_, "default")  # rings before the wait starts: taken at once
    began = time.monotonic()
    taken = JsonQueue.dequeue_any([queue], 5, connection=redis_)
    assert taken is not None and time.monotonic() - began < 0.5


def test_the_cli_pauses_resumes_and_shows(app: Flask) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["queues", "pause", "low"]).output.strip() == "paused low"
    shown = runner.invoke(args=["queues", "show"]).output
    assert re.search(r"^low\s.*\spaused$", shown, re.M) and not re.search(r"^default\s.*paused", shown, re.M)
    assert queue_store.paused_queues(app.extensions["tasklane"].redis) == {"low"}
    assert runner.invoke(args=["queues", "resume", "low"]).output.strip() == "resumed low"
    assert queue_store.paused_queues(app.extensions["tasklane"].redis) == set()
    bad = runner.invoke(args=["queues", "pause", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_metrics_show_a_paused_gauge(client: FlaskClient, auth: dict[str, str]) -> None:
    client.post("/api/v1/queues/high/pause", headers=auth)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'tasklane_queue_paused{queue="high"} 1.0' in text
    assert 'tasklane_queue_paused{queue="default"} 0.0' in text


def test_the_console_pauses_and_resumes_a_queue(tmp_path: Any, redis_url: str, auth: dict[str, str]) -> None:
    """The Queues page shows the pause with a Resume button; each action is audited; a read-only
    user sees no button and is refused the action."""
    import base64

    from app import create_app
    from tests.conftest import make_env

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    operator, reader = basic(*DASHBOARD), basic("auditor", "read-only-password-1")
    web = create_app(
        make_env(tmp_path, redis_url, CONSOLE_READONLY_USERS="auditor:read-only-password-1")
    ).test_client()
    html = web.get("/console/queues", headers=operator).get_data(as_text=True)
    assert "is not built yet" not in html and 'data-queue-action="/console/actions/queues/low/pause"' in html
    token = re.search(r'name="console-token" content="([^"]*)"', html)
    assert token
    headers = {**operator, "Origin": "http://localhost", "X-Console-Token": token.group(1)}
    done = web.post("/console/actions/queues/low/pause", json={}, headers=headers)
    assert done.status_code == 200 and done.get_json() == {"name": "low", "paused": True}
    assert web.get("/api/v1/queues", headers=auth).get_json()["queues"][2] == {
        **web.get("/api/v1/queues", headers=auth).get_json()["queues"][2],
        "name": "low",
        "paused": True,
    }
    html = web.get("/console/queues", headers=operator).get_data(as_text=True)
    assert '<tr data-queue="low" data-paused="true">' in html
    assert 'data-queue-action="/console/actions/queues/low/resume"' in html
    assert web.post("/console/actions/queues/low/resume", json={}, headers=headers).status_code == 200
    assert web.post("/console/actions/queues/nope/pause", json={}, headers=headers).status_code == 404
    overview = web.get("/console/", headers=operator).get_data(as_text=True)
    assert "queue pause" in overview and "queue resume" in overview

    page = web.get("/console/queues", headers=reader).get_data(as_text=True)
    assert "data-queue-action" not in page and '<tr data-queue="low"' in page
    reader_token = re.search(r'name="console-token" content="([^"]*)"', page)
    refused = web.post(
        "/console/actions/queues/low/pause",
        json={},
        headers={
            **reader,
            "Origin": "http://localhost",
            "X-Console-Token": reader_token.group(1) if reader_token else "",
        },
    )
    assert refused.status_code == 403 and queue_store.paused_queues(redis.Redis.from_url(redis_url)) == set()


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", [[], ["--mode", "fork"]], ids=["pooled", "fork"])
def test_a_real_worker_stops_within_a_second_and_resumes_within_a_second(
    mode: list[str], start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A worker process: a job enqueued into a paused queue does not run for seconds, and the
    worker does not poll Redis meanwhile; the pause outlives a worker restart; after a resume the
    job runs within about a second."""
    args = ["worker.py", "default", *mode] if mode else ["worker.py", "default", "--mode", "pooled"]
    worker = start_worker(start, rconn, *args[1:])
    assert wait_state(client, auth, enqueue(client, auth, "add", {"x": 1, "y": 1}), FINAL)["result"] == 2
    assert client.post("/api/v1/queues/default/pause", headers=auth).status_code == 200
    held = [enqueue(client, auth, "add", {"x": n, "y": 1}) for n in range(5)]
    before = int(rconn.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    time.sleep(3)
    calls = int(rconn.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)) - before
    assert [get_job(client, auth, j)["state"] for j in held] == ["PENDING"] * 5
    assert calls <= 12, f"{calls} scripts run in 3 s by an idle worker on a paused queue: it polls"

    worker.send_signal(signal.SIGTERM)
    start.wait(worker, 30)
    start_worker(start, rconn, *args[1:])
    time.sleep(1.5)
    assert [get_job(client, auth, j)["state"] for j in held] == ["PENDING"] * 5

    resumed_at = time.monotonic()
    assert client.post("/api/v1/queues/default/resume", headers=auth).status_code == 200
    first = wait_state(client, auth, held[0], FINAL, timeout=10, interval=0.02)
    took = time.monotonic() - resumed_at
    assert first["result"] == 1 and took < 1.5, f"the first job ran {took:.2f} s after the resume"
    assert [wait_state(client, auth, j, FINAL)["result"] for j in held] == [1, 2, 3, 4, 5]


def test_a_pause_and_an_expiry_outlive_a_redis_kill(tmp_path: Any) -> None:
    """Redis with its append-only file (as docs/RELIABILITY.md runs it) killed with SIGKILL and
    started again: the queue is still paused (a worker takes nothing from it), and a waiting
    job's expiry still ends it at its start once the queue is resumed."""
    from datetime import UTC, datetime, timedelta

    from app import create_app
    from tests.conftest import make_env
    from tests.servers import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/api/v1/queues/default/pause", headers=auth).status_code == 200
        soon = (datetime.now(UTC) + timedelta(milliseconds=300)).isoformat()
        doomed = enqueue(client, auth, "add", {"x": 1, "y": 1}, expires=soon)
        kept = enqueue(client, auth, "add", {"x": 2, "y": 1})
        server.kill()
        server.start()
        app = create_app(make_env(tmp_path, server.url))
        client = app.test_client()
        assert _queues(client, auth)["default"]["paused"] is True
        redis_ = app.extensions["tasklane"].redis
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)
        assert [get_job(client, auth, j)["state"] for j in (doomed, kept)] == ["PENDING", "PENDING"]
        while datetime.now(UTC) < datetime.fromisoformat(soon):
            redis_.blpop(["tasklane:test-never-rung"], 0.1)
        assert client.post("/api/v1/queues/default/resume", headers=auth).status_code == 200
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)
        gone = get_job(client, auth, doomed)
        assert (gone["state"], gone["error"]["type"]) == ("REVOKED", "expired")
        assert get_job(client, auth, kept)["result"] == 3
    finally:
        server.stop()
