"""Fault tests: kill -9 under load in every worker mode, warm shutdown with its grace, poison jobs.

Each test starts real worker processes (and the scheduler, whose sweeps rescue a dead
worker's jobs) against the session's redis-server, feeds them a stream of jobs through the
API, breaks something, and counts: every job ends SUCCESS, a job's idempotent side effect
(a row keyed by its id, tests/jobs.py ``record_once``) exists once, and the re-runs are
reported (at-least-once: a job may run again, its effect is once). The figures are printed
(``pytest -s``) and recorded in docs/RELIABILITY.md.

The full-size loads (10,000 jobs per mode) are marked ``long``; the default run uses fewer.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from flask.testing import FlaskClient

from app import create_app
from app.foundation import defaults
from tests.conftest import make_env
from tests.servers import (
    FINAL,
    RedisServer,
    Starter,
    children,
    enqueue,
    free_port,
    get_job,
    start_web,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.integration

#: Every worker mode: the worker.py arguments that run it under the supervisor, and how deep
#: under worker.py the processes that run jobs are (2: fork mode's work horses; 1: the worker
#: processes themselves). Adding a mode is one line here.
MODES: dict[str, tuple[tuple[str, ...], int]] = {
    "fork": (("--mode", "fork", "--concurrency", "2"), 2),
    "inline": (("--mode", "inline", "--concurrency", "2"), 1),
    "threads": (("--mode", "threads", "--concurrency", "2", "--threads", "3"), 1),
    "pooled": (("--mode", "pooled", "--concurrency", "2"), 1),
}


def cases(names: list[str] | list[tuple[str, ...]], default: set[object]) -> list[object]:
    """Parameters, those outside ``default`` marked long: the default run keeps CI short (one case
    per mode at least, across the tests), ``--long`` runs every mode in every test."""
    params = []
    for name in names:
        values = name if isinstance(name, tuple) else (name,)
        params.append(pytest.param(*values, marks=() if name in default else pytest.mark.long))
    return params


# --- helpers ----------------------------------------------------------------------------------------


def job_processes(pid: int, mode: str) -> list[int]:
    """The processes under worker.py ``pid`` that run jobs: fork mode's work horses, the in-process
    modes' worker processes."""
    found = [pid]
    for _ in range(MODES[mode][1]):
        found = [kid for parent in found for kid in children(parent)]
    return found


def effects_db(path: Path) -> str:
    """A fresh SQLite database for ``record_once``: a row per job in ``effects``, per run in ``runs``."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE effects (job_id TEXT PRIMARY KEY)")
        conn.execute("CREATE TABLE runs (job_id TEXT NOT NULL)")
    return str(path)


def runs_by_job(db: str) -> dict[str, int]:
    """How many times each job's body ran to its side effect."""
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT job_id, COUNT(*) FROM runs GROUP BY job_id").fetchall())


