"""``rate_key`` and ``burst``: a task's rate limit per key (each key its own GCRA bucket in Redis),
a burst let through at once; a job over its bucket waits in the scheduled registry (PENDING with
``scheduled_for``) without spending a retry or a worker's time; on every way in."""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry
from tasklane_client import Tasklane

from app import create_app
from app.calling.calls import task_handle
from app.calling.canvas import InvalidTaskArguments, Signature
from app.catalogue.registry import REGISTRY, RateLimit, TaskRegistry, task
from app.core import dispatch
from app.core.limits import RateLimiter
from app.core.queues import JsonJob, JsonQueue
from app.foundation import keys
from app.foundation.clock import ManualClock
from app.foundation.meta import Meta
from app.processes.workers import JsonInlineWorker
from tests.conftest import TOKEN, make_env
from tests.servers import (
    FINAL,
    RedisServer,
    Starter,
    enqueue,
    get_job,
    start_scheduler,
    start_worker,
    wait_state,
)

FIVE_A_SECOND = RateLimit.parse("5/s")


@pytest.fixture
def real_redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _work(app: Flask) -> None:
    """One burst of an inline worker on `default`."""
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)


def _due_now(app: Flask, job_id: str) -> None:
    """What the scheduler does when a waiting job is due: it goes back on its queue."""
    redis_ = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis_)
    assert redis_.zrem(queue.scheduled_job_registry.key, job_id) == 1
    queue.enqueue_job(JsonJob.fetch(job_id, connection=redis_))


def _meta(redis_: redis.Redis, job_id: str) -> dict[str, object]:
    return dict(JsonJob.fetch(job_id, connection=redis_).meta)


# --- the buckets, in Redis, timed by the manual clock ----------------------------------------------


def test_each_rate_key_has_its_own_bucket(real_redis: redis.Redis, manual_clock: ManualClock) -> None:
    """5/s per key: a second start of key a waits 0.2 s, key b's first start does not; the task's
    own (unkeyed) bucket is apart from both."""
    limiter = RateLimiter(real_redis)
    now = manual_clock.time()
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="a", now=now) == 0
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="a", now=now) == pytest.approx(0.2, abs=0.002)
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="b", now=now) == 0
    assert limiter.acquire("t", FIVE_A_SECOND, now=now) == 0
    assert real_redis.exists(keys.rate_limit("t", "a"), keys.rate_limit("t", "b"), keys.rate_limit("t")) == 3
    assert keys.rate_limit("t", "a") == "tasklane:ratelimit:t:key:a"
    manual_clock.advance(0.2)
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="a", now=manual_clock.time()) == 0


def test_a_burst_lets_that_many_through_then_spaces_them(
    real_redis: redis.Redis, manual_clock: ManualClock
) -> None:
    """burst=3 on an idle bucket: three starts at once, the fourth waits one interval; after a quiet
    spell the burst is back; without burst (or burst=1) the second start waits."""
    limiter = RateLimiter(real_redis)
    now = manual_clock.time()
    assert [limiter.acquire("t", FIVE_A_SECOND, rate_key="k", burst=3, now=now) for _ in range(3)] == [
        0,
        0,
        0,
    ]
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="k", burst=3, now=now) == pytest.approx(
        0.2, abs=0.002
    )
    manual_clock.advance(0.2)
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="k", burst=3, now=manual_clock.time()) == 0
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="k", burst=3, now=manual_clock.time()) > 0
    manual_clock.advance(0.6)  # three intervals: the burst refilled
    again = [
        limiter.acquire("t", FIVE_A_SECOND, rate_key="k", burst=3, now=manual_clock.time()) for _ in range(4)
    ]
    assert again[:3] == [0, 0, 0] and again[3] > 0
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="one", burst=1, now=now) == 0
    assert limiter.acquire("t", FIVE_A_SECOND, rate_key="one", burst=1, now=now) > 0


def test_a_reservation_takes_the_next_slots_in_turn(
    real_redis: redis.Redis, manual_clock: ManualClock
) -> None:
    """reserve=True (a keyed job over its bucket taking its place in the key's waiting line,
    keys.rate_line): each call takes the next free slot, so ten waiting jobs of one key are put back
    for 0, 0.2, ... 1.8 s, spread at the key's rate rather than all at the next free start."""
    limiter = RateLimiter(real_redis)
    now = manual_clock.time()
    waits = [limiter.acquire("t", FIVE_A_SECOND, rate_key="a", reserve=True, now=now) for _ in range(10)]
    assert waits == pytest.approx([n * 0.2 for n in range(10)], abs=0.002)
    other = [limiter.acquire("t", FIVE_A_SECOND, rate_key="b", reserve=True, now=now) for _ in range(10)]
    assert other == pytest.approx(waits, abs=0.002)  # key b's slots are its own


