"""The HTTP client: against the real web app served by gunicorn, and a scripted peer for 503s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from app.calling.client import Client, TasklaneError, TasklaneTimeout
from tests.conftest import TOKEN
from tests.servers import Starter, free_port, start_web, start_worker


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_the_client_against_the_real_api(start: Starter, rconn: redis.Redis) -> None:
    """enqueue/wait/job, errors with status and code, revoke, retry, workflows."""
    base = start_web(start)
    start_worker(start, rconn, "default", "--mode", "inline")
    with Client(base, TOKEN) as client:
        job_id = client.enqueue("add", {"x": 2, "y": 3})
        done = client.wait(job_id, timeout=20)
        assert (done["state"], done["result"]) == ("SUCCESS", 5)
        assert client.job(job_id)["task"] == "add"

        with pytest.raises(TasklaneError) as caught:
            client.enqueue("no_such_task", {})
        assert (caught.value.status, caught.value.code) == (404, "unknown_task")
        with pytest.raises(TasklaneError) as caught:
            client.enqueue("add", {"x": "2", "y": 3})
        assert caught.value.status == 422 and caught.value.details[0]["field"] == "args.x"

        waiting = client.enqueue("add", {"x": 1, "y": 1}, countdown=60)
        assert client.revoke(waiting)["state"] == "REVOKED"
        with pytest.raises(TasklaneError) as caught:
            client.retry(waiting)
        assert (caught.value.status, caught.value.code) == (409, "job_not_failed")

        failed = client.enqueue("always_fail", {"message": "boom"})
        assert client.wait(failed, timeout=20)["state"] == "FAILURE"
        assert client.retry(failed)["state"] == "PENDING"

        flow = client.workflow({"type": "chain", "steps": [{"task": "add", "args": {"x": 1, "y": 1}},
                                                           {"task": "add", "args": {"y": 10}}]})  # fmt: skip
        for _ in range(200):
            status = client.workflow_status(flow["workflow_id"])
            if status["state"] == "SUCCESS":
                break
            time.sleep(0.1)
        assert status["result"] == 12

        first = client.enqueue("add", {"x": 5, "y": 5}, idempotency_key="order-1")
        assert client.enqueue("add", {"x": 5, "y": 5}, idempotency_key="order-1") == first

        with pytest.raises(TasklaneTimeout):
            client.wait(client.enqueue("add", {"x": 1, "y": 2}, countdown=60), timeout=0.5)
    with Client(base, "wrong-token-0123456789") as stranger, pytest.raises(TasklaneError) as caught:
        stranger.tasks()
    assert caught.value.status == 401


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 (with Retry-After: 0) to the first ``failures`` requests, then a job view."""

    failures = 2
    seen: list[float] = []

    def do_GET(self) -> None:
        type(self).seen.append(time.monotonic())
        if len(type(self).seen) <= type(self).failures:
            body = {"error": {"code": "redis_unavailable", "message": "down", "details": None}}
            self.send_response(503)
            self.send_header("Retry-After", "0")
        else:
            body = {"job_id": "j", "state": "SUCCESS", "result": 1}
            self.send_response(200)
        raw = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_peer() -> Iterator[str]:
    _Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_503_is_retried_with_backoff(flaky_peer: str) -> None:
    """Two 503s, then the answer: three requests, spaced by the growing backoff."""
    client = Client(flaky_peer, TOKEN, backoff=0.1)
    assert client.job("j")["state"] == "SUCCESS"
    gaps = [b - a for a, b in zip(_Flaky.seen, _Flaky.seen[1:], strict=False)]
    assert len(_Flaky.seen) == 3
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19


def test_connection_errors_are_retried_then_raised() -> None:
    """Nothing listening: a few retries, then a TasklaneError 503 'unreachable'."""
    client = Client(f"http://127.0.0.1:{free_port()}", TOKEN, retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(TasklaneError) as caught:
        client.job("j")
    assert (caught.value.status, caught.value.code) == (503, "unreachable")
    assert time.monotonic() - started >= 0.14
