"""Every process rides out a Redis restart, and the jobs in hand end right.

Each test runs its own redis-server with an append-only file (fsync on every write), kills
it with SIGKILL under the running processes, and starts it again on the same port: what
Redis acknowledged survives, connections are cut, and for a few seconds nothing answers.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry, StartedJobRegistry

from app import create_app
from app.core.queues import JsonJob
from app.foundation.meta import Meta
from tests.conftest import TOKEN, make_env
from tests.servers import (
    FINAL,
    RedisServer,
    Starter,
    enqueue,
    free_port,
    get_job,
    start_web,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: How long Redis stays down in each test.
DOWN = 3.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """This test's own redis-server, with an append-only file so that a restart keeps the data.

    Request it before ``start``, so that it outlives the processes at teardown."""
    own = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield own
    own.kill()


def restart(server: RedisServer, down: float = DOWN) -> None:
    """SIGKILL redis-server, keep it down for ``down`` seconds, start it again on its port."""
    server.kill()
    time.sleep(down)
    server.start()


def db_url(server: RedisServer, db: int) -> str:
    return f"redis://127.0.0.1:{server.port}/{db}"


def client_for(tmp_path: Path, url: str) -> FlaskClient:
    """An API client (in this process) on the database ``url`` names."""
    return create_app(make_env(tmp_path / "client", url)).test_client()


def outage_lines(start: Starter, proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    output = start.output(proc)
    return output.count("Redis unreachable"), output.count("Redis reachable again")


def assert_clean_output(start: Starter, proc: subprocess.Popen[bytes], processes: int) -> None:
    """Each process logged the outage once each way, and neither a traceback nor RQ's own
    per-attempt reconnection messages."""
    output = start.output(proc)
    down, up = outage_lines(start, proc)
    # A job in hand when Redis went (a periodic health check, say) may fail on it, with its
    # traceback, and is then settled by requeueing it; in fork mode its work horse is one more
    # process that saw the outage. Any other traceback is a defect.
    in_hand = "settled once Redis answers" in output or "before this run's outcome was recorded" in output
    seen_by = processes + 1 if in_hand else processes
    assert 1 <= down <= seen_by and 1 <= up <= processes, output[-3000:]
    assert in_hand or "Traceback" not in output, output[-3000:]
    assert "could not connect to Redis instance" not in output, output[-3000:]
    assert "quitting" not in output, output[-3000:]


# --- every process ---------------------------------------------------------------------------------

#: Worker processes, each on a Redis database of its own (so a job enqueued there runs in that
#: mode): name -> (worker.py arguments, database, processes writing its log).
WORKERS = {
    "fork": (["--mode", "fork"], 0, 1),  # the Procfile's worker_isolated, unsupervised
    "fork --concurrency 2": (["--mode", "fork", "--concurrency", "2"], 1, 3),
    "inline": (["--mode", "inline"], 2, 2),
    "inline --concurrency 2": (["--mode", "inline", "--concurrency", "2"], 3, 3),
    "threads": (["--mode", "threads", "--threads", "2"], 4, 2),
    "threads --concurrency 2": (["--mode", "threads", "--threads", "2", "--concurrency", "2"], 5, 3),
}
#: Workers each of those registers in Redis.
REGISTERED = {"fork": 1, "fork --concurrency 2": 2, "inline": 1, "inline --concurrency 2": 2,
              "threads": 2, "threads --concurrency 2": 4}  # fmt: skip


@pytest.mark.timeout(180)
def test_every_process_rides_out_a_redis_restart(server: RedisServer, start: Starter, tmp_path: Path) -> None:
    """Web, scheduler and every worker mode (with and without --concurrency) are still running after
    redis-server is killed and restarted under them; afterwards a job enqueued in each mode runs to
    SUCCESS, a countdown job is moved by the scheduler and runs, and /readyz is 200 again."""
    web = start_web(start, REDIS_URL=db_url(server, 0))
    scheduler = start("scheduler.py", REDIS_URL=db_url(server, 0))
    workers = {
        name: start("worker.py", *args, REDIS_URL=db_url(server, db))
        for name, (args, db, _) in WORKERS.items()
    }
    for name, (_, db, _) in WORKERS.items():
        conn = redis.Redis.from_url(db_url(server, db))
        wait_for(lambda c=conn, n=name: (start.assert_running(workers[n]), c.scard("rq:workers"))[1]
                 >= REGISTERED[n], 30, message=f"{name} to register")  # fmt: skip
    wait_for(lambda: server.client().exists("rq:scheduler-lock:default"), 20, message="the scheduler lock")
    wait_for(lambda: requests.get(f"{web}/readyz", timeout=5).status_code == 200, 20, message="ready")

    server.kill()
    killed = time.monotonic()
    assert requests.get(f"{web}/healthz", timeout=5).status_code == 200  # alive, though Redis is not
    unready = requests.get(f"{web}/readyz", timeout=10)
    assert unready.status_code == 503
    assert unready.json()["checks"]["redis"]["status"] == "error"
    assert unready.json()["checks"]["scheduler"]["status"] == "unknown"
    time.sleep(max(0.0, DOWN - (time.monotonic() - killed)))
    server.start()

    for proc in [scheduler, *workers.values()]:
        start.assert_running(proc)
    for name, (_, db, _) in WORKERS.items():
        client = client_for(tmp_path / f"db{db}", db_url(server, db))
        mark = tmp_path / f"after-{db}"
        job_id = enqueue(client, AUTH, "touch", {"path": str(mark)})
        view = wait_state(client, AUTH, job_id, FINAL, timeout=30, interval=0.2)
        assert view["state"] == "SUCCESS", (name, view, start.output(workers[name])[-3000:])
        assert mark.read_text() == "ran"

    # Through the web process: a job now, and one whose countdown the scheduler must move.
    now = requests.post(f"{web}/api/v1/tasks/add", json={"args": {"x": 2, "y": 2}}, headers=AUTH, timeout=10)
    assert now.status_code == 202, now.text
    later_mark = tmp_path / "countdown"
    later = requests.post(
        f"{web}/api/v1/tasks/touch",
        json={"args": {"path": str(later_mark)}, "options": {"countdown": 1}},
        headers=AUTH,
        timeout=10,
    )
    assert later.status_code == 202, later.text
    assert get_job(client_for(tmp_path / "db0", db_url(server, 0)), AUTH, later.json()["job_id"])[
        "status"
    ] == ("scheduled")

    def final(job_id: str) -> dict[str, Any] | None:
        view = requests.get(f"{web}/api/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()
        return view if view["state"] in FINAL else None

    assert wait_for(lambda: final(now.json()["job_id"]), 30, 0.2)["result"] == 4
    assert wait_for(lambda: final(later.json()["job_id"]), 30, 0.2)["state"] == "SUCCESS"
    assert later_mark.read_text() == "ran"
    wait_for(lambda: requests.get(f"{web}/readyz", timeout=5).status_code == 200, 20, message="ready again")

    assert_clean_output(start, scheduler, 1)
    for name, proc in workers.items():
        assert_clean_output(start, proc, WORKERS[name][2])
    # A warm shutdown after the outage is still a clean one.
    for proc in [scheduler, *workers.values()]:
        proc.send_signal(signal.SIGTERM)
    for proc in [scheduler, *workers.values()]:
        assert start.wait(proc, 20) == 0, start.output(proc)[-3000:]


# --- the jobs in hand ------------------------------------------------------------------------------

JOBS = 50


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "mode", [[], ["--mode", "inline", "--concurrency", "2"]], ids=["fork", "inline-concurrency-2"]
)
def test_jobs_in_hand_through_a_redis_restart_all_succeed_once(
    mode: list[str], server: RedisServer, start: Starter, tmp_path: Path
) -> None:
    """50 queued jobs, a worker and the scheduler; Redis is killed while the worker runs some and
    restarted with its append-only file: within 90 s every job is SUCCESS (none FAILURE, none left
    STARTED), each ran to the end (its file written) and each success was recorded once."""
    client = client_for(tmp_path, server.url)
    marks = [tmp_path / f"job-{n}" for n in range(JOBS)]
    ids = [
        enqueue(client, AUTH, "slow_touch", {"path": str(mark), "seconds": 0.3, "steps": 2}) for mark in marks
    ]
    scheduler = start("scheduler.py", REDIS_URL=server.url)
    worker = start("worker.py", *mode, REDIS_URL=server.url)
    conn = server.client()

    def succeeded() -> int:
        return sum(conn.hget(f"rq:job:{job_id}", "status") == b"finished" for job_id in ids)

    wait_for(lambda: (start.assert_running(worker), succeeded())[1] >= 8, 60, 0.1, message="some jobs to run")
    restart(server)
    restarted = time.monotonic()

    def states() -> list[str] | None:
        found = [get_job(client, AUTH, job_id)["state"] for job_id in ids]
        return found if all(s in FINAL for s in found) else None

    try:
        final = wait_for(states, 90, 0.5, message="every job to end")
    finally:
        print(
            "jobs:",
            {s: [get_job(client, AUTH, i)["state"] for i in ids].count(s) for s in ("SUCCESS", "STARTED")},
        )
    elapsed = time.monotonic() - restarted
    assert final == ["SUCCESS"] * JOBS, {
        job_id: state for job_id, state in zip(ids, final, strict=True) if state != "SUCCESS"
    }
    assert all(mark.read_text() == "ran" for mark in marks)
    assert [conn.xlen(f"rq:results:{job_id}") for job_id in ids] == [1] * JOBS  # recorded once each
    assert StartedJobRegistry("default", connection=conn).count == 0  # no run left in hand
    start.assert_running(worker)
    start.assert_running(scheduler)
    print(f"all {JOBS} jobs SUCCESS {elapsed:.1f} s after the restart")


@pytest.mark.timeout(120)
def test_a_job_whose_worker_died_in_the_outage_is_rescued_by_the_sweep(
    server: RedisServer, start: Starter, tmp_path: Path
) -> None:
    """A job whose worker was killed while Redis was down comes back STARTED with the restored data;
    nothing renews its lease, so once that expires the scheduler's sweep requeues it (no retry
    spent) and another worker runs it to SUCCESS: it is not left STARTED."""
    client = client_for(tmp_path, server.url)
    mark = tmp_path / "durable"
    job_id = enqueue(client, AUTH, "slow_touch", {"path": str(mark), "seconds": 4, "steps": 4})
    victim = start("worker.py", REDIS_URL=server.url)
    wait_state(client, AUTH, job_id, {"STARTED", "PROGRESS"}, timeout=30)
    server.kill()
    victim.kill()  # its work horse dies with it
    victim.wait(5)
    time.sleep(DOWN)
    server.start()
    assert get_job(client, AUTH, job_id)["status"] == "started"
    start("scheduler.py", REDIS_URL=server.url)
    start("worker.py", REDIS_URL=server.url)
    view = wait_state(client, AUTH, job_id, FINAL, timeout=60, interval=0.5)
    assert view["state"] == "SUCCESS", view
    assert view["retries"] == 0
    attempts = JsonJob.fetch(job_id, connection=server.client()).meta[Meta.ATTEMPTS]
    assert [a["type"] for a in attempts] == ["WorkerLostError"]
    assert mark.read_text() == "ran"


# --- an unsupervised fork worker -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_unsupervised_fork_worker_sets_corrupt_jobs_aside_and_goes_on(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """The Procfile's worker_isolated (`worker.py low --mode fork`) moves jobs whose hash cannot be
    read to the failed registry, runs the good job behind them, stays up, and exits 0 on SIGTERM."""
    rconn.hset("rq:job:no-data", mapping={"status": "queued", "origin": "low"})
    rconn.hset("rq:job:bad-status", mapping={"status": "bogus", "origin": "low", "data": b"[]"})
    rconn.rpush("rq:queue:low", "no-data", "bad-status")
    rconn.sadd("rq:queues", "rq:queue:low")
    mark = tmp_path / "good"
    good = enqueue(client, auth, "touch", {"path": str(mark)}, queue="low")

    worker = start("worker.py", "low", "--mode", "fork")
    assert wait_state(client, auth, good, FINAL, timeout=30)["state"] == "SUCCESS"
    assert mark.read_text() == "ran"
    failed = set(FailedJobRegistry("low", connection=rconn).get_job_ids())
    assert {"no-data", "bad-status"} <= failed
    assert rconn.llen("rq:queue:low") == 0 and rconn.llen("rq:queue:low:intermediate") == 0
    wait_for(  # back in its idle wait for the next job, still registered
        lambda: [rconn.hget(k, "state") for k in rconn.smembers("rq:workers")] == [b"idle"], 10,
        message="the worker to wait for jobs again",
    )  # fmt: skip
    start.assert_running(worker)
    worker.send_signal(signal.SIGTERM)
    assert start.wait(worker, 15) == 0, start.output(worker)[-3000:]


# --- start-up ------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_processes_started_before_redis_wait_for_it(start: Starter, tmp_path: Path) -> None:
    """A worker and the scheduler started while Redis is not up yet wait for it (REDIS_WAIT_SECONDS)
    instead of exiting, and come up once it answers."""
    server = RedisServer(tmp_path / "late-redis", appendonly=True)
    env = {"REDIS_URL": server.url, "REDIS_WAIT_SECONDS": "60"}
    worker = start("worker.py", **env)
    scheduler = start("scheduler.py", **env)
    for proc in (worker, scheduler):  # each found Redis down and waits for it (instead of exiting)
        wait_for(lambda p=proc: "Redis unreachable" in start.output(p), 20, message="the wait for Redis")
    start.assert_running(worker)
    start.assert_running(scheduler)
    server.start()
    try:
        conn = server.client()
        wait_for(
            lambda: (start.assert_running(worker), conn.scard("rq:workers"))[1] >= 1, 30, message="worker"
        )
        wait_for(lambda: conn.exists("rq:scheduler-lock:default"), 30, message="the scheduler lock")
        client = client_for(tmp_path, server.url)
        job_id = enqueue(client, AUTH, "add", {"x": 1, "y": 2})
        assert wait_state(client, AUTH, job_id, FINAL, timeout=30)["result"] == 3
    finally:
        start.stop_all()
        server.kill()


@pytest.mark.timeout(60)
def test_processes_give_up_on_redis_after_the_wait_with_one_line(start: Starter) -> None:
    """A worker and the scheduler exit 2 once REDIS_WAIT_SECONDS pass without Redis, with a last line
    naming REDIS_URL and the wait, no traceback, and nothing else but the one notice of the wait."""
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_WAIT_SECONDS": "2"}
    procs = {name: start(f"{name}.py", **env) for name in ("worker", "scheduler")}
    for name, proc in procs.items():
        started = time.monotonic()
        assert start.wait(proc, 30) == 2
        output = start.output(proc)
        lines = [line for line in output.splitlines() if line.strip()]
        assert "Traceback" not in output, output
        assert lines[-1].startswith(
            f"{name}: cannot reach Redis (REDIS_URL): no answer within REDIS_WAIT_SECONDS=2"
        ), output
        assert len(lines) <= 2 and all("Redis unreachable" in line for line in lines[:-1]), output
        assert time.monotonic() - started < 30
