"""The scheduler process: periodic jobs from the registry, and delayed jobs coming due.

Two libraries share one loop here, each doing what it owns:
- rq-scheduler keeps an entry per schedule (cron or interval), each under a
  stable job id ``periodic-<name>``, so a restart replaces an entry instead of adding one;
- RQ's own scheduler moves jobs whose time has come out of each queue's
  ScheduledJobRegistry (API ``countdown``/``eta``, retry back-offs).
Workers never run a scheduler loop; this process is the only one that moves due jobs.

The schedules themselves are data (app/core/schedules.py): the catalogue's declarations
are seeded into Redis at start, operators create, edit, pause and delete schedules through
the API and CLI, and this loop follows the store's changes (a version key) on every pass.
rq-scheduler holds one entry ``periodic-<name>`` per running schedule, scored with its next
due tick; when an entry is due, the store deals with each tick once (cron in the schedule's
time zone, DST handled in app/foundation/ticks.py; overlap and catch-up policies), and the
entry moves on. rq-scheduler never computes a next run itself (it would use the host's
local time and the ``crontab`` package).

Each tick of a schedule becomes a job of its own, ``periodic-<name>-<tick>``, created with
RQ's atomic unique enqueue, and the store's per-schedule mark of the ticks dealt with moves
only forward, atomically: two scheduler processes (or one slow pass overlapping the next)
deal with each tick exactly once.

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
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from redis import Redis
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat
from rq_scheduler import Scheduler
from rq_scheduler.utils import to_unix

from app.catalogue.registry import MASK, REGISTRY, QueueName, TaskRegistry, TaskSpec
from app.core import compat, outbox
from app.core import schedules as store
from app.core.queues import JsonJob, JsonQueue
from app.foundation import clock, defaults, keys, outages, runtime, ticks
from app.foundation.config import Settings
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta
from app.foundation.timeutil import iso, utcnow
from app.processes import maintenance

log = logging.getLogger("tasklane.scheduler")

PERIODIC_PREFIX = store.PERIODIC_PREFIX


def periodic_job_id(spec: TaskSpec) -> str:
    """The stable job id of a catalogue task's periodic entry."""
    return store.entry_id(spec.name)


def next_cron_run(cron: str, after: datetime | None = None) -> datetime:
    """When ``cron`` (UTC) next fires after ``after`` (default: now), as an aware UTC datetime."""
    base = after.astimezone(UTC) if after else datetime.fromtimestamp(store._now(), UTC)
    found = ticks.next_fire(ticks.check_cron(cron), UTC_ZONE, base)
    if found is None:
        raise ValueError(f"cron expression {cron!r} never fires again")
    return found


UTC_ZONE = ticks.zone("UTC")


class PeriodicScheduler(Scheduler):
    """rq-scheduler keeping one entry per schedule of the store (app/core/schedules.py), scored
    with its next due tick; each due entry has its ticks dealt with by the store, once each."""

    settings: Settings | None = None
    registry: TaskRegistry = REGISTRY
    #: The store's version the entries were last synchronised with.
    synced: bytes | None = None

    def get_jobs_to_queue(self, with_times: bool = False) -> Any:
        """rq-scheduler's entries due by now, as its own method answers, by the app's clock."""
        return self.get_jobs(to_unix(utcnow()), with_times=with_times)

    def enqueue_jobs(self) -> list[JsonJob]:
        """Follow the store's changes, then deal with the ticks of every due entry."""
        version = self.connection.get(store.version_key())
        if version is None:  # a Redis that lost its data (or never seeded): seed it again
            store.seed(self.connection, self.registry)
            version = self.connection.get(store.version_key())
        if version != self.synced:
            sync_entries(self)
            self.synced = version
        enqueued: list[str] = []
        settings = self.settings or runtime.settings()
        ttls = store.Ttls(result_ttl=settings.result_ttl, failed_job_ttl=settings.failed_job_ttl)
        for template in self.get_jobs_to_queue():
            try:
                name = template.meta.get(Meta.DEFINITION, {}).get("name")
            except DeserializationError:
                # Not written by this module (a pickle, say): never unpickled, dropped from the
                # schedule so that it cannot stop the loop; its hash stays for inspection.
                log.warning("periodic entry %s is not stored as JSON; removing it unread", template.id)
                self.cancel(template.id)
                continue
            if not name:
                log.warning("periodic entry %s names no schedule; removing it", template.id)
                self.cancel(template.id)
                continue
            ids, due = store.fire_due(self.connection, name, registry=self.registry, ttls=ttls)
            enqueued += ids
            if due is None:
                self.cancel(template.id)
            else:
                self.connection.zadd(self.scheduled_jobs_key, {template.id: due}, xx=True)
        return [JsonJob(job_id, connection=self.connection) for job_id in enqueued]


def make_scheduler(redis: Redis, interval: float = defaults.SCHEDULER_INTERVAL) -> PeriodicScheduler:
    """An rq-scheduler Scheduler that reads and writes JSON jobs only."""
    return PeriodicScheduler(connection=redis, job_class=JsonJob, queue_class=JsonQueue, interval=interval)