# --- a worker: over the bucket, the job waits as a delayed one -------------------------------------


def test_over_its_bucket_a_job_waits_with_scheduled_for_and_no_retry_spent(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """bursty_stamp (1/m, burst 2) with the call's rate_key: two jobs of key x start at once, the
    third waits about a minute (PENDING, scheduled, scheduled_for, no retry, no failure) while key
    y's job starts; put back early, it waits again for the same slot and does not run."""
    redis_ = app.extensions["tasklane"].redis
    stamps = tmp_path / "stamps"
    x_jobs = [enqueue(client, auth, "bursty_stamp", {"path": str(stamps)}, rate_key="x") for _ in range(3)]
    y_job = enqueue(client, auth, "bursty_stamp", {"path": str(stamps)}, rate_key="y")
    before = datetime.now(UTC)
    _work(app)
    assert [get_job(client, auth, j)["state"] for j in x_jobs[:2]] == ["SUCCESS", "SUCCESS"]
    assert get_job(client, auth, y_job)["state"] == "SUCCESS"  # its own bucket
    waiting = get_job(client, auth, x_jobs[2])
    assert (waiting["state"], waiting["status"], waiting["retries"], waiting["error"]) == (
        "PENDING",
        "scheduled",
        0,
        None,
    )
    due = datetime.fromisoformat(waiting["scheduled_for"])
    assert timedelta(seconds=57) <= due - before <= timedelta(seconds=61), due - before
    assert FailedJobRegistry("default", connection=redis_).count == 0
    assert len(stamps.read_text().split()) == 3

    _due_now(app, x_jobs[2])  # back long before its slot: waits again for the same slot
    _work(app)
    again = get_job(client, auth, x_jobs[2])
    assert again["state"] == "PENDING" and again["scheduled_for"] is not None
    assert abs(datetime.fromisoformat(again["scheduled_for"]) - due) <= timedelta(seconds=1)
    assert len(stamps.read_text().split()) == 3
    assert (get_job(client, auth, x_jobs[2])["retries"], get_job(client, auth, x_jobs[2])["attempts"]) == (
        0,
        [],
    )


def test_a_job_behind_a_concurrency_cap_waits_without_a_time(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A concurrency cap does not defer a job to a time: the second job of one_at_a_time waits in RQ's
    rate-limited registry until the first ends, so its view is PENDING with scheduled_for null (no
    time is known); a rate-waiting job (above) shows its time."""
    path = str(tmp_path / "times")
    first = enqueue(client, auth, "one_at_a_time", {"path": path})
    second = enqueue(client, auth, "one_at_a_time", {"path": path})
    view = get_job(client, auth, second)
    assert (view["state"], view["status"], view["scheduled_for"]) == ("PENDING", "rate_limited", None)
    _work(app)
    assert {get_job(client, auth, j)["state"] for j in (first, second)} == {"SUCCESS"}


def test_a_declared_rate_key_is_the_value_of_that_argument(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """keyed_stamp declares rate_key="account": each job is in its account's bucket; a call's own
    rate_key wins; the catalogue shows rate_key and burst."""
    redis_ = app.extensions["tasklane"].redis
    path = str(tmp_path / "stamps")
    by_arg = enqueue(client, auth, "keyed_stamp", {"path": path, "account": "acme"})
    own = enqueue(client, auth, "keyed_stamp", {"path": path, "account": "acme"}, rate_key="override")
    assert _meta(redis_, by_arg)[Meta.RATE_KEY] == "acme"
    assert _meta(redis_, own)[Meta.RATE_KEY] == "override"
    plain = enqueue(client, auth, "rate_limited_stamp", {"path": path})
    assert Meta.RATE_KEY not in _meta(redis_, plain)  # nothing for a job without one
    shown = {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}
    assert (shown["keyed_stamp"]["rate_key"], shown["bursty_stamp"]["burst"]) == ("account", 2)
    listed = app.test_cli_runner().invoke(args=["tasks", "list"]).output
    assert "rate 5/s per account" in listed and "rate 1/m burst 2" in listed
    _work(app)
    assert {get_job(client, auth, j)["state"] for j in (by_arg, own)} == {"SUCCESS"}
    assert (
        redis_.exists(keys.rate_limit("keyed_stamp", "acme"), keys.rate_limit("keyed_stamp", "override")) == 2
    )


def test_an_encrypted_jobs_declared_rate_key_is_a_keyed_digest_not_the_argument(
    tmp_path: Path, redis_url: str
) -> None:
    """With encrypt, the bucket of keyed_stamp is a keyed digest of the account (a key name is never
    encrypted, so the argument's value must not be in it); the same account, the same bucket."""
    key = base64.b64encode(os.urandom(32)).decode()
    app = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=key))
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    redis_ = app.extensions["tasklane"].redis
    args = {"path": str(tmp_path / "s"), "account": "acct-secret-42"}
    first = enqueue(client, auth, "keyed_stamp", args, encrypt=True)
    second = enqueue(client, auth, "keyed_stamp", args, encrypt=True)
    bucket = _meta(redis_, first)[Meta.RATE_KEY]
    assert bucket == _meta(redis_, second)[Meta.RATE_KEY]
    assert isinstance(bucket, str) and len(bucket) == 32 and "acct-secret-42" not in bucket
    _work(app)
    assert get_job(client, auth, first)["state"] == "SUCCESS"
    assert not [k for k in redis_.scan_iter("tasklane:ratelimit:*") if b"acct-secret-42" in k]


@pytest.mark.timeout(60)
def test_a_job_waiting_for_its_key_outlives_redis_killed_with_sigkill(tmp_path: Path) -> None:
    """Redis with its append-only file: a keyed job put back by its bucket is still waiting, with its
    time, after a SIGKILL and a restart; when due it runs once, no retry spent."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        path = str(tmp_path / "stamps")
        first, waiting = (
            enqueue(client, auth, "keyed_stamp", {"path": path, "account": "a"}) for _ in range(2)
        )
        _work(app)
        assert get_job(client, auth, first)["state"] == "SUCCESS"
        due = get_job(client, auth, waiting)["scheduled_for"]
        assert due is not None
        server.kill()
        server.start()
        app = create_app(make_env(tmp_path, server.url))
        client = app.test_client()
        redis_ = app.extensions["tasklane"].redis
        view = get_job(client, auth, waiting)
        assert (view["state"], view["scheduled_for"], view["retries"]) == ("PENDING", due, 0)
        assert redis_.exists(keys.rate_limit("keyed_stamp", "a")) or redis_.pttl(
            keys.rate_limit("keyed_stamp", "a")
        )
        while datetime.now(UTC) < datetime.fromisoformat(due):
            redis_.blpop(["tasklane:test-never-rung"], 0.1)
        _due_now(app, waiting)
        _work(app)
        done = get_job(client, auth, waiting)
        assert (done["state"], done["retries"], done["attempts"]) == ("SUCCESS", 0, [])
        assert len(Path(path).read_text().split("\n")) == 3  # two runs, each once
    finally:
        server.stop()


# --- every way in, and the 422s --------------------------------------------------------------------


def test_a_rate_key_on_a_task_without_a_rate_limit_is_a_422_naming_the_field(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """POST, /batch, apply_async and the CLI refuse it; an empty or too long key is a 422 too; nothing
    is enqueued."""
    redis_ = app.extensions["tasklane"].redis
    for options in ({"rate_key": "k"}, {"rate_key": ""}, {"rate_key": "k" * 201}):
        r = client.post(
            "/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}, "options": options}, headers=auth
        )
        assert r.status_code == 422, r.get_json()
        assert [d["field"] for d in r.get_json()["error"]["details"]] == ["options.rate_key"]
    body = {"items": [{"args": {"x": 1, "y": 2}}], "options": {"rate_key": "k"}}
    r = client.post("/api/v1/tasks/add/batch", json=body, headers=auth)
    assert r.status_code == 422 and r.get_json()["error"]["details"][0]["field"] == "options.rate_key"
    assert r.get_json()["error"]["details"][0]["type"] == "rate_key_without_rate_limit"
    assert JsonQueue("default", connection=redis_).count == 0
    from app.tasks import add

    with app.app_context(), pytest.raises(InvalidTaskArguments, match="rate_key"):
        add.apply_async((1, 2), rate_key="k")
    refused = app.test_cli_runner().invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--rate-key", "k"])
    assert refused.exit_code != 0 and "rate_key" in refused.output
    assert JsonQueue("default", connection=redis_).count == 0


def test_every_way_in_stores_the_rate_key(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """/batch (once for every item), apply_async, a signature's .set, the HTTP client and
    ``flask tasks enqueue --rate-key``; the OpenAPI document declares it."""
    from app.client import Client

    rate_limited_stamp = task_handle("rate_limited_stamp")

    redis_ = app.extensions["tasklane"].redis
    path = str(tmp_path / "stamps")
    body = {"items": [{"args": {"path": path}}] * 2, "options": {"rate_key": "tenant-1"}}
    r = client.post("/api/v1/tasks/rate_limited_stamp/batch", json=body, headers=auth)
    assert r.status_code == 202, r.get_json()
    assert {_meta(redis_, j)[Meta.RATE_KEY] for j in r.get_json()["job_ids"]} == {"tenant-1"}
    with app.app_context():
        by_call = rate_limited_stamp.apply_async(kwargs={"path": path}, rate_key="py")
        by_sig = Signature(rate_limited_stamp, (), {"path": path}).set(rate_key="sig").apply_async()
    assert _meta(redis_, by_call.id)[Meta.RATE_KEY] == "py"
    assert _meta(redis_, by_sig.id)[Meta.RATE_KEY] == "sig"
    http = Client("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    assert (
        _meta(redis_, http.enqueue("rate_limited_stamp", {"path": path}, rate_key="http"))[Meta.RATE_KEY]
        == "http"
    )
    celery_shaped = Tasklane("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    result = celery_shaped.task("rate_limited_stamp").apply_async(kwargs={"path": path}, rate_key="tl")
    assert _meta(redis_, result.id)[Meta.RATE_KEY] == "tl"
    printed = app.test_cli_runner().invoke(
        args=["tasks", "enqueue", "rate_limited_stamp", f"path={path}", "--rate-key", "cli"]
    )
    assert printed.exit_code == 0, printed.output
    assert _meta(redis_, printed.output.strip())[Meta.RATE_KEY] == "cli"
    schemas = client.get("/api/v1/openapi.json", headers=auth).get_json()["components"]["schemas"]
    for name in ("EnqueueOptions", "BatchOptions"):
        assert schemas[name]["properties"]["rate_key"]["anyOf"][0]["maxLength"] == 200


def test_burst_and_rate_key_in_the_declaration_and_task_overrides(tmp_path: Path, redis_url: str) -> None:
    """A declared rate_key must name an input field and needs a rate_limit, as burst does;
    TASK_OVERRIDES sets burst (checked) and the catalogue shows it in force."""
    registry = TaskRegistry(None)
    with pytest.raises(ValueError, match="rate_key"):
        task("no_limit", rate_key="x", registry=registry)(lambda: None)
    with pytest.raises(ValueError, match="burst"):
        task("no_limit2", burst=3, registry=registry)(lambda: None)
    with pytest.raises(ValueError, match="burst"):
        task("zero_burst", rate_limit="1/s", burst=0, registry=registry)(lambda: None)

    app = create_app(
        make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"rate_limited_stamp": {"burst": 4}}))
    )
    shown = {
        t["name"]: t
        for t in app.test_client()
        .get("/api/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"})
        .get_json()["tasks"]
    }
    assert shown["rate_limited_stamp"]["burst"] == 4
    assert shown["rate_limited_stamp"]["overridden"]["burst"] == {"declared": None, "in_force": 4}
    with pytest.raises(Exception, match="burst"):
        create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"add": {"burst": 0}})))


# --- what it costs in Redis (INFO commandstats counts the commands inside a script too) ------------


def _commands(rconn: redis.Redis) -> dict[str, int]:
    stats = rconn.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k not in _NOT_OURS}


_NOT_OURS = ("cmdstat_info", "cmdstat_config")


def _cost(
    app: Flask, rconn: redis.Redis, task: str, each: Callable[[int], dict[str, Any]], n: int
) -> tuple[Counter[str], Counter[str]]:
    """The commands of ``n`` enqueues of ``task`` (args ``each(i)``), then of an inline worker's run."""
    spec = REGISTRY.get(task)
    assert spec is not None
    rconn.config_resetstat()
    with app.app_context():
        for i in range(n):
            dispatch.enqueue(spec, spec.validate(each(i)), rconn, default_result_ttl=500, failure_ttl=3600)
    enqueued = Counter(_commands(rconn))
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=rconn)], connection=rconn).work(
            burst=True, with_scheduler=False
        )
    return enqueued, Counter(_commands(rconn)) - enqueued


