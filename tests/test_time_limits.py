"""Soft and hard time limits, in real worker.py processes and in the in-process worker."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.servers import FINAL, Starter, enqueue, get_job, start_worker, wait_state


@pytest.fixture
def worker(start: Starter, rconn: redis.Redis) -> subprocess.Popen[bytes]:
    """One worker process, once it has registered with Redis."""
    return start_worker(start, rconn)


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
    assert done["worker"] == after["worker"], "the killed job must name the worker that ran it"


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
    """JsonInlineWorker (no fork) raises the soft limit inside partial_work too."""
    from app.core.queues import JsonQueue
    from app.processes.workers import JsonInlineWorker

    job_id = enqueue(client, auth, "partial_work", {"items": 100, "per_item": 0.1})
    conn = redis.Redis.from_url(redis_url)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    try:
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=conn)], connection=conn).work(burst=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        conn.close()
    assert_partial(get_job(client, auth, job_id))
