"""Revoke, the dead-letter view, manual retry and critical-task alerts, with real processes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.servers import (
    FINAL,
    Starter,
    enqueue,
    get_job,
    start_scheduler,
    start_worker,
    wait_for,
    wait_state,
)


@pytest.fixture
def worker(start: Starter, rconn: redis.Redis) -> subprocess.Popen[bytes]:
    """One worker process and the scheduler; yields the worker."""
    proc = start_worker(start, rconn)
    start_scheduler(start, rconn)
    return proc


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_revoked_waiting_job_never_runs(
    worker: subprocess.Popen[bytes],
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
) -> None:
    """DELETE on a job waiting out a countdown revokes it; it never runs, even once it comes due."""
    marker = tmp_path / "revoked"
    job_id = enqueue(client, auth, "touch", {"path": str(marker)}, countdown=30)
    assert get_job(client, auth, job_id)["state"] == "PENDING"

    r = client.delete(f"/api/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["state"] == "REVOKED"
    assert get_job(client, auth, job_id)["state"] == "REVOKED"

    # Make it due now if the revoke left it scheduled (XX: only an existing entry moves).
    rconn.zadd("rq:scheduled:default", {job_id: int(time.time()) - 1}, xx=True)
    control = tmp_path / "control"
    control_id = enqueue(client, auth, "touch", {"path": str(control)}, countdown=1)
    assert wait_state(client, auth, control_id, FINAL)["state"] == "SUCCESS"
    time.sleep(1.5)  # one more scheduler pass and dequeue
    assert control.exists()
    assert not marker.exists()
    view = get_job(client, auth, job_id)
    assert view["state"] == "REVOKED", view
    assert view["started_at"] is None


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_revoking_a_running_job_stops_it_and_the_worker_goes_on(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """DELETE on a running job stops its work horse (REVOKED, stopped); the worker runs the next job."""
    marker = tmp_path / "slow"
    job_id = enqueue(client, auth, "slow_touch", {"path": str(marker), "seconds": 6})
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    started = time.monotonic()

    r = client.delete(f"/api/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 202, r.get_json()
    stopped = wait_state(client, auth, job_id, {"REVOKED", "SUCCESS", "FAILURE"}, 5)
    assert (stopped["state"], stopped["status"]) == ("REVOKED", "stopped"), stopped
    assert time.monotonic() - started < 5

    assert worker.poll() is None, "the worker died with the stopped job"
    follow = enqueue(client, auth, "add", {"x": 20, "y": 22})
    assert (wait_state(client, auth, follow, FINAL)["result"]) == 42
    # Past the moment the stopped run would have written its file: it never does.
    time.sleep(max(0.0, started + 6.5 - time.monotonic()))
    assert not marker.exists()
    assert get_job(client, auth, job_id)["state"] == "REVOKED"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_revoking_a_finished_job_is_a_conflict(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str]
) -> None:
    """DELETE on a job that already succeeded answers 409 and leaves it SUCCESS."""
    job_id = enqueue(client, auth, "add", {"x": 1, "y": 1})
    assert wait_state(client, auth, job_id, FINAL)["state"] == "SUCCESS"
    r = client.delete(f"/api/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["error"]["code"] == "job_finished"
    assert get_job(client, auth, job_id)["state"] == "SUCCESS"


def failed_pages(client: FlaskClient, auth: dict[str, str], query: str) -> list[list[dict[str, Any]]]:
    """Every page of ``/api/v1/jobs?<query>``, following next_cursor to the end."""
    pages = []
    url = f"/api/v1/jobs?{query}"
    while True:
        r = client.get(url, headers=auth)
        assert r.status_code == 200, r.get_json()
        pages.append(r.get_json()["jobs"])
        cursor = r.get_json()["next_cursor"]
        if not cursor:
            return pages
        url = f"/api/v1/jobs?{query}&cursor={cursor}"
        assert len(pages) < 10, "the cursor never ends"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_dead_letter_view_pages_failed_jobs_with_their_errors(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str]
) -> None:
    """GET /jobs?state=FAILURE lists failed jobs with their error, two a page with next_cursor, by task."""
    failed = {enqueue(client, auth, "always_fail", {"message": f"boom {n}"}): f"boom {n}" for n in range(5)}
    other = enqueue(client, auth, "fail_for_good", {"message": "other"})
    ok = enqueue(client, auth, "add", {"x": 1, "y": 1})
    for job_id in [*failed, other, ok]:
        wait_state(client, auth, job_id, FINAL)

    everything = client.get("/api/v1/jobs?state=FAILURE", headers=auth).get_json()
    assert {j["job_id"] for j in everything["jobs"]} == {*failed, other}
    assert len(everything["jobs"]) == 6
    assert everything["next_cursor"] is None

    pages = failed_pages(client, auth, "state=FAILURE&task=always_fail&limit=2")
    assert [len(p) for p in pages] == [2, 2, 1]
    paged = [j for p in pages for j in p]
    assert sorted(j["job_id"] for j in paged) == sorted(failed)  # each exactly once
    # The pages are the filtered full listing, in the same order.
    assert [j["job_id"] for j in paged] == [j["job_id"] for j in everything["jobs"] if j["job_id"] in failed]
    for view in paged:
        assert (view["task"], view["state"], view["status"]) == ("always_fail", "FAILURE", "failed")
        assert view["error"]["type"] == "RuntimeError"
        assert view["error"]["message"] == failed[view["job_id"]]
        assert "Traceback" in view["error"]["traceback"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_dead_letter_view_lists_the_newest_failure_first(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str]
) -> None:
    """GET /jobs?state=FAILURE lists failures newest first, also when they failed within one second."""
    # Ids in reverse alphabetical order of failure, so that an id-ordered tie cannot pass for time order.
    ids = [f"dead-{letter}" for letter in "edcba"]
    for n, job_id in enumerate(ids):
        enqueue(client, auth, "always_fail", {"message": f"boom {n}"}, job_id=job_id)
    for job_id in ids:
        wait_state(client, auth, job_id, FINAL)
    listed = [j for p in failed_pages(client, auth, "state=FAILURE&limit=2") for j in p]
    ended = [j["ended_at"] for j in listed]
    assert ended == sorted(ended, reverse=True), f"not newest first: {ended}"
    # One worker ran them in order, so the newest failure is the last enqueued.
    assert [j["job_id"] for j in listed] == ids[::-1]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_retrying_a_failed_job_runs_it_again(
    worker: subprocess.Popen[bytes], client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """POST /jobs/<id>/retry requeues a failed job, which then succeeds; a successful one is 409."""
    needed = tmp_path / "needed"
    job_id = enqueue(client, auth, "needs_file", {"path": str(needed)})
    assert wait_state(client, auth, job_id, FINAL)["state"] == "FAILURE"

    needed.write_text("here now")
    r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth)
    assert r.status_code == 202, r.get_json()
    done = wait_state(client, auth, job_id, {"SUCCESS"})
    assert done["result"] == "here now"

    again = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth)
    assert again.status_code == 409, again.get_json()
    assert again.get_json()["error"]["code"] == "job_not_failed"
    assert get_job(client, auth, job_id)["state"] == "SUCCESS"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server recording the JSON bodies POSTed to it; yields (url, bodies)."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_critical_task_failure_posts_an_alert(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    """A critical task's final failure POSTs to ALERT_WEBHOOK_URL; a non-critical failure posts nothing."""
    url, bodies = webhook
    start_worker(start, rconn, ALERT_WEBHOOK_URL=url)
    plain = enqueue(client, auth, "always_fail", {"message": "not important"})
    critical = enqueue(client, auth, "critical_fail", {"message": "the vault is open"})
    assert wait_state(client, auth, plain, FINAL)["state"] == "FAILURE"
    assert wait_state(client, auth, critical, FINAL)["state"] == "FAILURE"

    wait_for(lambda: bodies, 10, message="the alert POST")
    time.sleep(0.5)  # nothing else arrives
    assert len(bodies) == 1, bodies
    alert = bodies[0]
    assert alert["job_id"] == critical
    assert alert["task"] == "critical_fail"
    assert alert["error"]["message"] == "the vault is open"
    assert "not important" not in json.dumps(bodies)
