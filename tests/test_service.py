"""Integration tests of the running service: real gunicorn, worker.py and scheduler.py processes.

Each test starts its processes against the session's own redis-server (flushed per test)
and drives them over HTTP or through Redis, the way an operator or a client would.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import pytest
import redis
import requests
import rq
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer, JSONSerializer
from rq_scheduler import Scheduler

from app.catalogue.registry import REGISTRY
from app.foundation.keys import scheduler_heartbeat as heartbeat_key
from tests.conftest import DASHBOARD, TOKEN
from tests.servers import (
    GUNICORN,
    Starter,
    enqueue,
    free_port,
    get_job,
    start_web,
    wait_for,
    wait_state,
    wait_workers,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
SCHEDULED_JOBS_KEY = "rq:scheduler:scheduled_jobs"
#: Every periodic entry of the catalogue (health_check, model_cache_refresh, ...).
PERIODIC = sorted(f"periodic-{spec.name}" for spec in REGISTRY.periodic())


def assert_error_shape(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- 1. the happy path over real HTTP ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_enqueue_over_http_runs_on_a_real_worker(start: Starter, rconn: redis.Redis) -> None:
    worker = start("worker.py")
    base = start_web(start)
    wait_workers(start, rconn, 1, worker, timeout=20)

    response = requests.post(
        f"{base}/api/v1/tasks/add", json={"args": {"x": 2, "y": 3}}, headers=AUTH, timeout=10
    )
    assert response.status_code == 202, response.text
    body = response.json()
    location = response.headers["Location"]
    assert location.endswith(f"/api/v1/jobs/{body['job_id']}")
    assert body["task"] == "add"
    assert body["links"]["self"] == location

    def finished() -> dict[str, Any] | None:
        job = requests.get(urljoin(base, location), headers=AUTH, timeout=10).json()
        return job if job["state"] == "SUCCESS" else None

    job = wait_for(finished, timeout=20, interval=0.1, message="the add job to succeed")
    assert job["result"] == 5
    assert job["status"] == "finished"
    assert job["job_id"] == body["job_id"]
    assert job["worker"], job
    assert rconn.sismember("rq:workers", f"rq:worker:{job['worker']}")


# --- 2. every error status over real HTTP ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_error_statuses_over_http(start: Starter) -> None:
    base = start_web(start, MAX_REQUEST_BYTES="2048")
    add = f"{base}/api/v1/tasks/add"

    malformed = requests.post(add, data=b'{"args": {"x": 1,', headers=JSON_AUTH, timeout=10)
    assert assert_error_shape(malformed, 400)["code"] == "malformed_json"

    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        unauthorized = requests.post(add, json={"args": {"x": 1, "y": 2}}, headers=headers, timeout=10)
        assert_error_shape(unauthorized, 401)
        assert unauthorized.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert_error_shape(requests.get(f"{base}/api/v1/tasks", timeout=10), 401)

    unknown_task = requests.post(
        f"{base}/api/v1/tasks/no_such_task", json={"args": {}}, headers=AUTH, timeout=10
    )
    assert "no_such_task" in assert_error_shape(unknown_task, 404)["message"]

    unknown_job = requests.get(f"{base}/api/v1/jobs/no-such-job", headers=AUTH, timeout=10)
    assert_error_shape(unknown_job, 404)

    # The same valid request, padded with white space to just under and well over the limit.
    request = b'{"args": {"x": 1, "y": 2}}'
    too_large = requests.post(add, data=request + b" " * 8192, headers=JSON_AUTH, timeout=10)
    assert assert_error_shape(too_large, 413)["code"] == "payload_too_large"
    fits = request + b" " * (2048 - len(request))
    assert requests.post(add, data=fits, headers=JSON_AUTH, timeout=10).status_code == 202

    invalid = requests.post(
        add, json={"args": {"x": "two"}, "options": {"countdown": -1}}, headers=AUTH, timeout=10
    )
    details = assert_error_shape(invalid, 422)["details"]
    assert isinstance(details, list)
    fields = {d["field"] for d in details}
    assert {"args.x", "args.y", "options.countdown"} <= fields, details
    assert all(isinstance(d["message"], str) and d["message"] for d in details)

    # Redis unreachable: a web process whose REDIS_URL points at a port nobody listens on.
    down = start_web(start, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    unavailable = requests.post(
        f"{down}/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=AUTH, timeout=10
    )
    elapsed = time.monotonic() - started
    assert assert_error_shape(unavailable, 503)["code"] == "redis_unavailable"
    assert elapsed < 5, f"503 took {elapsed:.1f} s"


@pytest.mark.timeout(60)
def test_a_client_that_sends_its_whole_body_first_receives_the_413(start: Starter) -> None:
    """Over the limit, sized or chunked, is 413; a client still sending when it comes gets it, not a reset."""
    base = start_web(start)
    add = f"{base}/api/v1/tasks/add"

    sized = requests.post(add, data=b"x" * 11_000_000, headers=JSON_AUTH, timeout=30)
    assert assert_error_shape(sized, 413)["code"] == "payload_too_large"
    chunked = requests.post(add, data=(b"x" * 65536 for _ in range(40)), headers=JSON_AUTH, timeout=30)
    assert assert_error_shape(chunked, 413)["code"] == "payload_too_large"

    # urllib writes the whole body before it reads a byte of the answer.
    request = urllib.request.Request(add, data=b"x" * 11_000_000, headers=JSON_AUTH)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "payload_too_large"

    # The connection stays usable: the rest of the body was read, not left on the socket.
    with requests.Session() as session:
        assert session.post(add, data=b"x" * 3_000_000, headers=JSON_AUTH, timeout=30).status_code == 413
        after = session.post(add, json={"args": {"x": 1, "y": 2}}, headers=AUTH, timeout=30)
        assert after.status_code == 202, after.text


# --- 3. the dashboard's basic auth -----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dashboard_needs_its_credentials(start: Starter) -> None:
    base = start_web(start)
    anonymous = requests.get(f"{base}/rq/", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].lower().startswith("basic")
    for credentials in ((DASHBOARD[0], "wrong"), ("wrong", DASHBOARD[1]), (DASHBOARD[1], DASHBOARD[0])):
        assert requests.get(f"{base}/rq/", auth=credentials, timeout=10).status_code == 401
    # A valid API token is not a dashboard credential.
    assert requests.get(f"{base}/rq/", headers=AUTH, timeout=10).status_code == 401
    ok = requests.get(f"{base}/rq/", auth=DASHBOARD, timeout=10)
    assert ok.status_code == 200
    assert "text/html" in ok.headers["Content-Type"]


# --- 4. forged jobs are refused, never unpickled ---------------------------------------------------


class _RunOnUnpickle:
    """Unpickling this object runs a shell command (what an attacker with Redis access would write)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.timeout(60)
