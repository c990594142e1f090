"""Registry maintenance that makes delivery at-least-once.

Run by the scheduler process every few seconds (and by workers at RQ's maintenance
interval): a job whose worker died (its heartbeat expired) is retried while retries
remain, else failed with AbandonedJobError (alerting if its task is critical); a job a
dying worker had dequeued but not yet started is put back at the head of its queue,
where RQ's own cleanup would have failed it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from redis import Redis
from rq.registry import clean_registries
from rq.worker_registration import clean_worker_registry

from app import defaults, hooks
from app.queues import JsonJob, JsonQueue, all_queues

log = logging.getLogger("tasklane.maintenance")


def _on_abandoned(job: JsonJob, *exc_info: object) -> bool:
    """A dead worker's job: when no retry is left, it has failed for good.

    A job whose process the supervisor killed for its hard time limit already carries
    that error (and no retry): it keeps it.
    """
    if not job.should_retry:
        recorded = job.meta.get(hooks.ERROR_META_KEY) or {}
        if recorded.get("type") == "TimeLimitExceeded":
            summary = f"TimeLimitExceeded: {recorded.get('message')}"
        else:
            hooks.record_error(job, "AbandonedJobError", "the worker running this job died")
            summary = "AbandonedJobError: the worker running this job died"
        hooks.after_final_failure(job, summary)
    return True


def rescue_intermediate(queue: JsonQueue, older_than: float = defaults.RESCUE_AFTER) -> int:
    """Put back at the head of the queue every job a dead worker dequeued but never started."""
    intermediate = queue.intermediate_queue
    rescued = 0
    for job_id in intermediate.get_job_ids():
        if job_id in queue.started_job_registry:
            continue
        first_seen = intermediate.get_first_seen(job_id)
        if first_seen is None:
            intermediate.set_first_seen(job_id)
            continue
        # A live worker clears the entry within milliseconds of taking the job.
        if (datetime.now(UTC) - first_seen).total_seconds() < older_than:
            continue
        # Atomic: only the process that removes it from the intermediate list requeues it.
        moved = queue.connection.eval(_REQUEUE_FROM_INTERMEDIATE, 2, intermediate.key, queue.key, job_id)
        if moved:
            rescued += 1
            log.warning("requeued job %s: its worker dequeued it and died before starting it", job_id)
    return rescued


_REQUEUE_FROM_INTERMEDIATE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def sweep_queue(queue: JsonQueue) -> None:
    """Registry maintenance of one queue, unless another process holds its maintenance lock."""
    if not queue.acquire_maintenance_lock():
        return
    try:
        clean_registries(queue, exception_handlers=[_on_abandoned])
        clean_worker_registry(queue)
        rescue_intermediate(queue)
    finally:
        queue.release_maintenance_lock()


def sweep(redis: Redis) -> None:
    """Registry maintenance for every queue: abandoned jobs, expired entries, stuck dequeues."""
    for queue in all_queues(redis):
        sweep_queue(queue)
