"""Retries against real worker.py and scheduler.py processes: back-off, give-up, self-retry."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

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
    wait_state,
)


@pytest.fixture
def processes(start: Starter, rconn: redis.Redis) -> None:
    """One worker and the scheduler."""
    start_worker(start, rconn)
    start_scheduler(start, rconn)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_flaky_job_retries_with_backoff_then_succeeds(
    processes: None, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A task failing twice is retried (state RETRY with next_retry_at between attempts) and succeeds."""
    counter = tmp_path / "flaky"
    job_id = enqueue(client, auth, "flaky", {"path": str(counter), "failures": 2})
    waiting = wait_state(client, auth, job_id, {"RETRY"}, 15, interval=0.02)
    assert waiting["status"] == "scheduled"
    assert waiting["next_retry_at"], waiting
    next_at = datetime.fromisoformat(waiting["next_retry_at"].replace("Z", "+00:00"))
    assert abs((next_at - datetime.now(UTC)).total_seconds()) < 5
    due = datetime.fromisoformat(waiting["scheduled_for"].replace("Z", "+00:00"))  # a retry's wait shows too
    assert abs((due - next_at).total_seconds()) <= 1
    assert waiting["retries"] >= 1
    assert waiting["error"]["type"] == "ConnectionError"

    done = wait_state(client, auth, job_id, FINAL)
    assert done["state"] == "SUCCESS", done
    assert done["result"] == 3
    assert done["retries"] == 2
    assert done["next_retry_at"] is None
    assert counter.read_text() == "3"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_error_in_dont_retry_for_fails_after_one_attempt(
    processes: None, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A ValueError listed in dont_retry_for fails the job at once: one attempt, no retry."""
    job_id = enqueue(client, auth, "fail_for_good", {"message": "bad input"})
    done = wait_state(client, auth, job_id, FINAL)
    assert done["state"] == "FAILURE", done
    assert done["retries"] == 0
    assert done["error"]["type"] == "ValueError"
    assert done["error"]["message"] == "bad input"
    assert [a["type"] for a in done["error"]["attempts"]] == ["ValueError"]
    # Nothing is scheduled for later: the failure is final.
    time.sleep(1.5)
    again = get_job(client, auth, job_id)
    assert again["state"] == "FAILURE"
    assert len(again["error"]["attempts"]) == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_job_exhausting_its_retries_fails_with_every_attempt_recorded(
    processes: None, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A job failing more often than max_retries=3 allows ends FAILURE after 4 recorded attempts."""
    counter = tmp_path / "flaky"
    job_id = enqueue(client, auth, "flaky", {"path": str(counter), "failures": 10})
    done = wait_state(client, auth, job_id, FINAL, timeout=30)
    assert done["state"] == "FAILURE", done
    attempts = done["error"]["attempts"]
    assert len(attempts) == 4, attempts
    assert {a["type"] for a in attempts} == {"ConnectionError"}
    assert [a["message"] for a in attempts] == [f"attempt {n} failed" for n in range(1, 5)]
    assert done["retries"] == 3
    assert counter.read_text() == "4"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_task_can_ask_for_its_own_retry_after_a_countdown(
    processes: None, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """RetryTask(countdown=2) reruns the job no sooner than 2 s later, and it then succeeds."""
    job_id = enqueue(client, auth, "retry_itself", {"path": str(tmp_path / "marker"), "countdown": 2})
    done = wait_state(client, auth, job_id, FINAL)
    assert done["state"] == "SUCCESS", done
    assert float(done["result"]) >= 2.0
    assert done["retries"] == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_retry_delays_need_the_scheduler_process(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Without scheduler.py a retry waits in the scheduled registry; starting it lets the job finish."""
    start_worker(start, rconn)
    counter = tmp_path / "flaky"
    job_id = enqueue(client, auth, "flaky", {"path": str(counter), "failures": 1})
    wait_state(client, auth, job_id, {"RETRY"}, 15)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        view = get_job(client, auth, job_id)
        assert (view["state"], view["status"]) == ("RETRY", "scheduled"), view
        time.sleep(0.2)
    assert counter.read_text() == "1"  # no second attempt ran

    start_scheduler(start, rconn)
    done = wait_state(client, auth, job_id, FINAL)
    assert done["state"] == "SUCCESS", done
    assert done["result"] == 2
    assert done["retries"] == 1