def sync_entries(scheduler: Scheduler, registry: TaskRegistry | None = None) -> list[str]:
    """Make rq-scheduler hold one entry per running schedule of the store, scored with its next
    due tick; returns their ids. An entry whose definition is unchanged is kept; a changed one
    is replaced; entries of schedules deleted, paused or without their task are removed."""
    redis = scheduler.connection
    registry = registry if registry is not None else getattr(scheduler, "registry", REGISTRY)
    assert registry is not None
    wanted: dict[str, tuple[store.Record, TaskSpec]] = {}
    for name, record in store.load_all(redis).items():
        spec = registry.get(record.task)
        if spec is None:
            log.warning("schedule %s names no registered task %r; not run", name, record.task)
        elif not record.paused:
            wanted[store.entry_id(name)] = (record, spec)
    for job_id in list(_scheduled_ids(scheduler)):
        if job_id.startswith(PERIODIC_PREFIX) and job_id not in wanted:
            log.info("removing periodic entry %s", job_id)
            scheduler.cancel(job_id)
    for job_id, (record, spec) in wanted.items():
        definition = {
            "name": record.name,
            "func": spec.path,
            "queue": spec.queue.value,
            **record.definition(),
        }
        through = int(redis.hget(store.state_key(record.name), "through") or store._now() - 1)
        due = store.next_due(record, through)
        if due is None:
            continue
        if job_id in scheduler:
            try:
                existing = JsonJob.fetch(job_id, connection=redis)
                if existing.meta.get(Meta.DEFINITION) == definition:
                    redis.zadd(scheduler.scheduled_jobs_key, {job_id: due})
                    continue
            except (NoSuchJobError, DeserializationError):
                pass  # gone, or not stored as JSON: replaced below, unread
            scheduler.cancel(job_id)
        meta: dict[str, Any] = {Meta.TASK: spec.name, Meta.DEFINITION: definition}
        if record.cron:
            # The cron meta makes rq-scheduler's own tools show it as a cron entry; its next run
            # is always computed here (time zone aware), never by rq-scheduler.
            meta |= {"cron_string": record.cron, "use_local_timezone": False}
        extra: dict[str, Any] = {"interval": record.interval} if record.interval else {}
        scheduler.schedule(
            datetime.fromtimestamp(due, UTC).replace(tzinfo=None),
            func=spec.path,
            # Shown by rq-scheduler's tools only (ticks run the store's args): an encrypted task's as ***.
            kwargs=dict.fromkeys(record.args, MASK) if record.sealed else dict(record.args),
            id=job_id,
            queue_name=spec.queue.value,
            timeout=spec.time_limit,
            # The entry's job hash must outlive each run: rq-scheduler drops entries whose hash expired.
            result_ttl=-1,
            meta=meta,
            description=f"{record.name} (periodic)",
            **extra,
        )
        redis.zadd(scheduler.scheduled_jobs_key, {job_id: due})
        desc = record.cron or f"every {record.interval} s"
        log.info("registered periodic entry %s (%s, %s)", job_id, desc, record.timezone)
    return sorted(wanted)


def register_periodic(scheduler: Scheduler, registry: TaskRegistry = REGISTRY) -> list[str]:
    """Seed the store with the catalogue's declared schedules (the operator's edits kept), then
    make rq-scheduler hold an entry per running schedule; returns the catalogue's entry ids."""
    if isinstance(scheduler, PeriodicScheduler):
        scheduler.registry = registry
    names = store.seed(scheduler.connection, registry)
    sync_entries(scheduler, registry)
    if isinstance(scheduler, PeriodicScheduler):
        scheduler.synced = scheduler.connection.get(store.version_key())
    return [store.entry_id(name) for name in names]


def _scheduled_ids(scheduler: Scheduler) -> list[str]:
    raw = scheduler.connection.zrange(scheduler.scheduled_jobs_key, 0, -1)
    return [r.decode() if isinstance(r, bytes) else r for r in raw]


def schedules(redis: Redis, registry: TaskRegistry = REGISTRY) -> list[dict[str, Any]]:
    """Every schedule with its next run (``GET /api/v1/schedules``)."""
    return store.list_views(redis, registry)


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
        compat.use_clock_in_rq_scheduler()
        settings = settings if settings is not None else runtime.settings()
        self.redis = redis
        self.interval = interval
        self.periodic = make_scheduler(redis, interval)
        self.periodic.settings = settings
        self.heartbeat_ttl = settings.scheduler_heartbeat_ttl
        self.last_sweep: float | None = None  # clock.monotonic() of the last sweep
        self.delayed = LeasedRQScheduler(
            [q.value for q in QueueName], connection=redis, serializer=JSONSerializer
        )
        self.delayed.lock_ttl = float(settings.scheduler_lock_ttl)
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
        if self.last_sweep is None or clock.monotonic() - self.last_sweep >= defaults.SWEEP_INTERVAL:
            self.last_sweep = clock.monotonic()
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
                started = clock.monotonic()
                try:
                    self.tick()
                except outages.REDIS_DOWN as exc:
                    # A pass cut short is run again from the start once Redis answers: each of
                    # its steps is safe to repeat (locks, unique tick ids, atomic moves).
                    self._wait_for_redis(exc)
                    continue
                if burst:
                    break
                clock.sleep(max(0.0, self.interval - (clock.monotonic() - started)))
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
