"""The scheduler: periodic entries from the registry, and delayed jobs coming due."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pytest
from croniter import croniter
from flask import Flask
from redis import Redis
from rq.registry import ScheduledJobRegistry

from app.catalogue.registry import REGISTRY, QueueName, Schedule, TaskRegistry, task
from app.core import schedules as store
from app.core.dispatch import EnqueueOptions, enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation import clock, keys
from app.foundation.clock import ManualClock
from app.foundation.config import Settings
from app.foundation.runtime import connect
from app.processes.scheduling import (
    PeriodicScheduler,
    SchedulerProcess,
    make_scheduler,
    next_cron_run,
    register_periodic,
    schedules,
)

HEALTH_ID = "periodic-health_check"
#: Every periodic entry of the catalogue, health_check's among them.
CATALOGUE_IDS = sorted(f"periodic-{spec.name}" for spec in REGISTRY.periodic())
CRON = "*/5 * * * *"


def nightly_report() -> None:
    """A stand-in periodic task body (never run here)."""


def hourly_cleanup() -> None:
    """Another stand-in periodic task body (never run here)."""


@pytest.fixture
def redis(app: Flask) -> Redis:
    return app.extensions["tasklane"].redis


@pytest.fixture
def scheduler(redis: Redis) -> PeriodicScheduler:
    return make_scheduler(redis)


def entries(scheduler: PeriodicScheduler) -> dict[str, float]:
    """rq-scheduler's sorted set: entry id -> next run (unix seconds)."""
    raw = scheduler.connection.zrange(scheduler.scheduled_jobs_key, 0, -1, withscores=True)
    return {member.decode(): score for member, score in raw}


def health_with(schedule: Schedule | None) -> TaskRegistry:
    """A registry whose only task is the real health_check function with ``schedule``."""
    from app.tasks.platform import health_check

    registry = TaskRegistry(catalogue_module=None)
    task(name="health_check", queue=QueueName.HIGH, time_limit=120, schedule=schedule, registry=registry)(
        health_check
    )
    return registry


def cron_registry(cron: str = CRON) -> TaskRegistry:
    registry = TaskRegistry(catalogue_module=None)
    task(name="nightly_report", queue=QueueName.LOW, schedule=Schedule(cron=cron), registry=registry)(
        nightly_report
    )
    return registry


# --- registration --------------------------------------------------------------------------


