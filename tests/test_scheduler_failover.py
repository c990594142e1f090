"""Scheduler failover: real scheduler.py processes killed with SIGKILL.

Two schedulers run at once; the one holding the delayed-job locks is killed: the standby
takes the locks and moves a delayed job within 15 s of the death, and the periodic entry
(every second) has every tick enqueued exactly once across the takeover. Then no scheduler
runs for a few seconds and one is started again: it catches up the ticks missed meanwhile.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from tests.servers import Starter, enqueue, wait_for

ENTRY = "periodic-every_second"
TICK_ID = re.compile(rf"^{ENTRY}-(\d+)$")
LOCK = "rq:scheduler-lock:default"
#: The test environment's task modules plus tests.periodic_jobs (the every_second task).
PERIODIC = {"TASK_MODULES": "tests.jobs,tests.periodic_jobs"}
#: The bound the issue sets: delayed jobs move again within this many seconds of the death.
TAKEOVER_BOUND = 15.0


def queued_ticks(conn: redis.Redis) -> list[int]:
    """The ticks of every_second enqueued so far (no worker runs: they all wait in the queue)."""
    ids = [i.decode() for i in conn.lrange("rq:queue:default", 0, -1)]
    found = [int(m.group(1)) for i in ids if (m := TICK_ID.match(i))]
    return found


def assert_every_tick_once(ticks: list[int]) -> None:
    """Each tick once, and none missing between the first and the last."""
    assert len(ticks) == len(set(ticks)), f"a tick was enqueued twice: {sorted(ticks)}"
    missing = sorted(set(range(min(ticks), max(ticks) + 1)) - set(ticks))
    assert not missing, f"ticks missed: {missing} (of {min(ticks)}..{max(ticks)})"


def lock_owner(conn: redis.Redis) -> str | None:
    raw = conn.get(LOCK)
    return raw.decode() if raw else None


def owner_process(conn: redis.Redis, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """The scheduler process holding the delayed-job locks (its RQ scheduler record names its pid)."""
    owner = wait_for(lambda: lock_owner(conn), 30, message="a scheduler to take the lock")
    pid = int(conn.hget(f"rq:scheduler:{owner}", "pid") or 0)
    return next(p for p in procs if p.pid == pid)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "lock_ttl",
    [pytest.param(4, id="ttl4"), pytest.param(10, id="default-ttl10", marks=pytest.mark.long)],
)
def test_killed_scheduler_standby_takes_over_and_restart_catches_up(
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    lock_ttl: int,
) -> None:
    """SIGKILL the active scheduler: delayed jobs move again within SCHEDULER_LOCK_TTL + a pass (the
    issue's bound, 15 s, with the default 10 s); no tick missed or doubled. CI runs a 4 s lock."""
    env = {**PERIODIC, "SCHEDULER_LOCK_TTL": str(lock_ttl)}
    pair = [start("scheduler.py", **env) for _ in range(2)]
    wait_for(lambda: len(queued_ticks(rconn)) >= 1, 30, message="the first tick")
    records = re.compile(rb"^rq:scheduler:[0-9a-f]{32}$")  # RQ's scheduler records, one per process
    wait_for(
        lambda: sum(1 for k in rconn.keys("rq:scheduler:*") if records.match(k)) >= 2,
        30,
        message="both schedulers to register",
    )
    active = owner_process(rconn, pair)
    standby = next(p for p in pair if p is not active)
    dead_owner = lock_owner(rconn)
    side_by_side = max(queued_ticks(rconn))
    wait_for(lambda: max(queued_ticks(rconn)) > side_by_side, 10, 0.05, "a tick with both running")

    active.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    active.wait(5)
    job_id = enqueue(client, auth, "touch", {"path": str(tmp_path / "delayed")}, countdown=1)
    wait_for(lambda: lock_owner(rconn) not in (None, dead_owner), 20, 0.05, "the standby to take the lock")
    took_lock = time.monotonic() - killed
    wait_for(lambda: job_id.encode() in rconn.lrange("rq:queue:default", 0, -1), 20, 0.05, "the delayed job")
    moved = time.monotonic() - killed
    print(
        f"FAILOVER (SCHEDULER_LOCK_TTL={lock_ttl}) after the kill: lock taken {took_lock:.1f} s, "
        f"delayed job moved {moved:.1f} s"
    )
    assert moved <= min(TAKEOVER_BOUND, lock_ttl + 3), f"the delayed job moved {moved:.1f} s after the death"
    start.assert_running(standby)
    took_over = int(time.time())
    wait_for(lambda: max(queued_ticks(rconn)) > took_over, 10, 0.05, "a tick after the takeover")

    # No scheduler at all while a new one starts (seconds): it catches the ticks of the gap up.
    standby.send_signal(signal.SIGKILL)
    standby.wait(5)
    before_gap = max(queued_ticks(rconn))
    # A gap of at least three ticks, however fast a process starts on this machine.
    wait_for(lambda: time.time() >= before_gap + 4, 10, 0.05, "three ticks without a scheduler")
    restarted = start("scheduler.py", **env)

    def registered() -> bool:
        keys = [k for k in rconn.keys("rq:scheduler:*") if records.match(k)]
        return any(int(rconn.hget(k, "pid") or 0) == restarted.pid for k in keys)

    wait_for(registered, 30, message="the restarted scheduler")
    now = int(time.time())
    wait_for(lambda: max(queued_ticks(rconn)) >= now, 10, message="the restarted scheduler's ticks")
    print(f"FAILOVER no scheduler from tick {before_gap} to {int(time.time())}")
    wait_for(lambda: max(queued_ticks(rconn)) > now, 10, 0.05, "the next tick after the catch-up")
    start.assert_running(restarted)
    ticks = queued_ticks(rconn)
    caught_up = [t for t in ticks if t > before_gap]
    assert len(caught_up) >= 3, f"ticks after the gap: {caught_up}"
    print(f"FAILOVER {len(ticks)} ticks from {min(ticks)} to {max(ticks)}, each once")
    assert_every_tick_once(ticks)
