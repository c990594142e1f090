"""The pooled worker's one round trip per job: the next job is claimed (started) in the script step
that takes it, with the last job's success.

What the claim writes must be what the usual claim writes (RQ's start: the run's execution, the
started registry, the job's status and times), a job that needs a look before its start is moved
only, and a job claimed ahead that never ran goes back as a waiting job (a worker leaving, a dead
child's supervisor) without an attempt or a death counted. Against a real redis-server.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from flask import Flask

from app.catalogue.registry import REGISTRY
from app.core import dispatch, leases, outcomes
from app.core.dispatch import EnqueueOptions
from app.core.queues import (
    ClaimAhead,
    JsonJob,
    JsonQueue,
    claimed,
    load_move_first,
    move_first_on,
    moved,
    take_moved,
)
from app.foundation.held import HeldConnection
from app.foundation.meta import Meta
from app.processes.workers.inline import DeadlineBoard
from app.processes.workers.pooled import JsonPooledWorker, forget_worker

pytestmark = pytest.mark.integration

KEY = "rq:queue:default"


def _enqueue(app: Flask, rconn: redis.Redis, n: int = 1, task: str = "add", **options: Any) -> list[str]:
    spec = REGISTRY.get(task)
    assert spec is not None
    args = {"x": 1, "y": 2} if task == "add" else {"path": "/nonexistent", "seconds": 0}
    with app.app_context():
        return [
            dispatch.enqueue(
                spec, spec.validate(args), rconn, default_result_ttl=500, failure_ttl=3600, **options
            ).id
            for _ in range(n)
        ]


def _move(rconn: redis.Redis, ahead: ClaimAhead | None, taker: str | None = None) -> tuple[Any, str | None]:
    load_move_first(rconn)
    with rconn.pipeline(transaction=False) as pipe:
        move_first_on(pipe, [KEY], taker=taker, claim=ahead.args() if ahead is not None else None)
        (answer,) = pipe.execute()
    return moved(answer), claimed(answer)


def _commands(rconn: redis.Redis) -> dict[str, int]:
    stats = rconn.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def _run_state(rconn: redis.Redis, job_id: str) -> dict[str, Any]:
    """What a run's start leaves in Redis, less the values that differ between any two runs."""
    job = rconn.hgetall(f"rq:job:{job_id}")
    (member,) = rconn.zrange("rq:wip:default", 0, -1, withscores=True)
    run = member[0].decode()
    execution_id = run.split(":", 1)[1]
    execution = rconn.hgetall(f"rq:execution:{run}")
    worker = job[b"worker_name"].decode()
    return {
        "job status": job[b"status"],
        "job fields": sorted(job),
        "job ttl": rconn.ttl(f"rq:job:{job_id}"),
        "started at = heartbeat": job[b"started_at"] == job[b"last_heartbeat"],
        "lease in": round(member[1] - time.time()),
        "execution fields": sorted(execution),
        "execution job": execution[b"job_id"].decode() == job_id,
        "execution worker": execution[b"worker_name"].decode() == worker,
        "execution ttl": rconn.ttl(f"rq:execution:{run}"),
        "executions": [m.decode() for m in rconn.zrange(f"rq:executions:{job_id}", 0, -1)] == [execution_id],
        "executions ttl": rconn.ttl(f"rq:executions:{job_id}"),
        "worker's executions": rconn.smembers(f"rq:worker:{worker}:executions") == {run.encode()},
        "intermediate": rconn.llen(f"{KEY}:intermediate"),
        "status (RQ)": JsonJob.fetch(job_id, connection=rconn).get_status(),
    }


