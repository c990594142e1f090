"""Soft and hard time limits, in real worker.py processes and in the in-process worker."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
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


@pytest.fixture
def worker(start: Start, rconn: redis.Redis) -> subprocess.Popen[bytes]:
    """One worker process, once it has registered with Redis."""
    proc = start("worker.py")
    wait_for(lambda: rconn.scard("rq:workers") > 0, 15, message="the worker to register")
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


def wait_state(
    client: FlaskClient, auth: dict[str, str], job_id: str, states: set[str], timeout: float = 20
) -> dict[str, Any]:
    return wait_for(
        lambda: (v := job(client, auth, job_id))["state"] in states and v,
        timeout,
        interval=0.05,
        message=f"job {job_id} to reach {sorted(states)}",
    )


def assert_partial(view: dict[str, Any]) -> None:
    assert view["state"] == "SUCCESS", view
    assert view["result"]["status"] == "partial", view["result"]
    # 1 s soft limit at 0.1 s an item: about 10 items, never all 100.
    assert 5 <= view["result"]["done"] <= 12, view["result"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_soft_limit_lets_the_task_return_a_partial_result(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str]
) -> None:
    """partial_work catches SoftTimeLimitExceeded after 1 s and returns what it did."""
    job_id = enqueue(client, auth, "partial_work", {"items": 100, "per_item": 0.1})
    assert_partial(wait_state(client, auth, job_id, FINAL))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_hard_limit_kills_a_horse_that_blocks_the_alarm(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str]
) -> None:
    """A task with SIGALRM blocked is killed by its worker past the hard limit; the worker goes on."""
    job_id = enqueue(client, auth, "stuck", {"seconds": 10, "block_signals": True})
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    started = time.monotonic()
    done = wait_state(client, auth, job_id, FINAL, 15)
    elapsed = time.monotonic() - started
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "TimeLimitExceeded", done["error"]
    assert elapsed < 5, f"the stuck horse was stopped only after {elapsed:.1f} s (hard limit 2 s)"

    assert worker.poll() is None, "the worker process died with its horse"
    follow = enqueue(client, auth, "add", {"x": 2, "y": 3})
    after = wait_state(client, auth, follow, FINAL, 10)
    assert (after["state"], after["result"]) == ("SUCCESS", 5)
    workers = client.get("/api/v1/workers", headers=auth).get_json()["workers"]
    assert [w["name"] for w in workers if w["pid"] == worker.pid] == [after["worker"]]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_hard_limit_interrupts_a_task_that_keeps_running(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str]
) -> None:
    """A task running past its 2 s hard limit fails with TimeLimitExceeded instead of finishing."""
    job_id = enqueue(client, auth, "stuck", {"seconds": 10})
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    started = time.monotonic()
    done = wait_state(client, auth, job_id, FINAL, 15)
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "TimeLimitExceeded", done["error"]
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP server that accepts connections and never sends a byte; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_hard_limit_stops_a_blocking_socket_read(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str], silent_server: int
) -> None:
    """A recv() on a socket that never answers is stopped by the 2 s hard limit."""
    job_id = enqueue(client, auth, "blocking_read", {"port": silent_server})
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    started = time.monotonic()
    done = wait_state(client, auth, job_id, FINAL, 15)
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "TimeLimitExceeded", done["error"]
    assert time.monotonic() - started < 5
    assert worker.poll() is None


@pytest.mark.integration
@pytest.mark.timeout(30, method="thread")  # the worker under test owns SIGALRM
def test_in_process_worker_applies_the_soft_limit(
    app: Flask, client: FlaskClient, auth: dict[str, str], redis_url: str
) -> None:
    """JsonSimpleWorker (no fork) raises the soft limit inside partial_work too."""
    from app.queues import JsonQueue
    from app.workers import JsonSimpleWorker

    job_id = enqueue(client, auth, "partial_work", {"items": 100, "per_item": 0.1})
    conn = redis.Redis.from_url(redis_url)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    try:
        with app.app_context():
            JsonSimpleWorker([JsonQueue("default", connection=conn)], connection=conn).work(burst=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        conn.close()
    assert_partial(job(client, auth, job_id))
