"""Idempotency keys and unique tasks under concurrent requests to a real gunicorn web process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import TOKEN
from tests.servers import FINAL, Starter, start_web, start_worker, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web(start: Starter) -> str:
    """A gunicorn web process with two workers; yields its base URL."""
    return start_web(start, WEB_CONCURRENCY="2")


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
def test_concurrent_requests_with_one_idempotency_key_make_one_job(web: str, rconn: redis.Redis) -> None:
    """Ten concurrent POSTs with the same Idempotency-Key all get 202 and the same single job."""
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    body = {"args": {"x": 1, "y": 2}}
    responses = post_at_once(f"{web}/api/v1/tasks/add", 10, body, headers)
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 1, job_ids
    queued = [i.decode() for i in rconn.lrange("rq:queue:default", 0, -1)]
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
    web: str, start: Starter, rconn: redis.Redis, tmp_path: Path
) -> None:
    """Two concurrent enqueues of a unique task share one job; after it finished a new one is made."""
    start_worker(start, rconn)
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


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_16_concurrent_requests_make_one_unique_job_and_one_debounced_job(
    web: str, rconn: redis.Redis
) -> None:
    """``unique`` and ``debounce`` (issue 19) through two gunicorn processes: 16 concurrent POSTs with
    one key (each with other args) make one job; exactly one answer says ``"deduplicated": false``.
    Debounced, the one job holds the args of whichever request reached Redis last: a request after
    them all still joins it and its args win."""
    url = f"{web}/api/v1/tasks/add"
    bodies = [
        {"args": {"x": n, "y": 0}, "options": {"unique": {"period": 60, "key": "k"}}} for n in range(16)
    ]
    unique = post_each_at_once(url, bodies, AUTH)
    assert [r.status_code for r in unique] == [202] * 16, [r.text for r in unique]
    assert len({r.json()["job_id"] for r in unique}) == 1
    assert sorted(r.json()["deduplicated"] for r in unique) == [False] + [True] * 15
    assert rconn.llen("rq:queue:default") == 1

    debounce = {"key": "k", "delay": 30}
    bodies = [{"args": {"x": n, "y": 0}, "options": {"debounce": debounce}} for n in range(16)]
    debounced = post_each_at_once(url, bodies, AUTH)
    assert [r.status_code for r in debounced] == [202] * 16, [r.text for r in debounced]
    job_ids = {r.json()["job_id"] for r in debounced}
    assert len(job_ids) == 1 and rconn.zcard("rq:scheduled:default") == 1
    last = requests.post(url, json={"args": {"x": 99, "y": 1}, "options": {"debounce": debounce}},
                         headers=AUTH, timeout=10)  # fmt: skip
    assert last.json()["job_id"] in job_ids and last.json()["deduplicated"] is True
    view = requests.get(f"{web}/api/v1/jobs/{last.json()['job_id']}", headers=AUTH, timeout=10).json()
    assert view["state"] == "PENDING" and view["scheduled_for"]
    from app.core.queues import JsonJob

    assert JsonJob.fetch(last.json()["job_id"], connection=rconn).kwargs == {"x": 99, "y": 1}


def post_each_at_once(
    url: str, bodies: list[dict[str, Any]], headers: dict[str, str]
) -> list[requests.Response]:
    """One thread per body POSTs it to ``url``, released together by a barrier."""
    barrier = threading.Barrier(len(bodies))
    responses: list[requests.Response] = []
    errors: list[BaseException] = []

    def go(body: dict[str, Any]) -> None:
        try:
            barrier.wait(5)
            responses.append(requests.post(url, json=body, headers=headers, timeout=10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(body,)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert len(responses) == len(bodies)
    return responses
