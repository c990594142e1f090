"""``sequence``: jobs with the same key run one at a time, in enqueue order, on any worker; a job that
ends (success, final failure, revoke, expiry) hands on to the next; nothing gets stuck."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app.core import outcomes
from app.core.queues import JsonJob, JsonQueue
from app.foundation import keys
from app.foundation.clock import ManualClock
from app.foundation.meta import Meta
from app.processes import maintenance
from app.processes.workers import JsonInlineWorker
from tests.jobs import StepInput
from tests.servers import FINAL, Starter, enqueue, get_job, start_worker, wait_for, wait_state


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


def test_bad_values_are_422_naming_the_field_and_store_nothing(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    for bad in ("", 7, "x" * 201, "line\nbreak", None if False else ["k"], {"key": "k"}, True):
        body = {"args": {"x": 1, "y": 2}, "options": {"sequence": bad}}
        answer = client.post("/api/v1/tasks/add", json=body, headers=auth)
        assert answer.status_code == 422, (bad, answer.get_json())
        assert [d["field"] for d in answer.get_json()["error"]["details"]] == ["options.sequence"], bad
        batch = {"items": [{"args": {"x": 1, "y": 2}}], "options": {"sequence": bad}}
        answer = client.post("/api/v1/tasks/add/batch", json=batch, headers=auth)
        assert answer.status_code == 422, (bad, answer.get_json())
        assert "options.sequence" in [d["field"] for d in answer.get_json()["error"]["details"]], bad
    assert redis_.llen("rq:queue:default") == 0 and not redis_.keys("rq:job:*")
    assert not redis_.keys("tasklane:sequence*")


def test_batch_items_join_in_order_and_every_way_in(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """``/batch`` items join their sequence in the order given (after a job enqueued before them);
    apply_async, a signature's .set(), the HTTP client and ``flask tasks enqueue --sequence`` join
    the same sequence; the OpenAPI document declares the option."""
    import httpx

    from app.calling.canvas import Signature
    from app.client import Client
    from app.tasks import sequence_step  # type: ignore[attr-defined]
    from tests.conftest import TOKEN

    redis_ = app.extensions["tasklane"].redis
    log = str(tmp_path / "log")
    first = _step(client, auth, tmp_path / "log", "api")
    items = [{"args": {"path": log, "label": f"batch{n}"}} for n in range(3)]
    body = {"items": items, "options": {"sequence": "k"}}
    answer = client.post("/api/v1/tasks/sequence_step/batch", json=body, headers=auth)
    assert answer.status_code == 202, answer.get_json()
    batch = answer.get_json()["job_ids"]
    with app.app_context():
        by_call = sequence_step.apply_async(kwargs={"path": log, "label": "call"}, sequence="k")
        by_sig = Signature(sequence_step, (), {"path": log, "label": "sig"}).set(sequence="k").apply_async()
    http = Client("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    over_http = http.enqueue("sequence_step", {"path": log, "label": "http"}, sequence="k")
    runner = app.test_cli_runner()
    command = ["tasks", "enqueue", "sequence_step", f"path={log}", "label=cli", "--sequence", "k"]
    printed = runner.invoke(args=command)
    assert printed.exit_code == 0, printed.output
    refused = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--sequence", ""])
    assert refused.exit_code != 0 and "sequence" in refused.output
    expected = [first, *batch, by_call.id, by_sig.id, over_http, printed.output.strip()]
    assert [i.decode() for i in redis_.lrange(keys.sequence("k"), 0, -1)] == expected
    _work(app)
    labels = ["api", "batch0", "batch1", "batch2", "call", "sig", "http", "cli"]
    assert_one_at_a_time(tmp_path / "log", labels)

    doc = client.get("/api/v1/openapi.json").get_json()
    for name in ("EnqueueOptions", "BatchOptions"):
        declared = doc["components"]["schemas"][name]["properties"]["sequence"]
        string = declared["anyOf"][0]
        assert (string["type"], string["minLength"], string["maxLength"]) == ("string", 1, 200), declared
    assert doc["paths"]["/api/v1/tasks/add"]["post"]["x-tasklane-policy"]["sequence_key"] is None
    assert "sequence" in doc["components"]["schemas"]["Job"]["properties"]


def test_the_tasks_default_sequence_key_and_task_overrides(tmp_path: Path, redis_url: str) -> None:
    """``sequence_key="path"`` in TASK_OVERRIDES (as in a declaration): jobs with the same value of that
    argument share a sequence named after the task and the value; the call's own ``sequence`` wins;
    an unknown field is refused at start."""
    from app import create_app
    from app.catalogue.registry import TaskRegistry, task
    from tests.conftest import TOKEN, make_env

    registry = TaskRegistry(None)

    @task(input=StepInput, sequence_key="path", registry=registry)
    def per_file(path: str, label: str, seconds: float, fail: bool) -> None:
        """One at a time per file."""

    spec = registry.get("per_file")
    assert spec is not None and spec.describe()["sequence_key"] == "path"
    with pytest.raises(ValueError, match="sequence_key"):
        task("bad_sequence", sequence_key="nope", registry=registry)(lambda: None)

    overrides = json.dumps({"sequence_step": {"sequence_key": "path"}})
    app = create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=overrides))
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    redis_ = app.extensions["tasklane"].redis
    log_a, log_b = str(tmp_path / "a"), str(tmp_path / "b")
    a1 = enqueue(client, auth, "sequence_step", {"path": log_a, "label": "1"})
    b1 = enqueue(client, auth, "sequence_step", {"path": log_b, "label": "1"})
    a2 = enqueue(client, auth, "sequence_step", {"path": log_a, "label": "2"})
    own = enqueue(client, auth, "sequence_step", {"path": log_a, "label": "3"}, sequence="mine")
    assert [i.decode() for i in redis_.lrange(keys.sequence(f"sequence_step:{log_a}"), 0, -1)] == [a1, a2]
    assert get_job(client, auth, a2)["sequence"] == {"key": f"sequence_step:{log_a}", "ahead": 1}
    assert get_job(client, auth, b1)["sequence"]["ahead"] == 0
    assert get_job(client, auth, own)["sequence"] == {"key": "mine", "ahead": 0}
    shown = {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}
    assert shown["sequence_step"]["overridden"]["sequence_key"] == {"declared": None, "in_force": "path"}
    for bad in ({"sequence_key": "nope"}, {"sequence_key": 3}):
        with pytest.raises(Exception, match="sequence_key"):
            create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"sequence_step": bad})))


# --- concurrency and real processes -------------------------------------------------------------


def _enqueue_concurrently(
    app: Flask, auth: dict[str, str], logs: dict[str, Path], per_enqueuer: int, seconds: float = 0.0
) -> list[tuple[float, float, str, str]]:
    """16 threads, each with its own client (its own Redis connections), enqueue ``per_enqueuer`` jobs
    one after another, cycling over the keys of ``logs``; (sent, acknowledged, key, label) of each."""
    done: list[tuple[float, float, str, str]] = []
    lock = threading.Lock()
    ready = threading.Barrier(16)
    names = sorted(logs)

    def enqueuer(n: int) -> None:
        client = app.test_client()
        ready.wait()
        for i in range(per_enqueuer):
            key = names[(n + i) % len(names)]
            label = f"{key}-{n}-{i}"
            sent = time.monotonic()
            args = {"path": str(logs[key]), "label": label, "seconds": seconds}
            enqueue(client, auth, "sequence_step", args, sequence=key)
            acked = time.monotonic()
            with lock:
                done.append((sent, acked, key, label))

    threads = [threading.Thread(target=enqueuer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(done) == 16 * per_enqueuer
    return done


def assert_acknowledgement_order(
    ran: list[str], enqueued: list[tuple[float, float, str, str]], key: str
) -> None:
    """A job whose enqueue was acknowledged before another's was sent ran before it (so each
    enqueuer's jobs ran in its order), and every job of ``key`` ran exactly once."""
    mine = [(sent, acked, label) for sent, acked, k, label in enqueued if k == key]
    assert sorted(ran) == sorted(label for _, _, label in mine) and len(set(ran)) == len(ran)
    place = {label: n for n, label in enumerate(ran)}
    for _, acked_a, a in mine:
        for sent_b, _, b in mine:
            if acked_a < sent_b:
                assert place[a] < place[b], f"{a} was acknowledged before {b} was sent, but ran after it"


