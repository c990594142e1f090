"""Idempotency keys and unique tasks under concurrent requests to a real gunicorn web process."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import TOKEN
from tests.servers import ROOT, free_port, python_process, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
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
        log = tmp_path / f"{len(procs)}-{Path(args[-1] if args[0] == '-m' else args[0]).stem}.log"
        proc = python_process(list(args), {**env, **extra_env}, log, cwd=ROOT)
        procs.append(proc)
        logs.append(log)
        return proc

    try:
        yield _start
    finally:
        stop_processes(procs, logs)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def web(start: Start) -> str:
    """A gunicorn web process with two workers; yields its base URL."""
    port = free_port()
    start("-m", "gunicorn", "app:create_app()", "--bind", f"127.0.0.1:{port}", WEB_CONCURRENCY="2")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _healthy(url), 20, interval=0.1, message="gunicorn to answer /healthz")
    return url


def post_at_once(
    url: str, count: int, body: dict[str, Any], headers: dict[str, str]
) -> list[requests.Response]:
    """``count`` threads POST ``body`` to ``url``, released together by a barrier."""
    barrier = threading.Barrier(count)
    responses: list[requests.Response] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait(5)
            responses.append(requests.post(url, json=body, headers=headers, timeout=10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert len(responses) == count
    return responses


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_concurrent_requests_with_one_idempotency_key_make_one_job(web: str, redis_url: str) -> None:
    """Ten concurrent POSTs with the same Idempotency-Key all get 202 and the same single job."""
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    body = {"args": {"x": 1, "y": 2}}
    responses = post_at_once(f"{web}/api/v1/tasks/add", 10, body, headers)
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 1, job_ids
    conn = redis.Redis.from_url(redis_url)
    try:
        queued = [i.decode() for i in conn.lrange("rq:queue:default", 0, -1)]
    finally:
        conn.close()
    assert queued == list(job_ids)

    other = requests.post(
        f"{web}/api/v1/tasks/add", json={"args": {"x": 1, "y": 3}}, headers=headers, timeout=10
    )
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_conflict"
    again = requests.post(f"{web}/api/v1/tasks/add", json=body, headers=headers, timeout=10)
    assert (again.status_code, again.json()["job_id"]) == (202, next(iter(job_ids)))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_unique_task_shares_the_live_job_and_not_a_finished_one(
    web: str, start: Start, redis_url: str, tmp_path: Path
) -> None:
    """Two concurrent enqueues of a unique task share one job; after it finished a new one is made."""
    conn = redis.Redis.from_url(redis_url)
    try:
        start("worker.py")
        wait_for(lambda: conn.scard("rq:workers") > 0, 15, message="the worker to register")
    finally:
        conn.close()
    url = f"{web}/api/v1/tasks/unique_stamp"
    body = {"args": {"path": str(tmp_path / "u"), "seconds": 1}}
    first = post_at_once(url, 2, body, AUTH)
    assert [r.status_code for r in first] == [202, 202], [r.text for r in first]
    ids = {r.json()["job_id"] for r in first}
    assert len(ids) == 1, ids
    job_id = ids.pop()

    def view() -> dict[str, Any]:
        return dict(requests.get(f"{web}/api/v1/jobs/{job_id}", headers=AUTH, timeout=10).json())

    # While it waits or runs, a third request gets it too.
    during = requests.post(url, json=body, headers=AUTH, timeout=10)
    assert view()["state"] not in FINAL
    assert during.json()["job_id"] == job_id

    done = wait_for(lambda: (v := view())["state"] in FINAL and v, 15, interval=0.1, message="the job")
    assert done["state"] == "SUCCESS", done
    after = requests.post(url, json=body, headers=AUTH, timeout=10)
    assert after.status_code == 202
    assert after.json()["job_id"] != job_id
