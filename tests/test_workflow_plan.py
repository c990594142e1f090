"""Workflow requests: checked whole before any job exists, then built on RQ dependencies."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from rq.job import JobStatus

from app.core.queues import JsonJob
from app.core.workflows import WorkflowBody, WorkflowError, create, status
from app.foundation.config import Settings


@pytest.fixture
def real_redis(redis_url: str) -> Any:
    return redis.Redis.from_url(redis_url)


def body(**kwargs: Any) -> WorkflowBody:
    return WorkflowBody.model_validate(kwargs)


def test_chain_steps_wait_for_and_receive_the_previous_result(real_redis: Any, app: Flask) -> None:
    """It makes each chain step depend on the one before and take its result in its first free field."""
    record = create(
        body(
            type="chain",
            steps=[{"task": "add", "args": {"x": 1, "y": 2}}, {"task": "add", "args": {"y": 10}}],
        ),
        real_redis,
        Settings(),
    )
    first, second = JsonJob.fetch_many(record["job_ids"], connection=real_redis)
    assert first is not None and second is not None
    assert first.get_status() == JobStatus.QUEUED
    assert second.get_status() == JobStatus.DEFERRED
    assert second.dependency_ids == [first.id]
    assert second.meta["workflow"]["input"] == {"field": "x", "from": {"job": first.id}}
    assert record["output"] == {"job": second.id}


def test_chord_callback_waits_for_every_group_job(real_redis: Any, app: Flask) -> None:
    """It gives the callback all group jobs as dependencies and their results as one list."""
    record = create(
        body(
            type="chord",
            steps=[{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"x": 2, "y": 2}}],
            callback={"task": "xsum"},
        ),
        real_redis,
        Settings(),
    )
    a, b, callback = record["job_ids"]
    job = JsonJob.fetch(callback, connection=real_redis)
    assert sorted(job.dependency_ids) == sorted([a, b])
    assert job.meta["workflow"]["input"] == {"field": "numbers", "from": [{"job": a}, {"job": b}]}
    assert status(record["workflow_id"], real_redis)["state"] == "PENDING"  # type: ignore[index]


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"type": "chain", "steps": [{"task": "nope"}]}, "workflow.steps[0].task"),
        (
            {"type": "chain", "steps": [{"task": "add", "args": {"x": "a", "y": 1}}]},
            "workflow.steps[0].args.x",
        ),
        ({"type": "chain", "steps": [{"task": "add", "args": {"x": 1}}]}, "workflow.steps[0].args.y"),
        ({"type": "chord", "steps": [{"task": "add", "args": {"x": 1, "y": 1}}]}, "workflow.callback"),
        (
            {
                "type": "chain",
                "steps": [{"task": "add", "args": {"x": 1, "y": 1}}, {"type": "group", "steps": []}],
            },
            "workflow.steps[1]",
        ),
    ],
)
def test_invalid_steps_are_named_and_nothing_is_enqueued(
    real_redis: Any, app: Flask, request_body: dict[str, Any], field: str
) -> None:
    """It rejects the whole workflow, naming the bad step, before creating any job."""
    with pytest.raises(WorkflowError) as info:
        create(WorkflowBody.model_validate(request_body), real_redis, Settings())
    assert field in [d["field"] for d in info.value.details]
    assert real_redis.keys("rq:job:*") == []


def test_later_step_missing_only_its_input_is_valid(real_redis: Any, app: Flask) -> None:
    """It accepts a later step whose only missing field is the one the previous result fills."""
    record = create(
        body(
            type="chain", steps=[{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"y": 5}}]
        ),
        real_redis,
        Settings(),
    )
    assert len(record["job_ids"]) == 2


def test_unknown_workflow_has_no_status(real_redis: Any) -> None:
    """It answers None for a workflow it does not know."""
    assert status("missing", real_redis) is None


def test_a_step_that_failed_while_the_workflow_was_built_still_revokes_what_waits_on_it(
    real_redis: Any, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header step that fails for good before the chord's callback exists (a fast worker, a large
    group) leaves no step PENDING forever: once every job exists, its dependents are revoked. (A
    workflow built one job at a time: one with a unique or concurrency-capped task's step.)"""
    from app.core import workflows
    from app.core.states import State, describe

    made: list[Any] = []
    real_enqueue = workflows.enqueue

    def enqueue_and_fail_the_first(*args: Any, **kwargs: Any) -> Any:
        job = real_enqueue(*args, **kwargs)
        made.append(job)
        if len(made) == 1:  # a worker took the first step at once, and it failed for good
            with real_redis.pipeline() as pipe:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                pipe.execute()
        return job

    monkeypatch.setattr(workflows, "enqueue", enqueue_and_fail_the_first)
    monkeypatch.setattr(workflows, "_one_by_one", lambda tree: True)
    record = create(
        body(type="chord", callback={"task": "xsum"},
             steps=[{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"x": 2, "y": 2}}]),
        real_redis,
        Settings(),
    )  # fmt: skip
    callback = JsonJob.fetch(record["job_ids"][-1], connection=real_redis)
    assert describe(callback)["state"] == State.REVOKED.value
    assert status(record["workflow_id"], real_redis)["state"] == State.FAILURE.value  # type: ignore[index]
