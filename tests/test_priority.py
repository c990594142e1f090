"""``priority`` (0 first .. 9 last) and ``group`` (round robin over groups) inside a queue: the
order of starts, the counts RQ and the API show, a pause, and the faults (a worker killed with
kill -9 mid-job of a group, a Redis restart), on every way in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import redis
import rq
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.catalogue.registry import TaskRegistry, task
from app.core import queues as queue_store
from app.core.queues import JsonJob, JsonQueue, lane_queue_name, make_lane, repair_lanes
from app.foundation import keys
from app.foundation.clock import ManualClock
from app.foundation.meta import Meta
from app.processes import maintenance
from app.processes.workers import JsonInlineWorker
from tests.conftest import TOKEN, make_env
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


def _takes(redis_: Any, queue: str = "default", limit: int | None = None) -> list[str]:
    """Job ids in the order the dequeue hands them out (moved to the intermediate list)."""
    key = JsonQueue.redis_queue_namespace_prefix + queue
    taken: list[str] = []
    while limit is None or len(taken) < limit:
        found = queue_store._move_first_with_data(redis_, [key])
        if found is None:
            break
        assert found[0] == key  # always answered (and parked) under the queue the job was enqueued on
        taken.append(found[1])
    return taken


def _push(queue: JsonQueue, job_id: str, priority: int | None = None, group: str | None = None) -> None:
    queue.push_job_id(job_id, lane=make_lane(priority, group))


def _queues(client: FlaskClient, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in client.get("/api/v1/queues", headers=auth).get_json()["queues"]}


def redis_url_of(redis_: Any) -> str:
    kwargs = redis_.connection_pool.connection_kwargs
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _work(app: Flask, queue: str = "default") -> None:
    redis_ = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue(queue, connection=redis_)], connection=redis_).work(burst=True)


# --- the order of the dequeue (unit: fakeredis runs the same Lua) -------------------------------


def test_lower_priority_numbers_start_first_and_equals_in_fifo_order() -> None:
    r = fakeredis.FakeRedis()
    q = JsonQueue("default", connection=r)
    plan = [("a9", 9), ("b5", None), ("c0", 0), ("d3", 3), ("e0", 0), ("f5", 5), ("g9", 9), ("h3", 3)]
    for job_id, priority in plan:
        _push(q, job_id, priority)
    assert _takes(r) == ["c0", "e0", "d3", "h3", "b5", "f5", "a9", "g9"]
    assert r.keys("tasklane:lanes:*") == [] and r.smembers("rq:queues") == set()  # nothing left over


def test_groups_take_turns_and_ungrouped_jobs_take_a_turn_too() -> None:
    r = fakeredis.FakeRedis()
    q = JsonQueue("default", connection=r)
    for n in range(4):
        _push(q, f"A{n}", group="A")
    for n in range(2):
        _push(q, f"B{n}", group="B")
    _push(q, "plain0")
    _push(q, "plain1")
    taken = _takes(r)
    assert sorted(taken) == sorted(["A0", "A1", "A2", "A3", "B0", "B1", "plain0", "plain1"])
    first_round = set(taken[:3])
    assert first_round == {"A0", "B0", "plain0"}, taken  # one of each, whatever the ring's order
    assert set(taken[3:6]) == {"A1", "B1", "plain1"}, taken
    assert taken[6:] == ["A2", "A3"]
    for member in ("A", "B", ""):  # each FIFO inside itself
        own = [t for t in taken if t.startswith(member or "plain")]
        assert own == sorted(own)
    assert not r.exists(keys.ring("default", 5)) and not r.exists(keys.lanes("default"))


def test_a_group_pushed_again_while_on_the_ring_is_on_it_once() -> None:
    r = fakeredis.FakeRedis()
    q = JsonQueue("default", connection=r)
    _push(q, "A0", group="A")
    _push(q, "B0", group="B")
    assert _takes(r, limit=1) in (["A0"], ["B0"])
    for n in range(1, 4):
        _push(q, f"A{n}", group="A")
    ring = [m.decode() for m in r.lrange(keys.ring("default", 5), 0, -1)]
    assert sorted(ring) == sorted(set(ring)), ring
    assert len(_takes(r)) == 4


def test_priority_comes_before_groups_and_groups_turn_inside_their_priority() -> None:
    r = fakeredis.FakeRedis()
    q = JsonQueue("default", connection=r)
    for n in range(3):
        _push(q, f"A{n}", priority=7, group="A")
    _push(q, "B0", priority=7, group="B")
    _push(q, "urgentA", priority=1, group="A")
    _push(q, "plain")
    taken = _takes(r)
    assert taken[:2] == ["urgentA", "plain"]
    assert set(taken[2:4]) == {"A0", "B0"} and taken[4:] == ["A1", "A2"]


def test_round_robin_lets_five_jobs_of_b_past_ten_thousand_of_a(rconn: redis.Redis) -> None:
    """One tenant's 10,000 jobs do not delay another's 5: B's start within the first 10 takes (on the
    session's Redis: fakeredis takes seconds to push 10,000)."""
    r = rconn
    q = JsonQueue("default", connection=r)
    with r.pipeline() as pipe:
        for n in range(10_000):
            q.push_job_id(f"A{n}", pipeline=pipe, lane=make_lane(None, "A"))
        pipe.execute()
    for n in range(5):
        _push(q, f"B{n}", group="B")
    taken = _takes(r, limit=12)
    positions = [taken.index(f"B{n}") for n in range(5)]
    assert max(positions) < 10, taken
    assert queue_store.waiting(r, "default")["total"] == 10_005 - 12


