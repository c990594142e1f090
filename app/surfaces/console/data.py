"""What the console's pages show, read from Redis: each read is bounded, however many jobs are kept."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from rq.job import Job

from app.catalogue.registry import MASK
from app.core import queues as queue_store
from app.core import sealing
from app.core.queues import JsonJob, all_queues, task_spec
from app.core.states import describe, state_of, task_name
from app.foundation import keys
from app.foundation.meta import Meta
from app.foundation.timeutil import iso
from app.ops import metrics, series
from app.processes.workers import JsonWorker

NBUCKETS = len(metrics.BUCKETS) + 1
#: Longest argument text in a jobs list row.
ROW_ARGS_CHARS = 120


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def masked_args(job: Job) -> dict[str, Any] | str:
    """The job's arguments with sensitive ones masked; MASK when they cannot be read or are stored
    encrypted."""
    if sealing.is_encrypted(job):
        return MASK
    try:
        kwargs = dict(job.kwargs)
    except Exception:
        return MASK
    spec = task_spec(job)
    return spec.masked(kwargs) if spec is not None else kwargs


def row(job: Job) -> dict[str, Any]:
    """A job as the jobs list shows it."""
    view = describe(job)
    args = masked_args(job)
    text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, default=str)
    view["args_text"] = text if len(text) <= ROW_ARGS_CHARS else text[: ROW_ARGS_CHARS - 1] + "…"
    return view


def chart_points(redis: Redis, span: str, name: str, now: float | None = None) -> dict[str, Any]:
    """One series over a window: times, successes, failures, p50 and p95 run times (ms)."""
    points = series.points(redis, span, name, ("success", "failure"), NBUCKETS, now)
    return {
        "xs": [p[0] for p in points],
        "success": [float(p[1].counts["success"]) for p in points],
        "failure": [float(p[1].counts["failure"]) for p in points],
        "p50": [1000 * metrics.quantile(0.5, p[1].buckets) for p in points],
        "p95": [1000 * metrics.quantile(0.95, p[1].buckets) for p in points],
    }


def totals(redis: Redis, span: str, now: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per task and per queue over the window: outcome counts and run-time quantiles, busiest first."""
    out: dict[str, list[dict[str, Any]]] = {"t": [], "q": []}
    for name, tally in series.totals(redis, span, NBUCKETS, now).items():
        kind, _, label = name.partition(":")
        if kind not in out:
            continue
        counts = tally.counts
        ended = counts.get("success", 0) + counts.get("failure", 0)
        out[kind].append(
            {
                "name": label,
                "success": counts.get("success", 0),
                "failure": counts.get("failure", 0),
                "retry": counts.get("retry", 0),
                "revoked": counts.get("revoked", 0),
                "failure_rate": counts.get("failure", 0) / ended if ended else 0.0,
                "p50_ms": 1000 * metrics.quantile(0.5, tally.buckets) if sum(tally.buckets) else None,
                "p95_ms": 1000 * metrics.quantile(0.95, tally.buckets) if sum(tally.buckets) else None,
            }
        )
    for rows in out.values():
        rows.sort(key=lambda r: (-(r["success"] + r["failure"]), r["name"]))
    return out


def queues(redis: Redis) -> list[dict[str, Any]]:
    """Per queue: its depth in each state, how long its oldest waiting job has waited, whether paused."""
    out = []
    now = datetime.now(UTC)
    paused = queue_store.paused_queues(redis)
    for queue in all_queues(redis):
        with redis.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            for registry in (queue.started_job_registry, queue.scheduled_job_registry,
                             queue.deferred_job_registry, queue.failed_job_registry,
                             queue.finished_job_registry, queue.canceled_job_registry):  # fmt: skip
                pipe.zcard(registry.key)
            pipe.lindex(queue.key, 0)
            waiting, started, scheduled, deferred, failed, finished, canceled, head = pipe.execute()
        oldest = None
        if head:
            stamp = redis.hget(JsonJob.key_for(_text(head)), "enqueued_at")
            if stamp:
                when = datetime.fromisoformat(_text(stamp).replace("Z", "+00:00"))
                when = when if when.tzinfo else when.replace(tzinfo=UTC)
                oldest = max(0.0, (now - when).total_seconds())
        waiting = queue_store.waiting(redis, queue.name)["total"]  # with its priorities' and groups'
        out.append(
            {
                "name": queue.name,
                "waiting": waiting,
                "started": started,
                "scheduled": scheduled,
                "deferred": deferred,
                "failed": failed,
                "finished": finished,
                "canceled": canceled,
                "oldest_wait": oldest,
                "paused": queue.name in paused,
            }
        )
    return out


