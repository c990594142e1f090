"""The lifecycle: one path per outcome; revoking cascades iteratively through long chains."""

from __future__ import annotations

import sys
import time

import pytest
from flask import Flask
from rq.job import JobStatus

from app.core import outcomes
from app.core.queues import JsonJob, JsonQueue
from app.core.states import State, describe


@pytest.mark.timeout(120)
def test_failing_the_head_of_a_10000_step_chain_revokes_every_step_without_recursion(app: Flask) -> None:
    """Every later step of a 10,000-step chain ends REVOKED, in bounded time, with a small stack
    (revoke -> after_revoke -> on_step_failed -> revoke used to recurse and hit RecursionError)."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    head = queue.enqueue("tests.jobs.always_fail", kwargs={"message": "x"})
    ids = [head.id]
    with redis.pipeline() as pipe:
        for _ in range(10_000):
            job = JsonJob.create(
                "app.tasks.platform.add", kwargs={"x": 1, "y": 1}, connection=redis,
                depends_on=[ids[-1]], status=JobStatus.DEFERRED, origin="default",
            )  # fmt: skip
            job.save(pipeline=pipe)
            pipe.sadd(JsonJob.dependents_key_for(ids[-1]), job.id)
            ids.append(job.id)
        pipe.execute()

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # far below the chain's length: recursion would fail here
    try:
        started = time.monotonic()
        revoked = outcomes.revoke_dependents(head)
        elapsed = time.monotonic() - started
    finally:
        sys.setrecursionlimit(limit)
    assert revoked == ids[1:]
    assert elapsed < 60
    tail = JsonJob.fetch_many(ids[-3:], connection=redis)
    assert all(job is not None and describe(job)["state"] == State.REVOKED.value for job in tail)
