"""At-least-once delivery: a job survives its worker's death, wherever in its life that happens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from app.core.queues import get_queue
from app.foundation import defaults
from app.foundation.clock import ManualClock
from app.processes.maintenance import rescue_abandoned, rescue_intermediate
from tests.servers import (
    FINAL,
    Starter,
    children,
    enqueue,
    get_job,
    pid_alive,
    start_worker,
    wait_for,
    wait_state,
)

QUEUE_KEYS = ["rq:queue:high", "rq:queue:default", "rq:queue:low"]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_job_of_a_killed_worker_runs_again_and_succeeds(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A job whose worker is SIGKILLed mid-run (its horse dying too) is run again to SUCCESS within 60 s,
    with the default policy (no retries): an orphan has not failed, and spends no retry."""
    victim = start_worker(start, rconn, "default")
    marker = tmp_path / "durable"
    job_id = enqueue(client, auth, "slow_touch", {"path": str(marker), "seconds": 4})
    first = wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    horses = wait_for(lambda: children(victim.pid), 5, message="the work horse")
    assert len(horses) == 1, horses

    victim.kill()
    victim.wait(5)
    killed = time.monotonic()
    wait_for(lambda: not pid_alive(horses[0]), 3, message="the orphaned work horse to die with its worker")

    start("worker.py", "default")
    start("scheduler.py")
    # Until the job starts again, nothing may write the file: the old run is gone for good.
    while True:
        view = get_job(client, auth, job_id)
        if view["state"] in FINAL or (view["started_at"] and view["started_at"] != first["started_at"]):
            break
        assert not marker.exists(), "the killed worker's run went on writing"
        assert time.monotonic() - killed < 60, f"the job was not run again within 60 s: {view}"
        time.sleep(0.1)

    done = wait_state(client, auth, job_id, FINAL, 20, interval=0.1)
    elapsed = time.monotonic() - killed
    assert done["state"] == "SUCCESS", done
    assert elapsed < 60, f"the job succeeded only {elapsed:.1f} s after its worker died"
    assert done["retries"] == 0
    assert [a["type"] for a in rconn_attempts(rconn, job_id)] == ["WorkerLostError"]
    assert [a["type"] for a in done["attempts"]] == ["WorkerLostError"]  # shown by the job API too
    assert marker.read_text() == "ran"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_job_dequeued_by_a_dead_worker_is_put_back_and_run(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A job left in a queue's intermediate list is requeued by the rescue sweep, then runs."""
    from app.core.queues import _move_first_with_data

    job_id = enqueue(client, auth, "add", {"x": 40, "y": 2})
    # A worker takes it and dies before starting it.
    assert _move_first_with_data(rconn, QUEUE_KEYS)[:2] == ("rq:queue:default", job_id)
    assert rconn.lrange("rq:queue:default", 0, -1) == []
    assert rconn.lrange("rq:queue:default:intermediate", 0, -1) == [job_id.encode()]

    queue = get_queue("default", rconn)
    assert rescue_intermediate(queue, older_than=0) == 0  # the first pass only notes it
    assert rescue_intermediate(queue, older_than=0) == 1
    assert rconn.lrange("rq:queue:default", 0, -1) == [job_id.encode()]
    assert rconn.llen("rq:queue:default:intermediate") == 0
    assert rescue_intermediate(queue, older_than=0) == 0  # nothing left to rescue

    burst = start("worker.py", "--burst")
    assert burst.wait(30) == 0
    done = get_job(client, auth, job_id)
    assert (done["state"], done["result"]) == ("SUCCESS", 42)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_burst_worker_on_several_queues_drains_them_all(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A burst worker on high, default and low runs 20 queued jobs and leaves no intermediate entry."""
    job_ids = {
        enqueue(client, auth, "add", {"x": n, "y": 1}, queue=("high", "default", "low")[n % 3]): n + 1
        for n in range(20)
    }
    assert sum(rconn.llen(k) for k in QUEUE_KEYS) == 20

    burst = start("worker.py", "--burst", "high", "default", "low")
    assert burst.wait(45) == 0
    results = {job_id: get_job(client, auth, job_id) for job_id in job_ids}
    assert {v["state"] for v in results.values()} == {"SUCCESS"}
    assert {job_id: v["result"] for job_id, v in results.items()} == job_ids
    assert sum(rconn.llen(k) for k in QUEUE_KEYS) == 0
    leftovers = {k.decode(): rconn.llen(k) for k in rconn.scan_iter("rq:queue:*:intermediate")}
    assert not any(leftovers.values()), leftovers


def rconn_attempts(rconn: redis.Redis, job_id: str) -> list[dict[str, object]]:
    """The attempts recorded in a job's meta."""
    from app.core.queues import JsonJob

    return list(JsonJob.fetch(job_id, connection=rconn).meta.get("attempts") or [])


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_killed_work_horse_gives_one_outcome(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    manual_clock: ManualClock,
) -> None:
    """A fork-mode job whose horse is killed is requeued by its worker (never shown as FAILURE,
    no retry spent), runs again once, and is not run a third time by the sweep later."""
    start_worker(start, rconn, "default")
    start("scheduler.py")
    runs = tmp_path / "runs"
    job_id = enqueue(client, auth, "die_once", {"path": str(runs)})
    states = set()
    deadline = time.monotonic() + 30
    while (view := get_job(client, auth, job_id))["state"] not in FINAL:
        states.add(view["state"])
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert view["state"] == "SUCCESS", view
    assert view["result"] == 2
    assert view["retries"] == 0
    assert "FAILURE" not in states
    # The sweep, later: past its rescue delay (15 s) it used to put the job back and run it once
    # more. Run its two rescues here, with the clock moved past that delay and past any lease.
    queue = get_queue("default", rconn)
    assert rescue_intermediate(queue) == 0  # the first pass notes what it finds
    manual_clock.advance(defaults.RESCUE_AFTER + 60)
    assert rescue_intermediate(queue) == 0
    assert rescue_abandoned(queue) == 0
    assert rconn.llen("rq:queue:default") == 0
    assert runs.read_text().splitlines() == ["run", "run"]
    assert get_job(client, auth, job_id)["state"] == "SUCCESS"
    assert rconn.llen("rq:queue:default:intermediate") == 0


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_job_that_kills_every_horse_fails_as_a_poison_job(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A job that kills its process every time is requeued MAX_ORPHAN_REQUEUES times, then fails
    with WorkerLostError; the queue behind it keeps flowing."""
    start_worker(start, rconn, "default")
    runs = tmp_path / "runs"
    poison = enqueue(client, auth, "always_die", {"path": str(runs)})
    after = enqueue(client, auth, "add", {"x": 1, "y": 2})
    done = wait_state(client, auth, poison, FINAL, 40)
    assert done["state"] == "FAILURE", done
    assert done["error"]["type"] == "WorkerLostError", done["error"]
    assert len(runs.read_text().splitlines()) == defaults.MAX_ORPHAN_REQUEUES + 1
    assert wait_state(client, auth, after, FINAL, 20)["result"] == 3
