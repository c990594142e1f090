"""The pooled mode, ``python worker.py``'s default: long-lived children, recycled, crash-isolated."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app.processes.supervisor import Mode, parse_args
from tests.servers import FINAL, Starter, enqueue, pid_alive, start_worker, wait_for, wait_state
from tests.test_deploy import procfile
from tests.test_worker_registration import _check_visible


def test_the_default_is_pooled_with_one_process_per_cpu_and_the_procfile_uses_it() -> None:
    args = parse_args([])
    assert args.mode is Mode.POOLED
    assert args.concurrency == min(os.cpu_count() or 1, 64)
    assert parse_args(["--mode", "fork"]).concurrency == 1
    worker = parse_args(procfile()["worker"].split()[2:])
    assert (worker.mode, worker.queues) == (Mode.POOLED, ["high", "default"])


def _registered(rconn: redis.Redis, count: int) -> bool:
    """``count`` workers registered, each past its start (RQ writes the state just after the birth)."""
    keys = rconn.smembers("rq:workers")
    return len(keys) == count and all(rconn.hexists(k, "state") for k in keys)


def _worker_names(rconn: redis.Redis, job_ids: list[str]) -> set[str]:
    return {rconn.hget(f"rq:job:{job_id}", "worker_name").decode() for job_id in job_ids}


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_children_run_many_jobs_are_recycled_after_n_and_stay_registered(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], redis_url: str
) -> None:
    """Two children with WORKER_MAX_JOBS_PER_CHILD=2: 8 jobs succeed, run by more than two
    successive children (each at most 2 jobs); the supervisor lives on, and rq info, the
    workers API and /readyz list exactly two whole workers throughout."""
    supervisor = start_worker(start, rconn, "default", "--mode", "pooled", "--concurrency", "2",
                              WORKER_MAX_JOBS_PER_CHILD="2")  # fmt: skip
    wait_for(lambda: _registered(rconn, 2), 10, message="two pooled children")
    _check_visible(rconn, client, auth, 2, redis_url)
    ids = [enqueue(client, auth, "add", {"x": n, "y": 1}) for n in range(8)]
    for n, job_id in enumerate(ids):
        assert wait_state(client, auth, job_id, FINAL, 20)["result"] == n + 1
    names = _worker_names(rconn, ids)
    assert len(names) >= 4, names
    for name in names:
        assert sum(rconn.hget(f"rq:job:{i}", "worker_name").decode() == name for i in ids) <= 2
    assert supervisor.poll() is None
    wait_for(lambda: _registered(rconn, 2), 10, message="the replacements to register")
    _check_visible(rconn, client, auth, 2, redis_url)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_child_killed_mid_job_is_replaced_and_its_job_put_back_at_once(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL to the child running a job (no scheduler, so no sweep): the supervisor survives,
    puts the job back at once (an orphan: WorkerLostError, no retry spent), drops the dead
    child's registration, and a fresh child runs the job to SUCCESS."""
    supervisor = start_worker(start, rconn, "default", "--mode", "pooled", "--concurrency", "1")
    marker = tmp_path / "ran"
    job_id = enqueue(client, auth, "slow_touch", {"path": str(marker), "seconds": 2, "steps": 20})
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    worker_key = f"rq:worker:{rconn.hget(f'rq:job:{job_id}', 'worker_name').decode()}"
    child = int(rconn.hget(worker_key, "pid"))
    assert child != supervisor.pid
    os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not pid_alive(child), 5, message="the child to die")

    def started_again() -> bool:
        name = rconn.hget(f"rq:job:{job_id}", "worker_name")
        return name is not None and f"rq:worker:{name.decode()}" != worker_key

    wait_for(started_again, 10, message="the job to start again in a fresh child")
    assert time.monotonic() - killed < 10
    assert supervisor.poll() is None
    assert not rconn.exists(worker_key)
    assert worker_key.encode() not in rconn.smembers("rq:workers")
    view = wait_state(client, auth, job_id, FINAL, 15)
    assert view["state"] == "SUCCESS", view
    assert [a["type"] for a in view["attempts"]] == ["WorkerLostError"], view
    assert view["retries"] == 0
    assert marker.read_text() == "ran"


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_job_taken_ahead_with_a_success_is_put_back_when_the_worker_leaves(
    app: Flask, rconn: redis.Redis
) -> None:
    """The pooled worker dequeues the next job in the round trip of a success; leaving after one
    job (RQ's max_jobs), it puts that job back at the head of its queue, untouched."""
    from app.catalogue.registry import REGISTRY
    from app.core import dispatch
    from app.core.queues import JsonJob, JsonQueue
    from app.processes.workers.pooled import JsonPooledWorker

    spec = REGISTRY.get("add")
    assert spec is not None
    with app.app_context():
        ids = [dispatch.enqueue(spec, spec.validate({"x": n, "y": 0}), rconn, default_result_ttl=500,
                                failure_ttl=3600).id for n in range(3)]  # fmt: skip
        worker = JsonPooledWorker([JsonQueue("default", connection=rconn)], connection=rconn)
        worker.work(burst=True, with_scheduler=False, max_jobs=1)
    assert JsonJob.fetch(ids[0], connection=rconn).get_status() == "finished"
    assert rconn.lrange("rq:queue:default", 0, -1) == [ids[1].encode(), ids[2].encode()]
    assert rconn.llen("rq:queue:default:intermediate") == 0
    assert JsonJob.fetch(ids[1], connection=rconn).get_status() == "queued"