def test_forged_jobs_are_never_executed(
    start: Starter, rconn: redis.Redis, client: FlaskClient, tmp_path: Path
) -> None:
    marks = {name: tmp_path / f"pwned-{name}" for name in ("pickle", "json", "reduce")}
    # RQ's pickle serializer: data is a pickled (func_name, instance, args, kwargs) tuple.
    pickled = rq.Queue("default", connection=rconn, serializer=DefaultSerializer).enqueue(
        "os.system", f"touch {marks['pickle']}"
    )
    assert pickle.loads(zlib.decompress(rconn.hget(pickled.key, "data")))[0] == "os.system"
    # JSON, but naming a function that is not a registered task.
    forged_json = rq.Queue("default", connection=rconn, serializer=JSONSerializer).enqueue(
        "os.system", f"touch {marks['json']}"
    )
    # A pickle that runs its command while being unpickled.
    reduce_job = rq.Queue("default", connection=rconn, serializer=DefaultSerializer).enqueue("os.getcwd")
    rconn.hset(
        reduce_job.key, "data", zlib.compress(pickle.dumps(_RunOnUnpickle(f"touch {marks['reduce']}")))
    )
    legit = tmp_path / "legit"
    legit_id = enqueue(client, AUTH, "touch", {"path": str(legit)})
    forged = [pickled.id, forged_json.id, reduce_job.id]

    # Reading them through the API does not unpickle them either (see the test below for
    # the status code it should answer).
    for job_id in (pickled.id, reduce_job.id):
        assert client.get(f"/api/v1/jobs/{job_id}", headers=AUTH).status_code >= 400
    assert not any(mark.exists() for mark in marks.values())

    worker = start("worker.py", "--burst")
    code = start.wait(worker, 30)
    output = start.output(worker)
    assert code == 0, output
    for name, mark in marks.items():
        assert not mark.exists(), f"the forged {name} job ran"
    failed = set(FailedJobRegistry("default", connection=rconn).get_job_ids())
    assert set(forged) <= failed, (failed, output[-3000:])
    assert get_job(client, AUTH, forged_json.id)["state"] == "FAILURE"
    assert "not a registered task" in get_job(client, AUTH, forged_json.id)["error"]["message"]
    # The worker went on to the legitimate job queued behind the forged ones.
    assert legit.read_text() == "ran"
    assert get_job(client, AUTH, legit_id)["state"] == "SUCCESS"
    assert rconn.llen("rq:queue:default") == 0


def test_reading_a_pickled_job_answers_409(rconn: redis.Redis, client: FlaskClient) -> None:
    pickled = rq.Queue("default", connection=rconn, serializer=DefaultSerializer).enqueue("os.getcwd")
    response = client.get(f"/api/v1/jobs/{pickled.id}", headers=AUTH)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "job_unreadable"


