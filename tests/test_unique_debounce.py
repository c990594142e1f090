"""``unique`` and ``debounce`` (issue 19): one job per key while it lives (unique) or one job per
quiet window with the latest args (debounce); atomic under concurrent enqueuers; on every way in."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.calling.canvas import Signature
from app.catalogue.registry import REGISTRY, TaskRegistry, task
from app.core.dispatch import EnqueueOptions
from app.core.dispatch import enqueue as dispatch_enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation.clock import ManualClock
from app.processes.maintenance import rescue_abandoned
from app.processes.scheduling import SchedulerProcess
from app.processes.workers import JsonInlineWorker
from tests.conftest import TOKEN, make_env
from tests.servers import (
    FINAL,
    RedisServer,
    Starter,
    children,
    get_job,
    pid_alive,
    start_worker,
    wait_for,
    wait_state,
)


def _post(
    client: FlaskClient, auth: dict[str, str], task_name: str, args: dict[str, Any], **options: Any
) -> Any:
    r = client.post(f"/api/v1/tasks/{task_name}", json={"args": args, "options": options}, headers=auth)
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def _work(app: Flask, queue: str = "default") -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue(queue, connection=redis_)], connection=redis_).work(burst=True)


def _unique_keys(redis_: redis.Redis) -> list[bytes]:
    return sorted(redis_.scan_iter("tasklane:unique:*"))


def _errors(response: Any) -> list[str]:
    return [e["field"] for e in response.get_json()["error"]["details"]]


# --- unique ---------------------------------------------------------------------------------


def test_unique_returns_the_live_job_until_it_ends(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """Same key (default: the task and its args) while the job waits: the same job, deduplicated;
    other args: another job; an explicit key joins calls with other args; once the job ended the
    key is free and the next enqueue makes a new job."""
    redis_ = app.extensions["tasklane"].redis
    first = _post(client, auth, "add", {"x": 1, "y": 2}, unique={"period": 60})
    assert first["deduplicated"] is False
    again = _post(client, auth, "add", {"y": 2, "x": 1}, unique={"period": 60})  # canonical JSON: same key
    assert (again["job_id"], again["deduplicated"], again["state"]) == (first["job_id"], True, "PENDING")
    other = _post(client, auth, "add", {"x": 5, "y": 2}, unique={"period": 60})
    assert other["job_id"] != first["job_id"] and other["deduplicated"] is False
    keyed = _post(client, auth, "add", {"x": 7, "y": 7}, unique={"period": 60, "key": "digest:user-9"})
    same_key = _post(client, auth, "add", {"x": 8, "y": 8}, unique={"period": 60, "key": "digest:user-9"})
    assert same_key["job_id"] == keyed["job_id"] and same_key["deduplicated"] is True
    plain = _post(client, auth, "add", {"x": 1, "y": 2})  # no unique: never deduplicated
    assert plain["deduplicated"] is False and plain["job_id"] != first["job_id"]
    assert redis_.llen("rq:queue:default") == 4
    assert 0 < redis_.pttl(_unique_keys(redis_)[0]) <= 60_000

    _work(app)
    assert get_job(client, auth, first["job_id"])["result"] == 3
    assert _unique_keys(redis_) == []  # every lock released by its job's success
    after = _post(client, auth, "add", {"x": 1, "y": 2}, unique={"period": 60})
    assert after["job_id"] != first["job_id"] and after["deduplicated"] is False


def test_unique_until_period_holds_the_key_after_its_job_ended(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """ "Don't send the same digest twice in an hour": with ``until: period`` the key outlives its job's
    end; another enqueue in the period returns the ended job, deduplicated (the default frees it)."""
    redis_ = app.extensions["tasklane"].redis
    once = {"period": 3600, "key": "digest:42", "until": "period"}
    first = _post(client, auth, "add", {"x": 1, "y": 2}, unique=once)
    _work(app)
    assert get_job(client, auth, first["job_id"])["state"] == "SUCCESS"
    assert len(_unique_keys(redis_)) == 1 and 3590_000 < redis_.pttl(_unique_keys(redis_)[0]) <= 3600_000
    again = _post(client, auth, "add", {"x": 5, "y": 5}, unique=once)
    assert (again["job_id"], again["deduplicated"]) == (first["job_id"], True)
    assert redis_.llen("rq:queue:default") == 0  # nothing new to run
    redis_.delete(*_unique_keys(redis_))  # the period is over
    later = _post(client, auth, "add", {"x": 5, "y": 5}, unique=once)
    assert later["job_id"] != first["job_id"] and later["deduplicated"] is False


def test_unique_lapses_after_its_period_even_while_the_job_waits(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """The lock is a Redis key with the period as its TTL: after it, an enqueue makes a new job
    (Redis keeps TTLs by its own clock, so this one waits 0.3 s of real time)."""
    redis_ = app.extensions["tasklane"].redis
    first = _post(client, auth, "add", {"x": 1, "y": 1}, unique={"period": 0.3})
    assert _post(client, auth, "add", {"x": 1, "y": 1}, unique={"period": 0.3})["job_id"] == first["job_id"]
    redis_.blpop(["tasklane:test-never-rung"], 0.4)
    later = _post(client, auth, "add", {"x": 1, "y": 1}, unique={"period": 0.3})
    assert later["job_id"] != first["job_id"] and later["deduplicated"] is False


def test_unique_is_released_by_a_failure_and_a_revoke(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    doomed = _post(client, auth, "always_fail", {"message": "no"}, unique={"period": 600, "key": "k"})
    _work(app)
    assert get_job(client, auth, doomed["job_id"])["state"] == "FAILURE"
    assert _unique_keys(redis_) == []
    waiting = _post(client, auth, "add", {"x": 1, "y": 1}, unique={"period": 600})
    assert client.delete(f"/api/v1/jobs/{waiting['job_id']}", headers=auth).status_code == 202
    assert _unique_keys(redis_) == []
    assert _post(client, auth, "add", {"x": 1, "y": 1}, unique={"period": 600})["deduplicated"] is False


def test_bad_values_are_422_naming_the_field(client: FlaskClient, auth: dict[str, str], app: Flask) -> None:
    """Nothing is enqueued for a refused call."""
    cases = [
        ({"unique": {"period": 0}}, "options.unique.period"),
        ({"unique": {"period": "soon"}}, "options.unique.period"),
        ({"unique": {}}, "options.unique.period"),
        ({"unique": {"period": 5, "key": ""}}, "options.unique.key"),
        ({"unique": {"period": 5, "scope": "x"}}, "options.unique.scope"),
        ({"unique": True}, "options.unique"),
        ({"debounce": {"delay": 0.5}}, "options.debounce.delay"),
        ({"debounce": {"key": "k"}}, "options.debounce.delay"),
        ({"debounce": {"delay": 5}, "countdown": 3}, "options.debounce"),
        ({"debounce": {"delay": 5}, "unique": {"period": 5}}, "options.debounce"),
        # Strict: a number in a string, or a boolean, is not read as a number (they were accepted).
        ({"unique": {"period": "60"}}, "options.unique.period"),
        ({"unique": {"period": True}}, "options.unique.period"),
        ({"debounce": {"delay": "5"}}, "options.debounce.delay"),
        ({"unique": {"period": 60, "until": "forever"}}, "options.unique.until"),
    ]
    for options, field in cases:
        r = client.post(
            "/api/v1/tasks/add", json={"args": {"x": 1, "y": 1}, "options": options}, headers=auth
        )
        assert r.status_code == 422, (options, r.get_json())
        assert r.get_json()["error"]["code"] == "invalid_arguments"
        assert field in _errors(r), (options, r.get_json())
    redis_ = app.extensions["tasklane"].redis
    assert redis_.llen("rq:queue:default") == 0 and redis_.zcard("rq:scheduled:default") == 0


def test_batch_keys_each_item_by_its_args_and_refuses_a_shared_key_or_debounce(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    redis_ = app.extensions["tasklane"].redis
    items = [{"args": {"x": 1, "y": 1}}, {"args": {"x": 2, "y": 2}}, {"args": {"x": 1, "y": 1}}]
    r = client.post("/api/v1/tasks/add/batch", json={"items": items, "options": {"unique": {"period": 60}}},
                    headers=auth)  # fmt: skip
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["deduplicated"] == [False, False, True]
    assert body["job_ids"][0] == body["job_ids"][2] != body["job_ids"][1]
    assert redis_.llen("rq:queue:default") == 2
    for options, field in (
        ({"unique": {"period": 60, "key": "one"}}, "options.unique"),
        ({"debounce": {"delay": 5}}, "options.debounce"),
    ):
        r = client.post("/api/v1/tasks/add/batch", json={"items": items, "options": options}, headers=auth)
        assert r.status_code == 422 and field in _errors(r), r.get_json()
    plain = client.post("/api/v1/tasks/add/batch", json={"items": items}, headers=auth).get_json()
    assert "deduplicated" not in plain and len(set(plain["job_ids"])) == 3


# --- debounce -------------------------------------------------------------------------------


def test_debounce_pushes_the_start_back_and_the_latest_args_win(
    app: Flask, client: FlaskClient, auth: dict[str, str], manual_clock: ManualClock
) -> None:
    """Each enqueue inside the window moves the one job's start to delay s after it and replaces
    its args; it runs once, with the last args; an enqueue after it started makes a new job."""
    redis_ = app.extensions["tasklane"].redis
    start = datetime.now(UTC).replace(microsecond=0)
    manual_clock.set(start)
    first = _post(client, auth, "add", {"x": 1, "y": 0}, debounce={"key": "reindex", "delay": 10})
    assert first["deduplicated"] is False and first["state"] == "PENDING"
    view = get_job(client, auth, first["job_id"])
    assert view["scheduled_for"] == (start + timedelta(seconds=10)).isoformat().replace("+00:00", "Z")
    manual_clock.advance(6)
    second = _post(client, auth, "add", {"x": 2, "y": 0}, debounce={"key": "reindex", "delay": 10})
    assert (second["job_id"], second["deduplicated"]) == (first["job_id"], True)
    view = get_job(client, auth, first["job_id"])
    assert view["scheduled_for"] == (start + timedelta(seconds=16)).isoformat().replace("+00:00", "Z")
    other_key = _post(client, auth, "add", {"x": 9, "y": 0}, debounce={"key": "other", "delay": 10})
    assert other_key["job_id"] != first["job_id"]
    other_queue = _post(client, auth, "add", {"x": 9, "y": 0}, debounce={"key": "reindex", "delay": 10},
                        queue="high")  # fmt: skip
    assert other_queue["job_id"] != first["job_id"] and redis_.zcard("rq:scheduled:high") == 1
    assert redis_.zcard("rq:scheduled:default") == 2
    queues = {q["name"]: q for q in client.get("/api/v1/queues", headers=auth).get_json()["queues"]}
    assert queues["default"]["scheduled"] == 2  # RQ's own registry: rq info and the dashboard count them

    process = SchedulerProcess(redis_)
    manual_clock.advance(9)  # 15 s: the first enqueue's window is over, not the second's
    process.tick()
    assert JsonQueue("default", connection=redis_).get_job_ids() == []
    manual_clock.advance(1)
    process.tick()
    assert first["job_id"] in JsonQueue("default", connection=redis_).get_job_ids()
    late = _post(client, auth, "add", {"x": 3, "y": 0}, debounce={"key": "reindex", "delay": 10})
    assert late["job_id"] != first["job_id"] and late["deduplicated"] is False  # queued: a new window
    _work(app)
    assert get_job(client, auth, first["job_id"])["result"] == 2  # the latest args, once
    assert redis_.llen("rq:queue:default") == 0


def test_a_debounced_job_is_left_alone_in_its_last_second(
    app: Flask, client: FlaskClient, auth: dict[str, str], manual_clock: ManualClock
) -> None:
    """Within DEBOUNCE_MARGIN of its start the scheduler may be moving the job: a new enqueue then
    makes a new job rather than rewriting args that may already be read."""
    manual_clock.set(datetime.now(UTC).replace(microsecond=0))
    first = _post(client, auth, "add", {"x": 1, "y": 0}, debounce={"key": "k", "delay": 5})
    manual_clock.advance(4.5)
    second = _post(client, auth, "add", {"x": 2, "y": 0}, debounce={"key": "k", "delay": 5})
    assert second["job_id"] != first["job_id"]
    assert get_job(client, auth, first["job_id"])["state"] == "PENDING"


def test_debounce_refuses_encrypted_args(tmp_path: Path, redis_url: str) -> None:
    app = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=base64.b64encode(bytes(32)).decode()))
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    body = {"args": {"x": 1, "y": 1}, "options": {"encrypt": True, "debounce": {"delay": 5}}}
    r = client.post("/api/v1/tasks/add", json=body, headers=auth)
    assert r.status_code == 422 and _errors(r) == ["options.debounce"], r.get_json()
    assert app.extensions["tasklane"].redis.zcard("rq:scheduled:default") == 0


# --- 16 concurrent enqueuers ----------------------------------------------------------------


def _at_once(count: int, redis_url: str, call: Any) -> list[Any]:
    """``count`` threads, each with its own Redis connection, released together; their answers."""
    barrier = threading.Barrier(count)
    out: list[Any] = [None] * count
    errors: list[BaseException] = []

    def go(n: int) -> None:
        connection = redis.Redis.from_url(redis_url)
        try:
            barrier.wait(10)
            out[n] = call(n, connection)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=go, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out


def test_16_concurrent_enqueuers_make_one_unique_job(app: Flask, redis_url: str) -> None:
    spec = REGISTRY.get("add")
    assert spec is not None
    options = EnqueueOptions.model_validate({"unique": {"period": 60, "key": "one"}})

    def call(n: int, connection: redis.Redis) -> tuple[str, bool]:
        job = dispatch_enqueue(spec, spec.validate({"x": n, "y": 0}), connection, options,
                               default_result_ttl=60, failure_ttl=60)  # fmt: skip
        return job.id, bool(getattr(job, "_tasklane_deduplicated", False))

    answers = _at_once(16, redis_url, call)
    assert len({job_id for job_id, _ in answers}) == 1, answers
    assert sorted(d for _, d in answers) == [False] + [True] * 15
    redis_ = app.extensions["tasklane"].redis
    assert redis_.llen("rq:queue:default") == 1
    assert len(list(redis_.scan_iter("rq:job:*"))) == 1


def test_16_concurrent_enqueuers_make_one_debounced_job_with_the_last_args(
    app: Flask, redis_url: str
) -> None:
    """16 threads, 5 enqueues each, all with the same key: one scheduled job, every answer names it;
    its args are those of the script that ran last (an enqueue after them all wins, too)."""
    spec = REGISTRY.get("add")
    assert spec is not None
    options = EnqueueOptions.model_validate({"debounce": {"key": "one", "delay": 30}})
    redis_ = app.extensions["tasklane"].redis

    def call(n: int, connection: redis.Redis) -> list[str]:
        ids = []
        for i in range(5):
            job = dispatch_enqueue(spec, spec.validate({"x": n * 10 + i, "y": 0}), connection, options,
                                   default_result_ttl=60, failure_ttl=60)  # fmt: skip
            ids.append(job.id)
        return ids

    answers = _at_once(16, redis_url, call)
    ids = {job_id for batch in answers for job_id in batch}
    assert len(ids) == 1, ids
    (job_id,) = ids
    assert [m.decode() for m in redis_.zrange("rq:scheduled:default", 0, -1)] == [job_id]
    assert len(list(redis_.scan_iter("rq:job:*"))) == 1
    kwargs = JsonJob.fetch(job_id, connection=redis_).kwargs
    assert (
        kwargs["x"] % 10 == 4
    )  # some thread's last call: no thread's earlier args outlived its own later ones
    last = dispatch_enqueue(spec, spec.validate({"x": 999, "y": 1}), redis_, options, default_result_ttl=60,
                            failure_ttl=60)  # fmt: skip
    assert last.id == job_id
    assert JsonJob.fetch(job_id, connection=redis_).kwargs == {"x": 999, "y": 1}


# --- task defaults, TASK_OVERRIDES and every other way in -----------------------------------


def test_task_defaults_and_task_overrides(tmp_path: Path, redis_url: str) -> None:
    """``@task(unique={"period": s})`` and ``@task(debounce={...})`` (and TASK_OVERRIDES' ``unique``,
    ``debounce``) apply when the call gives none; the catalogue shows the policy in force."""
    registry = TaskRegistry(None)

    @task(unique={"period": 3600}, registry=registry)
    def digest() -> None:
        """A digest, at most once an hour."""

    @task(debounce={"delay": 5, "key": "all"}, registry=registry)
    def reindex() -> None:
        """A reindex after a burst of edits."""

    spec, later = registry.get("digest"), registry.get("reindex")
    assert spec is not None and (spec.unique, spec.unique_period) == (True, 3600)
    assert spec.describe()["unique_period"] == 3600 and spec.describe()["unique"] is True
    assert later is not None and later.describe()["debounce"] == {"delay": 5.0, "key": "all"}
    for bad in ({"unique": {"period": 0}}, {"unique": {"every": 5}}, {"debounce": {"delay": 0}}):
        with pytest.raises(ValueError, match=r"unique|debounce"):
            task("bad_one", registry=registry, **bad)(lambda: None)  # type: ignore[arg-type]

    overrides = json.dumps({"add": {"unique": {"period": 60}}, "xsum": {"debounce": {"delay": 30}}})
    app = create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=overrides))
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    redis_ = app.extensions["tasklane"].redis
    first = _post(client, auth, "add", {"x": 1, "y": 1})
    again = _post(client, auth, "add", {"x": 1, "y": 1})
    assert again["job_id"] == first["job_id"] and again["deduplicated"] is True
    assert 0 < redis_.pttl(_unique_keys(redis_)[0]) <= 60_000
    own = _post(client, auth, "add", {"x": 1, "y": 1}, unique={"period": 5, "key": "mine"})
    assert own["job_id"] != first["job_id"]  # the call's own unique wins
    one = _post(client, auth, "xsum", {"numbers": [1, 2]})
    two = _post(client, auth, "xsum", {"numbers": [3, 4]})
    assert two["job_id"] == one["job_id"] and two["deduplicated"] is True
    assert JsonJob.fetch(one["job_id"], connection=redis_).kwargs == {"numbers": [3, 4]}
    apart = _post(client, auth, "xsum", {"numbers": [5]}, countdown=60)  # its own start: not debounced
    assert apart["job_id"] != one["job_id"]
    steps = [{"task": "xsum", "args": {"numbers": [n]}} for n in (1, 2)]
    flow = client.post("/api/v1/workflows", json={"type": "group", "steps": steps}, headers=auth)
    assert flow.status_code == 202, flow.get_json()
    assert len(set(flow.get_json()["job_ids"]) | {one["job_id"]}) == 3  # a workflow's steps: never debounced
    shown = {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}
    assert shown["add"]["overridden"]["unique"] == {"declared": False, "in_force": {"period": 60}}
    assert shown["xsum"]["debounce"] == {"delay": 30.0, "key": None}
    for bad in ({"add": {"unique": {"period": 0}}}, {"add": {"debounce": {"delay": "soon"}}}):
        with pytest.raises(Exception, match=r"unique|debounce"):
            create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps(bad)))


def test_apply_async_the_canvas_the_http_client_and_the_cli(app: Flask, auth: dict[str, str]) -> None:
    from app.client import Client
    from app.tasks import add

    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        first = add.apply_async((1, 2), unique={"period": 60})
        again = add.apply_async((1, 2), unique={"period": 60})
        by_sig = Signature(add, (1, 2)).set(unique={"period": 60}).apply_async()
        debounced = Signature(add, (1, 2)).set(debounce={"delay": 30, "key": "s"}).apply_async()
        debounced_again = add.apply_async((5, 5), debounce={"delay": 30, "key": "s"})
        with pytest.raises(ValueError, match="unique"):
            add.apply_async((1, 2), unique={"period": 0})
    assert (first.deduplicated, again.deduplicated, by_sig.deduplicated) == (False, True, True)
    assert first.id == again.id == by_sig.id
    assert debounced_again.id == debounced.id and debounced_again.deduplicated
    assert JsonJob.fetch(debounced.id, connection=redis_).kwargs == {"x": 5, "y": 5}

    client = Client("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    assert client.enqueue("add", {"x": 1, "y": 2}, unique={"period": 60}) == first.id
    assert client.enqueue("add", {"x": 7, "y": 7}, debounce={"delay": 30, "key": "s"}) == debounced.id

    runner = app.test_cli_runner()
    printed = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--unique-period", "60"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.strip() == first.id and "deduplicated" in printed.stderr
    keyed = runner.invoke(
        args=["tasks", "enqueue", "add", "x=3", "y=3", "--debounce", "30", "--debounce-key", "s"]
    )
    assert keyed.stdout.strip() == debounced.id
    refused = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--debounce", "0.5"])
    assert refused.exit_code != 0 and "debounce" in refused.output
    lone = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--unique-key", "k"])
    assert lone.exit_code != 0 and "--unique-period" in lone.output


def test_the_openapi_document_declares_them(client: FlaskClient) -> None:
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    options = schemas["EnqueueOptions"]["properties"]
    assert {"unique", "debounce"} <= options.keys()
    assert "unique" in schemas["BatchOptions"]["properties"]
    assert schemas["Enqueued"]["properties"]["deduplicated"]["type"] == "boolean"
    text = json.dumps(schemas)
    assert '"period"' in text and '"delay"' in text


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_unique_key_outlives_a_killed_worker_until_its_job_ends(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A worker killed with SIGKILL while its job holds a unique key: the job is not over, so the
    key still answers with it; the lease sweep puts it back, another worker runs it to its end,
    and then the key is gone: the next enqueue makes a new job."""
    marker = tmp_path / "ran"
    args = {"path": str(marker), "seconds": 1.5, "steps": 3}
    victim = start_worker(start, rconn, "default")
    job_id = _post(client, auth, "slow_touch", args, unique={"period": 600})["job_id"]
    wait_state(client, auth, job_id, {"STARTED", "PROGRESS"}, 15)
    horses = wait_for(lambda: children(victim.pid), 5, message="the work horse")
    victim.kill()
    victim.wait(5)
    wait_for(lambda: not pid_alive(horses[0]), 5, message="the orphaned work horse to die with its worker")

    held = _post(client, auth, "slow_touch", args, unique={"period": 600})
    assert (held["job_id"], held["deduplicated"]) == (job_id, True)
    far = datetime.now(UTC).timestamp() + 3600  # as the sweep does once the run's lease has lapsed
    assert rescue_abandoned(JsonQueue("default", connection=rconn), timestamp=far) == 1
    assert _post(client, auth, "slow_touch", args, unique={"period": 600})["job_id"] == job_id
    start_worker(start, rconn, "default")
    assert wait_state(client, auth, job_id, FINAL, 30)["state"] == "SUCCESS"
    assert _unique_keys(rconn) == []
    fresh = _post(client, auth, "slow_touch", args, unique={"period": 600})
    assert fresh["job_id"] != job_id and fresh["deduplicated"] is False


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_unique_key_goes_when_a_job_that_kills_its_workers_fails_for_good(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A job whose every run kills its process holds its key through each rescue; once it fails for
    good (WorkerLostError) the key is gone. (Its second run waits on a file while the duplicate is
    posted: the four runs take milliseconds, and a post after them would find the key gone.)"""
    start_worker(start, rconn, "default")
    runs = tmp_path / "runs"
    args = {"path": str(runs)}
    hold = tmp_path / "runs.hold"
    hold.touch()
    job_id = _post(client, auth, "always_die", args, unique={"period": 600})["job_id"]
    wait_for(lambda: runs.exists() and len(runs.read_text().splitlines()) == 2, 15,
             message="the run after the first rescue")  # fmt: skip
    held = _post(client, auth, "always_die", args, unique={"period": 600})
    assert (held["job_id"], held["deduplicated"]) == (job_id, True)
    hold.unlink()
    done = wait_state(client, auth, job_id, FINAL, 60)
    assert (done["state"], done["error"]["type"]) == ("FAILURE", "WorkerLostError"), done
    assert _unique_keys(rconn) == []
    assert _post(client, auth, "always_die", args, unique={"period": 600})["deduplicated"] is False


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_debounced_job_survives_a_redis_kill_and_runs_once(
    tmp_path: Path, manual_clock: ManualClock
) -> None:
    """Redis with its append-only file killed with SIGKILL and started again between enqueues of
    one debounce key: the job, its start and its key are still there; a later enqueue still joins
    it; it runs once, with the latest args."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        manual_clock.set(datetime.now(UTC).replace(microsecond=0))
        app = create_app(make_env(tmp_path, server.url))
        client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        first = _post(client, auth, "add", {"x": 1, "y": 1}, debounce={"key": "k", "delay": 10})
        manual_clock.advance(3)
        assert _post(client, auth, "add", {"x": 2, "y": 1}, debounce={"key": "k", "delay": 10})[
            "deduplicated"
        ]
        server.kill()
        server.start()
        app = create_app(make_env(tmp_path, server.url))
        client = app.test_client()
        redis_ = app.extensions["tasklane"].redis
        assert get_job(client, auth, first["job_id"])["state"] == "PENDING"
        manual_clock.advance(3)
        third = _post(client, auth, "add", {"x": 3, "y": 1}, debounce={"key": "k", "delay": 10})
        assert (third["job_id"], third["deduplicated"]) == (first["job_id"], True)
        process = SchedulerProcess(redis_)
        manual_clock.advance(9)  # 15 s: not yet (the last enqueue was at 6 s)
        process.tick()
        assert redis_.llen("rq:queue:default") == 0
        manual_clock.advance(1)
        process.tick()
        _work(app)
        assert get_job(client, auth, first["job_id"])["result"] == 4
        assert redis_.zcard("rq:scheduled:default") == 0 and redis_.llen("rq:queue:default") == 0
        ours = [k for k in redis_.scan_iter("rq:job:*") if not k.startswith(b"rq:job:periodic-")]
        assert ours == [JsonJob.key_for(first["job_id"]).encode()]  # one job, run once
    finally:
        server.stop()


# --- cost -----------------------------------------------------------------------------------


def _commands(redis_: redis.Redis, call: Any) -> dict[str, int]:
    """The Redis commands ``call`` made (INFO commandstats; a Lua script's own commands count too)."""

    def calls() -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in redis_.info("commandstats").items()}

    before = calls()
    call()
    after = calls()
    made = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    # Not the looks themselves, nor a new pooled connection's greeting.
    return {k: n for k, n in made.items() if k not in ("info", "hello", "client", "ping")}


