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
would disagree with the catalogue; :class:`PeriodicScheduler` uses croniter instead.

Each tick of a periodic entry becomes a job of its own, ``periodic-<task>-<tick>``,
created with RQ's atomic unique enqueue: two scheduler processes (or one slow pass
overlapping the next) enqueue each tick exactly once.

The same loop runs the sweeps that make delivery at-least-once: a job whose worker died
(its heartbeat expired) is retried or failed within seconds, and a job a dying worker
had dequeued but not yet started is put back at the head of its queue.

Delayed jobs are moved by one scheduler at a time, the holder of RQ's per-queue
scheduler locks. RQ gives those locks a TTL of a minute and lets a standby try to take
them every two minutes; here (:class:`LeasedRQScheduler`) they live
``SCHEDULER_LOCK_TTL`` seconds (10), the holder renews them every pass and a standby
tries every pass, so when the active scheduler dies another takes over within
``SCHEDULER_LOCK_TTL`` plus a pass. A holder that finds a lock taken (it stalled past
the TTL) stops moving that queue's jobs before its next move.

The loop rides out a Redis outage: a pass cut short by a connection error waits for Redis
(backoff, logged once per outage) and starts again; after each completed pass the
scheduler refreshes a heartbeat key with a TTL, which /readyz reads.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from croniter import croniter
from redis import Redis
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat
from rq_scheduler import Scheduler
from rq_scheduler.utils import to_unix

from app.catalogue.registry import REGISTRY, QueueName, TaskRegistry, TaskSpec
from app.core import compat, outbox
from app.core.dispatch import EnqueueOptions, JobExistsError, enqueue
from app.core.queues import JsonJob, JsonQueue
from app.foundation import defaults, keys, outages
from app.foundation.config import Settings
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta
from app.foundation.timeutil import iso, utcnow
from app.processes import maintenance

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
    """rq-scheduler keeping the periodic entries; each due tick is enqueued as a new job, once."""

    settings: Settings | None = None
    registry: TaskRegistry = REGISTRY

    def enqueue_jobs(self) -> list[JsonJob]:
        """Enqueue a fresh job for every due tick of every entry, then move each entry on."""
        enqueued = []
        for template, when in self.get_jobs_to_queue(with_times=True):
            try:
                for tick in self._due_ticks(template, int(to_unix(when))):
                    job = self.enqueue_tick(template, datetime.fromtimestamp(tick, UTC))
                    if job is not None:
                        enqueued.append(job)
            except DeserializationError:
                # Not written by register_periodic (a pickle, say): never unpickled, dropped from
                # the schedule so that it cannot stop the loop; its hash stays for inspection.
                log.warning("periodic entry %s is not stored as JSON; removing it unread", template.id)
                self.cancel(template.id)
        return enqueued

    def _due_ticks(self, template: JsonJob, first: int) -> list[int]:
        """The ticks of ``template`` due now, from ``first``: an interval entry whose ticks came due
        while no scheduler ran (a takeover, a restart) catches up those of the last
        ``CATCHUP_WINDOW`` seconds; older ones are skipped (logged)."""
        definition = template.meta.get(Meta.DEFINITION) or {}
        schedule = definition.get("schedule") or {}
        if schedule.get("cron"):
            return [first]
        interval = int(schedule.get("interval") or template.meta.get("interval") or 60)
        now = int(time.time())
        due = list(range(first, now + 1, interval))
        recent = [t for t in due if t >= now - defaults.CATCHUP_WINDOW]
        if len(recent) < len(due):
            log.warning(
                "%s: skipping %d tick(s) missed before the catch-up window",
                template.id,
                len(due) - len(recent),
            )
        return recent or [first]

    def enqueue_tick(self, template: JsonJob, when: datetime) -> JsonJob | None:
        """Enqueue the run of ``template`` due at ``when`` unless another scheduler did."""
        tick = int(to_unix(when))
        self._reschedule(template, tick)
        spec = self.registry.by_path(template.func_name or "")
        if spec is None:
            log.warning("periodic entry %s names no registered task; removing it", template.id)
            self.cancel(template.id)
            return None
        settings = self.settings or Settings()
        try:
            job = enqueue(
                spec,
                spec.validate(template.kwargs),
                self.connection,
                EnqueueOptions(job_id=f"{template.id}-{tick}"),
                default_result_ttl=settings.result_ttl,
                failure_ttl=settings.failed_job_ttl,
                meta={Meta.PERIODIC: template.id, Meta.TICK: tick},
            )
        except JobExistsError:
            log.debug("tick %s of %s was enqueued by another scheduler", tick, template.id)
            return None
        log.info("enqueued %s for tick %s", job.id, tick, extra={"job_id": job.id, "task": spec.name})
        return job  # type: ignore[return-value]

    def _reschedule(self, template: JsonJob, tick: int) -> None:
        definition = template.meta.get(Meta.DEFINITION) or {}
        schedule = definition.get("schedule") or {}
        now = datetime.now(UTC)
        if schedule.get("cron"):
            score = int(next_cron_run(schedule["cron"], now).timestamp())
        else:
            interval = int(schedule.get("interval") or template.meta.get("interval") or 60)
            score = tick + interval
            while score <= now.timestamp():  # skip ticks missed while no scheduler ran
                score += interval
        # Only move forward: a scheduler that read the entry late must not move it back.
        self.connection.zadd(self.scheduled_jobs_key, {template.id: score}, gt=True)


