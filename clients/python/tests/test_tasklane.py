"""``Tasklane`` and ``AsyncTasklane``: Celery-shaped calls made into API requests, answers into results."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import CATALOGUE, Clock, Peer, error
from tasklane_client import (
    AsyncTasklane,
    InvalidArguments,
    TaskError,
    Tasklane,
    TasklaneError,
    TasklaneTimeout,
    TaskRevokedError,
)

FAILED = {
    "job_id": "j1",
    "state": "FAILURE",
    "result": None,
    "error": {"type": "ValueError", "message": "boom", "traceback": "Traceback ..."},
}


def _tasklane(peer: Peer, clock: Clock) -> Tasklane:
    peer.on("GET", "/api/v1/tasks", (200, CATALOGUE))
    return Tasklane(peer.url, "t", sleep=clock.sleep, clock=clock)


def test_delay_maps_positional_arguments_onto_the_catalogues_fields(peer: Peer, clock: Clock) -> None:
    peer.on("POST", "/api/v1/tasks/add", (202, {"job_id": "j1"}))
    peer.on("GET", "/api/v1/jobs/j1", (200, {"job_id": "j1", "state": "SUCCESS", "result": 5}))
    tl = _tasklane(peer, clock)
    result = tl.task("add").delay(2, y=3)
    assert result.id == result.task_id == "j1"
    assert result.get(timeout=5) == 5
    result2 = tl.task("add").apply_async((7,), {"y": 1}, countdown=10, queue="high", priority=2)
    assert result2.id == "j1"
    posts = [s.body for s in peer.seen if s.method == "POST"]
    assert posts == [
        {"args": {"x": 2, "y": 3}, "options": {}},
        {"args": {"x": 7, "y": 1}, "options": {"countdown": 10, "queue": "high", "priority": 2}},
    ]
    assert [s.path for s in peer.seen].count("/api/v1/tasks") == 1  # the catalogue is read once


def test_keyword_only_calls_need_no_catalogue(peer: Peer, clock: Clock) -> None:
    peer.on("POST", "/api/v1/tasks/add", (202, {"job_id": "j1"}))
    Tasklane(peer.url, "t").task("add").delay(x=1, y=2)
    assert [s.path for s in peer.seen] == ["/api/v1/tasks/add"]


def test_bad_positional_calls_raise_before_anything_is_sent(peer: Peer, clock: Clock) -> None:
    tl = _tasklane(peer, clock)
    with pytest.raises(InvalidArguments) as too_many:
        tl.task("add").delay(1, 2, 3)
    assert isinstance(too_many.value, ValueError) and too_many.value.details[0]["field"] == "args"
    with pytest.raises(InvalidArguments) as twice:
        tl.task("add").delay(1, x=2)
    assert twice.value.details[0]["field"] == "args.x"
    with pytest.raises(TasklaneError) as unknown:
        tl.task("nope").delay(1)
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_task")
    assert all(s.method == "GET" for s in peer.seen)


def test_get_raises_the_remote_failure_named_after_its_type(peer: Peer, clock: Clock) -> None:
    peer.on("GET", "/api/v1/jobs/j1", (200, {**FAILED, "state": "STARTED"}), (200, FAILED))
    result = _tasklane(peer, clock).AsyncResult("j1")
    with pytest.raises(TaskError) as caught:
        result.get(timeout=5)
    assert type(caught.value).__name__ == "ValueError"
    assert (caught.value.type, caught.value.message) == ("ValueError", "boom")
    error = result.get(propagate=False)
    assert isinstance(error, TaskError) and error.type == "ValueError"
    assert result.failed() and result.ready() and not result.successful()
    assert isinstance(result.result, TaskError)
    assert result.info["message"] == "boom"


def test_a_revoked_job_raises_task_revoked(peer: Peer, clock: Clock) -> None:
    expired = {"type": "expired", "message": "not started in time"}
    revoked = {"job_id": "j1", "state": "REVOKED", "error": expired}
    peer.on("GET", "/api/v1/jobs/j1", (200, revoked))
    with pytest.raises(TaskRevokedError) as caught:
        _tasklane(peer, clock).AsyncResult("j1").get()
    assert caught.value.type == "expired"


def test_get_times_out_as_a_timeout_error(peer: Peer, clock: Clock) -> None:
    peer.on("GET", "/api/v1/jobs/j1", (200, {"job_id": "j1", "state": "PENDING", "progress": None}))
    result = _tasklane(peer, clock).AsyncResult("j1")
    with pytest.raises(TimeoutError):
        result.get(timeout=1.5)
    assert isinstance(TasklaneTimeout(408, "timeout", ""), TimeoutError)
    assert result.state == "PENDING" and not result.ready() and result.result is None


def test_revoke_of_a_finished_job_is_not_an_error(peer: Peer, clock: Clock) -> None:
    gone = {"error": {"code": "job_finished", "message": "already finished", "details": None}}
    peer.on("DELETE", "/api/v1/jobs/j1", (409, gone))
    peer.on("DELETE", "/api/v1/jobs/j2", error(404, "job_not_found", "no"))
    tl = _tasklane(peer, clock)
    tl.AsyncResult("j1").revoke()
    with pytest.raises(TasklaneError):
        tl.AsyncResult("j2").revoke()


def _workflow_request(peer: Peer) -> dict[str, Any]:
    return next(s.body for s in peer.seen if s.path == "/api/v1/workflows")


def test_chain_group_and_chord_build_the_workflow_request(peer: Peer, clock: Clock) -> None:
    peer.on("POST", "/api/v1/workflows", (202, {"workflow_id": "w1", "job_ids": ["a", "b"]}))
    running, done = {"state": "STARTED", "steps": []}, {"state": "SUCCESS", "result": 8}
    peer.on("GET", "/api/v1/workflows/w1", (200, running), (200, done))
    tl = _tasklane(peer, clock)
    add = tl.task("add")
    flow = tl.chain(add.s(2, 2), add.s(4), add.si(1, 1)).apply_async()
    assert flow.get(timeout=5) == 8
    assert [r.id for r in flow.results] == ["a", "b"]
    assert _workflow_request(peer) == {
        "type": "chain",
        "steps": [
            {"task": "add", "args": {"x": 2, "y": 2}},
            {"task": "add", "args": {"y": 4}},  # x receives the previous result
            {"task": "add", "args": {"x": 1, "y": 1}},  # si: ignores it
        ],
    }
    peer.seen.clear()
    tl.chord(tl.group(add.s(1, 1), add.s(x=2, y=2)), tl.task("always_fail").s()).apply_async()
    assert _workflow_request(peer) == {
        "type": "chord",
        "steps": [{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"x": 2, "y": 2}}],
        "callback": {"task": "always_fail", "args": {}},
    }
    peer.seen.clear()
    (add.s(1, 2) | add.s(3)).delay()
    assert _workflow_request(peer)["steps"][1] == {"task": "add", "args": {"y": 3}}


def test_a_failed_workflow_raises_its_failed_steps_error(peer: Peer, clock: Clock) -> None:
    peer.on("POST", "/api/v1/workflows", (202, {"workflow_id": "w1", "job_ids": ["a", "b"]}))
    status = {"state": "FAILURE", "steps": [{"state": "SUCCESS"}, FAILED, {"state": "REVOKED"}]}
    peer.on("GET", "/api/v1/workflows/w1", (200, status))
    tl = _tasklane(peer, clock)
    flow = tl.group(tl.task("add").s(x=1, y=1)).apply_async()
    with pytest.raises(TaskError) as caught:
        flow.get(timeout=5)
    assert caught.value.type == "ValueError"
    assert flow.failed() and flow.ready()


def test_the_asyncio_twin(peer: Peer, clock: Clock) -> None:
    peer.on("GET", "/api/v1/tasks", (200, CATALOGUE))
    peer.on("POST", "/api/v1/tasks/add", (202, {"job_id": "j1"}))
    running, done = {"job_id": "j1", "state": "STARTED"}, {"job_id": "j1", "state": "SUCCESS", "result": 5}
    peer.on("GET", "/api/v1/jobs/j1", (200, running), (200, done))
    peer.on("GET", "/api/v1/jobs/j2", (200, FAILED))
    peer.on("POST", "/api/v1/workflows", (202, {"workflow_id": "w1", "job_ids": ["a"]}))
    peer.on("GET", "/api/v1/workflows/w1", (200, {"state": "SUCCESS", "result": [2, 4]}))

    async def main() -> None:
        async with AsyncTasklane(peer.url, "t", sleep=clock.asleep, clock=clock) as tl:
            result = await tl.task("add").delay(2, 3)
            assert await result.state == "STARTED"
            assert await result.get(timeout=5) == 5
            assert await result.ready() and await result.successful()
            with pytest.raises(TaskError):
                await tl.AsyncResult("j2").get()
            assert await tl.AsyncResult("j2").failed()
            flow = await tl.group(tl.task("add").s(1, 1), tl.task("add").s(2, 2)).apply_async()
            assert await flow.get(timeout=5) == [2, 4]
            assert await tl.fields("add") == ["x", "y"]

    asyncio.run(main())
    assert peer.seen[1].body == {"args": {"x": 2, "y": 3}, "options": {}}
    assert _workflow_request(peer)["steps"] == [
        {"task": "add", "args": {"x": 1, "y": 1}},
        {"task": "add", "args": {"x": 2, "y": 2}},
    ]