def test_lane_names_read_well_and_parse_back() -> None:
    assert lane_queue_name("default", make_lane(0, None)) == "default:p0"  # type: ignore[arg-type]
    assert lane_queue_name("default", make_lane(None, "acme")) == "default:g:acme"  # type: ignore[arg-type]
    assert lane_queue_name("low", make_lane(2, "acme")) == "low:p2:g:acme"  # type: ignore[arg-type]
    assert make_lane(5, None) is None and make_lane(None, None) is None
    for name in ("default:p0", "default:g:acme", "default:p2:g:a.b-c"):
        lane = queue_store.parse_lane("default", name)
        assert lane is not None and lane_queue_name("default", lane) == name
    assert queue_store.parse_lane("default", "default:intermediate") is None
    assert queue_store.parse_lane("default", "high:p0") is None


# --- every way in, on the session's real Redis ---------------------------------------------------


def test_the_api_places_jobs_by_priority_and_group_and_a_worker_runs_them_so(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """POST options priority and group: the job view shows them, the queues API counts them, and an
    inline worker starts them in that order (priorities first, groups in turn, FIFO among equals)."""
    redis_ = app.extensions["tasklane"].redis
    late = enqueue(client, auth, "add", {"x": 9, "y": 0}, priority=9)
    a = [enqueue(client, auth, "add", {"x": n, "y": 0}, group="A") for n in range(3)]
    b = enqueue(client, auth, "add", {"x": 10, "y": 0}, group="B")
    plain = enqueue(client, auth, "add", {"x": 20, "y": 0})
    first = enqueue(client, auth, "add", {"x": 0, "y": 0}, priority=0)
    view = get_job(client, auth, a[0])
    assert (view["priority"], view["group"]) == (5, "A")
    assert (get_job(client, auth, first)["priority"], get_job(client, auth, plain)["group"]) == (0, None)
    shown = _queues(client, auth)["default"]
    assert shown["waiting"] == 7 and shown["waiting_by_priority"] == {"0": 1, "5": 5, "9": 1}
    assert shown["waiting_groups"] == 2
    assert JsonJob.fetch(plain, connection=redis_).meta.get(Meta.PRIORITY) is None  # plain: as before
    _work(app)
    views = {j: get_job(client, auth, j) for j in [late, *a, b, plain, first]}
    assert all(v["state"] == "SUCCESS" for v in views.values()), views
    order = sorted(views, key=lambda j: views[j]["started_at"])
    assert order[0] == first and order[-1] == late
    middle = order[1:-1]
    assert [j for j in middle if j in a] == a  # FIFO inside a group
    assert set(middle[:3]) == {a[0], b, plain}  # one turn each before A's second
    assert _queues(client, auth)["default"]["waiting"] == 0
    assert not redis_.keys("tasklane:lanes:*") and not redis_.keys("tasklane:ring:*")


@pytest.mark.parametrize(
    "options, field",
    [
        ({"priority": 10}, "options.priority"),
        ({"priority": -1}, "options.priority"),
        ({"priority": "1"}, "options.priority"),
        ({"priority": True}, "options.priority"),
        ({"priority": 1.5}, "options.priority"),
        ({"group": ""}, "options.group"),
        ({"group": "a b"}, "options.group"),
        ({"group": "a:b"}, "options.group"),
        ({"group": 7}, "options.group"),
        ({"group": "x" * 65}, "options.group"),
    ],
)
def test_bad_values_are_422_naming_the_field_and_enqueue_nothing(
    app: Flask, client: FlaskClient, auth: dict[str, str], options: dict[str, Any], field: str
) -> None:
    redis_ = app.extensions["tasklane"].redis
    one = client.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 1}, "options": options}, headers=auth)
    assert one.status_code == 422, one.get_json()
    assert field in {d["field"] for d in one.get_json()["error"]["details"]}
    body = {"items": [{"args": {"x": 1, "y": 1}}], "options": options}
    many = client.post("/api/v1/tasks/add/batch", json=body, headers=auth)
    assert many.status_code == 422, many.get_json()
    assert field in {d["field"] for d in many.get_json()["error"]["details"]}
    assert not redis_.keys("rq:job:*") and not redis_.keys("rq:queue:*")


