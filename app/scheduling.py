"""The scheduler process: periodic jobs from the registry, and delayed jobs coming due.

Two libraries share one loop here, each doing what it owns:
- rq-scheduler keeps the catalogue's periodic entries (cron or interval), each under a
  stable job id ``periodic-<task>``, so a restart replaces an entry instead of adding one;
- RQ's own scheduler moves jobs whose time has come out of each queue's
  ScheduledJobRegistry (API ``countdown``/``eta``, retry back-offs).
Workers never run a scheduler loop; this process is the only one that moves due jobs.

Cron expressions are evaluated by croniter in UTC, as the registry validates and documents
them. rq-scheduler 0.14 would evaluate them with the ``crontab`` package in the host's local
time (and with day-of-month AND day-of-week where cron and croniter use OR), so its next runs
would disagree with the catalogue; :class:`PeriodicScheduler` corrects that.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from croniter import croniter
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from app import defaults
from app.config import Settings
from app.queues import JsonJob, JsonQueue, QueueName
from app.registry import REGISTRY, TaskRegistry, TaskSpec

log = logging.getLogger("tasklane.scheduler")

PERIODIC_PREFIX = "periodic-"


def periodic_job_id(spec: TaskSpec) -> str:
    """The stable job id of a task's periodic entry."""
    return f"{PERIODIC_PREFIX}{spec.name}"


def next_cron_run(cron: str, after: datetime | None = None) -> datetime:
    """When ``cron`` (UTC) next fires after ``after`` (default: now), as an aware UTC datetime."""
    base = after.astimezone(UTC) if after else datetime.now(UTC)
    return croniter(cron, base).get_next(datetime).astimezone(UTC)


class PeriodicScheduler(Scheduler):
    """rq-scheduler whose cron entries are rescheduled by croniter in UTC."""

    def enqueue_job(self, job: Job) -> None:
        """Move a due entry to its queue; a cron entry's next run comes from croniter in UTC."""
        cron = job.meta.get("cron_string")
        if not cron:
            super().enqueue_job(job)
            return
        repeat = job.meta.get("repeat")
        if repeat:
            job.meta["repeat"] = int(repeat) - 1
        queue = self.get_queue_for_job(job)
        queue.enqueue_job(job, at_front=bool(job.enqueue_at_front))
        if repeat is not None and job.meta["repeat"] <= 0:
            self.connection.zrem(self.scheduled_jobs_key, job.id)
            return
        # One ZADD moves the entry to its next run: it is never absent from the sorted set.
        self.connection.zadd(self.scheduled_jobs_key, {job.id: int(next_cron_run(cron).timestamp())})


def make_scheduler(redis: Redis, interval: float = defaults.SCHEDULER_INTERVAL) -> Scheduler:
    """An rq-scheduler Scheduler that reads and writes JSON jobs only."""
    return PeriodicScheduler(connection=redis, job_class=JsonJob, queue_class=JsonQueue, interval=interval)


def _definition(spec: TaskSpec) -> dict[str, Any]:
    assert spec.schedule is not None
    return {"func": spec.path, "queue": spec.queue.value, "schedule": spec.schedule.describe()}


