"""A peer's 429 with ``Retry-After`` is its rate, not a failure: call_external_api snoozes for that
long (seconds or an HTTP date, at most RETRY_AFTER_LIMIT), spending no retry, then succeeds; a 429
without a readable header (and a 503) takes the task's retry path. Against a real loopback HTTP
server, run by an inline worker; the webhook channel of send_notification is covered with real
worker and scheduler processes in tests/test_notifications.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.core.queues import JsonJob, JsonQueue
from app.foundation import defaults
from app.processes.workers import JsonInlineWorker
from tests.conftest import make_env
from tests.peers import Answer, HttpPeer
from tests.servers import enqueue, get_job


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Loopback (127.0.0.1) is allowed for the scripted peer."""
    return make_env(tmp_path, redis_url, OUTBOUND_URL_ALLOWLIST="127.0.0.1")


@pytest.fixture
def peer(http_peer: Callable[..., HttpPeer]) -> HttpPeer:
    return http_peer()


def _work(app: Flask) -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)


def _due_now(app: Flask, job_id: str) -> None:
    """What the scheduler does when the job is due: it goes back on its queue."""
    redis_ = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis_)
    assert redis_.zrem(queue.scheduled_job_registry.key, job_id) == 1
    queue.enqueue_job(JsonJob.fetch(job_id, connection=redis_))


def _http_date(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("30", 30),
        ("http-date:120", 120),
        ("86400", defaults.RETRY_AFTER_LIMIT),  # capped: one hour
    ],
    ids=["seconds", "http-date", "capped"],
)
def test_a_429_with_retry_after_snoozes_then_the_call_succeeds(
    retry_after: str,
    expected: float,
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    peer: HttpPeer,
) -> None:
    if retry_after.startswith("http-date:"):  # made now, not when the tests were collected
        retry_after = _http_date(float(retry_after.split(":")[1]))
    peer.script("/busy", Answer(429, headers={"Retry-After": retry_after}), Answer(200, {"ok": True}))
    job_id = enqueue(client, auth, "call_external_api", {"url": peer.url("/busy"), "data": {"n": 1}})
    before = datetime.now(UTC)
    _work(app)
    view = get_job(client, auth, job_id)
    assert (view["state"], view["status"], view["snoozed"], view["retries"], view["error"]) == (
        "PENDING",
        "scheduled",
        1,
        0,
        None,
    )
    waits = (datetime.fromisoformat(view["scheduled_for"]) - before).total_seconds()
    assert expected - 2 <= waits <= expected + 2, waits
    assert len(peer.requests("/busy")) == 1

    _due_now(app, job_id)
    _work(app)
    done = get_job(client, auth, job_id)
    assert (done["state"], done["result"], done["snoozed"], done["retries"], done["attempts"]) == (
        "SUCCESS",
        {"ok": True},
        1,
        0,
        [],
    )
    assert len(peer.requests("/busy")) == 2


@pytest.mark.parametrize(
    ("status", "headers"),
    [(429, {}), (429, {"Retry-After": "whenever"}), (503, {"Retry-After": "5"})],
    ids=["429-no-header", "429-garbled", "503"],
)
def test_without_a_readable_retry_after_or_on_a_503_the_retry_path_decides(
    status: int,
    headers: dict[str, str],
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    peer: HttpPeer,
) -> None:
    peer.script("/busy", Answer(status, headers=headers), Answer(200, {"ok": True}))
    job_id = enqueue(client, auth, "call_external_api", {"url": peer.url("/busy"), "data": None})
    _work(app)
    view = get_job(client, auth, job_id)
    assert (view["state"], view["snoozed"], view["retries"]) == ("RETRY", 0, 1), view
    # RetryTask: the 503's Retry-After chose the back-off (honour_retry_after), as before.
    assert view["error"]["type"] in ("TransientHTTPError", "RetryTask")
    assert f"HTTP {status}" in view["error"]["message"]
