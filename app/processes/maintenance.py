"""Registry maintenance that makes delivery at-least-once.

Run by the scheduler process every few seconds (and by workers at RQ's maintenance
interval), under each queue's maintenance lock:
- a job whose worker died (its execution's heartbeat expired) is an orphan, not a
  failure: it goes back to the head of its queue without spending a retry, up to a
  bound, then fails as a poison job (see app/core/outcomes.py); only while the run's lease
  is still expired, so a worker that renewed it (back after a Redis outage) keeps it; and
  not in the first OUTAGE_GRACE seconds after Redis came back (restarted, or reachable again
  from the sweeping process), when a lease may have run out only because Redis was away;
- a job a dying worker had dequeued but not yet started is put back at the head of its
  queue; a finished or failed job left in an intermediate list is only removed from it;
- RQ's own cleanups run for the other registries and for dead workers' registrations.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from rq.job import JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    StartedJobRegistry,
)
from rq.worker_registration import clean_worker_registry

from app.core import outcomes, sequences
from app.core.leases import Lease
from app.core.queues import JsonJob, JsonQueue, all_queues, repair_lanes
from app.foundation import clock, defaults, keys, outages

log = logging.getLogger("tasklane.maintenance")


def rescue_abandoned(queue: JsonQueue, timestamp: float | None = None) -> int:
    """Requeue (or fail as poison) every started job whose execution's heartbeat expired."""
    registry = StartedJobRegistry(queue.name, connection=queue.connection, job_class=JsonJob)
    score = clock.time() if timestamp is None else timestamp
    expired: list[bytes] = queue.connection.zrangebyscore(registry.key, 0, score)  # type: ignore[assignment]
    if not expired:
        return 0
    by_job: dict[str, list[bytes]] = {}
    for member in expired:
        by_job.setdefault(member.decode().split(":", 1)[0], []).append(member)
    requeued = 0
    for job, members in zip(
        JsonJob.fetch_many(list(by_job), connection=queue.connection), by_job.values(), strict=True
    ):
        if job is None or job.get_status(refresh=False) != JobStatus.STARTED:
            continue  # a leftover entry of a finished job: RQ's cleanup drops it
        # Only while the entries are still expired: a worker may have renewed them since.
        lease = Lease(registry.key, tuple(members), expired_by=score)
        requeued += outcomes.orphaned(job, queue, lease=lease)
    queue.connection.zremrangebyscore(registry.key, 0, score)
    return requeued


