"""Outcomes: one path per outcome; revoking cascades iteratively; outages and shutdowns are no deaths."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, StartedJobRegistry

import tests.jobs  # noqa: F401 - registers the test tasks
from app.catalogue.registry import REGISTRY
from app.core import compat, outcomes
from app.core.dispatch import enqueue
from app.core.queues import JsonJob, JsonQueue
from app.core.states import State, describe
from app.foundation import defaults
from app.foundation.meta import Meta
from app.ops import metrics
from app.processes.maintenance import prune_revoked
from app.processes.workers import JsonInlineWorker, JsonWorker


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


def test_outcomes_lost_to_redis_outages_do_not_make_a_poison_job(app: Flask, tmp_path: Path) -> None:
    """Issue 18, defect 1: a fork job whose work horse lost its outcome to a Redis outage five times
    in a row (exit status EX_OUTCOME_LOST) is put back each time and then succeeds: it used to be
    failed as a poison job after four ("died 4 times (last: Redis became unreachable ...)")."""
    redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("lose_outcome")
    assert spec is not None
    runs = tmp_path / "runs"
    job = enqueue(spec, spec.validate({"path": str(runs), "times": 5}), redis, default_result_ttl=60,
                  failure_ttl=600)  # fmt: skip
    with app.app_context():
        JsonWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)

    view = describe(JsonJob.fetch(job.id, connection=redis))
    assert view["state"] == State.SUCCESS.value, view
    assert view["result"] == 6 and runs.read_text() == "6"
    assert [a["type"] for a in view["attempts"]] == ["RedisUnavailable"] * 5
    assert not JsonJob.fetch(job.id, connection=redis).meta.get(Meta.ORPHANED)


def test_a_task_that_always_exits_as_an_outcome_lost_is_failed_not_run_for_ever(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task whose own code exits 75 (EX_OUTCOME_LOST) every time is not an outage: it is put back
    MAX_OUTCOME_LOST_REQUEUES times, then failed with a message saying why (it used to loop)."""
    monkeypatch.setattr(defaults, "MAX_OUTCOME_LOST_REQUEUES", 3)
    redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("lose_outcome")
    assert spec is not None
    runs = tmp_path / "runs"
    job = enqueue(spec, spec.validate({"path": str(runs), "times": 10}), redis, default_result_ttl=60,
                  failure_ttl=600)  # fmt: skip
    with app.app_context():
        JsonWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)

    view = describe(JsonJob.fetch(job.id, connection=redis))
    assert view["state"] == State.FAILURE.value, view
    assert runs.read_text() == "4"
    assert view["error"]["type"] == "RedisUnavailable" and "lost 4 times" in view["error"]["message"]


def test_a_stop_at_the_shutdown_grace_is_one_attempt_with_a_message(app: Flask, tmp_path: Path) -> None:
    """Issue 18, defect 4: an in-process job still running when a warm shutdown's grace runs out is
    put back with one attempt, WorkerShutdown and its message (it used to record two: an empty
    ShutdownGraceOver, then WorkerShutdown)."""
    redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("slow_touch")
    assert spec is not None
    args = {"path": str(tmp_path / "never"), "seconds": 10, "steps": 100}
    job = enqueue(spec, spec.validate(args), redis, default_result_ttl=60, failure_ttl=600)
    worker = JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis)
    worker._settings = lambda: SimpleNamespace(worker_shutdown_grace=0.2)  # type: ignore[method-assign]

    def stop_when_started() -> None:
        while JsonJob.fetch(job.id, connection=redis).get_status() != JobStatus.STARTED:
            time.sleep(0.02)
        worker.asked_to_stop = True
        worker.start_shutdown_grace()
        compat.request_stop(worker)

    stopper = threading.Thread(target=stop_when_started, daemon=True)
    stopper.start()
    with app.app_context():
        worker.work(burst=True)
    stopper.join(5)

    view = describe(JsonJob.fetch(job.id, connection=redis))
    assert view["state"] == State.PENDING.value, view
    assert [(a["type"], bool(a["message"])) for a in view["attempts"]] == [("WorkerShutdown", True)]
    assert not (tmp_path / "never").exists()


def test_a_job_revoked_while_it_runs_is_canceled_not_failed(app: Flask, tmp_path: Path) -> None:
    """Issue 21, loose end 1: a running job stopped on a revoke goes to RQ's canceled registry with
    its end time (rq-dashboard and `rq info` show it there); it is not in the failed registry, the
    worker's failed count or the queue's failed count (it was, with ended_at null)."""
    redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("slow_touch")
    assert spec is not None
    marker = tmp_path / "never"
    job = enqueue(spec, spec.validate({"path": str(marker), "seconds": 10, "steps": 100}), redis,
                  default_result_ttl=60, failure_ttl=600)  # fmt: skip
    worker = JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis)

    def revoke_when_started() -> None:
        while JsonJob.fetch(job.id, connection=redis).get_status() != JobStatus.STARTED:
            time.sleep(0.02)
        time.sleep(0.2)
        outcomes.revoke(JsonJob.fetch(job.id, connection=redis))

    revoker = threading.Thread(target=revoke_when_started, daemon=True)
    revoker.start()
    with app.app_context():
        worker.work(burst=True)
    revoker.join(5)

    stopped = JsonJob.fetch(job.id, connection=redis)
    view = describe(stopped)
    assert (view["state"], view["status"]) == (State.REVOKED.value, "stopped"), view
    assert view["ended_at"] is not None
    assert job.id in CanceledJobRegistry("default", connection=redis).get_job_ids()
    assert job.id not in FailedJobRegistry("default", connection=redis).get_job_ids()
    assert StartedJobRegistry("default", connection=redis).count == 0
    assert int(redis.hget(worker.key, "failed_job_count") or 0) == 0
    assert metrics.job_counts(redis).get(("slow_touch", "revoked")) == 1
    assert not marker.exists()
    # Kept for its revoked retention, as a revoke of a waiting job is: the sweep leaves it there.
    assert 0 < redis.ttl(stopped.key) <= stopped.revoked_ttl()
    assert prune_revoked(JsonQueue("default", connection=redis)) == 0
    assert job.id in CanceledJobRegistry("default", connection=redis).get_job_ids()


def test_a_manual_retry_of_a_job_that_spent_its_retries_gets_a_fresh_budget(
    app: Flask, tmp_path: Path, client: FlaskClient, auth: dict[str, str]
) -> None:
    """Issue 21, loose end 3: POST /jobs/<id>/retry of a job that failed after its last retry runs it
    with its task's whole retry budget again (it ran once and failed for good); attempts are kept."""
    redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("flaky")  # 3 retries
    assert spec is not None
    job = enqueue(spec, spec.validate({"path": str(tmp_path / "n"), "failures": 10}), redis,
                  default_result_ttl=60, failure_ttl=600)  # fmt: skip
    redis.hset(job.key, "retries_left", 0)  # as after its third retry

    def run() -> None:
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)

    run()
    assert JsonJob.fetch(job.id, connection=redis).get_status() == JobStatus.FAILED
    response = client.post(f"/api/v1/jobs/{job.id}/retry", headers=auth)
    assert response.status_code == 202, response.get_json()
    assert JsonJob.fetch(job.id, connection=redis).retries_left == 3
    run()
    again = JsonJob.fetch(job.id, connection=redis)
    assert again.get_status() == JobStatus.SCHEDULED  # failed, and retried: the budget is fresh
    assert again.retries_left == 2
    assert [a["type"] for a in describe(again)["attempts"]] == ["ConnectionError"] * 2
