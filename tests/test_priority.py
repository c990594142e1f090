"""``priority`` (0 first .. 9 last) and ``group`` (round robin over groups) inside a queue: the
order of starts, the counts RQ and the API show, a pause, and the faults (a worker killed with
kill -9 mid-job of a group, a Redis restart), on every way in."""

from __future__ import annotations

from typing import Any

import fakeredis
from flask import Flask
from flask.testing import FlaskClient

from app.core import queues as queue_store
from app.core.queues import JsonQueue, lane_queue_name, make_lane
from app.foundation import keys
from app.processes.workers import JsonInlineWorker


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


def test_round_robin_lets_five_jobs_of_b_past_ten_thousand_of_a() -> None:
    """One tenant's 10,000 jobs do not delay another's 5: B's start within the first 10 takes."""
    r = fakeredis.FakeRedis()
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
