"""``Snooze(seconds)``: a task that raises (or returns) it runs again later; no retry is spent, no
attempt or failure recorded; the job view counts it (``snoozed``) and shows ``scheduled_for``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry

from app.core.queues import JsonJob, JsonQueue
from app.ops import metrics
from app.processes.workers import JsonInlineWorker
from app.tasks import Snooze
from tests.servers import FINAL, Starter, enqueue, get_job, start_scheduler, start_worker, wait_state


def _work(app: Flask) -> int:
    """One burst of an inline worker on `default`; its failed-job count."""
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        worker = JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_)
        worker.work(burst=True)
        return int(worker.failed_job_count)


def _due_now(app: Flask, job_id: str) -> None:
    """What the scheduler does when the snooze is over: the job goes back on its queue."""
    redis_ = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis_)
    assert redis_.zrem(queue.scheduled_job_registry.key, job_id) == 1
    queue.enqueue_job(JsonJob.fetch(job_id, connection=redis_))


@pytest.mark.parametrize("returned", [False, True], ids=["raised", "returned"])
def test_a_snooze_puts_the_job_back_without_spending_a_retry(
    returned: bool, app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    redis_ = app.extensions["tasklane"].redis
    runs = tmp_path / "runs"
    job_id = enqueue(
        client, auth, "snooze_first", {"path": str(runs), "times": 2, "seconds": 30, "returned": returned}
    )
    before = datetime.now(UTC)
    assert _work(app) == 0
    view = get_job(client, auth, job_id)
    assert (view["state"], view["status"], view["snoozed"]) == ("PENDING", "scheduled", 1)
    due = datetime.fromisoformat(view["scheduled_for"])
    assert timedelta(seconds=29) <= due - before <= timedelta(seconds=32)
    assert view["retries"] == 0 and view["attempts"] == [] and view["error"] is None
    assert JsonJob.fetch(job_id, connection=redis_).latest_result() is None  # no failure result
    assert FailedJobRegistry("default", connection=redis_).count == 0
    assert (
        redis_.llen("rq:queue:default:intermediate") == 0
        and redis_.zcard(JsonQueue("default", connection=redis_).started_job_registry.key) == 0
    )

    _due_now(app, job_id)
    _work(app)
    assert get_job(client, auth, job_id)["snoozed"] == 2
    _due_now(app, job_id)
    _work(app)
    done = get_job(client, auth, job_id)
    assert (done["state"], done["result"], done["snoozed"], done["retries"]) == ("SUCCESS", 3, 2, 0)
    counts = metrics.job_counts(redis_)
    assert counts[("snooze_first", "snoozed")] == 2 and counts[("snooze_first", "success")] == 1
    assert ("snooze_first", "failure") not in counts and ("snooze_first", "retry") not in counts


def test_snooze_is_importable_as_the_docs_say_and_bounded() -> None:
    assert Snooze(-3).seconds == 0.0 and Snooze(10**12).seconds == 366 * 24 * 3600
    assert Snooze(2.5).seconds == 2.5


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["pooled", "fork"])
def test_a_real_worker_runs_a_snoozed_job_again_after_its_snooze(
    mode: str, start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Worker and scheduler processes: a job that snoozes for 1 s runs again about then and succeeds;
    /metrics counts the snooze."""
    start_scheduler(start, rconn)
    start_worker(start, rconn, "default", "--mode", mode)
    runs = tmp_path / "runs"
    sent = datetime.now(UTC)
    job_id = enqueue(client, auth, "snooze_first", {"path": str(runs), "times": 1, "seconds": 1})
    view = wait_state(client, auth, job_id, FINAL, timeout=20)
    assert (view["state"], view["result"], view["snoozed"], view["retries"], view["attempts"]) == (
        "SUCCESS",
        2,
        1,
        0,
        [],
    )
    assert datetime.fromisoformat(view["started_at"]) - sent >= timedelta(seconds=0.9)  # after its snooze
    text = client.get("/metrics").get_data(as_text=True)
    assert 'tasklane_jobs_total{outcome="snoozed",task="snooze_first"} 1.0' in text
