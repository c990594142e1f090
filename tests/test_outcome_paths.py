"""One decision point (issue 18): every path that ends or re-queues a run goes through app/core/outcomes.py.

A spy wraps each outcome function of the module (it still does its work) and appends what it was
called with to a file, so that calls made in a forked work horse are seen too. Each path is then
driven for real, and the test checks both that the outcome went through the module and that the
job ended in the state that outcome writes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rq
from flask import Flask
from flask.testing import FlaskClient
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import DefaultSerializer

import tests.jobs  # noqa: F401 - registers the test tasks
from app.calling.eager import eager
from app.catalogue.registry import REGISTRY
from app.core import outcomes
from app.core.dispatch import enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation import signals
from app.ops import metrics
from app.processes import supervisor
from app.processes.maintenance import rescue_abandoned
from app.processes.workers import JsonInlineWorker, JsonThreadWorker, JsonWorker
from app.processes.workers.pooled import JsonPooledWorker
from app.tasks import typed_result  # type: ignore[attr-defined]

#: The outcome kinds: each is one function of app/core/outcomes.py.
KINDS = (
    "succeeded",  # the task returned
    "retrying",  # an attempt failed, another is scheduled
    "failed",  # failed for good (or stopped while it ran)
    "revoked",  # revoked before it ran
    "stopped_run",  # revoked while it ran: its run stopped, canceled
    "orphaned",  # its worker died (or lost Redis before writing the outcome)
    "fail_now",  # its process is gone and it fails for good (poison, hard limit)
    "deferred",  # its task's rate limit put it back for later
    "set_aside",  # it cannot be read: failed unrun
    "put_back",  # dequeued, never started: back to the head of its queue
    "rescue",  # the supervisor settles the job of a dead worker process
    "eager_run",  # eager mode: run inline, the worker's signals and hooks
    "expire",  # not started by its `expires`: never runs (a worker at its start, or the sweep)
    "snoozed",  # the task raised Snooze: put back for later, no retry spent
)

Spy = Callable[[], list[tuple[str, str]]]


def _job_id(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Job):
            return str(value.id)
    return next(str(v) for v in args if isinstance(v, str))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Spy:
    """Every outcome function called while the test runs, as (kind, job id), in any process."""
    record = tmp_path / "outcomes.log"

    def wrapped(name: str) -> Callable[..., Any]:
        original = getattr(outcomes, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with record.open("a") as f:
                f.write(f"{name} {_job_id(args, kwargs)}\n")
            return original(*args, **kwargs)

        return call

    for name in KINDS:
        monkeypatch.setattr(outcomes, name, wrapped(name))

    def calls() -> list[tuple[str, str]]:
        if not record.exists():
            return []
        return [
            (kind, job_id)
            for kind, job_id in (line.split(" ", 1) for line in record.read_text().splitlines())
        ]

    return calls


def _enqueue(app: Flask, task: str, **args: Any) -> str:
    spec = REGISTRY.get(task)
    assert spec is not None
    redis = app.extensions["tasklane"].redis
    job = enqueue(spec, spec.validate(args), redis, default_result_ttl=60, failure_ttl=600)
    return str(job.id)


def _status(app: Flask, job_id: str) -> JobStatus:
    return JsonJob.fetch(job_id, connection=app.extensions["tasklane"].redis).get_status()


def _worker(mode: str, redis: Any) -> Any:
    queues = [JsonQueue("default", connection=redis)]
    classes = {"fork": JsonWorker, "inline": JsonInlineWorker, "pooled": JsonPooledWorker,
               "threads": JsonThreadWorker}  # fmt: skip
    return classes[mode](queues, connection=redis)


@pytest.mark.parametrize("mode", ["pooled", "fork", "inline", "threads"])
def test_every_worker_mode_records_success_retry_and_failure_through_outcomes(
    app: Flask, spy: Spy, mode: str, tmp_path: Path
) -> None:
    """Success, a retried attempt and a final failure, in each worker mode (fork: in the work horse)."""
    redis = app.extensions["tasklane"].redis
    ok = _enqueue(app, "add", x=1, y=2)
    retried = _enqueue(app, "flaky", path=str(tmp_path / "n"), failures=1)
    failing = _enqueue(app, "always_fail", message="boom")
    with app.app_context():
        _worker(mode, redis).work(burst=True)

    calls = spy()
    assert ("succeeded", ok) in calls and _status(app, ok) == JobStatus.FINISHED, calls
    assert ("retrying", retried) in calls and _status(app, retried) == JobStatus.SCHEDULED, calls
    assert ("failed", failing) in calls and _status(app, failing) == JobStatus.FAILED, calls


@pytest.mark.parametrize("mode", ["pooled", "fork", "inline", "threads"])
def test_every_worker_mode_records_an_expiry_and_a_snooze_through_outcomes(
    app: Flask, spy: Spy, mode: str, tmp_path: Path
) -> None:
    """A job past its ``expires`` at its start, and a task that snoozes (fork: in the work horse)."""
    from datetime import UTC, datetime, timedelta

    from app.core.dispatch import EnqueueOptions

    redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("add")
    assert spec is not None
    past = EnqueueOptions(expires=datetime.now(UTC) - timedelta(seconds=1))
    late = enqueue(
        spec, spec.validate({"x": 1, "y": 1}), redis, past, default_result_ttl=60, failure_ttl=600
    ).id
    snoozing = _enqueue(app, "snooze_first", path=str(tmp_path / "runs"), times=1, seconds=30)
    with app.app_context():
        _worker(mode, redis).work(burst=True)

    calls = spy()
    assert ("expire", late) in calls and _status(app, late) == JobStatus.CANCELED, calls
    assert ("snoozed", snoozing) in calls and _status(app, snoozing) == JobStatus.SCHEDULED, calls


def _start_as_a_worker_that_dies(redis: Any, job_id: str, expired: bool) -> None:
    """Dequeue the job and mark it started by a worker that is gone (heartbeat expired or not)."""
    queue = JsonQueue("default", connection=redis)
    job = JsonJob.fetch(job_id, connection=redis)
    redis.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    with redis.pipeline() as pipe:
        execution = Execution.create(job, ttl=60, pipeline=pipe)
        job.prepare_for_execution("dead-worker", pipeline=pipe)
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.execute()
    if expired:
        redis.zadd(
            StartedJobRegistry("default", connection=redis).key, {execution.composite_key: time.time() - 5}
        )


def test_the_sweep_requeues_an_abandoned_run_through_outcomes(app: Flask, spy: Spy) -> None:
    redis = app.extensions["tasklane"].redis
    job_id = _enqueue(app, "add", x=1, y=2)
    _start_as_a_worker_that_dies(redis, job_id, expired=True)
    assert rescue_abandoned(JsonQueue("default", connection=redis)) == 1
    assert ("orphaned", job_id) in spy()
    assert _status(app, job_id) == JobStatus.QUEUED


@pytest.mark.parametrize("mode", ["pooled", "inline"])
def test_the_supervisor_settles_a_dead_childs_jobs_through_outcomes(app: Flask, spy: Spy, mode: str) -> None:
    """Pooled: a dead child's held jobs, one started and one only dequeued; inline: its running job.
    Both go through outcomes.rescue, at once (no wait for the heartbeat to expire)."""
    redis = app.extensions["tasklane"].redis
    started = _enqueue(app, "add", x=1, y=2)
    _start_as_a_worker_that_dies(redis, started, expired=False)
    args = supervisor.parse_args(["default", "--mode", mode, "--concurrency", "2"])
    sup = supervisor.Supervisor(app, args)
    assert sup.board is not None
    killed = signal.SIGKILL.value  # a wait status: killed by SIGKILL
    with app.app_context():
        if mode == "pooled":
            dequeued = _enqueue(app, "add", x=2, y=2)
            redis.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
            sup.board.hold(0, started)
            sup.board.hold(1, dequeued)
            sup._child_died(1000, 1, killed)
            sup._child_died(1001, 2, killed)
            sup._fail_stuck_jobs()
            assert ("put_back", dequeued) in spy() and _status(app, dequeued) == JobStatus.QUEUED
        else:
            sup.board.set(0, started, time.time() + 60)
            sup._rescue_jobs_of(1, killed)
    calls = spy()
    assert ("rescue", started) in calls and ("orphaned", started) in calls, calls
    assert _status(app, started) == JobStatus.QUEUED


def test_an_unreadable_job_is_set_aside_through_outcomes(app: Flask, spy: Spy) -> None:
    """Counted and signalled as a failure (it used to be written aside with neither)."""
    redis = app.extensions["tasklane"].redis
    pickled = rq.Queue("default", connection=redis, serializer=DefaultSerializer).enqueue("os.getcwd")
    failures: list[str] = []

    def on_failure(sender: str, **kwargs: Any) -> None:
        failures.append(kwargs["job_id"])

    signals.task_failure.connect(on_failure)
    try:
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)
    finally:
        signals.task_failure.disconnect(on_failure)
    assert ("set_aside", pickled.id) in spy()
    assert failures == [pickled.id]
    assert redis.hget(Job.key_for(pickled.id), "status") == b"failed"
    assert metrics.job_counts(redis).get((outcomes.UNREADABLE_TASK, "failure")) == 1


def test_a_revoke_through_the_api_goes_through_outcomes(
    app: Flask, client: FlaskClient, auth: dict[str, str], spy: Spy
) -> None:
    job_id = _enqueue(app, "add", x=1, y=2)
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=auth).status_code == 202
    assert ("revoked", job_id) in spy()
    assert _status(app, job_id) == JobStatus.CANCELED


def test_a_revoke_of_a_running_job_is_recorded_through_outcomes(app: Flask, spy: Spy, tmp_path: Path) -> None:
    redis = app.extensions["tasklane"].redis
    job_id = _enqueue(app, "slow_touch", path=str(tmp_path / "never"), seconds=10, steps=100)

    def revoke_when_started() -> None:
        while _status(app, job_id) != JobStatus.STARTED:
            time.sleep(0.02)
        time.sleep(0.2)
        outcomes.revoke(JsonJob.fetch(job_id, connection=redis))

    revoker = threading.Thread(target=revoke_when_started, daemon=True)
    revoker.start()
    with app.app_context():
        _worker("inline", redis).work(burst=True)
    revoker.join(5)
    calls = spy()
    assert ("stopped_run", job_id) in calls and ("failed", job_id) in calls, calls
    assert _status(app, job_id) == JobStatus.STOPPED


def test_eager_mode_goes_through_outcomes_with_signals_and_a_json_result(spy: Spy) -> None:
    """Eager calls used to bypass it: no signals, the raw return value (a datetime, a tuple)."""
    seen: list[tuple[str, Any]] = []

    def record(name: str) -> Callable[..., None]:
        def handler(sender: str, **kwargs: Any) -> None:
            seen.append((name, kwargs.get("result")))

        return handler

    handlers = {
        sig: record(sig.name) for sig in (signals.task_prerun, signals.task_postrun, signals.task_success)
    }
    for sig, handler in handlers.items():
        sig.connect(handler)
    try:
        with eager():
            result = typed_result.delay("hi")
    finally:
        for sig, handler in handlers.items():
            sig.disconnect(handler)
    expected = {"note": "hi", "when": "2024-01-01T00:00:00Z", "pair": [1, 2], "tags": ["a"]}
    assert result.get() == expected
    assert [name for name, _ in seen] == ["task_prerun", "task_postrun", "task_success"]
    assert seen[-1][1] == expected
    assert ("eager_run", result.id) in spy()


def test_every_outcome_kind_is_a_function_of_the_module() -> None:
    """The list above is the module's: a new outcome function is added here (and driven) too."""
    assert all(callable(getattr(outcomes, kind)) for kind in KINDS)
