"""Rate and concurrency limits across real worker processes: jobs wait, never fail."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from tests.servers import FINAL, Starter, enqueue, start_scheduler, wait_workers


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
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Eight 4/s jobs on two worker processes all succeed, their starts at least ~0.25 s apart."""
    supervisor = start("worker.py", "--concurrency", "2")
    wait_workers(start, rconn, 2, supervisor)
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
    # Slots are granted 0.25 s apart; the stamps are written after a fork, which takes tens of
    # ms on a loaded machine, so two stamps can land closer than their grants (never near 0).
    assert min(gaps) >= 0.12, f"two starts only {min(gaps):.3f} s apart: {gaps}"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_concurrency_limit_runs_one_at_a_time_across_workers(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Three concurrency=1 jobs on two worker processes never overlap, and all succeed."""
    start("worker.py")
    start("worker.py")
    wait_workers(start, rconn, 2)
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
