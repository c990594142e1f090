"""The health_check task run by a real worker, its stored report, and /readyz."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from app import create_app
from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.execution import ExecutingJob
from app.core.queues import JsonJob
from app.foundation import defaults, keys
from app.ops import health
from app.processes.workers import JsonWorker
from app.services.http import HttpClient
from tests.conftest import make_env
from tests.peers import Answer, HttpPeer
from tests.servers import FINAL, Starter, free_port, start_worker, wait_for, wait_state
from tests.servers import enqueue as enqueue_job

SECRET = "s3cret-peer-token"


class Peer:
    """A loopback HTTP server answering every GET with ``status``; counts the requests."""

    def __init__(self, status: int) -> None:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer.requests.append(self.path)
                self.send_response(peer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.status = status
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/health", credentials: bool = False) -> str:
        userinfo = f"monitor:{SECRET}@" if credentials else ""
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def peer() -> Iterator[Callable[[int], Peer]]:
    """Start loopback peers answering a given status; all are shut down afterwards."""
    started: list[Peer] = []

    def start(status: int) -> Peer:
        p = Peer(status)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def build_app(tmp_path: Path, redis_url: str, *urls: str) -> Flask:
    return create_app(make_env(tmp_path, redis_url, HEALTH_CHECK_URLS=",".join(urls)))


def run_health_check(app: Flask) -> dict[str, Any]:
    """Enqueue health_check and run it with a burst SimpleWorker; return the job's result."""
    redis: Redis = app.extensions["tasklane"].redis
    spec = REGISTRY.get("health_check")
    assert spec is not None
    job = enqueue(spec, spec.validate({}), redis, default_result_ttl=600, failure_ttl=600)
    with app.app_context():
        worker = SimpleWorker(["high"], connection=redis, job_class=ExecutingJob, serializer=JSONSerializer)
        assert worker.work(burst=True) is True
    done = JsonJob.fetch(job.id, connection=redis)
    assert done.get_status() == "finished", done.latest_result()
    result = done.return_value()
    assert isinstance(result, dict)
    return result


def scheduler_beating(redis: Redis, ttl: int = 30) -> None:
    """What a live scheduler leaves after each pass: its heartbeat key, with a TTL."""
    redis.set(keys.scheduler_heartbeat(), json.dumps({"scheduler": "test", "at": "now"}), ex=ttl)


def registered_worker(redis: Redis, name: str = "health-test-worker") -> JsonWorker:
    """A worker that registered its birth and sent a heartbeat, without working."""
    worker = JsonWorker(["high"], connection=redis, name=name)
    worker.register_birth()
    worker.heartbeat()
    return worker


# --- the health_check task -------------------------------------------------------------------


def test_report_ok_with_healthy_peer_and_working_worker(
    tmp_path: Path, redis_url: str, peer: Callable[[int], Peer]
) -> None:
    """It reports ok, with every check ok, when the peer answers 200 and the running worker beats."""
    healthy = peer(200)
    app = build_app(tmp_path, redis_url, healthy.url())
    report = run_health_check(app)
    assert report["status"] == "ok"
    checks = report["checks"]
    assert set(checks) == {"redis", "database", "workers", healthy.url()}
    assert all(check["status"] == "ok" for check in checks.values())
    assert checks[healthy.url()]["http_status"] == 200
    # The SimpleWorker running the task is itself the registered, beating worker it sees.
    assert checks["workers"]["workers"] == 1
    assert checks["workers"]["registered"] == 1
    assert healthy.requests == ["/health"]
    assert health.latest_report(app.extensions["tasklane"].redis) == report


def test_report_degraded_when_peer_answers_500(
    tmp_path: Path, redis_url: str, peer: Callable[[int], Peer]
) -> None:
    """It reports degraded with the failing URL's check in error status when a peer answers 500."""
    healthy, failing = peer(200), peer(500)
    app = build_app(tmp_path, redis_url, healthy.url(), failing.url("/down"))
    report = run_health_check(app)
    assert report["status"] == "degraded"
    checks = report["checks"]
    assert checks[failing.url("/down")]["status"] == "error"
    assert "HTTP 500" in checks[failing.url("/down")]["error"]
    assert checks[healthy.url()]["status"] == "ok"
    assert checks["redis"]["status"] == checks["database"]["status"] == checks["workers"]["status"] == "ok"
    assert failing.requests == ["/down"]
    assert health.latest_report(app.extensions["tasklane"].redis) == report


def test_report_degraded_when_port_closed(tmp_path: Path, redis_url: str) -> None:
    """It reports degraded with the URL's check in error status when nothing listens on its port."""
    closed = f"http://127.0.0.1:{free_port()}/health"
    app = build_app(tmp_path, redis_url, closed)
    report = run_health_check(app)
    assert report["status"] == "degraded"
    assert report["checks"][closed]["status"] == "error"
    assert "ConnectError" in report["checks"][closed]["error"]
    assert health.latest_report(app.extensions["tasklane"].redis)["status"] == "degraded"