def make_scheduler(redis: Redis, interval: float = defaults.SCHEDULER_INTERVAL) -> PeriodicScheduler:
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
    if isinstance(scheduler, PeriodicScheduler):
        scheduler.registry = registry
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
                if existing.meta.get(Meta.DEFINITION) == definition:
                    continue
            except (NoSuchJobError, DeserializationError):
                pass  # gone, or not stored as JSON: replaced below, unread
            scheduler.cancel(job_id)
        schedule = spec.schedule
        assert schedule is not None
        meta = {Meta.TASK: spec.name, Meta.MAX_RETRIES: spec.retry.max_retries, Meta.DEFINITION: definition}
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
        next_run = iso(datetime.fromtimestamp(score, UTC)) if score else None
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


# Delete the heartbeat key if this scheduler (ARGV[1]) wrote the latest beat.
_DROP_OWN_BEAT = LuaScript(
    """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw).scheduler == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


# Take or renew each lock (KEYS) for the owner ARGV[1], for ARGV[2] ms; 1 per lock held, 0 when
# another owner holds it. The same lock as RQ's own (a key holding the owner's name).
_HOLD_LOCKS = LuaScript(
    """
local out = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  elseif owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
)


class LeasedRQScheduler(RQScheduler):
    """RQ's scheduler of delayed jobs with short locks, renewed (or taken) on every pass."""

    lock_ttl: float = defaults.SCHEDULER_LOCK_TTL

    def hold_locks(self) -> set[str]:
        """Renew the locks held, take the free ones; the queues whose delayed jobs this one moves."""
        names = sorted(compat.scheduler_queue_names(self))
        outcomes = _HOLD_LOCKS(
            self.connection,
            keys=[self.get_locking_key(name) for name in names],
            args=[self.name, int(self.lock_ttl * 1000)],
        )
        held = {name for name, outcome in zip(names, outcomes, strict=True) if int(outcome) == 1}
        if held != self.acquired_locks:
            if held - self.acquired_locks:
                log.info("took the scheduler lock of %s", ", ".join(sorted(held - self.acquired_locks)))
            if self.acquired_locks - held:
                log.warning("lost the scheduler lock of %s", ", ".join(sorted(self.acquired_locks - held)))
            compat.set_scheduler_locks(self, held)
        return held

    def heartbeat(self) -> None:
        """Refresh this scheduler's record (RQ's heartbeat would renew the locks with its own TTL)."""
        self.last_heartbeat = now()
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, "last_heartbeat", utcformat(self.last_heartbeat))
            pipeline.expire(self.key, int(self.interval) + 60)
            pipeline.execute()

    def acquire_locks(self, auto_start: bool = False) -> set[str]:
        """RQ's entry point, with this class's TTL (``auto_start`` is not supported: no fork)."""
        return self.hold_locks()


