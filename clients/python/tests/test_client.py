"""``Client`` call by call against a scripted loopback peer: requests sent, answers read, retries paced."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import Clock, Peer, error
from tasklane_client import Client, InvalidArguments, TasklaneError, TasklaneTimeout

JOB = {"job_id": "j1", "task": "add", "state": "PENDING"}


def test_enqueue_sends_args_options_and_headers(peer: Peer) -> None:
    peer.on("POST", "/api/v1/tasks/add", (202, JOB))
    with Client(peer.url + "/", "tok-1") as client:
        eta = datetime(2030, 1, 2, 3, 4, 5)  # naive: taken as UTC
        job_id = client.enqueue(
            "add", {"x": 2, "y": 3}, eta=eta, queue="high", priority=1, task_id="mine", idempotency_key="k-1"
        )
    assert job_id == "j1"
    sent = peer.seen[0]
    assert sent.headers["Authorization"] == "Bearer tok-1"
    assert sent.headers["Idempotency-Key"] == "k-1"
    assert sent.body == {
        "args": {"x": 2, "y": 3},
        "options": {"eta": "2030-01-02T03:04:05+00:00", "queue": "high", "priority": 1, "job_id": "mine"},
    }


def test_an_aware_eta_keeps_its_zone_and_none_options_are_left_out(peer: Peer) -> None:
    peer.on("POST", "/api/v1/tasks/add", (202, JOB))
    zone = timezone(timedelta(hours=2))
    Client(peer.url, "t").enqueue("add", {}, eta=datetime(2030, 1, 1, 12, tzinfo=zone), countdown=None)
    assert peer.seen[0].body["options"] == {"eta": "2030-01-01T12:00:00+02:00"}


def test_errors_carry_status_code_and_details(peer: Peer) -> None:
    details = [{"field": "args.x", "message": "Input should be a valid integer", "type": "int_parsing"}]
    peer.on("POST", "/api/v1/tasks/add", error(422, "invalid_arguments", "bad", details))
    peer.on("GET", "/api/v1/jobs/nope", error(404, "job_not_found", "no"))
    peer.on("GET", "/api/v1/jobs/html", (500, b"<html>oops</html>"))
    client = Client(peer.url, "t")
    with pytest.raises(InvalidArguments) as invalid:
        client.enqueue("add", {"x": "two"})
    assert isinstance(invalid.value, ValueError)
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_arguments")
    assert invalid.value.details == details
    with pytest.raises(TasklaneError) as missing:
        client.job("nope")
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    assert not isinstance(missing.value, ValueError)
    with pytest.raises(TasklaneError) as other:
        client.job("html")
    assert (other.value.status, other.value.code) == (500, "http_error")
    assert other.value.message == "<html>oops</html>"


def test_503_is_retried_with_doubling_backoff_and_retry_after(peer: Peer, clock: Clock) -> None:
    down = {"error": {"code": "redis_unavailable", "message": "down", "details": None}}
    peer.on("GET", "/api/v1/jobs/j1", (503, down), (503, down, {"Retry-After": "3"}), (503, down), (200, JOB))
    client = Client(peer.url, "t", backoff=0.1, sleep=clock.sleep, clock=clock)
    assert client.job("j1")["state"] == "PENDING"
    assert len(peer.seen) == 4
    assert clock.pauses == pytest.approx([0.1, 3.0, 0.4])  # 0.1 * 2**n, or Retry-After when longer


def test_503_after_the_last_retry_is_raised(peer: Peer, clock: Clock) -> None:
    peer.on("GET", "/api/v1/jobs/j1", error(503, "redis_unavailable", "down"))
    client = Client(peer.url, "t", retries=2, sleep=clock.sleep, clock=clock)
    with pytest.raises(TasklaneError) as caught:
        client.job("j1")
    assert (caught.value.status, caught.value.code, len(peer.seen)) == (503, "redis_unavailable", 3)


def test_a_service_that_cannot_be_reached_is_retried_then_unreachable(clock: Clock) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", "t", retries=2, backoff=0.05, sleep=clock.sleep, clock=clock)
    with pytest.raises(TasklaneError) as caught:
        client.job("j")
    assert (caught.value.status, caught.value.code) == (503, "unreachable")
    assert clock.pauses == pytest.approx([0.05, 0.1])


def test_wait_polls_with_a_growing_interval_until_final(peer: Peer, clock: Clock) -> None:
    done = {**JOB, "state": "SUCCESS", "result": 5}
    peer.on("GET", "/api/v1/jobs/j1", (200, JOB), (200, {**JOB, "state": "STARTED"}), (200, done))
    client = Client(peer.url, "t", sleep=clock.sleep, clock=clock)
    assert client.wait("j1", timeout=10, interval=0.2)["result"] == 5
    assert clock.pauses == pytest.approx([0.2, 0.3])


def test_wait_gives_up_after_its_timeout(peer: Peer, clock: Clock) -> None:
    peer.on("GET", "/api/v1/jobs/j1", (200, JOB))
    client = Client(peer.url, "t", sleep=clock.sleep, clock=clock)
    with pytest.raises(TasklaneTimeout) as caught:
        client.wait("j1", timeout=2.0)
    assert isinstance(caught.value, TimeoutError)
    assert sum(clock.pauses) == pytest.approx(2.0)
    assert caught.value.details["state"] == "PENDING"


def test_the_other_calls_use_their_routes(peer: Peer) -> None:
    peer.on("DELETE", "/api/v1/jobs/j1", (202, {**JOB, "state": "REVOKED"}))
    peer.on("POST", "/api/v1/jobs/j1/retry", (202, JOB))
    peer.on("POST", "/api/v1/workflows", (202, {"workflow_id": "w", "job_ids": ["a"]}))
    peer.on("GET", "/api/v1/workflows/w", (200, {"state": "SUCCESS", "result": 1}))
    peer.on("GET", "/api/v1/jobs", (200, {"jobs": [], "next_cursor": None}))
    peer.on("GET", "/api/v1/tasks", (200, {"tasks": [{"name": "add"}]}))
    client = Client(peer.url, "t")
    assert client.revoke("j1")["state"] == "REVOKED"
    assert client.retry("j1")["state"] == "PENDING"
    assert client.workflow({"type": "group", "steps": []})["workflow_id"] == "w"
    assert client.wait_workflow("w")["result"] == 1
    assert client.jobs(state="FAILURE")["jobs"] == []
    assert peer.seen[-1].path == "/api/v1/jobs?state=FAILURE"
    assert client.tasks() == [{"name": "add"}]
    assert [s.method for s in peer.seen][:3] == ["DELETE", "POST", "POST"]


def test_eta_now_in_utc_is_sent_as_is(peer: Peer) -> None:
    peer.on("POST", "/api/v1/tasks/add", (202, JOB))
    Client(peer.url, "t").enqueue("add", {}, eta="2030-01-01T00:00:00Z")
    assert peer.seen[0].body["options"]["eta"] == "2030-01-01T00:00:00Z"
    assert datetime.now(UTC).year < 2030


def test_a_post_whose_answer_is_lost_is_not_sent_again(peer: Peer, clock: Clock) -> None:
    """A read timeout after the request went out: a GET is asked again; a POST without an idempotency
    key is not (it may have enqueued its job), with one carrying a key it is."""

    def slow(seen: Any) -> Any:
        time.sleep(0.3)
        return 202, JOB

    peer.script[("POST", "/api/v1/tasks/add")] = slow
    peer.script[("GET", "/api/v1/jobs/j1")] = slow
    client = Client(peer.url, "t", timeout=0.1, retries=2, sleep=clock.sleep, clock=clock)
    with pytest.raises(TasklaneError) as lost:
        client.enqueue("add", {"x": 1, "y": 2})
    assert (lost.value.status, lost.value.code) == (504, "no_answer")
    assert len(peer.seen) == 1
    with pytest.raises(TasklaneError):
        client.enqueue("add", {"x": 1, "y": 2}, idempotency_key="k")
    with pytest.raises(TasklaneError) as unanswered:
        client.job("j1")
    assert unanswered.value.code == "unreachable"
    assert [s.method for s in peer.seen] == ["POST"] + ["POST"] * 3 + ["GET"] * 3