def test_a_claim_ahead_writes_what_the_usual_claim_writes(app: Flask, rconn: redis.Redis) -> None:
    """One job started by the worker's usual claim (prepare_execution), one claimed in the move:
    the same fields, TTLs, registries and indexes, and RQ reads both as started."""
    first, second = _enqueue(app, rconn, 2)
    with app.app_context():
        worker = JsonPooledWorker([JsonQueue("default", connection=rconn)], connection=rconn)
        found, run = _move(rconn, None)
        assert run is None
        taken = take_moved(found, {KEY: JsonQueue("default", connection=rconn)}, rconn, worker.job_class)
        assert taken is not None and taken[0].id == first
        worker.prepare_execution(taken[0])
    usual = _run_state(rconn, first)
    rconn.delete("rq:wip:default", f"rq:worker:{worker.name}:executions")
    found, run = _move(rconn, ClaimAhead.new(worker.name, worker.get_heartbeat_ttl(None)))  # type: ignore[arg-type]
    assert found[1] == second and run is not None
    assert found[2][b"status"] == b"started"  # the fields answered are the hash after the claim
    ahead = _run_state(rconn, second)
    assert ahead == usual
    assert usual["job status"] == b"started" and usual["intermediate"] == 0
    assert usual["job ttl"] == -1 and usual["execution ttl"] > 0 and usual["executions ttl"] > 0


def test_a_drain_takes_two_scripts_per_job_not_three(app: Flask, rconn: redis.Redis) -> None:
    """50 jobs drained by a pooled worker: the success's script and the move that claims the next
    job, per job (with claims ahead off, a third: the claim); every job finished."""
    for claims_ahead, per_job in ((True, 2), (False, 3)):
        ids = _enqueue(app, rconn, 50)
        rconn.config_resetstat()
        with app.app_context():
            worker = JsonPooledWorker([JsonQueue("default", connection=rconn)], connection=rconn)
            worker.claims_ahead = claims_ahead
            worker.work(burst=True, with_scheduler=False)
        scripts = _commands(rconn).get("evalsha", 0)
        assert per_job * 50 <= scripts <= per_job * 50 + 8, (claims_ahead, scripts)  # + a start and an end
        assert {j.get_status() for j in JsonJob.fetch_many(ids, connection=rconn)} == {"finished"}
        assert rconn.zcard("rq:wip:default") == 0 and rconn.llen(f"{KEY}:intermediate") == 0


@pytest.mark.parametrize("kind", ["expires", "rate limit", "no task in meta"])
def test_a_job_that_needs_a_look_before_its_start_is_moved_only(
    app: Flask, rconn: redis.Redis, kind: str
) -> None:
    """A job with ``expires``, one of a task with a rate limit (named among the unclaimed tasks), one
    whose meta names no task (enqueued by plain RQ): moved to the intermediate list, not started."""
    if kind == "expires":
        (job_id,) = _enqueue(app, rconn, 1, options=EnqueueOptions(expires=3600))
    elif kind == "rate limit":
        (job_id,) = _enqueue(app, rconn, 1, task="rate_limited_stamp")
    else:
        job = JsonQueue("default", connection=rconn).enqueue("app.tasks.platform.add", x=1, y=2)
        job_id = job.id
    with app.app_context():
        worker = JsonPooledWorker([JsonQueue("default", connection=rconn)], connection=rconn)
    assert "rate_limited_stamp" in worker.unclaimed_tasks
    found, run = _move(rconn, ClaimAhead.new(worker.name, 20, worker.unclaimed_tasks))
    assert found[1] == job_id and run is None
    assert JsonJob.fetch(job_id, connection=rconn).get_status() == "queued"
    assert rconn.lrange(f"{KEY}:intermediate", 0, -1) == [job_id.encode()]
    assert rconn.zcard("rq:wip:default") == 0


def test_a_claim_taken_back_leaves_a_waiting_job_and_is_taken_back_once(
    app: Flask, rconn: redis.Redis
) -> None:
    """A worker leaving with a job claimed ahead: the claim goes (lease, execution, indexes), the job
    is queued again at the head of its queue; a second take-back finds nothing to do."""
    first, second = _enqueue(app, rconn, 2)
    ahead = ClaimAhead.new("w1", 20)
    found, run = _move(rconn, ahead)
    assert found[1] == first and run == ahead.execution_id
    queue = JsonQueue("default", connection=rconn)
    assert leases.release_claim(rconn, queue, first, ahead.execution_id, "w1")
    assert not leases.release_claim(rconn, queue, first, ahead.execution_id, "w1")
    assert outcomes.put_back(queue, first)
    assert rconn.lrange(KEY, 0, -1) == [first.encode(), second.encode()]
    assert JsonJob.fetch(first, connection=rconn).get_status() == "queued"
    assert rconn.zcard("rq:wip:default") == 0 and rconn.llen(f"{KEY}:intermediate") == 0
    assert not rconn.exists(f"rq:execution:{first}:{ahead.execution_id}", f"rq:executions:{first}")
    assert not rconn.exists("rq:worker:w1:executions")


