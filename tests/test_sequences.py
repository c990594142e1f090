"""``sequence``: jobs with the same key run one at a time, in enqueue order, on any worker; a job that
ends (success, final failure, revoke, expiry) hands on to the next; nothing gets stuck."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.core.queues import JsonJob, JsonQueue
from app.foundation import keys
from app.processes.workers import JsonInlineWorker
from tests.servers import enqueue, get_job


def _work(app: Flask, queue: str = "default") -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue(queue, connection=redis_)], connection=redis_).work(burst=True)


def _step(
    client: FlaskClient, auth: dict[str, str], path: Path, label: str, key: str = "k", **args: Any
) -> str:
    """Enqueue a ``sequence_step`` in sequence ``key``."""
    return enqueue(client, auth, "sequence_step", {"path": str(path), "label": label, **args}, sequence=key)


def runs(path: Path) -> list[tuple[str, str]]:
    """(event, label) of every line the steps wrote, in the order written."""
    if not path.exists():
        return []
    return [(line.split()[0], line.split()[1]) for line in path.read_text().splitlines()]


def assert_one_at_a_time(path: Path, labels: list[str]) -> None:
    """Every label ran, in this order, each one's start after the previous one's end."""
    events = [(e, label) for e, label in runs(path) if e in ("start", "end")]
    expected = [(e, label) for label in labels for e in ("start", "end")]
    assert events == expected, events


def test_jobs_of_a_key_wait_deferred_and_run_in_order(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Only the head is on the queue; the others are DEFERRED (counted, PENDING, with their place);
    a burst worker runs them one after another in enqueue order; another key is not held back."""
    redis_ = app.extensions["tasklane"].redis
    log = tmp_path / "log"
    ids = [_step(client, auth, log, f"a{n}") for n in range(4)]
    other = _step(client, auth, tmp_path / "other", "b0", key="other")
    queue = JsonQueue("default", connection=redis_)
    assert queue.get_job_ids() == [ids[0], other]
    assert set(queue.deferred_job_registry.get_job_ids()) == set(ids[1:])
    views = [get_job(client, auth, j) for j in ids]
    assert [v["state"] for v in views] == ["PENDING"] * 4
    assert [v["status"] for v in views] == ["queued", "deferred", "deferred", "deferred"]
    assert [v["sequence"] for v in views] == [{"key": "k", "ahead": n} for n in range(4)]
    counts = {q["name"]: q for q in client.get("/api/v1/queues", headers=auth).get_json()["queues"]}
    assert counts["default"]["deferred"] == 3 and counts["default"]["waiting"] == 2
    _work(app)
    assert_one_at_a_time(log, ["a0", "a1", "a2", "a3"])
    assert [get_job(client, auth, j)["state"] for j in [*ids, other]] == ["SUCCESS"] * 5
    assert get_job(client, auth, ids[3])["sequence"] == {"key": "k", "ahead": None}
    assert not redis_.exists(keys.sequence("k")) and not redis_.smembers(keys.sequences())
    assert queue.deferred_job_registry.count == 0


def test_a_final_failure_a_revoke_and_an_expiry_hand_on(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """The head fails for good (after its retry): the next runs. A waiting one revoked and another
    that expired while waiting are skipped; the rest runs in order."""
    log = tmp_path / "log"
    failing = _step(client, auth, log, "f", fail=True)
    revoked = _step(client, auth, log, "r")
    past = (datetime.now(UTC) + timedelta(milliseconds=200)).isoformat()
    expired = enqueue(client, auth, "sequence_step", {"path": str(log), "label": "x"}, sequence="k",
                      expires=past)  # fmt: skip
    last = _step(client, auth, log, "z")
    assert client.delete(f"/api/v1/jobs/{revoked}", headers=auth).status_code == 202
    assert get_job(client, auth, last)["sequence"]["ahead"] == 2  # the revoked one left at once
    while datetime.now(UTC) < datetime.fromisoformat(past):
        app.extensions["tasklane"].redis.blpop(["tasklane:test-never-rung"], 0.05)
    _work(app)  # f fails; its retry waits in the scheduled registry, holding the sequence
    assert get_job(client, auth, last)["status"] == "deferred"
    app.extensions["tasklane"].redis.blpop(["tasklane:test-never-rung"], 0.3)
    _enqueue_due(app)
    _work(app)  # f fails for good; x expires at its start; z runs
    assert get_job(client, auth, failing)["state"] == "FAILURE"
    assert get_job(client, auth, revoked)["state"] == "REVOKED"
    view = get_job(client, auth, expired)
    assert (view["state"], view["error"]["type"]) == ("REVOKED", "expired")
    assert get_job(client, auth, last)["state"] == "SUCCESS"
    assert [label for e, label in runs(log) if e == "start"] == ["f", "f", "z"]


def _enqueue_due(app: Flask) -> None:
    """Move due scheduled jobs (a retry) onto their queues, as the scheduler does."""
    from rq.registry import ScheduledJobRegistry

    redis_ = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis_)
    registry = ScheduledJobRegistry(queue=queue)
    for job_id in registry.get_jobs_to_schedule(int(datetime.now(UTC).timestamp()) + 1):
        queue.enqueue_job(JsonJob.fetch(job_id, connection=redis_))
        registry.remove(job_id)
