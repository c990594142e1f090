"""Scheduler failover, in process: the delayed-job locks' short TTL, a standby taking them, a holder
that lost them moving nothing, and interval ticks caught up after a gap (see test_scheduler_failover
for the same with real processes killed)."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from redis import Redis
from rq.registry import ScheduledJobRegistry

from app.catalogue.registry import REGISTRY, QueueName, Schedule, TaskRegistry, task
from app.core import schedules as store
from app.core.dispatch import EnqueueOptions, enqueue
from app.core.queues import JsonQueue
from app.foundation.clock import ManualClock
from app.foundation.config import ConfigError, Settings
from app.foundation.runtime import connect
from app.processes.scheduling import PeriodicScheduler, SchedulerProcess, register_periodic

LOCK = "rq:scheduler-lock:default"
SHORT = Settings.from_env({"SCHEDULER_LOCK_TTL": "3"})


@pytest.fixture
def redis(app: Flask) -> Redis:
    return app.extensions["tasklane"].redis


def _delayed(redis: Redis, countdown: float = 1) -> str:
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(
        spec, spec.validate({"x": 1, "y": 2}), redis, EnqueueOptions(countdown=countdown),
        default_result_ttl=60, failure_ttl=60,
    )  # fmt: skip
    return str(job.id)


def test_lock_lives_scheduler_lock_ttl_and_each_pass_renews_it(redis: Redis) -> None:
    """The lock on a queue's delayed jobs lives SCHEDULER_LOCK_TTL, not RQ's minute; a pass renews it."""
    process = SchedulerProcess(redis, settings=SHORT)
    process.tick()
    assert redis.get(LOCK) == process.delayed.name.encode()
    assert 0 < redis.pttl(LOCK) <= 3000
    redis.pexpire(LOCK, 500)  # as if most of its TTL had gone by
    process.tick()
    assert 2900 <= redis.pttl(LOCK) <= 3000


def test_default_lock_ttl_is_ten_seconds(redis: Redis) -> None:
    process = SchedulerProcess(redis)
    process.tick()
    assert 9000 < redis.pttl(LOCK) <= 10000


def test_standby_takes_the_locks_when_the_holder_stops_renewing(redis: Redis, redis_url: str) -> None:
    """A standby ticking every pass holds nothing while the holder lives, then takes over and moves
    the due delayed job once the holder's lock expired (the holder stopped: it died)."""
    holder = SchedulerProcess(connect(redis_url), settings=SHORT)
    standby = SchedulerProcess(connect(redis_url), settings=SHORT)
    holder.tick()
    standby.tick()
    assert standby.delayed.acquired_locks == set()
    job_id = _delayed(redis)
    died = time.monotonic()
    default = JsonQueue("default", connection=redis)
    while job_id not in default.get_job_ids():
        assert time.monotonic() - died < 3 + 2, "the standby did not take over within the lock's TTL"
        standby.tick()
        time.sleep(0.1)
    assert standby.delayed.acquired_locks == {q.value for q in QueueName}
    assert redis.get(LOCK) == standby.delayed.name.encode()


def test_a_holder_that_lost_its_lock_moves_nothing(redis: Redis, manual_clock: ManualClock) -> None:
    """A holder that stalled past the TTL and finds the lock taken drops it before moving a job."""
    holder = SchedulerProcess(redis, settings=SHORT)
    holder.tick()
    redis.set(LOCK, "another-scheduler", px=3000)  # taken over while the holder stalled
    job_id = _delayed(redis)
    manual_clock.advance(2.05)  # the job is due
    holder.tick()
    assert "default" not in holder.delayed.acquired_locks
    assert JsonQueue("default", connection=redis).get_job_ids() == []
    assert ScheduledJobRegistry("default", connection=redis).get_job_ids() == [job_id]
    assert redis.get(LOCK) == b"another-scheduler"


def test_a_clean_stop_releases_the_locks_at_once(redis: Redis) -> None:
    """SIGTERM (a deploy): the locks are released, so a standby takes over on its next pass."""
    process = SchedulerProcess(redis, settings=SHORT)
    assert process.run(burst=True) == 0
    assert not redis.exists(LOCK)


def health_every(seconds: int) -> TaskRegistry:
    from app.tasks.platform import health_check

    registry = TaskRegistry(catalogue_module=None)
    task(
        name="health_check",
        queue=QueueName.HIGH,
        schedule=Schedule(interval=seconds, overlap="allow"),
        registry=registry,
    )(health_check)
    return registry


def _as_if_due_since(redis: Redis, scheduler: PeriodicScheduler, due: int) -> None:
    """The health_check schedule as if its ticks ran from ``due`` on and none was dealt with since:
    its anchor moved back to ``due``, nothing dealt with after ``due - 1``, its entry due."""
    record = store.load(redis, "health_check", scheduler.registry)
    record.anchor = due
    redis.hset(store.records_key(), "health_check", record.dumps())
    redis.hset(store.state_key("health_check"), "through", due - 1)
    redis.zadd(scheduler.scheduled_jobs_key, {"periodic-health_check": due})


def _ticks(redis: Redis) -> list[int]:
    ids = JsonQueue("high", connection=redis).get_job_ids()
    return sorted(int(i.rsplit("-", 1)[1]) for i in ids if i.startswith("periodic-health_check-"))


def test_interval_ticks_missed_while_none_ran_are_caught_up_once(redis: Redis, redis_url: str) -> None:
    """An entry due 35 s ago every 10 s: the four ticks since are enqueued, each once, by two schedulers."""
    first, second = SchedulerProcess(connect(redis_url)), SchedulerProcess(connect(redis_url))
    register_periodic(first.periodic, health_every(10))
    second.periodic.registry = first.periodic.registry
    due = int(time.time()) - 35
    _as_if_due_since(redis, first.periodic, due)
    first.periodic.enqueue_jobs()
    redis.zadd(second.periodic.scheduled_jobs_key, {"periodic-health_check": due})  # read before the move
    second.periodic.enqueue_jobs()
    assert _ticks(redis) == [due, due + 10, due + 20, due + 30]
    next_run = redis.zscore(first.periodic.scheduled_jobs_key, "periodic-health_check")
    assert next_run == due + 40


def test_ticks_older_than_the_catch_up_window_are_skipped(redis: Redis) -> None:
    """After a long stop only the last minute's ticks run: no storm of stale runs."""
    process = SchedulerProcess(redis)
    register_periodic(process.periodic, health_every(10))
    now = int(time.time())
    due = now - 300
    _as_if_due_since(redis, process.periodic, due)
    process.periodic.enqueue_jobs()
    ticks = _ticks(redis)
    assert 6 <= len(ticks) <= 7, ticks
    assert all(t >= now - 61 for t in ticks)
    assert all((t - due) % 10 == 0 for t in ticks)
    missed = [h for h in store.history(redis, "health_check", registry=process.periodic.registry)
              if h["kind"] == "missed"]  # fmt: skip
    assert len(missed) == 1 and missed[0]["count"] + len(ticks) == len(range(due, now + 1, 10))


@pytest.mark.parametrize(
    ("name", "value"),
    [("SCHEDULER_LOCK_TTL", "2"), ("SCHEDULER_LOCK_TTL", "ten"), ("ENQUEUE_MIN_REPLICAS", "-1"),
     ("ENQUEUE_REPLICA_TIMEOUT_MS", "0")],
)  # fmt: skip
def test_a_bad_ha_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)
