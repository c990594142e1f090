"""Workers stay registered, complete and visible for their whole life, in every mode.

Regression: an inline worker that took a second job right after the first left its key
``rq:worker:<name>`` with the 20 s TTL of a running job; it expired during the next idle
wait, later writes recreated a partial hash, and ``rq info``, ``GET /api/v1/workers``
and ``/readyz`` showed no (or broken) workers while every worker was alive.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
import redis
from flask.testing import FlaskClient
from rq.utils import utcparse

from tests.servers import Starter, enqueue, start_worker, wait_for, wait_state

pytestmark = pytest.mark.integration

#: The fields RQ writes at a worker's birth; a hash missing one was recreated by a late write.
BIRTH_FIELDS = {b"birth", b"queues", b"pid", b"hostname", b"state", b"last_heartbeat"}
#: Each mode on a queue of its own, so that each gets jobs.
MODES = {
    "high": ["--mode", "fork"],
    "default": ["--mode", "inline"],
    "low": ["--mode", "threads", "--threads", "2"],
}


def _states(rconn: redis.Redis) -> list[str]:
    return sorted((rconn.hget(k, "state") or b"").decode() for k in rconn.smembers("rq:workers"))


def _beats(rconn: redis.Redis) -> list[datetime]:
    """Each registered worker's last heartbeat."""
    return [utcparse((rconn.hget(k, "last_heartbeat") or b"").decode()) for k in rconn.smembers("rq:workers")]


def _check_visible(
    rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], expected: int, url: str
) -> None:
    worker_keys = sorted(k.decode() for k in rconn.smembers("rq:workers"))  # "rq:worker:<name>"
    assert len(worker_keys) == expected, worker_keys
    for key in worker_keys:
        fields = rconn.hgetall(key)
        assert set(fields) >= BIRTH_FIELDS, (key, sorted(fields))
        ttl = rconn.ttl(key)
        assert ttl > 30, f"{key} expires in {ttl} s while the worker is idle"
    workers = client.get("/api/v1/workers", headers=auth).get_json()["workers"]
    assert len(workers) == expected
    assert all(w["birth"] and w["host"] and w["pid"] for w in workers), workers
    ready = client.get("/readyz")
    assert ready.status_code == 200 or ready.get_json()["checks"]["workers"]["status"] == "ok", (
        ready.get_json()
    )
    assert ready.get_json()["checks"]["workers"]["workers"] == expected
    info = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "-u", url, "--only-workers"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert f"{expected} workers" in info.stdout, info.stdout


@pytest.mark.timeout(150)
def test_every_mode_stays_registered_across_idle_gaps_longer_than_every_ttl(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], redis_url: str
) -> None:
    """Bursts of back-to-back jobs, each followed by an idle wait in which every worker renews its
    registration (WORKER_TTL=20): each worker stays listed and whole, its key living the idle TTL
    (> 30 s) rather than a running job's 20 s, which expired in the idle wait (the regression)."""
    for queue, mode in MODES.items():
        start_worker(start, rconn, queue, *mode, WORKER_TTL="20")
    expected = 4  # fork 1, inline 1, threads 2
    for burst in range(2):
        ids = [enqueue(client, auth, "add", {"x": n, "y": burst}, queue=q) for q in MODES for n in range(6)]
        for job_id in ids:
            assert wait_state(client, auth, job_id, {"SUCCESS"}, timeout=30)["result"] is not None
        wait_for(lambda: _states(rconn) == ["idle"] * expected, 10, message="every worker idle")
        idle_since = datetime.now(UTC)
        _check_visible(rconn, client, auth, expected, redis_url)
        # Each worker renews its registration in its idle wait (every WORKER_TTL - 15 s): once each
        # has, its key's TTL is the idle one (checked > 30 s), so it outlives any gap from here on.
        wait_for(lambda t=idle_since: all(b > t for b in _beats(rconn)), 20, 0.2, "an idle renewal")
        _check_visible(rconn, client, auth, expected, redis_url)