def test_sixteen_concurrent_enqueuers_the_list_is_the_acknowledgement_order(
    app: Flask, auth: dict[str, str], tmp_path: Path
) -> None:
    """16 enqueuers of one key at once: the sequence's list is consistent with the acknowledgements,
    only its head is on the queue, and a worker runs them in exactly the list's order."""
    redis_ = app.extensions["tasklane"].redis
    logs = {"k": tmp_path / "k.log"}
    enqueued = _enqueue_concurrently(app, auth, logs, per_enqueuer=4)
    listed = [i.decode() for i in redis_.lrange(keys.sequence("k"), 0, -1)]
    labels = {
        job.id: job.kwargs["label"]
        for job in JsonJob.fetch_many(listed, connection=redis_)
        if job is not None
    }
    in_list = [labels[i] for i in listed]
    assert_acknowledgement_order(in_list, enqueued, "k")
    assert JsonQueue("default", connection=redis_).get_job_ids() == listed[:1]
    _work(app)
    assert_one_at_a_time(logs["k"], in_list)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_two_worker_processes_run_each_sequence_in_order_one_at_a_time(
    start: Starter, rconn: redis.Redis, app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A pooled and a fork worker process take jobs of two sequences while 16 enqueuers add to them:
    each sequence runs in acknowledgement order, never two of its jobs at once; both processes
    worked; nothing is left in Redis."""
    start_worker(start, rconn, "default", "--mode", "pooled", "--concurrency", "1")
    start_worker(start, rconn, "default", "--mode", "fork")
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
    enqueued = _enqueue_concurrently(app, auth, logs, per_enqueuer=4, seconds=0.01)
    wait_for(lambda: all(len(runs(p)) == 2 * 32 for p in logs.values()), 60, 0.1, "every job to run")
    pids = set()
    for key, log in logs.items():
        events = runs(log)
        ran = [label for e, label in events if e == "start"]
        assert_one_at_a_time(log, ran)
        assert_acknowledgement_order(ran, enqueued, key)
        pids |= {line.split()[2] for line in log.read_text().splitlines()}
    assert len(pids) >= 2, pids  # both worker processes took jobs
    wait_for(lambda: not rconn.exists(keys.sequence("a"), keys.sequence("b")), 10, message="the lists to go")
    assert rconn.zcard("rq:deferred:default") == 0 and not rconn.smembers(keys.sequences())


def _sequence_of_four(client: FlaskClient, auth: dict[str, str], log: Path, slow: float) -> list[str]:
    return [
        _step(client, auth, log, label, seconds=slow if label == "s2" else 0.05)
        for label in ("s1", "s2", "s3", "s4")
    ]


def _after_a_killed_s2(log: Path) -> None:
    """s2 started, was killed (no end), started again and ended; the others one at a time around it."""
    events = [(e, label) for e, label in runs(log)]
    assert events == [("start", "s1"), ("end", "s1"), ("start", "s2"), ("start", "s2"), ("end", "s2"),
                      ("start", "s3"), ("end", "s3"), ("start", "s4"), ("end", "s4")], events  # fmt: skip


def _pid_running(log: Path, label: str) -> int:
    """The pid of the process that started ``label`` (once it has)."""

    def started() -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split()[2] for line in lines if line.startswith(f"start {label} ")]

    return int(wait_for(started, 20, 0.02, f"{label} to start")[0])


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["pooled", pytest.param("fork", marks=pytest.mark.long)])
def test_kill_9_of_the_process_running_a_sequence_job_the_sequence_goes_on(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path, mode: str
) -> None:
    """The process running s2 (a pooled child, a fork-mode work horse) is killed with SIGKILL: its
    worker rescues s2 (requeued without spending a retry), s2 runs again, then s3 and s4, in order,
    one at a time."""
    start_worker(start, rconn, "default", "--mode", mode, "--concurrency", "1")
    log = tmp_path / "log"
    ids = _sequence_of_four(client, auth, log, slow=1.0)
    os.kill(_pid_running(log, "s2"), signal.SIGKILL)
    assert wait_state(client, auth, ids[3], FINAL, timeout=30)["state"] == "SUCCESS"
    _after_a_killed_s2(log)
    s2 = get_job(client, auth, ids[1])
    assert s2["state"] == "SUCCESS" and [a["type"] for a in s2["attempts"]] == ["WorkerLostError"]
    assert not rconn.exists(keys.sequence("k"))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_whole_worker_killed_the_lease_sweep_rescues_and_the_sequence_finishes(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """worker.py and its child killed with SIGKILL while s2 runs: nothing moves (s3 waits DEFERRED,
    no other worker takes it) until the lease sweep finds s2's lease run out (the sweep is run here
    with its clock past the lease, instead of waiting 20 s) and requeues it; a new worker then runs
    s2, s3 and s4 in order."""
    worker = start_worker(start, rconn, "default", "--mode", "pooled", "--concurrency", "1")
    log = tmp_path / "log"
    ids = _sequence_of_four(client, auth, log, slow=1.0)
    running = _pid_running(log, "s2")
    os.kill(worker.pid, signal.SIGKILL)
    os.kill(running, signal.SIGKILL)
    worker.wait(10)
    assert [get_job(client, auth, i)["status"] for i in ids[1:]] == ["started", "deferred", "deferred"]
    queue = JsonQueue("default", connection=rconn)
    assert maintenance.rescue_abandoned(queue, timestamp=time.time() + 120) == 1
    assert get_job(client, auth, ids[1])["status"] == "queued"
    start_worker(start, rconn, "default", "--mode", "pooled", "--concurrency", "1")
    assert wait_state(client, auth, ids[3], FINAL, timeout=30)["state"] == "SUCCESS"
    _after_a_killed_s2(log)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_redis_killed_mid_sequence_and_restarted_from_its_aof_nothing_is_stuck(
    start: Starter, auth: dict[str, str], tmp_path: Path
) -> None:
    """Redis (append-only file) killed with SIGKILL while a worker process runs s2, and started again
    on its file: the worker rides the outage out, s2's end hands on, s3 and s4 run; in order, one at
    a time; nothing of the sequence is left."""
    from app import create_app
    from tests.conftest import make_env
    from tests.servers import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        client = app.test_client()
        conn = server.client()
        start_worker(start, conn, "default", "--mode", "pooled", "--concurrency", "1", REDIS_URL=server.url)
        log = tmp_path / "log"
        ids = _sequence_of_four(client, auth, log, slow=1.0)
        _pid_running(log, "s2")
        server.kill()
        server.start()
        assert wait_state(client, auth, ids[3], FINAL, timeout=45)["state"] == "SUCCESS"
        ran = [label for e, label in runs(log) if e == "start"]
        assert ran in (["s1", "s2", "s3", "s4"], ["s1", "s2", "s2", "s3", "s4"]), ran  # s2 again if requeued
        assert [get_job(client, auth, i)["state"] for i in ids] == ["SUCCESS"] * 4
        wait_for(lambda: not conn.exists(keys.sequence("k")), 10, message="the sequence's list to go")
        assert conn.zcard("rq:deferred:default") == 0
    finally:
        server.stop()


def test_what_a_sequence_costs_in_redis(app: Flask) -> None:
    """INFO commandstats over 50 jobs of ``add``, plain and in one sequence, enqueued and run by a burst
    worker: a sequence adds one script to the enqueue's transaction and one to the end's (no round
    trip), about a dozen commands per job in all; a plain job's enqueue is what it was."""
    from app.catalogue.registry import REGISTRY
    from app.core.dispatch import EnqueueOptions
    from app.core.dispatch import enqueue as core_enqueue

    redis_ = app.extensions["tasklane"].redis
    spec = REGISTRY.get("add")
    assert spec is not None
    n = 50

    def measured(action: Any) -> dict[str, float]:
        redis_.config_resetstat()
        action()
        stats = redis_.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): v["calls"] / n for k, v in stats.items()}
        calls.pop("info", None), calls.pop("config", None)
        return calls

    def enqueue_all(sequence: str | None) -> None:
        options = EnqueueOptions(sequence=sequence) if sequence else None
        for _ in range(n):
            core_enqueue(spec, {"x": 1, "y": 2}, redis_, options, default_result_ttl=60, failure_ttl=60)

    def run_all() -> None:
        with app.app_context():
            worker = JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_)
            worker.work(burst=True, with_scheduler=False)

    figures = {}
    for sequence in (None, "k"):
        figures[sequence] = (measured(lambda s=sequence: enqueue_all(s)), measured(run_all))
    (plain_in, plain_run), (seq_in, seq_run) = figures[None], figures["k"]
    measures = {"plain_in": plain_in, "seq_in": seq_in, "plain_run": plain_run, "seq_run": seq_run}
    total = {name: sum(calls.values()) for name, calls in measures.items()}
    print(
        f"\nFIGURES sequence cost per job: enqueue {total['plain_in']:.1f} -> {total['seq_in']:.1f} commands "
        f"(MULTI {plain_in.get('multi', 0):g} -> {seq_in.get('multi', 0):g}, "
        f"EVALSHA {plain_in.get('evalsha', 0):g} -> {seq_in.get('evalsha', 0):g}); "
        f"run {total['plain_run']:.1f} -> {total['seq_run']:.1f} commands "
        f"(EVALSHA {plain_run['evalsha']:.2f} -> {seq_run['evalsha']:.2f})"
    )
    assert plain_in["multi"] == seq_in["multi"] == 1  # one round trip each, as before
    assert "evalsha" not in plain_in and seq_in["evalsha"] == pytest.approx(1, abs=0.05)
    assert seq_run["evalsha"] - plain_run["evalsha"] == pytest.approx(1, abs=0.1)  # the hand-on
    assert total["seq_in"] + total["seq_run"] - total["plain_in"] - total["plain_run"] <= 16


