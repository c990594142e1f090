"""Signals and task hooks fire from the one lifecycle path, and a handler that raises fails nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import tests.jobs
from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation import signals
from app.processes.workers import JsonInlineWorker


@pytest.fixture
def seen() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """Every signal sent while the test runs: (signal, task, keyword arguments)."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    handlers = []
    tests.jobs.HOOK_CALLS.clear()  # another test file in this process may have run ``hooked``
    for sig in (signals.task_prerun, signals.task_postrun, signals.task_success, signals.task_failure,
                signals.task_retry, signals.task_revoked):  # fmt: skip

        def record(sender: str, _name: str = sig.name, **kwargs: Any) -> None:
            events.append((_name, sender, kwargs))

        sig.connect(record)
        handlers.append((sig, record))

    def broken(sender: str, **kwargs: Any) -> None:
        raise RuntimeError("a broken handler")

    signals.task_success.connect(broken)
    yield events
    signals.task_success.disconnect(broken)
    for sig, handler in handlers:
        sig.disconnect(handler)
    tests.jobs.HOOK_CALLS.clear()


def _run(app: Flask, task: str, args: dict[str, Any]) -> JsonJob:
    spec = REGISTRY.get(task)
    assert spec is not None
    redis = app.extensions["tasklane"].redis
    job = enqueue(spec, spec.validate(args), redis, default_result_ttl=60, failure_ttl=60)
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)
    return JsonJob.fetch(job.id, connection=redis)  # type: ignore[return-value]


def test_success_sends_prerun_postrun_success_and_calls_on_success(
    app: Flask, seen: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """A broken success handler is logged; the job still succeeds and the other handlers ran."""
    job = _run(app, "hooked", {"note": "hi"})
    assert job.get_status().value == "finished"
    assert [name for name, _, _ in seen] == ["task_prerun", "task_postrun", "task_success"]
    assert all(sender == "hooked" for _, sender, _ in seen)
    assert seen[-1][2]["result"] == "HI" and seen[-1][2]["job_id"] == job.id
    assert [("success", "HI", job.id)] == tests.jobs.HOOK_CALLS


def test_final_failure_sends_failure_and_calls_on_failure(
    app: Flask, seen: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """The failure carries the error; a hook that raises does not change the outcome."""
    job = _run(app, "hooked", {"note": "fail"})
    assert job.get_status().value == "failed"
    names = [name for name, _, _ in seen]
    assert names == ["task_prerun", "task_postrun", "task_failure"]
    assert seen[-1][2]["error"]["type"] == "ValueError"
    assert tests.jobs.HOOK_CALLS[0][0] == "failure"


def test_a_retried_attempt_sends_retry(
    app: Flask, seen: list[tuple[str, str, dict[str, Any]]], tmp_path: Any
) -> None:
    """An attempt that fails with retries left sends task_retry with the time of the next attempt."""
    job = _run(app, "flaky", {"path": str(tmp_path / "n"), "failures": 1})
    retries = [kwargs for name, _, kwargs in seen if name == "task_retry"]
    assert len(retries) == 1 and retries[0]["retry_at"] and retries[0]["job_id"] == job.id
    assert "task_failure" not in [name for name, _, _ in seen]