def test_a_rate_key_costs_one_bucket_read_and_write_per_start_and_nothing_at_enqueue(
    app: Flask, rconn: redis.Redis, tmp_path: Path
) -> None:
    """20 jobs of keyed_stamp (each its own account: all start at once) against 20 of add (no limit):
    the same enqueue commands (the key is a field of the meta already written); per start one more
    script, which reads and writes the key's bucket (GET + SET inside it). 20 jobs of one account
    (1 starts, 19 wait): a waiting one adds its place in the line (a second script: GET + SET) and
    the deferral's transaction."""
    n, path = 20, str(tmp_path / "stamps")
    plain_enqueue, plain_run = _cost(app, rconn, "add", lambda i: {"x": 1, "y": i}, n)
    rconn.flushall()
    keyed_enqueue, keyed_run = _cost(
        app, rconn, "keyed_stamp", lambda i: {"path": path, "account": f"a{i}"}, n
    )
    assert keyed_enqueue == plain_enqueue
    assert (keyed_run["get"] - plain_run["get"], keyed_run["set"] - plain_run["set"]) == (n, n)
    rconn.flushall()
    _, waiting_run = _cost(app, rconn, "keyed_stamp", lambda i: {"path": path, "account": "same"}, n)
    # 20 bucket checks (19 refused: GET only) and 19 line places (GET + SET); one start's SET.
    assert (waiting_run["get"], waiting_run["set"] - plain_run["set"]) == (n + (n - 1), 1 + (n - 1))
    per_job = sum(waiting_run.values()) / n
    print(
        f"rate_key commands per job: enqueue {sum(keyed_enqueue.values()) / n:.1f}, "
        f"run (own key) {sum(keyed_run.values()) / n:.1f} vs add {sum(plain_run.values()) / n:.1f}, "
        f"one key (19 of 20 put back) {per_job:.1f}"
    )


