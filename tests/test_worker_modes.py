"""The inline and threads worker modes keep every guarantee of the forking mode."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from tests.servers import FINAL, Starter, enqueue, get_job, start_scheduler, start_worker, wait_state

pytestmark = pytest.mark.integration

MODES = [["--mode", "inline"], ["--mode", "threads", "--threads", "4"]]


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES, ids=["inline", "threads"])
def test_jobs_limits_and_revoke(
    mode: list[str],
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
) -> None:
    """It runs jobs, applies soft and hard limits, and stops a revoked running job, in each mode."""
    start_worker(start, rconn, "default", *mode)
    added = enqueue(client, auth, "add", {"x": 2, "y": 3})
    partial = enqueue(client, auth, "partial_work", {"items": 100, "per_item": 0.1})
    stuck = enqueue(client, auth, "stuck", {"seconds": 10})
    slow_file = tmp_path / "slow"
    slow = enqueue(client, auth, "slow_touch", {"path": str(slow_file), "seconds": 6, "steps": 6})
    wait_state(client, auth, slow, {"STARTED", "PROGRESS"}, timeout=20)
    assert client.delete(f"/api/v1/jobs/{slow}", headers=auth).status_code == 202

    assert wait_state(client, auth, added, FINAL)["result"] == 5
    assert wait_state(client, auth, partial, FINAL)["result"]["status"] == "partial"
    timed_out = wait_state(client, auth, stuck, FINAL)
    assert (timed_out["state"], timed_out["error"]["type"]) == ("FAILURE", "TimeLimitExceeded")
    revoked = wait_state(client, auth, slow, FINAL, timeout=10)
    assert (revoked["state"], revoked["status"]) == ("REVOKED", "stopped")
    time.sleep(1)
    assert not slow_file.exists()
    # The worker is still there and still works.
    assert wait_state(client, auth, enqueue(client, auth, "add", {"x": 1, "y": 1}), FINAL)["result"] == 2


@pytest.mark.timeout(60)
def test_threads_run_io_bound_jobs_side_by_side(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """It runs as many waiting jobs at once as it has threads."""
    start_worker(start, rconn, "default", "--mode", "threads", "--threads", "6")
    ids = [
        enqueue(client, auth, "slow_touch", {"path": str(tmp_path / f"f{n}"), "seconds": 1, "steps": 1})
        for n in range(6)
    ]
    views = [wait_state(client, auth, job_id, FINAL) for job_id in ids]
    assert {v["state"] for v in views} == {"SUCCESS"}
    latest_start = max(v["started_at"] for v in views)
    earliest_end = min(v["ended_at"] for v in views)
    assert latest_start < earliest_end  # all six were running at the same moment
    assert len({v["worker"] for v in views}) == 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES, ids=["inline", "threads"])
def test_sigterm_finishes_the_job_in_hand(
    mode: list[str],
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
) -> None:
    """It finishes the running job on SIGTERM, then exits 0."""
    worker = start_worker(start, rconn, "default", *mode)
    mark = tmp_path / "slow"
    job_id = enqueue(client, auth, "slow_touch", {"path": str(mark), "seconds": 2, "steps": 2})
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"})
    worker.send_signal(signal.SIGTERM)
    assert start.wait(worker, 20) == 0
    assert mark.read_text() == "ran"
    assert get_job(client, auth, job_id)["state"] == "SUCCESS"


@pytest.mark.timeout(90)
def test_a_thread_stuck_in_a_blocking_call_is_killed_with_its_process(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    silent_peer: int,
) -> None:
    """It kills a threads-mode process whose job blocks past its hard limit, fails that job, and goes on."""
    start_worker(start, rconn, "default", "--mode", "threads", "--threads", "2")
    start_scheduler(start, rconn)
    started = time.monotonic()
    stuck = enqueue(client, auth, "blocking_read", {"port": silent_peer})
    view = wait_state(client, auth, stuck, FINAL, timeout=70, interval=0.5)
    assert (view["state"], view["error"]["type"]) == ("FAILURE", "TimeLimitExceeded")
    assert time.monotonic() - started < 60
    # The supervisor restarted the process: new jobs still run.
    assert (
        wait_state(client, auth, enqueue(client, auth, "add", {"x": 4, "y": 4}), FINAL, timeout=30)["result"]
        == 8
    )