# --- 5. SIGTERM is a warm shutdown -----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigterm_finishes_the_job_in_hand(
    start: Starter, rconn: redis.Redis, client: FlaskClient, tmp_path: Path
) -> None:
    worker = start("worker.py", "default")
    wait_workers(start, rconn, 1, worker, timeout=20)
    mark = tmp_path / "slow"
    job_id = enqueue(client, AUTH, "slow_touch", {"path": str(mark), "seconds": 3})
    wait_state(client, AUTH, job_id, {"STARTED", "PROGRESS"}, timeout=15)
    assert not mark.exists()

    worker.send_signal(signal.SIGTERM)
    code = start.wait(worker, 15)
    assert code == 0, start.output(worker)[-3000:]
    assert mark.read_text() == "ran"
    job = get_job(client, AUTH, job_id)
    assert job["state"] == "SUCCESS", job
    assert job["result"] == str(mark)
    assert rconn.scard("rq:workers") == 0  # it deregistered on the way out


# --- 6. --concurrency N ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_concurrency_runs_jobs_in_parallel_and_stops_cleanly(
    start: Starter, rconn: redis.Redis, client: FlaskClient, tmp_path: Path
) -> None:
    supervisor = start("worker.py", "--concurrency", "2", "default")
    wait_workers(start, rconn, 2, supervisor, timeout=20)
    marks = [tmp_path / "one", tmp_path / "two"]
    ids = [enqueue(client, AUTH, "slow_touch", {"path": str(m), "seconds": 2}) for m in marks]
    running = [wait_state(client, AUTH, job_id, {"STARTED", "PROGRESS"}, timeout=15) for job_id in ids]
    # Both are in hand at once: two worker processes, each with its work horse.
    assert all(job["state"] in ("STARTED", "PROGRESS") for job in running), running
    children = psutil.Process(supervisor.pid).children(recursive=True)
    assert len(children) >= 2, children

    # SIGTERM to the supervisor is a warm shutdown of every worker: both jobs still finish.
    supervisor.send_signal(signal.SIGTERM)
    assert start.wait(supervisor, 15) == 0, start.output(supervisor)[-3000:]
    jobs = [get_job(client, AUTH, job_id) for job_id in ids]
    assert [j["state"] for j in jobs] == ["SUCCESS", "SUCCESS"], jobs
    assert all(m.read_text() == "ran" for m in marks)

    first, second = jobs
    assert parse_time(first["started_at"]) < parse_time(second["ended_at"])
    assert parse_time(second["started_at"]) < parse_time(first["ended_at"]), jobs
    assert first["worker"] and second["worker"] and first["worker"] != second["worker"], jobs

    def gone(p: psutil.Process) -> bool:
        try:
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(p) for p in children), timeout=5, message="the worker children to exit")
    assert rconn.scard("rq:workers") == 0


# --- 7. --burst drains and exits -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_burst_drains_the_queues_and_exits(start: Starter, client: FlaskClient) -> None:
    pairs = [(1, 2), (10, 20), (-4, 1.5)]
    ids = [enqueue(client, AUTH, "add", {"x": x, "y": y}) for x, y in pairs]
    assert all(get_job(client, AUTH, job_id)["state"] == "PENDING" for job_id in ids)

    worker = start("worker.py", "--burst")
    assert start.wait(worker, 30) == 0, start.output(worker)[-3000:]
    jobs = [get_job(client, AUTH, job_id) for job_id in ids]
    assert [j["state"] for j in jobs] == ["SUCCESS"] * 3, jobs
    assert [j["result"] for j in jobs] == [x + y for x, y in pairs]


# --- 8. bad settings stop every process with one line ----------------------------------------------

PROCESSES = {
    "worker": ["worker.py"],
    "scheduler": ["scheduler.py"],
    "web": [*GUNICORN, "127.0.0.1:{port}"],
}


def assert_refuses(
    start: Starter, variable: str, names: Sequence[str] = tuple(PROCESSES), **extra_env: str | None
) -> None:
    """Each process exits non-zero within 20 s with one line, naming ``variable``, and no traceback."""
    started = []
    for name in names:
        args = PROCESSES[name]
        port = free_port()
        argv = [a.format(port=port) for a in args]
        started.append((name, start(*argv, **{"WEB_CONCURRENCY": "1", **extra_env}), port))
    for name, proc, port in started:
        code = start.wait(proc, 20)
        output = start.output(proc)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code != 0, f"{name} exited 0 with a bad {variable}:\n{output}"
        assert "Traceback" not in output, f"{name}:\n{output}"
        assert len(lines) == 1 and variable in lines[0], f"{name}:\n{output}"
        if name == "web":
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("REDIS_URL", "ftp://x", tuple(PROCESSES)),
        ("PORT", "notanumber", tuple(PROCESSES)),
        ("MAX_REQUEST_BYTES", "abc", tuple(PROCESSES)),
        ("WEB_THREADS", "many", ("web",)),  # read by gunicorn.conf.py only
        ("WEB_CONCURRENCY", "0", ("web",)),
        ("WEB_CONCURRENCY", "abc", ("web",)),  # gunicorn's own int() at import: web.py checks first
        ("WEB_CONCURRENCY", "2.5", ("web",)),
    ],
)
def test_bad_setting_stops_each_process_with_one_line(
    start: Starter, variable: str, value: str, names: tuple[str, ...]
) -> None:
    assert_refuses(start, variable, names, **{variable: value})