def effect_rows(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM effects").fetchone()[0])


def statuses(rconn: redis.Redis, job_ids: list[str]) -> dict[str, int]:
    """RQ statuses of the jobs, counted (one pipelined read per 1,000 jobs)."""
    counts: dict[str, int] = {}
    for start in range(0, len(job_ids), 1000):
        with rconn.pipeline(transaction=False) as pipe:
            for job_id in job_ids[start : start + 1000]:
                pipe.hget(f"rq:job:{job_id}", "status")
            for status in pipe.execute():
                key = status.decode() if status else "missing"
                counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass
class Figures:
    """What a fault run measured."""

    fault: str
    jobs_in: int
    jobs_out: int
    lost: int
    rerun: int
    duplicated_effects: int
    kills: int
    seconds: float

    def print(self) -> None:
        print(
            f"\nFIGURES {self.fault}: in={self.jobs_in} out={self.jobs_out} lost={self.lost} "
            f"rerun={self.rerun} duplicated_effects={self.duplicated_effects} kills={self.kills} "
            f"seconds={self.seconds:.1f}"
        )


def start_pool(start: Starter, rconn: redis.Redis, mode: str, **env: str) -> subprocess.Popen[bytes]:
    """worker.py in ``mode`` on the default queue, once its workers have registered."""
    proc = start("worker.py", "default", *MODES[mode][0], **env)

    def registered() -> bool:
        start.assert_running(proc)
        kids = children(proc.pid)
        with rconn.pipeline(transaction=False) as pipe:
            for key in rconn.smembers("rq:workers"):
                pipe.hget(key, "pid")
            pids = {int(p) for p in pipe.execute() if p}
        return bool(kids) and set(kids) <= pids

    wait_for(registered, 20, interval=0.1, message=f"the {mode} worker processes to register")
    return proc


# --- kill -9 under load ---------------------------------------------------------------------------


def run_kills(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    mode: str,
    victim: str,
    jobs: int,
    kill_every: float,
    timeout: float,
    seconds: float = 0.05,
    min_kills: int = 3,
) -> Figures:
    """Stream ``jobs`` record_once jobs at the workers of ``mode`` and kill -9 a ``victim``
    ("main": worker.py itself, restarted as a process manager would; "child": a process running
    jobs) every ``kill_every`` s until all are in; then wait for every job to end."""
    db = effects_db(tmp_path / "effects.db")
    start("scheduler.py")  # its sweeps rescue jobs whose worker died
    pool = start_pool(start, rconn, mode)
    rng = random.Random(12)
    job_ids: list[str] = []
    kills = 0
    began = time.monotonic()
    next_kill = began + kill_every
    batch = max(1, jobs // 200)

    def settled() -> bool:
        counts = statuses(rconn, job_ids)
        return counts.get("finished", 0) + counts.get("failed", 0) == jobs

    deadline = began + timeout
    while len(job_ids) < jobs or not settled():
        assert time.monotonic() < deadline, (
            f"jobs not all ended after {timeout} s: {statuses(rconn, job_ids)}"
        )
        for _ in range(min(batch, jobs - len(job_ids))):
            job_ids.append(enqueue(client, auth, "record_once", {"db": db, "seconds": seconds}))
        if time.monotonic() >= next_kill and (len(job_ids) < jobs or kills < min_kills):
            if victim == "main":
                pool.kill()
                pool.wait(5)
                pool = start_pool(start, rconn, mode)  # the process manager's restart
                kills += 1
            else:
                running = job_processes(pool.pid, mode)
                if running:
                    with contextlib.suppress(ProcessLookupError):  # it may have ended since
                        os.kill(rng.choice(running), signal.SIGKILL)
                        kills += 1
            next_kill = time.monotonic() + kill_every
        time.sleep(0.01 if len(job_ids) < jobs else 0.3)
    elapsed = time.monotonic() - began
    counts = statuses(rconn, job_ids)
    runs = runs_by_job(db)
    figures = Figures(
        fault=f"kill -9 {victim} ({mode})",
        jobs_in=jobs,
        jobs_out=counts.get("finished", 0),
        lost=jobs - counts.get("finished", 0),
        rerun=sum(1 for n in runs.values() if n > 1),
        duplicated_effects=effect_rows(db) - len(runs),
        kills=kills,
        seconds=elapsed,
    )
    figures.print()
    assert counts == {"finished": jobs}, counts
    assert effect_rows(db) == jobs  # the effect, once per job (the key makes a second one impossible)
    assert set(runs) == set(job_ids)
    assert kills >= min(min_kills, 1)
    return figures


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("mode", "victim"),
    cases(
        [(m, v) for m in MODES for v in ("child", "main")],
        {("fork", "child"), ("inline", "main"), ("pooled", "child")},
    ),
)
def test_kill_9_under_load_every_job_succeeds_its_effect_once(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    mode: str,
    victim: str,
) -> None:
    """Workers killed with SIGKILL (worker.py itself, or a process running jobs) while a stream of
    jobs runs: every job ends SUCCESS and its side effect exists once."""
    kills = 3 if victim == "child" else 1  # each restart of worker.py costs seconds
    run_kills(start, rconn, client, auth, tmp_path, mode, victim, 40, 0.5, 60, seconds=0.2, min_kills=kills)


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("victim", ["child", "main"])
@pytest.mark.parametrize("mode", list(MODES))
def test_kill_9_under_10000_jobs(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    mode: str,
    victim: str,
) -> None:
    """The full-size run: 10,000 jobs per mode, a kill -9 every 2 s while they stream in."""
    run_kills(start, rconn, client, auth, tmp_path, mode, victim, jobs=10_000, kill_every=2.0, timeout=1800)


# --- warm shutdown (SIGTERM) and its grace ---------------------------------------------------------


def sigterm_everything(root: int) -> None:
    """SIGTERM ``root`` and every process under it, as a platform (Heroku's dyno manager) does."""
    pids = [root]
    i = 0
    while i < len(pids):
        pids.extend(children(pids[i]))
        i += 1
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", cases(list(MODES), {"threads", "pooled"}))
def test_sigterm_under_load_loses_nothing_and_runs_nothing_twice(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    mode: str,
) -> None:
    """SIGTERM to every worker process in the middle of a stream of jobs: the jobs in hand finish, a
    job that outlasts WORKER_SHUTDOWN_GRACE is stopped and put back (no retry spent, not a failure),
    the workers exit 0; a new worker runs the rest; every job ran to its effect exactly once."""
    db = effects_db(tmp_path / "effects.db")
    grace = 1
    pool = start_pool(start, rconn, mode, WORKER_SHUTDOWN_GRACE=str(grace))
    long_job = enqueue(client, auth, "record_once", {"db": db, "seconds": 5})
    job_ids = [long_job]
    wait_state(client, auth, long_job, {"STARTED", "PROGRESS"}, 15)
    for _ in range(40):
        job_ids.append(enqueue(client, auth, "record_once", {"db": db, "seconds": 0.1}))
    time.sleep(0.5)  # some short jobs in hand too

    signalled = time.monotonic()
    sigterm_everything(pool.pid)
    assert start.wait(pool, grace + 8) == 0, start.output(pool)[-3000:]
    stopped_after = time.monotonic() - signalled

    view = get_job(client, auth, long_job)
    assert view["state"] == "PENDING", view  # put back on its queue, not failed
    assert view["retries"] == 0
    assert [a["type"] for a in view["attempts"]][-1] == "WorkerShutdown", view["attempts"]
    assert statuses(rconn, job_ids).get("failed", 0) == 0
    assert long_job not in runs_by_job(db)  # the stopped run never reached its effect

    start_pool(start, rconn, mode)
    done = wait_state(client, auth, long_job, FINAL, 40)
    assert done["state"] == "SUCCESS", done
    assert done["retries"] == 0
    wait_for(lambda: statuses(rconn, job_ids) == {"finished": len(job_ids)}, 30, interval=0.3,
             message="every job to finish")  # fmt: skip
    runs = runs_by_job(db)
    assert runs == dict.fromkeys(job_ids, 1)  # nothing lost, nothing run twice
    rerun = sum(n > 1 for n in runs.values())
    duplicated = effect_rows(db) - len(runs)
    Figures(f"SIGTERM, grace {grace} s ({mode})", len(job_ids), len(runs), 0, rerun, duplicated, 1,
            stopped_after).print()  # fmt: skip


# --- poison jobs ------------------------------------------------------------------------------------

POISONS = {
    "exit": ("exit_process", {"code": 3}, "exited with status 3"),
    "segfault": ("segfault", {"note": "x"}, "killed by signal 11 (SIGSEGV)"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("poison", "mode"), cases([(p, m) for p in POISONS for m in ("fork", "inline")], {("segfault", "fork")})
)
def test_a_poison_job_fails_with_its_cause_and_the_queue_flows(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    mode: str,
    poison: str,
) -> None:
    """A job whose process exits or segfaults every time is put back MAX_ORPHAN_REQUEUES times, then
    fails among the failed jobs with the cause in its error; the jobs behind it all succeed."""
    task, args, cause = POISONS[poison]
    start_pool(start, rconn, mode)
    bad = enqueue(client, auth, task, args)
    after = [enqueue(client, auth, "add", {"x": n, "y": 1}) for n in range(10)]
    done = wait_state(client, auth, bad, FINAL, 60, interval=0.2)
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "WorkerLostError", done["error"]
    assert cause in done["error"]["message"], done["error"]
    deaths = [a for a in done["attempts"] if a["type"] == "WorkerLostError"]
    assert len(deaths) == defaults.MAX_ORPHAN_REQUEUES + 1
    assert all(cause in a["message"] for a in deaths[:-1]), deaths
    assert bad.encode() in rconn.zrange("rq:failed:default", 0, -1)
    results = [wait_state(client, auth, job_id, FINAL, 20)["result"] for job_id in after]
    assert results == [n + 1 for n in range(10)]


@pytest.mark.timeout(60)
def test_a_job_over_the_memory_cap_fails_after_its_retries_and_the_queue_flows(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """With JOB_MEMORY_LIMIT_MB, a fork-mode job that allocates past it fails (after its one retry)
    with "exceeded memory limit" in its error; a job within the cap and the queue behind run."""
    start("scheduler.py")  # moves the retry's back-off
    start_pool(start, rconn, "fork", JOB_MEMORY_LIMIT_MB="64")
    hog = enqueue(client, auth, "hog_memory", {"megabytes": 512})
    small = enqueue(client, auth, "hog_memory", {"megabytes": 16})
    after = enqueue(client, auth, "add", {"x": 2, "y": 3})
    done = wait_state(client, auth, hog, FINAL, 40, interval=0.2)
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "MemoryError", done["error"]
    assert "exceeded memory limit of 64 MB" in done["error"]["message"]
    assert done["retries"] == 1
    assert hog.encode() in rconn.zrange("rq:failed:default", 0, -1)
    assert wait_state(client, auth, small, FINAL, 20)["result"] == 16 * 1024 * 1024
    assert wait_state(client, auth, after, FINAL, 20)["result"] == 5


@pytest.mark.long
@pytest.mark.timeout(60)
def test_an_in_process_worker_over_the_memory_cap_is_killed_and_its_job_failed(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """In inline mode the cap is the worker process's: grown past it, the supervisor kills the process
    and fails the job in hand with "exceeded memory limit"; the restarted process runs the rest."""
    start_pool(start, rconn, "inline", JOB_MEMORY_LIMIT_MB="64")
    hog = enqueue(client, auth, "hog_memory", {"megabytes": 256, "hold": 10})
    after = [enqueue(client, auth, "add", {"x": n, "y": 1}) for n in range(5)]
    done = wait_state(client, auth, hog, FINAL, 30, interval=0.2)
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "MemoryLimitExceeded", done["error"]
    assert "exceeded memory limit of 64 MB" in done["error"]["message"]
    assert [wait_state(client, auth, job_id, FINAL, 20)["result"] for job_id in after] == [1, 2, 3, 4, 5]


# --- Redis unreachable: the API answers 503 quickly ------------------------------------------------


JOB_ID = "0b5d7a8e-0000-4000-8000-000000000000"


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("redis_kind", cases(["refused", "silent"], {"silent"}))
def test_api_answers_503_within_5_s_when_redis_is_unreachable(
    start: Starter, auth: dict[str, str], blackhole: int, redis_kind: str
) -> None:
    """With Redis refusing connections, or accepting them and never answering, gunicorn answers
    enqueue, job get and job list with 503 and the error shape within 5 s (no hung request, no 500),
    and /readyz answers 503 naming Redis."""
    port = free_port() if redis_kind == "refused" else blackhole
    base = start_web(start, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    calls = {
        "enqueue": lambda: requests.post(
            f"{base}/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=auth, timeout=30
        ),
        "get": lambda: requests.get(f"{base}/api/v1/jobs/{JOB_ID}", headers=auth, timeout=30),
        "list": lambda: requests.get(f"{base}/api/v1/jobs", headers=auth, timeout=30),
    }
    times = {}
    for name, call in calls.items():
        began = time.monotonic()
        response = call()
        took = times[name] = time.monotonic() - began
        assert took < 5, f"{name} took {took:.1f} s"
        assert response.status_code == 503, (name, response.status_code, response.text[:300])
        body = response.json()
        assert set(body) == {"error"} and body["error"]["code"] == "redis_unavailable", (name, body)
        assert response.headers.get("Retry-After"), name
    began = time.monotonic()
    ready = requests.get(f"{base}/readyz", timeout=30)
    times["readyz"] = time.monotonic() - began
    print(f"\nFIGURES Redis {redis_kind}: " + " ".join(f"{k}={v:.2f}s" for k, v in times.items()))
    assert times["readyz"] < 5
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] != "ok", ready.json()


# --- Redis restarted from its append-only file -------------------------------------------------------


def aof_restart(tmp_path: Path, auth: dict[str, str], appendfsync: str, jobs: int) -> tuple[int, int, float]:
    """Enqueue through the API into a Redis with an append-only file, kill -9 it mid-load, start it
    again on the same directory: (acknowledged enqueues, those missing after the restart, s to restart)."""
    server = RedisServer(tmp_path / f"aof-{appendfsync}", appendonly=True, appendfsync=appendfsync).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        acknowledged: list[str] = []
        refused: list[int] = []
        lock = threading.Lock()

        def stream() -> None:  # one of four API clients enqueuing until Redis is gone
            client = app.test_client()
            while True:
                response = client.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=auth)
                if response.status_code != 202:
                    refused.append(response.status_code)
                    return
                with lock:
                    acknowledged.append(response.get_json()["job_id"])
                    if len(acknowledged) == jobs:
                        server.kill()  # kill -9 while the other clients' enqueues are in flight

        clients = [threading.Thread(target=stream) for _ in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(30)
        assert set(refused) == {503}, refused
        began = time.monotonic()
        server.start()  # same port, same directory: it loads the append-only file
        restarted = time.monotonic() - began
        conn = server.client()
        queued = {m.decode() for m in conn.lrange("rq:queue:default", 0, -1)}
        with conn.pipeline(transaction=False) as pipe:
            for job_id in acknowledged:
                pipe.exists(f"rq:job:{job_id}")
            present = pipe.execute()
        missing = sum(1 for job_id, found in zip(acknowledged, present, strict=True)
                      if not found or job_id not in queued)  # fmt: skip
        print(f"\nFIGURES AOF appendfsync={appendfsync}: acknowledged={len(acknowledged)} lost={missing} "
              f"restart={restarted:.2f}s")  # fmt: skip
        return len(acknowledged), missing, restarted
    finally:
        server.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_jobs_the_api_accepted_survive_a_kill_9_of_redis(
    tmp_path: Path, auth: dict[str, str], appendfsync: str
) -> None:
    """Redis killed with SIGKILL in the middle of a stream of enqueues and started again on its
    append-only file: every enqueue the API acknowledged (202) is there, its job queued. With
    ``everysec`` too: a killed process loses nothing the kernel has; the window of up to a second or
    two that everysec risks is a crash of the machine itself (see docs/RELIABILITY.md)."""
    acknowledged, missing, _ = aof_restart(tmp_path, auth, appendfsync, jobs=300)
    assert acknowledged >= 300
    assert missing == 0