# --- real worker processes -------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_two_keys_run_at_their_own_rate_side_by_side(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """keyed_stamp, 5/s per account, on one pooled worker process and a scheduler: 10 jobs of
    account a enqueued before 10 of account b. Each account's starts are spaced (>= ~0.2 s), yet
    b does not wait for a: the two run side by side, so the 20 take about the time of one
    account's 10 (1.8 s of spacing, plus the scheduler's second), not twice it. No retry spent."""
    start_worker(start, rconn, "default", "--mode", "pooled")
    start_scheduler(start, rconn)
    stamps = tmp_path / "stamps"
    jobs = [
        enqueue(client, auth, "keyed_stamp", {"path": str(stamps), "account": account})
        for account in ("a", "b")
        for _ in range(10)
    ]
    views = [wait_state(client, auth, j, FINAL, timeout=30) for j in jobs]
    assert {v["state"] for v in views} == {"SUCCESS"}
    assert {v["retries"] for v in views} == {0}
    starts: dict[str, list[float]] = {"a": [], "b": []}
    for line in stamps.read_text().splitlines():
        account, at = line.split()
        starts[account].append(float(at))
    for account, times in starts.items():
        times.sort()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Slots are 0.2 s apart; a start is stamped after the worker's own overhead, so two stamps
        # may land a little closer than their slots, never near 0.
        assert len(times) == 10 and min(gaps) >= 0.12, (account, gaps)
        # 1.8 s of spacing at least; the waiting ones come back at whole seconds (RQ's scheduled
        # registry and the scheduler's 1 s pass), which may add up to about 2 s.
        assert 1.8 - 0.15 <= times[-1] - times[0] <= 1.8 + 2.5, (account, times[-1] - times[0])
    both = sorted(starts["a"] + starts["b"])
    span = both[-1] - both[0]
    one_key = max(times[-1] - times[0] for times in starts.values())
    print(f"rate_key 5/s, 2 keys x 10 jobs: one key's 10 span {one_key:.2f} s, all 20 {span:.2f} s")
    assert starts["b"][0] < starts["a"][4], "key b waited for key a's bucket"
    assert span <= one_key + 0.6, f"20 jobs of two keys took {span:.2f} s, one key's 10 {one_key:.2f} s"