def workers(redis: Redis) -> list[dict[str, Any]]:
    """Registered workers with their state and current job (its task too)."""
    found = JsonWorker.all(connection=redis)
    current_ids = [w.get_current_job_id() for w in found]
    jobs = JsonJob.fetch_many([i for i in current_ids if i], connection=redis)
    tasks = {job.id: task_name(job) for job in jobs if job is not None}
    out = []
    for worker, job_id in zip(found, current_ids, strict=True):
        state = worker.get_state()
        out.append(
            {
                "name": worker.name,
                "host": worker.hostname,
                "pid": worker.pid,
                "state": str(getattr(state, "value", state)),
                "queues": worker.queue_names(),
                "job_id": job_id,
                "task": tasks.get(job_id or ""),
                "successes": worker.successful_job_count,
                "failures": worker.failed_job_count,
                "last_heartbeat": iso(worker.last_heartbeat),
            }
        )
    out.sort(key=lambda w: str(w["name"]))
    return out


def scheduler(redis: Redis) -> dict[str, Any] | None:
    """The latest pass of the scheduler that holds the lead (None when no scheduler runs)."""
    raw = redis.get(keys.scheduler_heartbeat())
    if not raw:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    return found if isinstance(found, dict) else {"value": found}


def redis_memory(redis: Redis) -> dict[str, Any] | None:
    """Redis's memory use (None where INFO is refused, as some managed services do)."""
    try:
        info = redis.info("memory")
    except ResponseError:
        return None
    return {
        "used": info.get("used_memory_human"),
        "peak": info.get("used_memory_peak_human"),
        "max": info.get("maxmemory_human") if info.get("maxmemory") else None,
    }


def _at(stamp: str | None) -> str:
    return stamp or ""


def timeline(job: Job, view: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's life in order: created, enqueued, each failed attempt, a retry due, started, its end."""
    events: list[dict[str, Any]] = []
    if job.created_at:
        events.append({"at": iso(job.created_at), "what": "created", "detail": ""})
    if view["enqueued_at"]:
        events.append({"at": view["enqueued_at"], "what": "enqueued", "detail": f"on {job.origin}"})
    for attempt in job.meta.get(Meta.ATTEMPTS) or []:
        if isinstance(attempt, dict):
            detail = f"{attempt.get('type', 'Error')}: {attempt.get('message', '')}"
            events.append(
                {
                    "at": _at(attempt.get("at")),
                    "what": f"attempt {attempt.get('attempt', '?')} failed",
                    "detail": detail,
                }
            )
    if view.get("next_retry_at"):
        events.append({"at": view["next_retry_at"], "what": "retry due", "detail": ""})
    if view["started_at"]:
        events.append({"at": view["started_at"], "what": "started", "detail": view.get("worker") or ""})
    if view["ended_at"]:
        detail = ""
        if view.get("error"):
            detail = f"{view['error'].get('type')}: {view['error'].get('message')}"
        events.append({"at": view["ended_at"], "what": view["state"].lower(), "detail": detail})
    events.sort(key=lambda e: e["at"] or "")
    return events


def job_page(job: Job) -> dict[str, Any]:
    """Everything the job page shows."""
    view = describe(job)
    workflow = job.meta.get(Meta.WORKFLOW) or {}
    parents = [d.decode() if isinstance(d, bytes) else str(d) for d in job.dependency_ids]
    result = view.get("result")
    if sealing.is_encrypted(job) and result is not None:
        result = view["result"] = MASK  # stored encrypted: the API gives it to callers, no page shows it
    return {
        "job": view,
        "args": masked_args(job),
        "args_json": json.dumps(masked_args(job), indent=2, ensure_ascii=False, default=str),
        "result_json": json.dumps(result, indent=2, ensure_ascii=False, default=str),
        "timeline": timeline(job, view),
        "workflow_id": workflow.get("id"),
        "workflow_path": workflow.get("path"),
        "parents": parents,
        "can_retry": view["state"] == "FAILURE",
        "can_revoke": view["state"] in ("PENDING", "STARTED", "PROGRESS", "RETRY"),
    }


def workflow_states(redis: Redis, job_ids: list[str]) -> dict[str, str]:
    """Each step's state (EXPIRED when its job is gone), fetched in batches."""
    out: dict[str, str] = {}
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        for job_id, job in zip(chunk, JsonJob.fetch_many(chunk, connection=redis), strict=True):
            out[job_id] = state_of(job).value if job is not None else "EXPIRED"
    return out


def workflow_record(redis: Redis, workflow_id: str) -> dict[str, Any] | None:
    raw = redis.get(keys.workflow(workflow_id))
    return json.loads(raw) if raw else None


def now() -> float:
    return time.time()