def test_the_sweep_moves_on_a_sequence_whose_hand_on_was_lost(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A head whose end was written without its hand-on (its process died in between, as here where
    the end is written by hand), and a waiting job whose hash was deleted: the next sweep drops
    both from the sequence and puts the next job on its queue; nothing else moves."""
    redis_ = app.extensions["tasklane"].redis
    log = tmp_path / "log"
    ids = [_step(client, auth, log, f"j{n}") for n in range(4)]
    redis_.hset(JsonJob.key_for(ids[0]), "status", "finished")  # ended, no hand-on
    redis_.lrem("rq:queue:default", 0, ids[0])
    redis_.delete(JsonJob.key_for(ids[1]))  # gone while it waited
    maintenance.sweep(redis_)
    assert JsonQueue("default", connection=redis_).get_job_ids() == [ids[2]]
    assert [i.decode() for i in redis_.lrange(keys.sequence("k"), 0, -1)] == ids[2:]
    assert get_job(client, auth, ids[3])["sequence"] == {"key": "k", "ahead": 1}
    maintenance.sweep(redis_)  # again: nothing more (the head's turn has come, it is not run twice)
    assert JsonQueue("default", connection=redis_).get_job_ids() == [ids[2]]
    _work(app)
    assert_one_at_a_time(log, ["j2", "j3"])


def test_idempotent_and_unique_enqueues_join_once(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """Through the checked (WATCH) path: a repeat with the same Idempotency-Key returns the job
    without joining again; a caller's job_id too; a taken job_id is a 409 that joins nothing."""
    redis_ = app.extensions["tasklane"].redis
    body = {"args": {"path": str(tmp_path / "log"), "label": "once"}, "options": {"sequence": "k"}}
    headers = {**auth, "Idempotency-Key": "order-7"}
    first = client.post("/api/v1/tasks/sequence_step", json=body, headers=headers).get_json()["job_id"]
    again = client.post("/api/v1/tasks/sequence_step", json=body, headers=headers).get_json()["job_id"]
    chosen = {"args": body["args"], "options": {"sequence": "k", "job_id": "mine-1"}}
    assert client.post("/api/v1/tasks/sequence_step", json=chosen, headers=auth).status_code == 202
    assert client.post("/api/v1/tasks/sequence_step", json=chosen, headers=auth).status_code == 409
    assert first == again
    assert [i.decode() for i in redis_.lrange(keys.sequence("k"), 0, -1)] == [first, "mine-1"]


def test_a_delayed_job_waits_for_its_turn_and_its_time(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, manual_clock: ManualClock
) -> None:
    """With countdown: a head waits in the scheduled registry; a later job whose turn comes before its
    time goes there too (scheduled_for its own time); one whose time has passed by its turn goes
    straight onto its queue."""
    log = tmp_path / "log"

    def delayed(label: str, key: str, countdown: float) -> str:
        args = {"path": str(log), "label": label}
        return enqueue(client, auth, "sequence_step", args, sequence=key, countdown=countdown)

    alone = delayed("a", "d", 60)
    view = get_job(client, auth, alone)
    assert (view["status"], view["sequence"]["ahead"]) == ("scheduled", 0) and view["scheduled_for"]
    first = _step(client, auth, log, "b", key="k")
    later = delayed("c", "k", 60)
    head = _step(client, auth, log, "h", key="p")
    soon = delayed("s", "p", 5)
    assert [get_job(client, auth, j)["status"] for j in (later, soon)] == ["deferred", "deferred"]
    manual_clock.advance(10)
    _work(app)
    assert [get_job(client, auth, j)["state"] for j in (first, head, soon)] == ["SUCCESS"] * 3
    view = get_job(client, auth, later)
    assert (view["state"], view["status"]) == ("PENDING", "scheduled")
    due = datetime.fromisoformat(view["scheduled_for"].replace("Z", "+00:00"))
    assert 45 < due.timestamp() - manual_clock.time() <= 51


def test_rq_info_and_the_dashboard_see_waiting_jobs(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """``rq info`` counts the head as queued (it shows no deferred count for any job); rq-dashboard
    lists the others as deferred and opens their job page (no depends_on: its job page fails for
    jobs that have one)."""
    import base64
    import re

    from click.testing import CliRunner
    from rq.cli import main as rq_main

    from tests.conftest import DASHBOARD

    ids = [_step(client, auth, tmp_path / "log", f"j{n}") for n in range(3)]
    url = app.config.get("REDIS_URL") or app.extensions["tasklane"].settings.redis_url
    shown = CliRunner().invoke(rq_main, ["info", "--url", url, "--only-queues", "default"])
    assert shown.exit_code == 0 and re.search(r"default\s+\|\S* 1,", shown.output), shown.output

    basic = {"Authorization": "Basic " + base64.b64encode(":".join(DASHBOARD).encode()).decode()}
    listed = client.get("/rq/0/data/jobs/default/deferred/10/asc/1.json", headers=basic)
    assert listed.status_code == 200, listed.data[:300]
    assert {j["id"] for j in listed.get_json()["jobs"]} == set(ids[1:])
    page = client.get(f"/rq/0/view/job/{ids[2]}", headers=basic)
    assert page.status_code == 200
    console = client.get(f"/console/jobs/{ids[2]}", headers=basic)
    assert console.status_code == 200 and ids[2] in console.get_data(as_text=True)


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["pooled", pytest.param("fork", marks=pytest.mark.long)])
def test_revoking_the_running_job_hands_on_at_once(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path, mode: str
) -> None:
    """DELETE of the job a worker process is running: it is stopped (REVOKED) and the next job of its
    sequence starts right after, not when the stopped one would have ended."""
    start_worker(start, rconn, "default", "--mode", mode, "--concurrency", "1")
    log = tmp_path / "log"
    running = _step(client, auth, log, "long", seconds=20)
    after = _step(client, auth, log, "next")
    _pid_running(log, "long")
    assert client.delete(f"/api/v1/jobs/{running}", headers=auth).status_code == 202
    assert wait_state(client, auth, after, FINAL, timeout=30)["state"] == "SUCCESS"
    assert get_job(client, auth, running)["state"] == "REVOKED"
    assert [(e, label) for e, label in runs(log)] == [("start", "long"), ("start", "next"), ("end", "next")]


def test_a_transactional_enqueue_joins_when_its_row_is_pushed(
    tmp_path: Path, redis_url: str, database_urls: Any
) -> None:
    """``apply_async(..., session=, sequence=)`` (SQLite): the outbox row keeps the sequence; the
    commit's push joins it (after a job enqueued before the commit); a relay after finds nothing."""
    from sqlalchemy.orm import Session

    from app import create_app
    from app.core import outbox
    from app.tasks import sequence_step  # type: ignore[attr-defined]
    from tests.conftest import make_env
    from tests.databases import empty, fresh_engine

    url = database_urls("sqlite")
    empty(fresh_engine(url))
    app = create_app(make_env(tmp_path, redis_url, DATABASE_URL=url))
    redis_ = app.extensions["tasklane"].redis
    engine = app.extensions["tasklane"].engine
    log = str(tmp_path / "log")
    with app.app_context():
        with Session(engine) as session:
            args = {"path": log, "label": "staged"}
            staged = sequence_step.apply_async(kwargs=args, sequence="k", session=session)
            before = sequence_step.apply_async(kwargs={"path": log, "label": "before"}, sequence="k")
            session.commit()
        assert outbox.relay(engine, redis_, app.extensions["tasklane"].settings) == 0
    assert [i.decode() for i in redis_.lrange(keys.sequence("k"), 0, -1)] == [before.id, staged.id]
    _work(app)
    assert_one_at_a_time(tmp_path / "log", ["before", "staged"])


def test_every_hand_on_works_on_a_server_that_lost_its_scripts(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """SCRIPT FLUSH (as after a Redis restart) before each step: the join, a revoke's hand-on, an
    expiry's, a success's and a final failure's still go through (scripts loaded again)."""
    redis_ = app.extensions["tasklane"].redis
    log = tmp_path / "log"
    redis_.script_flush()
    ids = [_step(client, auth, log, label, fail=label == "f") for label in ("a", "r", "x", "f", "z")]
    redis_.script_flush()
    assert client.delete(f"/api/v1/jobs/{ids[1]}", headers=auth).status_code == 202
    redis_.script_flush()
    job = JsonJob.fetch(ids[2], connection=redis_)
    job.meta[Meta.EXPIRES] = "2001-01-01T00:00:00Z"
    job.save_meta()
    assert outcomes.expire(job)
    redis_.script_flush()
    _work(app)  # a succeeds; f fails (its retry waits)
    redis_.script_flush()
    redis_.blpop(["tasklane:test-never-rung"], 0.3)
    _enqueue_due(app)
    _work(app)  # f fails for good; z runs
    states = [get_job(client, auth, j)["state"] for j in ids]
    assert states == ["SUCCESS", "REVOKED", "REVOKED", "FAILURE", "SUCCESS"]
    assert [label for e, label in runs(log) if e == "start"] == ["a", "f", "f", "z"]
    assert not redis_.exists(keys.sequence("k"))
