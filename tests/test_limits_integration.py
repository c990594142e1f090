"""Rate and concurrency limits across real worker processes: jobs wait, never fail."""

from __future__ import annotations

import itertools
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


def wait_workers(rconn: redis.Redis, count: int) -> None:
    wait_for(lambda: rconn.scard("rq:workers") >= count, 15, message=f"{count} workers to register")


def start_scheduler(start: Start, rconn: redis.Redis) -> None:
    start("scheduler.py")
    wait_for(lambda: rconn.exists("rq:scheduler-lock:default"), 15, message="the scheduler lock")


def enqueue(client: FlaskClient, auth: dict[str, str], task: str, args: dict[str, Any]) -> str:
    r = client.post(f"/api/v1/tasks/{task}", json={"args": args}, headers=auth)
    assert r.status_code == 202, r.get_json()
    return str(r.get_json()["job_id"])


def states(client: FlaskClient, auth: dict[str, str], job_ids: list[str]) -> dict[str, str]:
    return {j: client.get(f"/api/v1/jobs/{j}", headers=auth).get_json()["state"] for j in job_ids}


def failed_ids(rconn: redis.Redis) -> set[str]:
    """Every job id in any queue's failed registry right now."""
    return {m.decode() for key in rconn.scan_iter("rq:failed:*") for m in rconn.zrange(key, 0, -1)}


def run_to_the_end(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis, job_ids: list[str], timeout: float
) -> dict[str, str]:
    """Poll until every job is final; returns the states; fails if any ever entered a failed registry."""
    deadline = time.monotonic() + timeout
    ever_failed: set[str] = set()
    while True:
        ever_failed |= failed_ids(rconn) & set(job_ids)
        now = states(client, auth, job_ids)
        if set(now.values()) <= FINAL or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not ever_failed, f"jobs entered the failed registry: {ever_failed}"
    return now


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_rate_limit_spaces_starts_across_worker_processes(
    start: Start, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Eight 4/s jobs on two worker processes all succeed, their starts at least ~0.25 s apart."""
    start("worker.py", "--concurrency", "2")
    wait_workers(rconn, 2)
    start_scheduler(start, rconn)
    stamps = tmp_path / "stamps"
    job_ids = [enqueue(client, auth, "rate_limited_stamp", {"path": str(stamps)}) for _ in range(8)]

    final = run_to_the_end(client, auth, rconn, job_ids, 30)
    assert set(final.values()) == {"SUCCESS"}, final

    starts = sorted(float(line) for line in stamps.read_text().split())
    assert len(starts) == 8
    span = starts[-1] - starts[0]
    assert span >= (8 - 1) / 4 - 0.2, f"8 starts at 4/s spanned only {span:.2f} s"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.2, f"two starts only {min(gaps):.3f} s apart: {gaps}"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_concurrency_limit_runs_one_at_a_time_across_workers(
    start: Start, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Three concurrency=1 jobs on two worker processes never overlap, and all succeed."""
    start("worker.py")
    start("worker.py")
    wait_workers(rconn, 2)
    start_scheduler(start, rconn)
    spans = tmp_path / "spans"
    job_ids = [enqueue(client, auth, "one_at_a_time", {"path": str(spans), "seconds": 0.5}) for _ in range(3)]

    final = run_to_the_end(client, auth, rconn, job_ids, 30)
    assert set(final.values()) == {"SUCCESS"}, final

    intervals = sorted(tuple(map(float, line.split())) for line in spans.read_text().splitlines())
    assert len(intervals) == 3
    for (_, end), (begin, _) in itertools.pairwise(intervals):
        assert begin >= end, f"two runs overlapped: {intervals}"
    # Both workers were free, so only the limit kept them apart: the runs were serialized.
    assert intervals[-1][1] - intervals[0][0] >= 3 * 0.5