def test_a_dead_childs_job_claimed_ahead_is_put_back_without_an_attempt(
    app: Flask, rconn: redis.Redis
) -> None:
    """The supervisor's rescue of a job its dead child claimed ahead (the board says so, or the child's
    record names it as taken): put back at once, no attempt, no death counted; a job that another
    worker runs by then is left alone."""
    (job_id,) = _enqueue(app, rconn, 1)
    name = "dead-child"
    rconn.hset(f"rq:worker:{name}", mapping={"pid": 4242, "hostname": "h", "queues": "default"})
    rconn.sadd("rq:workers", f"rq:worker:{name}")
    _, run = _move(rconn, ClaimAhead.new(name, 20), taker=f"rq:worker:{name}")
    assert run is not None
    board = DeadlineBoard(2)
    board.hold(1, job_id, ahead=True)
    assert board.holding_runs(range(2)) == [(job_id, True)]
    assert outcomes.rescue(rconn, job_id, waiting_only=True, ahead_of="someone-else") == "left"
    names, taken = forget_worker(rconn, 4242, "h")
    assert names == [f"rq:worker:{name}"] and taken == [(job_id, name)]
    assert outcomes.rescue(rconn, job_id, waiting_only=True, ahead_of=name) == "requeued"
    job = JsonJob.fetch(job_id, connection=rconn)
    assert job.get_status() == "queued"
    assert not job.meta.get(Meta.ATTEMPTS) and not job.meta.get(Meta.ORPHANED)
    assert rconn.lrange(KEY, 0, -1) == [job_id.encode()]
    assert rconn.zcard("rq:wip:default") == 0


def test_the_claimed_job_runs_under_the_claimed_run(app: Flask, rconn: redis.Redis) -> None:
    """The job claimed ahead runs under that run (no second claim): one execution in its result,
    the worker's successes counted, nothing left started."""
    ids = _enqueue(app, rconn, 3)
    with app.app_context():
        worker = JsonPooledWorker([JsonQueue("default", connection=rconn)], connection=rconn)
        worker.work(burst=True, with_scheduler=False)
    for job in JsonJob.fetch_many(ids, connection=rconn):
        assert job is not None and job.get_status() == "finished"
        results = rconn.xrange(f"rq:results:{job.id}")
        assert len(results) == 1
        assert job.started_at is not None and job.ended_at is not None and job.started_at <= job.ended_at
    assert int(rconn.hget(worker.key, "successful_job_count") or 0) == 3
    assert not rconn.keys("rq:execution:*") and not rconn.keys("rq:executions:*")


def test_a_job_taken_in_a_round_trip_whose_answer_was_lost_goes_back_at_once(
    app: Flask, rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis answers the success's round trip (which took and claimed the next job), and the answer is
    lost (a connection error): before the success is tried again, the job taken goes back to its
    queue as one that never started, not when its lease expires; every job then runs once."""
    ids = _enqueue(app, rconn, 3)
    real = HeldConnection.round_trip
    lost: list[str] = []

    def round_trip(self: Any, *args: Any, **kwargs: Any) -> Any:
        answers = real(self, *args, **kwargs)
        if not lost and len(answers) == 2 and isinstance(answers[1], list) and answers[1][2]:
            lost.append(answers[1][1].decode())  # run, claimed; then the answer is lost
            raise redis.exceptions.ConnectionError("the answer was lost")
        return answers

    monkeypatch.setattr(HeldConnection, "round_trip", round_trip)
    with app.app_context():
        worker = JsonPooledWorker([JsonQueue("default", connection=rconn)], connection=rconn)
        worker.work(burst=True, with_scheduler=False)
    assert lost and lost[0] == ids[1]
    jobs = JsonJob.fetch_many(ids, connection=rconn)
    assert [j.get_status() for j in jobs if j is not None] == ["finished"] * 3
    assert not jobs[1].meta.get(Meta.ATTEMPTS)  # type: ignore[union-attr]
    assert all(len(rconn.xrange(f"rq:results:{job_id}")) == 1 for job_id in ids)