def rescue_intermediate(queue: JsonQueue, older_than: float = defaults.RESCUE_AFTER) -> int:
    """Put back at the head of the queue every job a dead worker dequeued but never started.

    When the sweep first sees an id in the intermediate list it notes the time (in one
    hash per queue, pruned of ids that left the list); a live worker clears the entry
    within milliseconds of taking the job, so one still there ``older_than`` seconds
    later belongs to a dead worker.
    """
    connection = queue.connection
    seen_key = keys.intermediate_seen(queue.name)
    ids = [_text(i) for i in connection.lrange(queue.intermediate_queue_key, 0, -1)]
    seen = {_text(k): float(v) for k, v in connection.hgetall(seen_key).items()}
    gone = [job_id for job_id in seen if job_id not in ids]
    if gone:
        connection.hdel(seen_key, *gone)
    now = clock.time()
    rescued = 0
    for job_id, job in zip(ids, JsonJob.fetch_many(ids, connection=connection), strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        if status == JobStatus.STARTED:
            continue
        if status != JobStatus.QUEUED:
            # Gone, finished, failed or moved on: it has no business in the list.
            connection.lrem(queue.intermediate_queue_key, 0, job_id)
            connection.hdel(seen_key, job_id)
            continue
        first_seen = seen.get(job_id)
        if first_seen is None:
            connection.hsetnx(seen_key, job_id, now)
            continue
        if now - first_seen < older_than:
            continue
        # Atomic: only the process that removes it from the intermediate list requeues it.
        if outcomes.put_back(queue, job_id, job):
            rescued += 1
            log.warning("requeued job %s: its worker dequeued it and died before starting it", job_id)
        connection.hdel(seen_key, job_id)
    return rescued


def _rq_cleanups(queue: JsonQueue) -> None:
    """RQ's own cleanups of the registries other than the started one (handled above)."""
    options: dict[str, Any] = {"connection": queue.connection, "job_class": JsonJob}
    for registry_class in (FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
        registry_class(queue.name, **options).cleanup()
    for rate_limit_registry in RateLimitRegistry.all(queue.connection):
        rate_limit_registry.cleanup()


def prune_revoked(queue: JsonQueue, timestamp: float | None = None) -> int:
    """Drop the revoked jobs whose retention (``revoked_ttl``) has passed from the canceled registry,
    and their hashes where they are still there (revoked before retention applied to them).

    RQ never cleans its canceled registry: revoked jobs stayed forever. A revoke scores its
    entry with the end of its retention (see JsonJob.cancel); an entry from before keeps the
    time of its revoke, and is pruned once the task's retention has passed since then.
    """
    connection = queue.connection
    registry = queue.canceled_job_registry
    if timestamp is None:  # Redis's clock, as a revoke's scoring uses (JsonJob.cancel)
        sec, usec = connection.time()
        timestamp = sec + usec / 1e6
    now = timestamp
    pruned = 0
    while True:
        due: list[tuple[bytes, float]] = connection.zrangebyscore(  # type: ignore[assignment]
            registry.key, 0, now, start=0, num=500, withscores=True
        )
        if not due:
            return pruned
        ids = [_text(member) for member, _ in due]
        drop: list[str] = []
        keep: dict[str, float] = {}
        for (job_id, (_, score)), job in zip(
            zip(ids, due, strict=True), JsonJob.fetch_many(ids, connection=connection), strict=True
        ):
            # Revoked: canceled while it waited, or stopped while it ran (outcomes.stopped_run).
            if job is None or job.get_status(refresh=False) not in (JobStatus.CANCELED, JobStatus.STOPPED):
                drop.append(job_id)  # expired on its own, or moved on (retried): only the entry goes
                continue
            # A hash without a TTL was revoked before retention applied (or a revoke is applying
            # it right now): its time is up the task's retention after the entry's score.
            no_ttl = int(connection.ttl(job.key)) == -1
            until = score + job.revoked_ttl() if no_ttl else score  # type: ignore[attr-defined]
            if until > now:
                keep[job_id] = until
                connection.expireat(job.key, int(until) + 1)
            else:
                connection.delete(job.key)
                drop.append(job_id)
        if drop:
            connection.zrem(registry.key, *drop)
            pruned += len(drop)
        if keep:
            connection.zadd(registry.key, keep, xx=True)
        if len(due) < 500:
            return pruned


def redis_uptime(connection: Redis) -> float:
    """Seconds since Redis started (``INFO server``)."""
    return float(connection.info("server").get("uptime_in_seconds", 0))


def leases_judgeable(connection: Redis, outage: outages.Outage | None = None) -> bool:
    """False for OUTAGE_GRACE seconds after Redis started (a restart keeps the leases of its
    append-only file, which ran out while it was down) and after this process saw Redis again
    following an outage: the workers get that long to renew their leases or record their runs
    before the sweep takes a run whose lease ran out for a dead worker's."""
    grace = defaults.OUTAGE_GRACE
    if redis_uptime(connection) < grace:
        return False
    recovered_at = (outage or outages.OUTAGE).recovered_at
    return recovered_at is None or clock.monotonic() - recovered_at >= grace


def sweep_queue(queue: JsonQueue, judge_leases: bool | None = None) -> None:
    """Registry maintenance of one queue, unless another process holds its maintenance lock.

    Expired leases are judged only when :func:`leases_judgeable` (``judge_leases`` given: the
    caller asked it once for every queue)."""
    if not queue.acquire_maintenance_lock():
        return
    try:
        if judge_leases if judge_leases is not None else leases_judgeable(queue.connection):
            rescue_abandoned(queue)
        _rq_cleanups(queue)
        prune_revoked(queue)
        clean_worker_registry(queue)
        rescue_intermediate(queue)
    finally:
        queue.release_maintenance_lock()


def sweep(redis: Redis) -> None:
    """Registry maintenance for every queue: abandoned jobs, expired entries, stuck dequeues, the
    queue's priorities and groups (:func:`app.core.queues.repair_lanes`); then the jobs still
    waiting past their ``expires``, and the sequences whose head has ended."""
    judge_leases = leases_judgeable(redis)
    for queue in all_queues(redis):
        sweep_queue(queue, judge_leases)
        if fixed := repair_lanes(redis, queue.name):
            log.warning("queue %s: %d entries of its priorities and groups put right", queue.name, fixed)
    outcomes.expire_due(redis)
    sequences.settle_all(redis)  # a hand-on lost with a process that died between a job's end and it


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
