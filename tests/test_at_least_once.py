"""At-least-once delivery: a job survives its worker's death, wherever in its life that happens."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.servers import ROOT, python_process, wait_for

FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
QUEUE_KEYS = ["rq:queue:high", "rq:queue:default", "rq:queue:low"]

Start = Callable[..., subprocess.Popen[bytes]]


def stop_processes(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """SIGTERM every process, wait, kill any that outlives the wait; print the logs (shown on failure)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for log in logs:
        if log.exists():
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def start(env: dict[str, str], tmp_path: Path) -> Iterator[Start]:
    """Start ``python <args>`` processes from the repo root; all are stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def _start(*args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{len(procs)}-{Path(args[0]).stem}.log"
        proc = python_process(list(args), {**env, **extra_env}, log, cwd=ROOT)
        procs.append(proc)
        logs.append(log)
        return proc

    try:
        yield _start
    finally:
        stop_processes(procs, logs)


@pytest.fixture
def rconn(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def enqueue(
    client: FlaskClient, auth: dict[str, str], task: str, args: dict[str, Any], **options: Any
) -> str:
    r = client.post(f"/api/v1/tasks/{task}", json={"args": args, "options": options}, headers=auth)
    assert r.status_code == 202, r.get_json()
    return str(r.get_json()["job_id"])


def job(client: FlaskClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 200, r.get_json()
    return dict(r.get_json())


def children(pid: int) -> list[int]:
    """The live (non-zombie) child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_job_of_a_killed_worker_runs_again_and_succeeds(
    start: Start, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A job whose worker is SIGKILLed mid-run (its horse dying too) is run again to SUCCESS within 60 s."""
    victim = start("worker.py", "default")
    wait_for(lambda: rconn.scard("rq:workers") > 0, 15, message="the worker to register")
    marker = tmp_path / "durable"
    job_id = enqueue(client, auth, "durable_touch", {"path": str(marker), "seconds": 4})
    first = wait_for(
        lambda: (v := job(client, auth, job_id))["state"] in {"STARTED", "PROGRESS"} and v,
        15,
        interval=0.05,
        message="the job to start",
    )
    horses = wait_for(lambda: children(victim.pid), 5, message="the work horse")
    assert len(horses) == 1, horses

    victim.kill()
    victim.wait(5)
    killed = time.monotonic()
    wait_for(lambda: not alive(horses[0]), 3, message="the orphaned work horse to die with its worker")

    start("worker.py", "default")
    start("scheduler.py")
    # Until the job starts again, nothing may write the file: the old run is gone for good.
    while True:
        view = job(client, auth, job_id)
        if view["state"] in FINAL or (view["started_at"] and view["started_at"] != first["started_at"]):
            break
        assert not marker.exists(), "the killed worker's run went on writing"
        assert time.monotonic() - killed < 60, f"the job was not run again within 60 s: {view}"
        time.sleep(0.1)

    done = wait_for(
        lambda: (v := job(client, auth, job_id))["state"] in FINAL and v,
        20,
        interval=0.1,
        message="the rerun",
    )
    elapsed = time.monotonic() - killed
    assert done["state"] == "SUCCESS", done
    assert elapsed < 60, f"the job succeeded only {elapsed:.1f} s after its worker died"
    assert done["retries"] >= 1
    assert marker.read_text() == "ran"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_job_dequeued_by_a_dead_worker_is_put_back_and_run(
    start: Start, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A job left in a queue's intermediate list is requeued by the rescue sweep, then runs."""
    from app.maintenance import rescue_intermediate
    from app.queues import _move_first, get_queue

    job_id = enqueue(client, auth, "add", {"x": 40, "y": 2})
    # A worker takes it and dies before starting it.
    assert _move_first(rconn, QUEUE_KEYS) == ("rq:queue:default", job_id)
    assert rconn.lrange("rq:queue:default", 0, -1) == []
    assert rconn.lrange("rq:queue:default:intermediate", 0, -1) == [job_id.encode()]

    queue = get_queue("default", rconn)
    assert rescue_intermediate(queue, older_than=0) == 0  # the first pass only notes it
    assert rescue_intermediate(queue, older_than=0) == 1
    assert rconn.lrange("rq:queue:default", 0, -1) == [job_id.encode()]
    assert rconn.llen("rq:queue:default:intermediate") == 0
    assert rescue_intermediate(queue, older_than=0) == 0  # nothing left to rescue

    burst = start("worker.py", "--burst")
    assert burst.wait(30) == 0
    done = job(client, auth, job_id)
    assert (done["state"], done["result"]) == ("SUCCESS", 42)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_burst_worker_on_several_queues_drains_them_all(
    start: Start, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A burst worker on high, default and low runs 20 queued jobs and leaves no intermediate entry."""
    job_ids = {
        enqueue(client, auth, "add", {"x": n, "y": 1}, queue=("high", "default", "low")[n % 3]): n + 1
        for n in range(20)
    }
    assert sum(rconn.llen(k) for k in QUEUE_KEYS) == 20

    burst = start("worker.py", "--burst", "high", "default", "low")
    assert burst.wait(45) == 0
    results = {job_id: job(client, auth, job_id) for job_id in job_ids}
    assert {v["state"] for v in results.values()} == {"SUCCESS"}
    assert {job_id: v["result"] for job_id, v in results.items()} == job_ids
    assert sum(rconn.llen(k) for k in QUEUE_KEYS) == 0
    leftovers = {k.decode(): rconn.llen(k) for k in rconn.scan_iter("rq:queue:*:intermediate")}
    assert not any(leftovers.values()), leftovers