def test_redirect_counts_as_healthy(tmp_path: Path, redis_url: str, peer: Callable[[int], Peer]) -> None:
    """It treats a 3xx answer as healthy without following it."""
    moved = peer(302)
    app = build_app(tmp_path, redis_url, moved.url())
    report = run_health_check(app)
    assert report["checks"][moved.url()] | {"latency_ms": 0} == {
        "status": "ok",
        "http_status": 302,
        "latency_ms": 0,
    }
    assert moved.requests == ["/health"]


def test_report_is_stored_with_a_ttl(tmp_path: Path, redis_url: str, peer: Callable[[int], Peer]) -> None:
    """It stores the report as JSON under the health key with an expiry, so a stale report disappears."""
    app = build_app(tmp_path, redis_url, peer(200).url())
    report = run_health_check(app)
    redis: Redis = app.extensions["tasklane"].redis
    from app.foundation import keys

    assert json.loads(redis.get(keys.health_report())) == report
    assert 0 < redis.ttl(keys.health_report()) <= 3600


# --- /readyz ---------------------------------------------------------------------------------------


def _assert_no_secrets(body: str, *fragments: str) -> None:
    for fragment in (
        SECRET,
        "127.0.0.1",
        "http://",
        "HTTP 500",
        "heartbeat in",
        "ConnectionError",
        *fragments,
    ):
        assert fragment not in body, fragment


def test_readyz_503_without_worker(tmp_path: Path, redis_url: str) -> None:
    """It answers 503 with per-check detail (workers in error, no error text) when no worker is registered."""
    app = build_app(tmp_path, redis_url)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["workers"]["status"] == "error"
    assert "error" not in body["checks"]["workers"]
    assert body["checks"]["scheduler"]["status"] == "error"
    assert body["last_health_report"] is None
    _assert_no_secrets(response.get_data(as_text=True))


def test_readyz_200_with_registered_worker(tmp_path: Path, redis_url: str) -> None:
    """It answers 200 with every check ok when a worker has registered and sent a heartbeat,
    and a scheduler has completed a pass."""
    app = build_app(tmp_path, redis_url)
    scheduler_beating(app.extensions["tasklane"].redis)
    worker = registered_worker(app.extensions["tasklane"].redis)
    try:
        response = app.test_client().get("/readyz")
    finally:
        worker.register_death()
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "redis": "ok",
        "database": "ok",
        "workers": "ok",
        "scheduler": "ok",
    }
    assert body["checks"]["workers"]["workers"] == 1
    assert body["checks"]["workers"]["registered"] == 1


def test_readyz_503_when_only_worker_heartbeat_is_stale(tmp_path: Path, redis_url: str) -> None:
    """It answers 503 when the only registered worker's last heartbeat is older than the stale limit."""
    app = build_app(tmp_path, redis_url)
    redis: Redis = app.extensions["tasklane"].redis
    worker = registered_worker(redis)
    try:
        old = datetime.now(UTC) - timedelta(seconds=defaults.WORKER_TTL + 60 + 30)
        redis.hset(worker.key, "last_heartbeat", utcformat(old))
        response = app.test_client().get("/readyz")
    finally:
        worker.register_death()
    assert response.status_code == 503
    assert response.get_json()["checks"]["workers"] == {
        "status": "error",
        "latency_ms": response.get_json()["checks"]["workers"]["latency_ms"],
    }


def test_readyz_503_when_no_scheduler_beats(tmp_path: Path, redis_url: str) -> None:
    """It answers 503 with the scheduler check in error (and no error text) when no scheduler heartbeat
    is fresh, though Redis, the database and a worker are fine; 200 once one beats, 503 when it expires."""
    app = build_app(tmp_path, redis_url)
    redis: Redis = app.extensions["tasklane"].redis
    worker = registered_worker(redis)
    try:
        missing = app.test_client().get("/readyz")
        scheduler_beating(redis, ttl=1)
        beating = app.test_client().get("/readyz")
        wait_for(lambda: not redis.exists(keys.scheduler_heartbeat()), 3, message="the heartbeat to expire")
        expired = app.test_client().get("/readyz")
    finally:
        worker.register_death()
    assert missing.status_code == 503
    checks = missing.get_json()["checks"]
    assert checks["scheduler"] == {"status": "error", "latency_ms": checks["scheduler"]["latency_ms"]}
    assert {name: c["status"] for name, c in checks.items() if name != "scheduler"} == {
        "redis": "ok",
        "database": "ok",
        "workers": "ok",
    }
    assert beating.status_code == 200, beating.get_json()
    assert beating.get_json()["checks"]["scheduler"]["status"] == "ok"
    assert expired.status_code == 503
    assert expired.get_json()["checks"]["scheduler"]["status"] == "error"
    _assert_no_secrets(missing.get_data(as_text=True))