class SchedulerProcess:
    """One loop: periodic entries via rq-scheduler, due delayed jobs via RQ's scheduler, sweeps."""

    def __init__(
        self, redis: Redis, interval: float = defaults.SCHEDULER_INTERVAL, settings: Settings | None = None
    ) -> None:
        # RQ's scheduler moves due jobs through this module's Queue: make it the JSON queue,
        # so that they ring the workers' doorbells and never touch pickle.
        compat.use_queue_class_in_rq_scheduler(JsonQueue)
        self.redis = redis
        self.interval = interval
        self.periodic = make_scheduler(redis, interval)
        self.periodic.settings = settings
        self.heartbeat_ttl = (settings or Settings()).scheduler_heartbeat_ttl
        self.last_sweep = 0.0
        self.delayed = LeasedRQScheduler(
            [q.value for q in QueueName], connection=redis, serializer=JSONSerializer
        )
        self.delayed.lock_ttl = float((settings or Settings()).scheduler_lock_ttl)
        compat.share_connection(self.delayed, redis)
        self.stop_requested = False

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after this pass", signal.Signals(signum).name)
        self.stop_requested = True

    def tick(self) -> None:
        """One pass: enqueue due periodic entries and due delayed jobs, sweep, then beat."""
        self.periodic.heartbeat()
        if self.periodic.acquire_lock():
            try:
                self.periodic.enqueue_jobs()
            finally:
                self.periodic.remove_lock()
        if self.delayed.hold_locks():
            self.delayed.enqueue_scheduled_jobs()
        self.delayed.heartbeat()
        if time.monotonic() - self.last_sweep >= defaults.SWEEP_INTERVAL:
            self.last_sweep = time.monotonic()
            maintenance.sweep(self.redis)
            outbox.relay_pending(self.redis)  # jobs committed by a caller that died before pushing
        self.beat()

    def beat(self) -> None:
        """Record that a pass just completed; the key expires unless the next passes renew it."""
        beat = {"scheduler": self.delayed.name, "at": iso(utcnow())}
        self.redis.set(keys.scheduler_heartbeat(), json.dumps(beat), ex=self.heartbeat_ttl)

    def _wait_for_redis(self, error: BaseException) -> bool:
        """Wait until Redis answers again (True) or a stop is requested (False)."""
        return outages.wait_until_reachable(self.redis, error=error, stop=lambda: self.stop_requested)

    def _register(self) -> bool:
        """Register both schedulers' births, riding out an outage; False if stopped meanwhile."""
        retried = False
        while not self.stop_requested:
            try:
                try:
                    self.periodic.register_birth()
                except ValueError:
                    # rq-scheduler refuses a live name; the name is this process's own, so an
                    # earlier attempt whose answer was lost with the connection did register it.
                    if not retried:
                        raise
                self.delayed.register_birth()
                return True
            except outages.REDIS_DOWN as exc:
                retried = True
                self._wait_for_redis(exc)
        return False

    def _deregister(self) -> None:
        """Release the locks and record the exit; with Redis unreachable, leave it to the keys' TTLs."""
        steps = (
            self.periodic.remove_lock,
            self.periodic.register_death,
            self.delayed.release_locks,
            self.delayed.register_death,
            lambda: _DROP_OWN_BEAT(self.redis, keys=[keys.scheduler_heartbeat()], args=[self.delayed.name]),
        )
        for step in steps:
            try:
                step()
            except outages.REDIS_DOWN as exc:
                log.warning(
                    "Redis unreachable at exit (%s); the scheduler's locks and keys expire by themselves",
                    type(exc).__name__,
                )
                return

    def run(self, burst: bool = False) -> int:
        """Run until SIGTERM/SIGINT (or one completed pass with ``burst``); rides out Redis outages."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        if not self._register():
            return 0
        try:
            while not self.stop_requested:
                started = time.monotonic()
                try:
                    self.tick()
                except outages.REDIS_DOWN as exc:
                    # A pass cut short is run again from the start once Redis answers: each of
                    # its steps is safe to repeat (locks, unique tick ids, atomic moves).
                    self._wait_for_redis(exc)
                    continue
                if burst:
                    break
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            self._deregister()
        return 0


def main_loop(redis: Redis, settings: Settings, burst: bool = False) -> int:
    """Register the periodic entries, then run the scheduler loop."""
    process = SchedulerProcess(redis, settings=settings)
    while True:
        try:
            ids = register_periodic(process.periodic)
            break
        except outages.REDIS_DOWN as exc:  # Redis went away again since start-up: wait, then redo it
            outages.wait_until_reachable(redis, error=exc)
    log.info("scheduler started with %d periodic entries: %s", len(ids), ", ".join(ids) or "none")
    return process.run(burst=burst)
