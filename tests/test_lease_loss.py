"""A worker whose run lost its lease (the sweep handed the job to another run while the worker
was cut off) stops that run at its first heartbeat after the cut and goes on taking jobs; the
stopped run writes nothing. Without root: Redis goes away for a few seconds (a heartbeat
fails, as in a cut) while the lease is taken away, as the sweep would have
(tests/test_netsplit.py cuts a real link, as root). A run whose beats all landed is never
second-guessed: that is the normal end of a run, whose own outcome removes the lease."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq.utils import utcparse

from app import create_app
from app.foundation import defaults
from tests.conftest import make_env
from tests.servers import RedisServer, Starter, enqueue, start_worker, wait_for


def _status(conn: redis.Redis, job_id: str) -> bytes | None:
    return conn.hget(f"rq:job:{job_id}", "status")


def _lease(conn: redis.Redis, queue: str, job_id: str) -> bytes | None:
    """The run's entry in the queue's started registry (``<job id>:<execution id>``)."""
    return next((m for m in conn.zrange(f"rq:wip:{queue}", 0, -1) if m.startswith(job_id.encode())), None)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_run_that_lost_its_lease_is_stopped_and_the_worker_carries_on(
    start: Starter, auth: dict[str, str], tmp_path: Path
) -> None:
    """fork and inline workers: the lease removed and Redis away for 6 s mid-run; each run stops at
    the first beat after Redis returns, long before its 30 s; nothing is written for it; the worker
    then runs the next job."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()  # appendfsync always
    rconn = server.client()
    client = create_app(make_env(tmp_path, server.url)).test_client()
    start.env = {**start.env, "REDIS_URL": server.url}
    queues = {"low": "fork", "high": "inline"}
    logs = {}
    for queue, mode in queues.items():
        start_worker(start, rconn, queue, "--mode", mode)
        logs[queue] = start.logs[-1]
    slow = {"seconds": 30, "steps": 100}
    jobs = {
        q: enqueue(client, auth, "slow_touch", {"path": str(tmp_path / q), **slow}, queue=q) for q in queues
    }
    for q, job_id in jobs.items():
        wait_for(lambda q=q, j=job_id: _lease(rconn, q, j), 20, message=f"the {queues[q]} run's lease")
    for q, job_id in jobs.items():
        member = _lease(rconn, q, job_id)
        assert member is not None
        rconn.zrem(f"rq:wip:{q}", member)
    beats = [utcparse(rconn.hget(f"rq:job:{job_id}", "last_heartbeat").decode()) for job_id in jobs.values()]
    server.kill()
    # Down until each run's next beat (MONITOR_INTERVAL after its last) has come and failed, as in a cut.
    next_beats = max(beats) + timedelta(seconds=defaults.MONITOR_INTERVAL + 1)
    wait_for(lambda: datetime.now(UTC) > next_beats, defaults.MONITOR_INTERVAL + 5, 0.1, "a missed beat")
    server.start()
    back = time.monotonic()
    nexts = {
        q: enqueue(client, auth, "touch", {"path": str(tmp_path / f"{q}-next")}, queue=q) for q in queues
    }
    for q, job_id in nexts.items():
        wait_for(
            lambda j=job_id: _status(rconn, j) == b"finished", 15, 0.1, f"the {queues[q]} worker's next job"
        )
    moved_on = time.monotonic() - back
    print(f"LEASE-LOSS workers took their next jobs {moved_on:.1f} s after Redis came back")
    assert moved_on < 16  # a beat (5 s) after the reconnect (backoff up to 10 s)
    for q, job_id in jobs.items():
        assert f"job {job_id} lost its lease" in logs[q].read_text(errors="replace"), queues[q]
        assert _status(rconn, job_id) == b"started", "the stopped run wrote an outcome"
        assert rconn.xlen(f"rq:results:{job_id}") == 0
        assert not (tmp_path / q).exists(), f"the {queues[q]} run went on to its end"
    start.stop_all()
    server.stop()
