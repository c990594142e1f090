"""Retries against real worker.py and scheduler.py processes: back-off, give-up, self-retry."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.servers import ROOT, python_process, wait_for

FINAL = {"SUCCESS", "FAILURE", "REVOKED"}

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


def start_worker(start: Start, rconn: redis.Redis, *args: str) -> subprocess.Popen[bytes]:
    """A worker process, once it has registered with Redis."""
    before = rconn.scard("rq:workers")
    proc = start("worker.py", *args)
    wait_for(lambda: rconn.scard("rq:workers") > before, 15, message="the worker to register")
    return proc


def start_scheduler(start: Start, rconn: redis.Redis) -> subprocess.Popen[bytes]:
    """A scheduler process, once it holds RQ's scheduler lock."""
    proc = start("scheduler.py")
    wait_for(lambda: rconn.exists("rq:scheduler-lock:default"), 15, message="the scheduler lock")
    return proc


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


def wait_final(client: FlaskClient, auth: dict[str, str], job_id: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: (v := job(client, auth, job_id))["state"] in FINAL and v,
        timeout,
        interval=0.1,
        message=f"job {job_id} to finish",
    )


@pytest.fixture
def processes(start: Start, rconn: redis.Redis) -> None:
    """One worker and the scheduler."""
    start_worker(start, rconn)
    start_scheduler(start, rconn)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_flaky_job_retries_with_backoff_then_succeeds(
    processes: None, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A task failing twice is retried (state RETRY with next_retry_at between attempts) and succeeds."""
    counter = tmp_path / "flaky"
    job_id = enqueue(client, auth, "flaky", {"path": str(counter), "failures": 2})
    waiting = wait_for(
        lambda: (v := job(client, auth, job_id))["state"] == "RETRY" and v,
        15,
        interval=0.02,
        message="the RETRY state after the first failure",
    )
    assert waiting["status"] == "scheduled"
    assert waiting["next_retry_at"], waiting
    next_at = datetime.fromisoformat(waiting["next_retry_at"].replace("Z", "+00:00"))
    assert abs((next_at - datetime.now(UTC)).total_seconds()) < 5
    assert waiting["retries"] >= 1
    assert waiting["error"]["type"] == "ConnectionError"

    done = wait_final(client, auth, job_id)
    assert done["state"] == "SUCCESS", done
    assert done["result"] == 3
    assert done["retries"] == 2
    assert done["next_retry_at"] is None
    assert counter.read_text() == "3"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_error_in_dont_retry_for_fails_after_one_attempt(
    processes: None, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A ValueError listed in dont_retry_for fails the job at once: one attempt, no retry."""
    job_id = enqueue(client, auth, "fail_for_good", {"message": "bad input"})
    done = wait_final(client, auth, job_id)
    assert done["state"] == "FAILURE", done
    assert done["retries"] == 0
    assert done["error"]["type"] == "ValueError"
    assert done["error"]["message"] == "bad input"
    assert [a["type"] for a in done["error"]["attempts"]] == ["ValueError"]
    # Nothing is scheduled for later: the failure is final.
    time.sleep(1.5)
    again = job(client, auth, job_id)
    assert again["state"] == "FAILURE"
    assert len(again["error"]["attempts"]) == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_job_exhausting_its_retries_fails_with_every_attempt_recorded(
    processes: None, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A job failing more often than max_retries=3 allows ends FAILURE after 4 recorded attempts."""
    counter = tmp_path / "flaky"
    job_id = enqueue(client, auth, "flaky", {"path": str(counter), "failures": 10})
    done = wait_final(client, auth, job_id, timeout=30)
    assert done["state"] == "FAILURE", done
    attempts = done["error"]["attempts"]
    assert len(attempts) == 4, attempts
    assert {a["type"] for a in attempts} == {"ConnectionError"}
    assert [a["message"] for a in attempts] == [f"attempt {n} failed" for n in range(1, 5)]
    assert done["retries"] == 3
    assert counter.read_text() == "4"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_task_can_ask_for_its_own_retry_after_a_countdown(
    processes: None, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """RetryTask(countdown=2) reruns the job no sooner than 2 s later, and it then succeeds."""
    job_id = enqueue(client, auth, "retry_itself", {"path": str(tmp_path / "marker"), "countdown": 2})
    done = wait_final(client, auth, job_id)
    assert done["state"] == "SUCCESS", done
    assert float(done["result"]) >= 2.0
    assert done["retries"] == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_retry_delays_need_the_scheduler_process(
    start: Start, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Without scheduler.py a retry waits in the scheduled registry; starting it lets the job finish."""
    start_worker(start, rconn)
    counter = tmp_path / "flaky"
    job_id = enqueue(client, auth, "flaky", {"path": str(counter), "failures": 1})
    wait_for(lambda: job(client, auth, job_id)["state"] == "RETRY", 15, message="RETRY")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        view = job(client, auth, job_id)
        assert (view["state"], view["status"]) == ("RETRY", "scheduled"), view
        time.sleep(0.2)
    assert counter.read_text() == "1"  # no second attempt ran

    start_scheduler(start, rconn)
    done = wait_final(client, auth, job_id)
    assert done["state"] == "SUCCESS", done
    assert done["result"] == 2
    assert done["retries"] == 1