def test_batch_takes_them_once_and_rq_counts_every_job_in_the_lane_rows(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A batch with priority and group; ``rq info``'s rows (RQ's queues, as rq-dashboard lists them)
    count every waiting job; the CLI's ``queues show`` the total; a revoke takes a job off its lane."""
    redis_ = app.extensions["tasklane"].redis
    items = [{"args": {"x": n, "y": 1}} for n in range(4)]
    body = {"items": items, "options": {"priority": 2, "group": "acme"}}
    answer = client.post("/api/v1/tasks/add/batch", json=body, headers=auth)
    assert answer.status_code == 202, answer.get_json()
    ids = answer.get_json()["job_ids"]
    enqueue(client, auth, "add", {"x": 1, "y": 1}, priority=7)
    enqueue(client, auth, "add", {"x": 1, "y": 1})
    counts = {q.name: q.count for q in rq.Queue.all(connection=redis_)}
    assert counts == {"default": 1, "default:p2:g:acme": 4, "default:p7": 1}, counts
    info = subprocess.run(
        [str(Path(sys.executable).with_name("rq")), "info", "--url", redis_url_of(redis_), "--only-queues"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "default:p2:g:acme" in info.stdout and "6 jobs" in info.stdout, info.stdout
    shown = app.test_cli_runner().invoke(args=["queues", "show"])
    assert shown.output.splitlines()[2].split()[:2] == ["default", "6"], shown.output

    assert client.delete(f"/api/v1/jobs/{ids[1]}", headers=auth).status_code in (200, 202)
    assert redis_.lrange("rq:queue:default:p2:g:acme", 0, -1) == [j.encode() for j in (ids[0], *ids[2:])]
    assert _queues(client, auth)["default"]["waiting"] == 5
    exposed = client.get("/metrics", headers=auth).get_data(as_text=True)
    assert 'tasklane_queue_jobs{queue="default",state="waiting"} 5.0' in exposed
    listed = client.get("/api/v1/jobs?state=PENDING&queue=default", headers=auth).get_json()["jobs"]
    assert {j["job_id"] for j in listed} >= {ids[0], *ids[2:]}  # the job listing reads the lanes too
    _work(app)
    assert [get_job(client, auth, j)["result"] for j in (ids[0], *ids[2:])] == [1, 3, 4]
    assert {q.name for q in rq.Queue.all(connection=redis_)} == {"default"}  # lane rows leave when empty


def test_apply_async_the_canvas_the_http_client_and_the_cli(app: Flask, auth: dict[str, str]) -> None:
    from app.calling.canvas import Signature
    from app.client import Client
    from app.tasks import add

    redis_ = app.extensions["tasklane"].redis

    def placed(job_id: str) -> tuple[Any, Any]:
        meta = JsonJob.fetch(job_id, connection=redis_).meta
        return meta.get(Meta.PRIORITY), meta.get(Meta.GROUP)

    with app.app_context():
        by_call = add.apply_async((1, 2), priority=1, group="t1")
        by_sig = Signature(add, (1, 2)).set(priority=8).apply_async()
        with pytest.raises(Exception, match="priority"):
            add.apply_async((1, 2), priority=12)
    assert placed(by_call.id) == (1, "t1") and placed(by_sig.id) == (8, None)
    client = Client("http://tasklane.test", TOKEN, transport=httpx.WSGITransport(app=app))
    assert placed(client.enqueue("add", {"x": 1, "y": 2}, priority=3, group="t2")) == (3, "t2")
    runner = app.test_cli_runner()
    printed = runner.invoke(
        args=["tasks", "enqueue", "add", "x=1", "y=2", "--priority", "0", "--group", "cli"]
    )
    assert printed.exit_code == 0, printed.output
    assert placed(printed.output.strip()) == (0, "cli")
    refused = runner.invoke(args=["tasks", "enqueue", "add", "x=1", "y=2", "--priority", "10"])
    assert refused.exit_code != 0 and "priority" in refused.output
    assert _queues(app.test_client(), auth)["default"]["waiting_by_priority"] == {
        "0": 1,
        "1": 1,
        "3": 1,
        "8": 1,
    }


def test_the_tasks_default_from_its_declaration_and_task_overrides(tmp_path: Path, redis_url: str) -> None:
    registry = TaskRegistry(None)

    @task(priority=1, group="nightly", registry=registry)
    def digest() -> None:
        """A digest."""

    spec = registry.get("digest")
    assert spec is not None and (spec.priority, spec.group) == (1, "nightly")
    assert spec.describe()["priority"] == 1 and spec.describe()["group"] == "nightly"
    with pytest.raises(ValueError, match="priority"):
        task("bad_priority", priority=10, registry=registry)(lambda: None)
    with pytest.raises(ValueError, match="group"):
        task("bad_group", group="a b", registry=registry)(lambda: None)

    app = create_app(
        make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"add": {"priority": 2, "group": "ops"}}))
    )
    client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    by_default = get_job(client, auth, enqueue(client, auth, "add", {"x": 1, "y": 1}))
    assert (by_default["priority"], by_default["group"]) == (2, "ops")
    own = get_job(client, auth, enqueue(client, auth, "add", {"x": 1, "y": 1}, priority=6, group="mine"))
    assert (own["priority"], own["group"]) == (6, "mine")
    shown = {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}["add"]
    assert shown["priority"] == 2 and shown["overridden"]["group"] == {"declared": None, "in_force": "ops"}
    for bad in ({"priority": 10}, {"group": "a:b"}):
        with pytest.raises(Exception, match=next(iter(bad))):
            create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps({"add": bad})))


