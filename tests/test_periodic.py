"""Periodic tasks: two scheduler.py processes at once enqueue every tick exactly once."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from tests.servers import Starter, stop_processes, wait_for

ENTRY = "periodic-every_second"
TICK_ID = re.compile(rf"^{ENTRY}-(\d+)$")
#: rq-scheduler's sorted set of entries (Scheduler.scheduled_jobs_key).
ENTRIES_KEY = "rq:scheduler:scheduled_jobs"

# GET /api/v1/schedules in a process of its own, so that this test's periodic task is never
# registered in the pytest process (where other tests' catalogues would list it).
SCHEDULES = """
import json, os
from app import create_app
client = create_app().test_client()
r = client.get("/api/v1/schedules", headers={"Authorization": "Bearer " + os.environ["API_TOKENS"]})
print("SCHEDULES " + json.dumps({"status": r.status_code, "body": r.get_json()}))
"""


#: The test environment's task modules plus tests.periodic_jobs (the every_second task).
PERIODIC = {"TASK_MODULES": "tests.jobs,tests.periodic_jobs"}


@pytest.fixture
def schedulers(start: Starter, rconn: redis.Redis) -> Callable[[float], None]:
    """A function that runs two scheduler.py processes at once for ``seconds`` (``start`` cleans up)."""

    def run_two(seconds: float) -> None:
        before = len(rconn.lrange("rq:queue:default", 0, -1))
        pair = [start("scheduler.py", **PERIODIC) for _ in range(2)]
        # Count from the first tick they enqueue: starting a process takes seconds on a busy machine.
        wait_for(lambda: rconn.llen("rq:queue:default") > before, 30, message="the first tick")
        time.sleep(seconds)
        assert [p.poll() for p in pair] == [None, None], "a scheduler exited early"
        stop_processes(pair)

    return run_two


def ticks(conn: redis.Redis) -> list[int]:
    """The ticks of the every_second jobs waiting in the default queue, in queue order."""
    ids = [i.decode() for i in conn.lrange("rq:queue:default", 0, -1)]
    assert len(ids) == len(set(ids)), f"a job id is queued twice: {ids}"
    matches = [TICK_ID.match(i) for i in ids]
    assert all(matches), f"unexpected job ids: {ids}"
    return [int(m.group(1)) for m in matches if m]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_two_schedulers_enqueue_each_tick_once(
    schedulers: Callable[[float], None], start: Starter, rconn: redis.Redis
) -> None:
    """Two schedulers for ~6 s enqueue one job per tick; /schedules lists it; restarts add no entry."""
    schedulers(6)
    first = ticks(rconn)
    assert len(first) == len(set(first)), f"a tick was enqueued twice: {first}"
    assert 5 <= len(first) <= 10, f"{len(first)} ticks in ~6 s after the first: {first}"
    assert first == sorted(first)
    for tick in first:
        job = rconn.hgetall(f"rq:job:{ENTRY}-{tick}")
        assert job[b"status"] == b"queued"
    entries_before = rconn.zrange(ENTRIES_KEY, 0, -1)
    assert [e for e in entries_before if b"every_second" in e] == [ENTRY.encode()]

    proc = start("-c", SCHEDULES, **PERIODIC)
    assert proc.wait(30) == 0, start.output(proc)
    line = next(x for x in start.output(proc).splitlines() if x.startswith("SCHEDULES "))
    answer = json.loads(line.removeprefix("SCHEDULES "))
    assert answer["status"] == 200
    entries = {e["task"]: e for e in answer["body"]["schedules"]}
    assert entries["every_second"]["interval"] == 1
    assert entries["every_second"]["id"] == ENTRY
    next_run = datetime.fromisoformat(entries["every_second"]["next_run"].replace("Z", "+00:00"))
    assert abs((next_run - datetime.now(UTC)).total_seconds()) < 30

    schedulers(2.5)
    # The catalogue's other periodic entries are there too; a restart adds none.
    assert sorted(rconn.zrange(ENTRIES_KEY, 0, -1)) == sorted(entries_before)
    later = ticks(rconn)
    assert later[: len(first)] == first
    assert len(later) > len(first), "the restarted schedulers enqueued nothing"
    assert len(later) == len(set(later)), f"a tick was enqueued twice: {later}"