def test_readyz_shows_last_report_status_without_secrets(
    tmp_path: Path, redis_url: str, peer: Callable[[int], Peer]
) -> None:
    """It shows the stored report's status and time in /readyz, never its URLs, credentials or errors."""
    failing = peer(500)
    secret_url = failing.url("/private/path", credentials=True)
    app = build_app(tmp_path, redis_url, secret_url)
    report = run_health_check(app)
    assert report["status"] == "degraded"
    assert failing.requests == ["/private/path"]

    scheduler_beating(app.extensions["tasklane"].redis)
    worker = registered_worker(app.extensions["tasklane"].redis)
    try:
        response = app.test_client().get("/readyz")
    finally:
        worker.register_death()
    assert response.status_code == 200  # readiness is about serving, the report is shown beside it
    body = response.get_json()
    assert body["last_health_report"] == {"status": "degraded", "checked_at": report["checked_at"]}
    _assert_no_secrets(response.get_data(as_text=True), "private", str(failing.port), "monitor")


def test_readyz_shows_ok_report(tmp_path: Path, redis_url: str, peer: Callable[[int], Peer]) -> None:
    """It shows last_health_report.status ok after a healthy run."""
    app = build_app(tmp_path, redis_url, peer(200).url())
    run_health_check(app)
    worker = registered_worker(app.extensions["tasklane"].redis)
    try:
        body = app.test_client().get("/readyz").get_json()
    finally:
        worker.register_death()
    assert body["last_health_report"]["status"] == "ok"


def test_readyz_survives_unreadable_report(tmp_path: Path, redis_url: str) -> None:
    """It still answers, with an error status for the report, when the stored report is not JSON."""
    app = build_app(tmp_path, redis_url)
    redis: Redis = app.extensions["tasklane"].redis
    from app.foundation import keys

    redis.set(keys.health_report(), b"\x80not json")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503  # no worker
    assert response.get_json()["last_health_report"]["status"] == "error"


# --- timeouts, and the task through a real worker ---------------------------------------------------


def test_checks_run_side_by_side_and_a_hanging_one_times_out() -> None:
    """It reports a check still running at the deadline as timed out, without waiting for it."""

    released = threading.Event()

    def hangs() -> dict[str, Any]:
        released.wait(10)  # hangs until the test is over
        return {"status": "ok"}

    started = time.monotonic()
    try:
        report = health.within(
            {"fast": lambda: {"status": "ok", "latency_ms": 1.0}, "stuck": hangs}, timeout=0.5
        )
    finally:
        released.set()
    assert time.monotonic() - started < 2
    assert report["fast"] == {"status": "ok", "latency_ms": 1.0}
    assert report["stuck"]["status"] == "error"
    assert report["stuck"]["error"] == "timed out after 0.5 s"
    assert report["stuck"]["latency_ms"] >= 500


def test_a_peer_that_never_answers_times_out_with_its_latency(
    tmp_path: Path, redis_url: str, http_peer: Callable[..., HttpPeer]
) -> None:
    """It reports a peer slower than the timeout as an error after about the timeout, the rest still ok."""
    slow = http_peer().script("/health", Answer(200, delay=5))
    app = build_app(tmp_path, redis_url, slow.url("/health"))
    with app.app_context():
        started = time.monotonic()
        report = health.run_checks(app.extensions["tasklane"], HttpClient(), timeout=1.0)
    assert time.monotonic() - started < 3
    check = report["checks"][slow.url("/health")]
    assert check["status"] == "error" and "ReadTimeout" in check["error"]
    assert 900 <= check["latency_ms"] < 2500
    assert report["status"] == "degraded"
    assert report["checks"]["redis"]["status"] == report["checks"]["database"]["status"] == "ok"
    assert all("latency_ms" in c for c in report["checks"].values())


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_health_check_through_a_worker_feeds_readyz(
    start: Starter,
    rconn: Redis,
    http_peer: Callable[..., HttpPeer],
    client: FlaskClient,
    auth: dict[str, str],
) -> None:
    """It runs health_check in worker.py: every check ok with its latency, stored, shown by /readyz."""
    dependency = http_peer().script("/api/tags", Answer(200, {"models": []}))
    start_worker(start, rconn, HEALTH_CHECK_URLS=dependency.url("/api/tags"))
    job_id = enqueue_job(client, auth, "health_check", {})
    done = wait_state(client, auth, job_id, FINAL)
    assert done["state"] == "SUCCESS", done
    report = done["result"]
    assert report["status"] == "ok", report
    assert set(report["checks"]) == {"redis", "database", "workers", dependency.url("/api/tags")}
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in report["checks"].values())
    assert report["checks"]["workers"]["workers"] == 1
    assert [s.path for s in dependency.requests()] == ["/api/tags"]
    assert health.latest_report(rconn) == report
    ready = client.get("/readyz").get_json()
    assert ready["last_health_report"] == {"status": "ok", "checked_at": report["checked_at"]}