def test_the_openapi_document_declares_them(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    for name in ("EnqueueOptions", "BatchOptions"):
        props = schemas[name]["properties"]
        priority = props["priority"]["anyOf"][0]
        assert (priority["type"], priority["minimum"], priority["maximum"]) == ("integer", 0, 9)
        assert props["group"]["anyOf"][0]["pattern"]


def test_a_pause_holds_every_priority_and_group_of_the_queue(app: Flask, auth: dict[str, str]) -> None:
    redis_ = app.extensions["tasklane"].redis
    client = app.test_client()
    assert client.post("/api/v1/queues/default/pause", headers=auth).status_code == 200
    held = [
        enqueue(client, auth, "add", {"x": 1, "y": 1}, priority=0),
        enqueue(client, auth, "add", {"x": 2, "y": 1}, group="A"),
        enqueue(client, auth, "add", {"x": 3, "y": 1}, priority=9, group="B"),
    ]
    assert _takes(redis_) == []
    _work(app)
    assert [get_job(client, auth, j)["state"] for j in held] == ["PENDING"] * 3
    assert _queues(client, auth)["default"]["waiting"] == 3
    assert client.post("/api/v1/queues/default/resume", headers=auth).status_code == 200
    _work(app)
    assert [get_job(client, auth, j)["result"] for j in held] == [2, 3, 4]


def test_a_job_put_back_or_expired_keeps_its_lane_right(
    app: Flask, client: FlaskClient, auth: dict[str, str], manual_clock: ManualClock
) -> None:
    """A job dequeued by a worker that died before starting it goes back to the head of its group;
    a waiting job of a lane that expires leaves that lane."""
    from app.core import outcomes

    redis_ = app.extensions["tasklane"].redis
    a = [enqueue(client, auth, "add", {"x": n, "y": 0}, group="A") for n in range(2)]
    taken = _takes(redis_, limit=1)
    assert taken == [a[0]]
    assert maintenance.rescue_intermediate(JsonQueue("default", connection=redis_), older_than=0) == 0
    assert maintenance.rescue_intermediate(JsonQueue("default", connection=redis_), older_than=0) == 1
    assert redis_.lrange("rq:queue:default:g:A", 0, -1) == [a[0].encode(), a[1].encode()]
    assert _takes(redis_, limit=1) == [a[0]]
    assert outcomes.put_back(JsonQueue("default", connection=redis_), a[0])  # the pooled hand-back's call
    assert redis_.lrange("rq:queue:default:g:A", 0, 0) == [a[0].encode()]
    doomed = enqueue(client, auth, "add", {"x": 1, "y": 1}, priority=3, expires=60)
    assert redis_.llen("rq:queue:default:p3") == 1
    manual_clock.advance(61)
    assert outcomes.expire_due(redis_) == 1
    assert get_job(client, auth, doomed)["error"]["type"] == "expired"
    assert redis_.llen("rq:queue:default:p3") == 0
    _work(app)
    assert [get_job(client, auth, j)["result"] for j in a] == [0, 1]


def test_the_sweep_repairs_a_group_missing_from_its_ring(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """What a fault could leave (a group list with jobs whose group is on no ring, a ring member
    missing from its ring): the maintenance sweep puts it right and the jobs run."""
    redis_ = app.extensions["tasklane"].redis
    jobs = [enqueue(client, auth, "add", {"x": n, "y": 0}, group=g) for n, g in enumerate("ABA")]
    assert _takes(redis_, limit=1)  # the ring is built
    redis_.delete(keys.lanes("default"), keys.ring("default", 5))  # as if those writes were lost
    assert _takes(redis_) == []  # stuck: no lane says where to look
    assert repair_lanes(redis_, "default") >= 2
    assert len(_takes(redis_)) == 2
    assert repair_lanes(redis_, "default") == 0
    assert jobs


def _script_commands(redis_: redis.Redis) -> dict[str, int]:
    stats = redis_.info("commandstats")
    return {k[len("cmdstat_") :]: v["calls"] for k, v in stats.items() if k != "cmdstat_info"}


def test_the_plain_path_takes_after_one_exists_whatever_the_number_of_queues(rconn: redis.Redis) -> None:
    """No queue paused and none with lanes: a dequeue over three queues runs one EXISTS and the
    moves (no SISMEMBER, no ZRANGE per queue); a lane push makes the queue laned, and once its
    lanes are drained the dequeue finds it plain again (the laned set is left)."""
    rconn.flushdb()
    names = ["high", "default", "low"]
    queue_keys = [JsonQueue.redis_queue_namespace_prefix + n for n in names]
    JsonQueue("low", connection=rconn).push_job_id("plain-1")
    rconn.config_resetstat()
    found = queue_store._move_first_with_data(rconn, queue_keys)
    assert found is not None and found[1] == "plain-1"
    ran = _script_commands(rconn)
    assert ran.get("exists") == 1 and ran.get("lmove") == 3
    assert "sismember" not in ran and "zrange" not in ran, ran

    low = JsonQueue("low", connection=rconn)
    _push(low, "urgent", priority=0)
    _push(low, "plain-2")
    assert rconn.sismember(keys.laned_queues(), "low")
    assert _takes(rconn, "low") == ["urgent", "plain-2"]
    assert not rconn.exists(keys.laned_queues())  # the lanes drained: the plain path again
    _push(low, "plain-3")
    rconn.config_resetstat()
    assert _takes(rconn, "low") == ["plain-3"]
    assert "zrange" not in _script_commands(rconn)


def test_the_sweep_puts_back_a_laned_queue_the_set_lost(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A queue with lanes missing from the set of laned queues (a fault, or lanes written by an
    older version): its lane jobs wait until the sweep's repair names it again, then run first."""
    redis_ = app.extensions["tasklane"].redis
    enqueue(client, auth, "add", {"x": 1, "y": 0})
    urgent = enqueue(client, auth, "add", {"x": 2, "y": 0}, priority=0)
    redis_.delete(keys.laned_queues())
    assert repair_lanes(redis_, "default") >= 1
    assert redis_.sismember(keys.laned_queues(), "default")
    assert _takes(redis_, limit=1) == [urgent]
    assert repair_lanes(redis_, "default") == 0


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_worker_killed_mid_job_of_a_group_has_it_rescued_into_its_group(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """kill -9 of a worker running a job of group A: the rescue (the supervisor's path, which the
    sweep takes once the run's lease lapses) puts it back at the head of A's list, the ring holds
    each group once, and a new worker runs everything, the rescued job first of A's."""
    from app.core import outcomes

    victim = start_worker(start, rconn, "default", "--mode", "fork")
    marker = tmp_path / "ran"
    slow = enqueue(client, auth, "slow_touch", {"path": str(marker), "seconds": 4}, group="A")
    wait_state(client, auth, slow, {"STARTED", "PROGRESS"}, 15)
    horses = wait_for(lambda: children(victim.pid), 5, message="the work horse")
    more_a = [enqueue(client, auth, "add", {"x": n, "y": 0}, group="A") for n in range(2)]
    b = enqueue(client, auth, "add", {"x": 10, "y": 0}, group="B")
    victim.kill()
    victim.wait(5)
    wait_for(lambda: not any(pid_alive(h) for h in horses), 5, message="the work horse to die with it")

    assert outcomes.rescue(rconn, slow) == "requeued"
    assert rconn.lrange("rq:queue:default:g:A", 0, -1) == [j.encode() for j in (slow, *more_a)]
    assert _queues(client, auth)["default"]["waiting"] == 4

    assert start("worker.py", "--burst", "--mode", "fork").wait(60) == 0
    views = {j: get_job(client, auth, j) for j in (slow, *more_a, b)}
    assert all(v["state"] == "SUCCESS" for v in views.values()), views
    assert [a["type"] for a in views[slow]["attempts"]] == ["WorkerLostError"]
    a_order = sorted((slow, *more_a), key=lambda j: views[j]["started_at"])
    assert a_order == [slow, *more_a]
    assert views[b]["started_at"] < views[more_a[1]]["started_at"]  # B took its turn before A's last
    assert not rconn.keys("tasklane:lanes:*") and not rconn.keys("tasklane:ring:*")
    assert {q.name for q in rq.Queue.all(connection=rconn)} == {"default"}
    assert repair_lanes(rconn, "default") == 0


def test_lanes_outlive_a_redis_kill(tmp_path: Path) -> None:
    """Redis with its append-only file killed with SIGKILL mid-way through a queue with priorities
    and groups, and started again: every job still waits where it did, counted, and comes out in
    the same order."""
    from tests.servers import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        client, auth = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        late = enqueue(client, auth, "add", {"x": 9, "y": 0}, priority=9)
        a = [enqueue(client, auth, "add", {"x": n, "y": 0}, group="A") for n in range(3)]
        b = [enqueue(client, auth, "add", {"x": n, "y": 0}, group="B") for n in range(2)]
        first = enqueue(client, auth, "add", {"x": 0, "y": 0}, priority=0)
        taken = _takes(app.extensions["tasklane"].redis, limit=2)  # the ring is built, one turn taken
        assert taken[0] == first and taken[1] in (a[0], b[0])
        server.kill()
        server.start()
        app = create_app(make_env(tmp_path, server.url))
        client = app.test_client()
        redis_ = app.extensions["tasklane"].redis
        assert _queues(client, auth)["default"]["waiting"] == 5
        rest = _takes(redis_)
        other = b[0] if taken[1] == a[0] else a[0]
        assert rest[0] == other and rest[-1] == late, rest
        assert [j for j in rest if j in a] == [j for j in a if j not in taken]
        assert [j for j in rest if j in b] == [j for j in b if j not in taken]
        assert repair_lanes(redis_, "default") == 0
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_retry_coming_due_goes_back_to_its_group_and_a_pooled_worker_takes_it(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """A pooled worker and the scheduler: a job of a group that fails waits for its retry; when it
    comes due (the scheduler moves it through RQ's enqueue) it lands in its group's list, not the
    plain one; after a resume the worker runs it to SUCCESS and every lane is left clean."""
    from tests.servers import start_scheduler

    start_worker(start, rconn, "default", "--mode", "pooled")
    start_scheduler(start, rconn)
    job_id = enqueue(
        client, auth, "flaky", {"path": str(tmp_path / "n"), "failures": 1}, group="R", priority=4
    )
    wait_state(client, auth, job_id, {"RETRY"}, 15, interval=0.02)
    assert client.post("/api/v1/queues/default/pause", headers=auth).status_code == 200
    wait_for(lambda: rconn.lrange("rq:queue:default:p4:g:R", 0, -1) == [job_id.encode()], 15,
             message="the retry in its group's list")  # fmt: skip
    assert rconn.llen("rq:queue:default") == 0
    assert _queues(client, auth)["default"]["waiting_by_priority"] == {"4": 1}
    assert client.post("/api/v1/queues/default/resume", headers=auth).status_code == 200
    done = wait_state(client, auth, job_id, FINAL)
    assert (done["state"], done["result"], done["group"], done["priority"]) == ("SUCCESS", 2, "R", 4)
    enqueue(client, auth, "add", {"x": 1, "y": 1})  # a plain job after: its dequeue tidies the lanes
    wait_for(lambda: not rconn.keys("tasklane:ring:*") and not rconn.keys("tasklane:lanes:*"), 10,
             message="the lanes left clean")  # fmt: skip


def test_the_rq_internals_the_lanes_rely_on_are_still_there() -> None:
    """JsonQueue._enqueue_async_job and JsonJob._remove_from_registries wrap RQ's own (below its
    public API): every RQ enqueue pushes through push_job_id, and a cancel or delete removes the job
    from its queue there. Pinned, so an RQ upgrade that moves them fails here, not in production."""
    import inspect

    from rq.job import Job
    from rq.queue import Queue

    enqueue_params = list(inspect.signature(Queue._enqueue_async_job).parameters)
    assert enqueue_params == ["self", "job", "pipeline", "at_front", "unique"]
    assert "self.push_job_id(job.id, pipeline=pipe, at_front=at_front)" in inspect.getsource(
        Queue._enqueue_async_job
    )
    assert "self._enqueue_async_job(" in inspect.getsource(Queue._enqueue_job)
    remove_params = list(inspect.signature(Job._remove_from_registries).parameters)
    assert remove_params == ["self", "pipeline", "remove_from_queue"]
    assert "_remove_from_registries(" in inspect.getsource(Job.cancel)
    assert "_remove_from_registries(" in inspect.getsource(Job.delete)


def test_the_transactional_outbox_keeps_them(tmp_path: Path, redis_url: str, db_url: str) -> None:
    """``apply_async(..., session=)``: the row holds priority and group, and the job reaches its lane
    after the commit."""
    from sqlalchemy.orm import Session

    from app.tasks import add

    app = create_app(make_env(tmp_path, redis_url, DATABASE_URL=db_url))
    redis_ = app.extensions["tasklane"].redis
    with app.app_context(), Session(app.extensions["tasklane"].engine) as session:
        staged = add.apply_async((2, 3), session=session, priority=1, group="tx")
        session.commit()
    assert redis_.lrange("rq:queue:default:p1:g:tx", 0, -1) == [staged.id.encode()]