def test_the_redis_cost_per_enqueue(app: Flask) -> None:
    """What docs/FLOW_CONTROL.md's table says: unique adds WATCH, GET and SET to the plain enqueue's
    transaction; a deduplicated call reads the holder and writes nothing; debounce is one EVALSHA
    (a repeat adds the read of the job it returns). The plain path is unchanged (no extra command)."""
    redis_ = app.extensions["tasklane"].redis
    spec = REGISTRY.get("add")
    assert spec is not None

    def run(options: dict[str, Any], x: int = 1) -> Any:
        opts = EnqueueOptions.model_validate(options)
        return lambda: dispatch_enqueue(spec, spec.validate({"x": x, "y": 0}), redis_, opts,
                                        default_result_ttl=60, failure_ttl=60)  # fmt: skip

    run({"debounce": {"delay": 60, "key": "warm"}})()  # the script loaded once
    plain = _commands(redis_, run({}))
    assert plain == {"multi": 1, "hset": 2, "sadd": 1, "rpush": 2, "ltrim": 1, "exec": 1}, plain
    unique = _commands(redis_, run({"unique": {"period": 60}}))
    assert unique == {**plain, "watch": 1, "get": 1, "set": 1}, unique
    again = _commands(redis_, run({"unique": {"period": 60}}))
    assert set(again) == {"watch", "get", "hgetall", "hget", "unwatch"} and sum(again.values()) == 5, again
    fresh = _commands(redis_, run({"debounce": {"delay": 60, "key": "k"}}))
    assert fresh == {"evalsha": 1, "get": 1, "hset": 1, "zadd": 1, "sadd": 1, "set": 1}, fresh
    repeat = _commands(redis_, run({"debounce": {"delay": 60, "key": "k"}}, x=2))
    assert repeat == {"evalsha": 1, "get": 1, "zscore": 1, "exists": 1, "zadd": 1, "hset": 1, "set": 1,
                      "hgetall": 1}, repeat  # fmt: skip
