"""Running jobs: only registered tasks, re-validated in the worker, JSON in and out."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer

from app.catalogue.progress import report_progress
from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.queues import JsonJob, JsonQueue, UnknownTaskError, fetch_job
from app.core.states import State, describe, state_of
from tests.servers import drain


def test_registered_task_runs_with_validated_arguments(fake_app: Flask, fake_redis: Any) -> None:
    """It runs add through the registry and stores a JSON result."""
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(spec, spec.validate({"x": 2, "y": 3}), fake_redis, default_result_ttl=60, failure_ttl=60)
    drain(fake_app)
    job = fetch_job(job.id, fake_redis)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == 5
    assert isinstance(job.return_value(), int)


def test_job_data_is_stored_as_json(fake_redis: Any) -> None:
    """It never writes a pickle into Redis."""
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(spec, spec.validate({"x": 1, "y": 2}), fake_redis, default_result_ttl=60, failure_ttl=60)
    data = fake_redis.hget(job.key, "data")
    import json
    import zlib

    try:
        decoded = json.loads(zlib.decompress(data))
    except zlib.error:
        decoded = json.loads(data)
    assert decoded[0] == "app.tasks.platform.add"
    assert decoded[3] == {"x": 1, "y": 2}


def test_unregistered_function_is_refused(fake_app: Flask, fake_redis: Any, tmp_path: Path) -> None:
    """It fails a JSON job naming any function outside the registry, without calling it."""
    target = tmp_path / "pwned"
    job = JsonQueue("default", connection=fake_redis).enqueue("os.system", f"touch {target}")
    with pytest.raises(UnknownTaskError):
        _ = fetch_job(job.id, fake_redis).func
    drain(fake_app)
    assert not target.exists()
    assert fetch_job(job.id, fake_redis).get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry("default", connection=fake_redis).get_job_ids()


def test_pickled_job_is_never_unpickled(
    fake_app: Flask, fake_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It fails a pickled job at JSON decoding; pickle.loads is never called."""
    pickled = Queue("default", connection=fake_redis, serializer=DefaultSerializer).enqueue("os.getcwd")
    calls: list[bytes] = []
    real_loads = pickle.loads
    monkeypatch.setattr(
        pickle, "loads", lambda data, *a, **k: calls.append(data) or real_loads(data, *a, **k)
    )
    with pytest.raises(DeserializationError):
        fetch_job(pickled.id, fake_redis).kwargs  # noqa: B018 - decoding is the point
    drain(fake_app)
    assert calls == []
    assert fake_redis.hget(pickled.key, "status") == b"failed"


def test_arguments_are_validated_again_in_the_worker(fake_app: Flask, fake_redis: Any) -> None:
    """It fails a job whose stored arguments do not fit the task's model."""
    job = JsonQueue("default", connection=fake_redis).enqueue_call(
        "app.tasks.platform.add", kwargs={"x": "a"}
    )
    drain(fake_app)
    job = fetch_job(job.id, fake_redis)
    assert job.get_status() == JobStatus.FAILED
    view = describe(job)
    assert view["state"] == "FAILURE"
    assert view["error"]["type"] == "InvalidJobArguments"
    assert (
        view["error"]["message"] == "invalid arguments for task 'add': x: Input should be a number; "
        "y: Field required"
    )
    assert "Traceback" in view["error"]["traceback"]


def test_progress_is_visible_while_running(fake_app: Flask, fake_redis: Any, tmp_path: Path) -> None:
    """It stores progress reports in the job's meta, shown as state PROGRESS."""
    job = JsonQueue("default", connection=fake_redis).enqueue_call(
        "tests.jobs.slow_touch", kwargs={"path": str(tmp_path / "f"), "seconds": 0, "steps": 4}
    )
    drain(fake_app)
    job = fetch_job(job.id, fake_redis)
    assert job.meta["progress"] == {"current": 4, "total": 4, "percent": 100.0, "stage": "done"}
    # A started job with progress reads PROGRESS; without it, STARTED.
    assert state_of(job, JobStatus.STARTED) is State.PROGRESS
    job.meta.pop("progress")
    assert state_of(job, JobStatus.STARTED) is State.STARTED


def test_report_progress_outside_a_job_only_returns() -> None:
    """It computes the report without a job and rejects negative counts."""
    assert report_progress(1, 3, message="a third") == {
        "current": 1,
        "total": 3,
        "percent": 33.3,
        "message": "a third",
    }
    assert report_progress(0, 0)["percent"] == 0.0
    with pytest.raises(ValueError):
        report_progress(-1, 3)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (JobStatus.QUEUED, State.PENDING),
        (JobStatus.DEFERRED, State.PENDING),
        (JobStatus.SCHEDULED, State.PENDING),
        (JobStatus.STARTED, State.STARTED),
        (JobStatus.FINISHED, State.SUCCESS),
        (JobStatus.FAILED, State.FAILURE),
        (JobStatus.CANCELED, State.REVOKED),
        (JobStatus.STOPPED, State.REVOKED),
    ],
)
def test_rq_status_maps_to_celery_state(fake_redis: Any, status: JobStatus, state: State) -> None:
    """It maps each RQ status onto the Celery vocabulary."""
    job = JsonJob.create("app.tasks.platform.add", kwargs={"x": 1, "y": 1}, connection=fake_redis)
    assert state_of(job, status) is state


def test_scheduled_retry_reads_retry(fake_redis: Any) -> None:
    """It shows RETRY for a scheduled job that has used a retry."""
    job = JsonJob.create("app.tasks.platform.add", kwargs={"x": 1, "y": 1}, connection=fake_redis)
    job.meta["max_retries"] = 3
    job.retries_left = 2
    assert state_of(job, JobStatus.SCHEDULED) is State.RETRY