def test_the_job_taken_ahead_is_held_on_the_board_as_soon_as_the_success_is_written(
    app: Flask, rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the success's round trip and the next start, the supervisor's board names the job
    taken ahead (a child killed then has it put back at once, not after a heartbeat's expiry)."""
    from app.catalogue.registry import REGISTRY
    from app.core import dispatch
    from app.core.queues import JsonQueue
    from app.processes.workers import base
    from app.processes.workers.inline import DeadlineBoard
    from app.processes.workers.pooled import JsonPooledWorker

    spec = REGISTRY.get("add")
    assert spec is not None
    board = DeadlineBoard(1)
    seen: list[tuple[str, str]] = []  # (the job whose success hooks run, the job slot 0 holds then)
    succeeded = base.outcomes.succeeded

    def noting(job, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((job.id, board.held.raw[: board.ID_BYTES].rstrip(b"\0").decode()))  # type: ignore[attr-defined]
        return succeeded(job, **kwargs)

    monkeypatch.setattr(base.outcomes, "succeeded", noting)
    with app.app_context():
        ids = [dispatch.enqueue(spec, spec.validate({"x": n, "y": 0}), rconn, default_result_ttl=500,
                                failure_ttl=3600).id for n in range(3)]  # fmt: skip
        worker = JsonPooledWorker(
            [JsonQueue("default", connection=rconn)], connection=rconn, board=board, slot=0
        )
        worker.work(burst=True, with_scheduler=False)
    # While the first job's success hooks ran, the slot already held the second (taken ahead), and so on.
    assert seen == [(ids[0], ids[1]), (ids[1], ids[2]), (ids[2], ids[2])]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_each_step_of_a_chain_counts_once(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A step that others wait on succeeds through RQ's own path, which counts it: the batched
    counters take their count back, so a 3-step chain adds 3 successes to the task's metrics and
    the workers' counts (it added 5: each step with dependents counted twice)."""
    start_worker(start, rconn, "default", "--mode", "pooled", "--concurrency", "1")
    steps = [{"task": "add", "args": {"x": 1, "y": 1}}] + [{"task": "add", "args": {"y": 1}}] * 2
    body = {"type": "chain", "steps": steps}
    response = client.post("/api/v1/workflows", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    workflow = response.get_json()["workflow_id"]

    def done() -> bool:
        state = client.get(f"/api/v1/workflows/{workflow}", headers=auth).get_json()["state"]
        return state == "SUCCESS"

    wait_for(done, 20, message="the chain to succeed")

    def counted() -> tuple[int, int]:
        task = int(rconn.hget("tasklane:metrics:jobs", "add|success") or 0)
        workers = sum(int(rconn.hget(k, "successful_job_count") or 0) for k in rconn.smembers("rq:workers"))
        return task, workers

    wait_for(lambda: counted() == (3, 3), 10, message=f"3 successes counted (counted {counted()})")
    time.sleep(1.5)  # past the next batch of counters: nothing more arrives
    assert counted() == (3, 3)


@pytest.mark.parametrize("killed_at", ["moved", "take_moved"])
def test_a_child_killed_in_the_success_round_trip_has_the_job_it_took_put_back_at_once(
    app: Flask, rconn: redis.Redis, killed_at: str
) -> None:
    """Issue 18, defect 2: a pooled child killed after the round trip that writes one job's success
    and takes the next, before it heard the answer (``moved``): the move recorded it as the taker in
    the same script step, so the supervisor puts the job taken ahead back on its queue at once (it
    waited in the intermediate list for the sweep, 15-21 s, while the board still named the finished
    job). The job was claimed (started) in that step too (issue 23): it is put back as a job that
    never started, without an attempt. Killed after it heard the answer (``take_moved``, before the
    job's body starts), the board names the job as claimed ahead: the same."""
    from app.catalogue.registry import REGISTRY
    from app.core import dispatch, leases
    from app.core.queues import JsonJob, JsonQueue
    from app.processes import supervisor
    from app.processes.workers import pooled

    spec = REGISTRY.get("add")
    assert spec is not None
    ids = [dispatch.enqueue(spec, spec.validate({"x": n, "y": 0}), rconn, default_result_ttl=500,
                            failure_ttl=3600).id for n in range(2)]  # fmt: skip
    sup = supervisor.Supervisor(app, parse_args(["default", "--concurrency", "1"]))
    assert sup.board is not None
    leases.load_apply(rconn)  # as on a server that has seen a success: the round trip applies it
    pid = os.fork()
    if pid == 0:  # the pooled child: killed the moment the success's round trip returns
        try:
            setattr(pooled, killed_at, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
            with app.app_context():
                queues = [JsonQueue("default", connection=app.extensions["tasklane"].redis)]
                worker = pooled.JsonPooledWorker(
                    queues, connection=queues[0].connection, board=sup.board, slot=0
                )
                worker.work(burst=True, with_scheduler=False)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert JsonJob.fetch(ids[0], connection=rconn).get_status() == "finished"
    assert JsonJob.fetch(ids[1], connection=rconn).get_status() == "started"  # claimed ahead, never run
    assert rconn.zcard("rq:wip:default") == 1

    with app.app_context():
        sup._child_died(pid, 1, status)
        sup._fail_stuck_jobs()
    assert rconn.lrange("rq:queue:default", 0, -1) == [ids[1].encode()]  # back at once
    assert rconn.llen("rq:queue:default:intermediate") == 0
    assert JsonJob.fetch(ids[1], connection=rconn).get_status() == "queued"
    assert not JsonJob.fetch(ids[1], connection=rconn).meta.get("attempts")  # never ran: no attempt
    assert rconn.zcard("rq:wip:default") == 0
    assert JsonJob.fetch(ids[0], connection=rconn).get_status() == "finished"  # left alone
