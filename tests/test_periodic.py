"""Periodic tasks: two scheduler.py processes at once enqueue every tick exactly once."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import ROOT, python_process

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


@pytest.fixture
def periodic_env(env: dict[str, str]) -> dict[str, str]:
    """The test environment with tests.periodic_jobs (the every_second task) loaded."""
    return {**env, "TASK_MODULES": "tests.jobs,tests.periodic_jobs"}


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, wait, kill on timeout."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def schedulers(periodic_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """A function that runs two scheduler.py processes at once for ``seconds``; cleans up at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def run_two(seconds: float) -> None:
        pair = []
        for _ in range(2):
            logs.append(tmp_path / f"scheduler-{len(logs)}.log")
            pair.append(python_process(["scheduler.py"], periodic_env, logs[-1], cwd=ROOT))
        procs.extend(pair)
        time.sleep(seconds)
        assert [p.poll() for p in pair] == [None, None], "a scheduler exited early"
        stop(pair)

    try:
        yield run_two
    finally:
        stop(procs)
        for log in logs:
            if log.exists():
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


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
    schedulers: Any, periodic_env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    """Two schedulers for ~6 s enqueue one job per tick; /schedules lists it; restarts add no entry."""
    conn = redis.Redis.from_url(redis_url)
    try:
        schedulers(6)
        first = ticks(conn)
        assert len(first) == len(set(first)), f"a tick was enqueued twice: {first}"
        assert 4 <= len(first) <= 8, f"{len(first)} ticks in ~6 s: {first}"
        assert first == sorted(first)
        for tick in first:
            job = conn.hgetall(f"rq:job:{ENTRY}-{tick}")
            assert job[b"status"] == b"queued"
        entries_before = conn.zrange(ENTRIES_KEY, 0, -1)
        assert [e for e in entries_before if b"every_second" in e] == [ENTRY.encode()]

        log = tmp_path / "schedules.log"
        proc = python_process(["-c", SCHEDULES], periodic_env, log, cwd=ROOT)
        assert proc.wait(30) == 0, log.read_text()
        line = next(x for x in log.read_text().splitlines() if x.startswith("SCHEDULES "))
        answer = json.loads(line.removeprefix("SCHEDULES "))
        assert answer["status"] == 200
        entries = {e["task"]: e for e in answer["body"]["schedules"]}
        assert entries["every_second"]["interval"] == 1
        assert entries["every_second"]["id"] == ENTRY
        next_run = datetime.fromisoformat(entries["every_second"]["next_run"].replace("Z", "+00:00"))
        assert abs((next_run - datetime.now(UTC)).total_seconds()) < 30

        schedulers(2.5)
        # The catalogue's other periodic entries are there too; a restart adds none.
        assert sorted(conn.zrange(ENTRIES_KEY, 0, -1)) == sorted(entries_before)
        later = ticks(conn)
        assert later[: len(first)] == first
        assert len(later) > len(first), "the restarted schedulers enqueued nothing"
        assert len(later) == len(set(later)), f"a tick was enqueued twice: {later}"
    finally:
        conn.close()