def register_periodic(scheduler: Scheduler, registry: TaskRegistry = REGISTRY) -> list[str]:
    """Make rq-scheduler hold exactly the registry's periodic entries; returns their ids.

    An entry whose definition is unchanged keeps its next run time; a changed one is
    replaced; entries of tasks that lost their schedule are removed.
    """
    redis = scheduler.connection
    wanted = {periodic_job_id(spec): spec for spec in registry.periodic()}
    for job_id in list(_scheduled_ids(scheduler)):
        if job_id.startswith(PERIODIC_PREFIX) and job_id not in wanted:
            log.info("removing periodic entry %s (no longer in the catalogue)", job_id)
            scheduler.cancel(job_id)
    for job_id, spec in wanted.items():
        definition = _definition(spec)
        if job_id in scheduler:
            try:
                existing = JsonJob.fetch(job_id, connection=redis)
                if existing.meta.get("definition") == definition:
                    continue
            except NoSuchJobError:
                pass
            scheduler.cancel(job_id)
        schedule = spec.schedule
        assert schedule is not None
        meta = {"task": spec.name, "max_retries": spec.retry.max_retries, "definition": definition}
        common: dict[str, Any] = {
            "kwargs": dict(schedule.args),
            "id": job_id,
            "queue_name": spec.queue.value,
            "timeout": spec.time_limit,
            # The entry's job hash must outlive each run: rq-scheduler drops entries whose hash expired.
            "result_ttl": -1,
            "meta": meta,
            "description": f"{spec.name} (periodic)",
        }
        if schedule.cron:
            # Not scheduler.cron(): it would compute the first run in local time with crontab.
            # The cron meta makes rq-scheduler (and PeriodicScheduler) treat it as a cron entry.
            common["meta"] = {**meta, "cron_string": schedule.cron, "use_local_timezone": False}
            scheduler.schedule(next_cron_run(schedule.cron).replace(tzinfo=None), func=spec.path, **common)
        else:
            scheduler.schedule(
                datetime.now(UTC).replace(tzinfo=None), func=spec.path, interval=schedule.interval, **common
            )
        log.info("registered periodic entry %s (%s)", job_id, schedule.describe())
    return sorted(wanted)


def _scheduled_ids(scheduler: Scheduler) -> list[str]:
    raw = scheduler.connection.zrange(scheduler.scheduled_jobs_key, 0, -1)
    return [r.decode() if isinstance(r, bytes) else r for r in raw]


def schedules(redis: Redis, registry: TaskRegistry = REGISTRY) -> list[dict[str, Any]]:
    """Every periodic entry of the catalogue with its next run (None when not registered)."""
    scheduler = make_scheduler(redis)
    out = []
    for spec in registry.periodic():
        assert spec.schedule is not None
        score = redis.zscore(scheduler.scheduled_jobs_key, periodic_job_id(spec))
        next_run = datetime.fromtimestamp(score, UTC).isoformat().replace("+00:00", "Z") if score else None
        out.append(
            {
                "id": periodic_job_id(spec),
                "task": spec.name,
                "queue": spec.queue.value,
                "cron": spec.schedule.cron,
                "interval": spec.schedule.interval,
                "args": dict(spec.schedule.args),
                "next_run": next_run,
            }
        )
    return out


class SchedulerProcess:
    """One loop: periodic entries via rq-scheduler, due delayed jobs via RQ's scheduler."""

    def __init__(self, redis: Redis, interval: float = defaults.SCHEDULER_INTERVAL) -> None:
        self.redis = redis
        self.interval = interval
        self.periodic = make_scheduler(redis, interval)
        self.delayed = RQScheduler([q.value for q in QueueName], connection=redis, serializer=JSONSerializer)
        self.delayed._connection = redis  # type: ignore[assignment]  # share this process's client rather than a second pool
        self.stop_requested = False

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this pass", signal.Signals(signum).name)
        self.stop_requested = True

    def tick(self) -> None:
        """One pass: enqueue due periodic entries and due delayed jobs."""
        self.periodic.heartbeat()
        if self.periodic.acquire_lock():
            try:
                self.periodic.enqueue_jobs()
            finally:
                self.periodic.remove_lock()
        if self.delayed.should_reacquire_locks:
            self.delayed.acquire_locks()
        self.delayed.heartbeat()
        self.delayed.enqueue_scheduled_jobs()

    def run(self, burst: bool = False) -> int:
        """Run until SIGTERM/SIGINT (or one pass with ``burst``)."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self.periodic.register_birth()
        self.delayed.register_birth()
        try:
            while not self.stop_requested:
                started = time.monotonic()
                self.tick()
                if burst:
                    break
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            self.periodic.remove_lock()
            self.periodic.register_death()
            self.delayed.release_locks()
            self.delayed.register_death()
        return 0


def main_loop(redis: Redis, settings: Settings, burst: bool = False) -> int:
    """Register the periodic entries, then run the scheduler loop."""
    process = SchedulerProcess(redis)
    ids = register_periodic(process.periodic)
    log.info("scheduler started with %d periodic entries: %s", len(ids), ", ".join(ids) or "none")
    return process.run(burst=burst)