def test_register_periodic_adds_health_check(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It registers periodic-health_check in rq-scheduler's sorted set as a JSON job for the high queue."""
    before = time.time()
    ids = register_periodic(scheduler)
    assert HEALTH_ID in ids and sorted(ids) == CATALOGUE_IDS
    assert sorted(entries(scheduler)) == CATALOGUE_IDS
    # An interval entry is due at once, then every 300 s.
    assert int(before) <= entries(scheduler)[HEALTH_ID] <= time.time() + 1
    job = JsonJob.fetch(HEALTH_ID, connection=redis)
    assert job.func_name == "app.tasks.platform.health_check"
    assert job.origin == "high"
    assert job.meta["interval"] == 300
    assert job.meta["task"] == "health_check"
    assert redis.ttl(job.key) == -1  # the entry's hash must outlive every run


def test_register_twice_keeps_one_entry_and_its_next_run(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It leaves exactly one entry, next run untouched, when an unchanged catalogue is registered again."""
    register_periodic(scheduler)
    anchor = store.load(redis, "health_check").anchor
    # As if passes had dealt with every tick up to 1234 s from now: the next is the one after.
    redis.hset(store.state_key("health_check"), "through", anchor + 1234)
    register_periodic(make_scheduler(redis))  # a restarted scheduler process
    assert entries(scheduler)[HEALTH_ID] == anchor + 1500  # every 300 s from the anchor
    assert store.load(redis, "health_check").anchor == anchor
    assert sorted(entries(scheduler)) == CATALOGUE_IDS  # one entry per periodic task


def test_changed_definition_replaces_entry(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It replaces an entry whose schedule changed: new interval, next run recomputed, still one entry."""
    register_periodic(scheduler)
    far = int(time.time()) + 10_000
    redis.zadd(scheduler.scheduled_jobs_key, {HEALTH_ID: far})
    ids = register_periodic(scheduler, health_with(Schedule(interval=60)))
    assert ids == [HEALTH_ID]
    assert list(entries(scheduler)) == [HEALTH_ID]
    assert entries(scheduler)[HEALTH_ID] <= time.time() + 1  # replaced, not kept at `far`
    job = JsonJob.fetch(HEALTH_ID, connection=redis)
    assert job.meta["interval"] == 60
    assert job.meta["definition"]["interval"] == 60


def test_changed_args_replace_entry(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It replaces an entry whose schedule arguments changed, and the job carries the new arguments."""
    register_periodic(scheduler, health_with(Schedule(interval=300)))
    far = int(time.time()) + 10_000
    redis.zadd(scheduler.scheduled_jobs_key, {HEALTH_ID: far})
    register_periodic(scheduler, health_with(Schedule(interval=300, args={"level": "deep"})))
    assert entries(scheduler)[HEALTH_ID] != far
    assert JsonJob.fetch(HEALTH_ID, connection=redis).kwargs == {"level": "deep"}


def test_entry_of_task_that_lost_its_schedule_is_removed(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It removes a periodic entry whose task no longer has a schedule, and leaves other entries alone."""
    register_periodic(scheduler)
    redis.zadd(scheduler.scheduled_jobs_key, {"someone-elses-entry": int(time.time()) + 60})
    ids = register_periodic(scheduler, health_with(None))
    assert ids == []
    assert set(entries(scheduler)) == {"someone-elses-entry"}


def test_cron_entry_next_run_matches_croniter(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It gives a cron entry the next run croniter computes in UTC."""
    before = croniter(CRON, datetime.now(UTC)).get_next(float)
    register_periodic(scheduler, cron_registry())
    after = croniter(CRON, datetime.now(UTC)).get_next(float)
    score = entries(scheduler)["periodic-nightly_report"]
    assert score in (before, after)
    job = JsonJob.fetch("periodic-nightly_report", connection=redis)
    assert job.meta["cron_string"] == CRON
    assert job.origin == "low"


@pytest.mark.parametrize("cron", ["0 3 * * *", "0 0 1 * 1"])
def test_cron_is_utc_whatever_the_host_timezone(
    scheduler: PeriodicScheduler, redis: Redis, monkeypatch: pytest.MonkeyPatch, cron: str
) -> None:
    """It evaluates cron in UTC with croniter's day rules, also on a host whose local time is not UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        before = croniter(cron, datetime.now(UTC)).get_next(float)
        register_periodic(scheduler, cron_registry(cron))
        after = croniter(cron, datetime.now(UTC)).get_next(float)
        assert entries(scheduler)["periodic-nightly_report"] in (before, after)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_cron_entry_runs_each_due_tick_and_moves_to_the_next(
    scheduler: PeriodicScheduler, redis: Redis
) -> None:
    """A due cron entry (seconds field) has its ticks dealt with once each: the first enqueued, the next
    two skipped (overlap "skip": the first has not ended, no worker runs); the entry moves on to the
    next tick, keeping one entry."""
    register_periodic(scheduler, cron_registry("* * * * * *"))
    now = int(time.time())
    redis.hset(store.state_key("nightly_report"), "through", now - 3)
    redis.zadd(scheduler.scheduled_jobs_key, {"periodic-nightly_report": now - 2})
    process = SchedulerProcess(redis)
    process.periodic = scheduler
    process.tick()
    run = assert_one_run(JsonQueue("low", connection=redis), "periodic-nightly_report")
    assert run == f"periodic-nightly_report-{now - 2}"
    kinds = [h["kind"] for h in store.history(redis, "nightly_report", registry=scheduler.registry)]
    assert kinds[-1] == "scheduled" and set(kinds[:-1]) == {"skipped"} and len(kinds) >= 3
    assert list(entries(scheduler)) == ["periodic-nightly_report"]
    assert entries(scheduler)["periodic-nightly_report"] > now


def test_next_cron_run_is_aware_utc() -> None:
    """It returns next_cron_run as an aware UTC datetime equal to croniter's next time."""
    base = datetime(2026, 3, 1, 12, 7, tzinfo=UTC)
    assert next_cron_run(CRON, base) == datetime(2026, 3, 1, 12, 10, tzinfo=UTC)


# --- listing -------------------------------------------------------------------------------------


def test_schedules_lists_each_periodic_task_with_next_run(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It lists every periodic task with its schedule, and next_run None until registered, then its time."""
    before = schedules(redis)
    assert sorted(s["id"] for s in before) == CATALOGUE_IDS
    assert all(s["next_run"] is None for s in before)

    register_periodic(scheduler)
    anchor = store.load(redis, "health_check").anchor
    redis.hset(store.state_key("health_check"), "through", anchor + 1)
    (entry,) = [s for s in schedules(redis) if s["id"] == HEALTH_ID]
    assert entry | {"next_run": None} == entry | {
        "name": "health_check",
        "id": HEALTH_ID,
        "task": "health_check",
        "queue": "high",
        "cron": None,
        "interval": 300,
        "args": {},
        "timezone": "UTC",
        "paused": False,
        "origin": "catalogue",
        "operator_fields": [],
        "last_run": None,
        "last_job_id": None,
        "next_run": None,
    }
    assert entry["next_run"] == store.iso_of(anchor + 300)


def test_schedules_of_a_cron_registry(scheduler: PeriodicScheduler, redis: Redis) -> None:
    """It lists a cron task with its expression and the next run, the same as its entry's."""
    registry = cron_registry()
    register_periodic(scheduler, registry)
    (entry,) = schedules(redis, registry)
    assert entry["cron"] == CRON
    assert entry["interval"] is None
    next_run = datetime.fromisoformat(entry["next_run"].replace("Z", "+00:00"))
    assert next_run.timestamp() == entries(scheduler)["periodic-nightly_report"]
    assert next_run.minute % 5 == 0 and next_run.second == 0


# --- the scheduler loop ----------------------------------------------------------------------------


def test_tick_enqueues_due_periodic_entry(redis: Redis) -> None:
    """It enqueues a due periodic entry into its queue on a tick and moves its next run an interval on."""
    process = SchedulerProcess(redis)
    register_periodic(process.periodic)
    high = JsonQueue("high", connection=redis)
    assert high.count == 0
    process.tick()
    assert_one_run(high, HEALTH_ID)
    next_run = entries(process.periodic)[HEALTH_ID]
    assert time.time() + 290 <= next_run <= time.time() + 301
    process.tick()  # not due again
    assert high.count == 1


def test_tick_leaves_future_periodic_entry(redis: Redis) -> None:
    """It does not enqueue a periodic entry whose next run is in the future."""
    process = SchedulerProcess(redis)
    register_periodic(process.periodic)
    redis.zadd(process.periodic.scheduled_jobs_key, {HEALTH_ID: int(time.time()) + 60})
    process.tick()
    assert JsonQueue("high", connection=redis).count == 0


def _delayed_add(redis: Redis, countdown: float) -> JsonJob:
    spec = REGISTRY.get("add")
    assert spec is not None
    return enqueue(  # type: ignore[return-value]
        spec,
        spec.validate({"x": 1, "y": 2}),
        redis,
        EnqueueOptions(countdown=countdown),
        default_result_ttl=60,
        failure_ttl=60,
    )


def test_tick_moves_delayed_job_once_due_and_not_before(redis: Redis, manual_clock: ManualClock) -> None:
    """It keeps a countdown job in the ScheduledJobRegistry until its time, then moves it to its queue."""
    manual_clock.set(datetime.now(UTC).replace(microsecond=300_000))
    enqueued_at = clock.time()
    job = _delayed_add(redis, countdown=2)
    scheduled = ScheduledJobRegistry("default", connection=redis)
    default = JsonQueue("default", connection=redis)
    assert scheduled.get_job_ids() == [job.id]
    due_at = scheduled.get_scheduled_time(job.id).timestamp()
    # RQ keeps due times in whole seconds: the countdown rounded up, never early.
    assert due_at == int(enqueued_at) + 3

    process = SchedulerProcess(redis)
    process.tick()
    assert default.count == 0
    assert scheduled.get_job_ids() == [job.id]

    while default.count == 0:
        assert clock.time() < enqueued_at + 5, "not moved once due"
        manual_clock.advance(0.1)
        process.tick()
        if default.count == 0:
            assert clock.time() < due_at, "due, yet not moved"
    assert due_at <= clock.time() < due_at + 0.1  # on the first pass once due
    assert default.get_job_ids() == [job.id]
    assert scheduled.get_job_ids() == []
    assert JsonJob.fetch(job.id, connection=redis).get_status() == "queued"


def test_delayed_job_with_countdown_one_second(redis: Redis, manual_clock: ManualClock) -> None:
    """It moves a countdown=1 job on the first tick after its due time (rounded up to a whole second)."""
    job = _delayed_add(redis, countdown=1)
    process = SchedulerProcess(redis)
    manual_clock.advance(2.05)
    assert JsonQueue("default", connection=redis).count == 0  # nothing moves without a tick
    process.tick()
    assert JsonQueue("default", connection=redis).get_job_ids() == [job.id]


def test_two_schedulers_enqueue_a_due_periodic_entry_once(redis: Redis, redis_url: str) -> None:
    """It enqueues a due periodic entry once when two scheduler processes tick one after the other."""
    first, second = SchedulerProcess(connect(redis_url)), SchedulerProcess(connect(redis_url))
    register_periodic(first.periodic)
    register_periodic(second.periodic)
    first.tick()
    second.tick()
    first.tick()
    assert_one_run(JsonQueue("high", connection=redis), HEALTH_ID)


def assert_one_run(queue: JsonQueue, entry: str) -> str:
    """The queue holds exactly one run of the periodic entry, ``<entry>-<tick>``."""
    ids = queue.get_job_ids()
    assert len(ids) == 1, ids
    assert ids[0].startswith(f"{entry}-") and ids[0].rsplit("-", 1)[1].isdigit(), ids
    return ids[0]


def test_a_slow_pass_overlapping_the_next_enqueues_a_tick_once(redis: Redis, redis_url: str) -> None:
    """It enqueues one run per tick even when two schedulers both read the entry as due (no lock)."""
    first, second = SchedulerProcess(connect(redis_url)), SchedulerProcess(connect(redis_url))
    register_periodic(first.periodic)
    due = int(time.time()) - 1
    redis.zadd(first.periodic.scheduled_jobs_key, {HEALTH_ID: due})
    first.periodic.enqueue_jobs()
    # The second read the entry before the first moved it on: it sees the same tick as due.
    redis.zadd(second.periodic.scheduled_jobs_key, {HEALTH_ID: due})
    second.periodic.enqueue_jobs()
    run = assert_one_run(JsonQueue("high", connection=redis), HEALTH_ID)
    assert run == f"{HEALTH_ID}-{store.load(redis, 'health_check').anchor}"


def _tick_together(processes: list[SchedulerProcess]) -> list[BaseException]:
    """Tick every process in its own thread, released at the same moment; return their errors."""
    barrier = threading.Barrier(len(processes))
    errors: list[BaseException] = []

    def run(process: SchedulerProcess) -> None:
        try:
            barrier.wait(5)
            process.tick()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in processes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return errors


def test_two_schedulers_ticking_at_once_enqueue_once(redis: Redis, redis_url: str) -> None:
    """It enqueues a due periodic entry once when two scheduler processes tick at the same moment."""
    for _attempt in range(20):
        redis.flushall()
        processes = [SchedulerProcess(connect(redis_url)) for _ in range(2)]
        register_periodic(processes[0].periodic)
        assert _tick_together(processes) == []
        assert_one_run(JsonQueue("high", connection=redis), HEALTH_ID)


def test_two_schedulers_move_a_delayed_job_once(
    redis: Redis, redis_url: str, manual_clock: ManualClock
) -> None:
    """It moves a due delayed job into its queue once when two scheduler processes tick."""
    job = _delayed_add(redis, countdown=1)
    first, second = SchedulerProcess(connect(redis_url)), SchedulerProcess(connect(redis_url))
    first.tick()
    second.tick()
    manual_clock.advance(2.05)  # due at most 2 s on: countdowns round up to whole seconds
    second.tick()
    first.tick()
    second.tick()
    assert JsonQueue("default", connection=redis).get_job_ids() == [job.id]


# --- the heartbeat /readyz reads -------------------------------------------------------------------


def test_each_completed_pass_renews_the_heartbeat_key_with_its_ttl(redis: Redis) -> None:
    """It writes the scheduler heartbeat key after a pass, with SCHEDULER_HEARTBEAT_TTL as its TTL;
    a clean stop deletes it, but only while it holds this scheduler's own beat."""
    process = SchedulerProcess(redis, settings=Settings.from_env({"SCHEDULER_HEARTBEAT_TTL": "7"}))
    assert not redis.exists(keys.scheduler_heartbeat())
    process.tick()
    assert 0 < redis.ttl(keys.scheduler_heartbeat()) <= 7
    assert json.loads(redis.get(keys.scheduler_heartbeat()))["scheduler"] == process.delayed.name

    other = SchedulerProcess(redis)
    other.tick()  # another scheduler beat last: stopping this one keeps that beat
    process._deregister()
    assert json.loads(redis.get(keys.scheduler_heartbeat()))["scheduler"] == other.delayed.name
    assert other.run(burst=True) == 0  # one pass, then a clean stop
    assert not redis.exists(keys.scheduler_heartbeat())
