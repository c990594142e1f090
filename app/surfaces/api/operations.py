"""What operators look at: queues, workers (schedules: app/surfaces/api/schedules.py)."""

from __future__ import annotations

from flask import Response, jsonify

from app.core.queues import all_queues
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso
from app.processes.workers import JsonWorker
from app.surfaces.api.blueprint import api


@api.get("/queues")
def list_queues() -> Response:
    """Per queue: waiting, started, scheduled, deferred, failed, finished counts."""
    out = []
    for queue in all_queues(runtime().redis):
        out.append(
            {
                "name": queue.name,
                "waiting": queue.count,
                "started": queue.started_job_registry.count,
                "scheduled": queue.scheduled_job_registry.count,
                "deferred": queue.deferred_job_registry.count,
                "failed": queue.failed_job_registry.count,
                "finished": queue.finished_job_registry.count,
                "canceled": queue.canceled_job_registry.count,
            }
        )
    return jsonify({"queues": out})


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