@pytest.mark.timeout(60)
def test_blank_web_concurrency_means_the_default(start: Starter) -> None:
    base = start_web(start, WEB_CONCURRENCY=" ")
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200


@pytest.mark.timeout(60)
def test_production_without_api_tokens_refuses_to_start(start: Starter) -> None:
    assert_refuses(start, "API_TOKENS", APP_ENV="production", API_TOKENS=None)


@pytest.mark.timeout(30)
def test_worker_refuses_an_unknown_queue(start: Starter) -> None:
    worker = start("worker.py", "default", "nosuchqueue")
    assert start.wait(worker, 20) == 2
    output = start.output(worker)
    assert "nosuchqueue" in output and "Traceback" not in output, output


# --- 9. the scheduler process ----------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_scheduler_moves_due_jobs_and_keeps_one_periodic_entry(
    start: Starter, rconn: redis.Redis, client: FlaskClient, tmp_path: Path
) -> None:
    worker = start("worker.py")
    wait_workers(start, rconn, 1, worker, timeout=20)
    mark = tmp_path / "delayed"
    response = client.post(
        "/api/v1/tasks/touch", json={"args": {"path": str(mark)}, "options": {"countdown": 2}}, headers=AUTH
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]
    enqueued = time.monotonic()
    job = get_job(client, AUTH, job_id)
    assert (job["state"], job["status"]) == ("PENDING", "scheduled"), job

    # Workers do not move due jobs: without the scheduler the job is still waiting after 4 s.
    time.sleep(max(0.0, 4 - (time.monotonic() - enqueued)))
    job = get_job(client, AUTH, job_id)
    assert (job["state"], job["status"]) == ("PENDING", "scheduled"), job
    assert not mark.exists()
    assert worker.poll() is None
    assert rconn.zcard(SCHEDULED_JOBS_KEY) == 0

    scheduler = start("scheduler.py")
    job = wait_state(client, AUTH, job_id, {"SUCCESS", "FAILURE"}, timeout=15)
    assert job["state"] == "SUCCESS", job
    assert mark.read_text() == "ran"

    # Each periodic entry is registered under its stable id; its first run is enqueued at once,
    # after which the entry waits for the next interval.
    def next_runs() -> dict[str, float] | None:
        scores = {entry: rconn.zscore(SCHEDULED_JOBS_KEY, entry) for entry in PERIODIC}
        due_later = all(s is not None and s > time.time() + 60 for s in scores.values())
        return {k: float(v) for k, v in scores.items() if v is not None} if due_later else None

    scores = wait_for(next_runs, timeout=15, message="the periodic entries' first runs")
    assert sorted(m.decode() for m in rconn.zrange(SCHEDULED_JOBS_KEY, 0, -1)) == PERIODIC

    scheduler.send_signal(signal.SIGTERM)
    assert start.wait(scheduler, 10) == 0, start.output(scheduler)[-3000:]

    restarted = start("scheduler.py")

    def live_scheduler() -> bool:
        # rq-scheduler's birth record is written after the periodic entries are registered.
        assert restarted.poll() is None, start.output(restarted)
        keys = rconn.keys(f"{Scheduler.redis_scheduler_namespace_prefix}*")
        return any(not rconn.hexists(key, "death") for key in keys)

    wait_for(live_scheduler, timeout=20, message="the restarted scheduler to register its entries")
    # At least one pass of its loop: each completed pass writes the heartbeat key /readyz reads.
    rconn.delete(heartbeat_key())
    wait_for(lambda: rconn.exists(heartbeat_key()), timeout=10, message="a pass of the restarted scheduler")
    members = [m.decode() for m in rconn.zrange(SCHEDULED_JOBS_KEY, 0, -1)]
    assert sorted(m for m in members if m.startswith("periodic-")) == PERIODIC, members
    assert rconn.zcard(SCHEDULED_JOBS_KEY) == len(PERIODIC)
    # The restart kept each entry's next run instead of scheduling another run now.
    assert {entry: rconn.zscore(SCHEDULED_JOBS_KEY, entry) for entry in PERIODIC} == scores
