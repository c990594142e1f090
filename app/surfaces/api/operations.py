"""What operators look at: queues, workers (schedules: app/surfaces/api/schedules.py)."""

from __future__ import annotations

from flask import Response, jsonify

from app.core import queues as queue_store
from app.core.queues import all_queues
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso
from app.processes.workers import JsonWorker
from app.surfaces.api.blueprint import api
from app.surfaces.api.errors import APIError


@api.get("/queues")
def list_queues() -> Response:
    """Per queue: waiting, started, scheduled, deferred, failed, finished counts, and paused; the
    waiting jobs by priority (``waiting_by_priority``) and how many groups have some."""
    out = []
    redis = runtime().redis
    paused = queue_store.paused_queues(redis)
    for queue in all_queues(redis):
        waiting = queue_store.waiting(redis, queue.name)  # its plain list and its priorities' and groups'
        out.append(
            {
                "name": queue.name,
                "waiting": waiting["total"],
                "waiting_by_priority": waiting["by_priority"],
                "waiting_groups": waiting["groups"],
                "started": queue.started_job_registry.count,
                "scheduled": queue.scheduled_job_registry.count,
                "deferred": queue.deferred_job_registry.count,
                "failed": queue.failed_job_registry.count,
                "finished": queue.finished_job_registry.count,
                "canceled": queue.canceled_job_registry.count,
                "paused": queue.name in paused,
            }
        )
    return jsonify({"queues": out})


def set_paused(name: str, paused: bool) -> dict[str, object]:
    """Pause or resume queue ``name`` (the API's and the console's one call); 404 for an unknown queue."""
    redis = runtime().redis
    try:
        (queue_store.pause if paused else queue_store.resume)(redis, name)
    except queue_store.UnknownQueueError as exc:
        raise APIError(404, "unknown_queue", str(exc)) from None
    return {"name": name, "paused": paused}


@api.post("/queues/<queue>/pause")
def pause_queue(queue: str) -> Response:
    """Every worker on every host stops taking jobs from the queue within a second; jobs in hand finish."""
    return jsonify(set_paused(queue, True))


@api.post("/queues/<queue>/resume")
def resume_queue(queue: str) -> Response:
    """Workers take jobs from the queue again; idle ones are woken at once."""
    return jsonify(set_paused(queue, False))


@api.get("/workers")
def list_workers() -> Response:
    """Per worker: name, host, pid, state, current job, queues, counts, last heartbeat."""
    out = []
    for worker in JsonWorker.all(connection=runtime().redis):
        out.append(
            {
                "name": worker.name,
                "host": worker.hostname,
                "pid": worker.pid,
                "state": getattr(worker.get_state(), "value", str(worker.get_state())),
                "current_job": worker.get_current_job_id(),
                "queues": worker.queue_names(),
                "successes": worker.successful_job_count,
                "failures": worker.failed_job_count,
                "last_heartbeat": iso(worker.last_heartbeat),
                "birth": iso(worker.birth_date),
            }
        )
    out.sort(key=lambda w: str(w["name"]))
    return jsonify({"workers": out})
