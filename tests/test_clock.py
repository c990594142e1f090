"""The injectable clock: a manual clock moves only when told, and the scheduler, the sweeps,
leases and the time helpers all read it (so tests move it instead of sleeping)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from redis import Redis
from rq.executions import Execution
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from app.catalogue.registry import REGISTRY
from app.core import leases
from app.core import schedules as store
from app.core.dispatch import EnqueueOptions, enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation import clock, defaults, timeutil
from app.foundation.clock import ManualClock, SystemClock
from app.processes import maintenance
from app.processes.scheduling import SchedulerProcess

JAN_1 = datetime(2030, 1, 1, tzinfo=UTC)


def test_the_system_clock_is_in_use_by_default() -> None:
    assert isinstance(clock.current(), SystemClock)
    assert abs(clock.time() - time.time()) < 1
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1


def test_a_manual_clock_moves_only_when_told() -> None:
    manual = ManualClock(JAN_1)
    assert manual.time() == JAN_1.timestamp()
    mono = manual.monotonic()
    time.sleep(0.01)
    assert manual.time() == JAN_1.timestamp() and manual.monotonic() == mono
    manual.advance(90)
    assert manual.time() == JAN_1.timestamp() + 90
    assert manual.monotonic() == mono + 90
    started = time.monotonic()
    manual.sleep(3600)  # advances at once, does not wait
    assert time.monotonic() - started < 0.5
    assert manual.time() == JAN_1.timestamp() + 3690
    manual.set(JAN_1)  # a wall clock may be set back; the monotonic one never goes back
    assert manual.time() == JAN_1.timestamp()
    assert manual.monotonic() == mono + 3690
    with pytest.raises(ValueError, match="does not go back"):
        manual.advance(-1)
    with pytest.raises(ValueError, match="naive"):
        manual.set(datetime(2030, 1, 1))


def test_the_fixture_installs_a_manual_clock_and_the_helpers_follow_it(manual_clock: ManualClock) -> None:
    assert clock.current() is manual_clock
    manual_clock.set(JAN_1)
    assert clock.now() == JAN_1
    assert timeutil.utcnow() == JAN_1
    manual_clock.advance(0.25)
    assert timeutil.seconds_from_now(1) == JAN_1 + timedelta(seconds=2)  # whole seconds, never early
    assert clock.monotonic() == manual_clock.monotonic()


def _delayed_add(redis: Redis, countdown: float) -> JsonJob:
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(
        spec, spec.validate({"x": 1, "y": 2}), redis, EnqueueOptions(countdown=countdown),
        default_result_ttl=60, failure_ttl=60,
    )  # fmt: skip
    return job  # type: ignore[return-value]


def test_a_delayed_job_comes_due_when_the_clock_says_so(app: Flask, manual_clock: ManualClock) -> None:
    """A countdown is counted from the clock's time and RQ's scheduler moves the job by the same
    clock: an hour's countdown is due after the clock moves an hour, with no wait."""
    redis = app.extensions["tasklane"].redis
    manual_clock.set(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=0.5))
    job = _delayed_add(redis, countdown=3600)
    due = ScheduledJobRegistry("default", connection=redis).get_scheduled_time(job.id)
    assert due == clock.now().replace(microsecond=0) + timedelta(seconds=3601)
    process = SchedulerProcess(redis)
    default = JsonQueue("default", connection=redis)
    manual_clock.advance(3600)  # half a second before its whole second: not yet
    process.tick()
    assert default.get_job_ids() == []
    manual_clock.advance(0.5)
    process.tick()
    assert default.get_job_ids() == [job.id]


def test_the_sweep_finds_a_lease_expired_by_the_clock(app: Flask, manual_clock: ManualClock) -> None:
    """A run's lease renewed for 30 s is left alone until the clock passes it, then the sweep
    puts the job back: no 30 s wait."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(spec, spec.validate({"x": 1, "y": 2}), redis, default_result_ttl=60, failure_ttl=60)
    redis.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    with redis.pipeline() as pipe:
        execution = Execution.create(job, ttl=30, pipeline=pipe)
        job.prepare_for_execution("a-worker", pipeline=pipe)
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.execute()
    lease = leases.Lease.of(job, execution)
    assert leases.renew(redis, lease, ttl=30)
    registry = StartedJobRegistry("default", connection=redis)
    assert redis.zscore(registry.key, execution.composite_key) == pytest.approx(clock.time() + 30)
    manual_clock.advance(29)
    assert maintenance.rescue_abandoned(queue) == 0
    manual_clock.advance(2)
    assert maintenance.rescue_abandoned(queue) == 1
    assert queue.get_job_ids() == [job.id]


def test_a_job_stuck_in_an_intermediate_list_is_rescued_by_the_clock(
    app: Flask, manual_clock: ManualClock
) -> None:
    """A job a dead worker dequeued goes back once the clock is RESCUE_AFTER past first seeing it."""
    redis = app.extensions["tasklane"].redis
    queue = JsonQueue("default", connection=redis)
    spec = REGISTRY.get("add")
    assert spec is not None
    job = enqueue(spec, spec.validate({"x": 1, "y": 2}), redis, default_result_ttl=60, failure_ttl=60)
    redis.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    assert maintenance.rescue_intermediate(queue) == 0  # first seen now
    manual_clock.advance(defaults.RESCUE_AFTER - 1)
    assert maintenance.rescue_intermediate(queue) == 0
    manual_clock.advance(1)
    assert maintenance.rescue_intermediate(queue) == 1
    assert queue.get_job_ids() == [job.id]


def test_the_scheduler_sweeps_every_sweep_interval_of_the_clock(
    app: Flask, manual_clock: ManualClock
) -> None:
    redis = app.extensions["tasklane"].redis
    process = SchedulerProcess(redis)
    swept: list[float] = []
    original = maintenance.sweep
    maintenance.sweep = lambda r: swept.append(clock.monotonic())  # type: ignore[assignment]
    try:
        process.tick()
        process.tick()
        manual_clock.advance(defaults.SWEEP_INTERVAL)
        process.tick()
    finally:
        maintenance.sweep = original
    assert len(swept) == 2 and swept[1] - swept[0] == defaults.SWEEP_INTERVAL


def test_a_periodic_schedule_ticks_by_the_clock(app: Flask, manual_clock: ManualClock) -> None:
    """An hourly schedule's next run comes when the clock has moved an hour, not before."""
    redis = app.extensions["tasklane"].redis
    manual_clock.set(datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC))
    store.create(
        redis,
        {"name": "hourly", "task": "add", "args": {"x": 1, "y": 2}, "interval": 3600, "overlap": "allow"},
    )  # allow: no worker runs the first
    process = SchedulerProcess(redis)
    default = JsonQueue("default", connection=redis)

    def runs() -> list[str]:
        return sorted(i for i in default.get_job_ids() if i.startswith("periodic-hourly-"))

    process.tick()
    first = runs()
    assert len(first) == 1
    manual_clock.advance(3599)
    process.tick()
    assert runs() == first
    manual_clock.advance(1)
    process.tick()
    assert len(runs()) == 2
