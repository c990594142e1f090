"""The paged job listing behind ``GET /api/v1/jobs`` (``state=FAILURE`` is the dead-letter view)."""

from __future__ import annotations

from typing import Any

from rq.job import Job

from app.jobs import State, describe

_STATE_SOURCES: dict[State, tuple[str, ...]] = {
    State.PENDING: ("queue", "scheduled", "deferred"),
    State.RETRY: ("scheduled",),
    State.STARTED: ("started",),
    State.PROGRESS: ("started",),
    State.SUCCESS: ("finished",),
    State.FAILURE: ("failed",),
    State.REVOKED: ("canceled", "failed"),
}


def _ids(queue: Any, source: str) -> list[tuple[float, str]]:
    """(score, job id) pairs of one queue's source, newest first."""
    from rq.job import parse_job_id

    redis = queue.connection
    if source == "queue":
        ids = [i.decode() if isinstance(i, bytes) else i for i in redis.lrange(queue.key, 0, -1)]
        # Queue order is oldest first; give later positions higher scores.
        return [(float(n), i) for n, i in enumerate(ids)][::-1]
    registry = {
        "scheduled": queue.scheduled_job_registry,
        "deferred": queue.deferred_job_registry,
        "started": queue.started_job_registry,
        "finished": queue.finished_job_registry,
        "failed": queue.failed_job_registry,
        "canceled": queue.canceled_job_registry,
    }[source]
    pairs = redis.zrevrange(registry.key, 0, -1, withscores=True)
    seen: set[str] = set()
    out = []
    for member, score in pairs:
        job_id = parse_job_id(member.decode() if isinstance(member, bytes) else member)
        if job_id not in seen:
            seen.add(job_id)
            out.append((score, job_id))
    return out


def _newest_first(redis: Any, candidates: list[tuple[float, str]]) -> list[str]:
    """Job ids by their latest timestamp, newest first (registry scores are whole seconds)."""
    ids = list(dict.fromkeys(job_id for _, job_id in candidates))
    position = {job_id: score for score, job_id in candidates}
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "ended_at", "started_at", "enqueued_at", "created_at")
        stamps = pipe.execute()

    def key(item: tuple[str, list[bytes | None]]) -> tuple[str, float]:
        job_id, fields = item
        latest = next((f.decode() for f in fields if f), "")
        return latest, position[job_id]

    return [job_id for job_id, _ in sorted(zip(ids, stamps, strict=True), key=key, reverse=True)]


def list_jobs(
    redis: Any,
    state: State | None,
    task: str | None,
    queue_name: str | None,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of jobs, newest first, with the offset of the next page (or None)."""
    from app.queues import QueueName, get_queue

    names = [queue_name] if queue_name else [q.value for q in QueueName]
    states = [state] if state else list(_STATE_SOURCES)
    sources = sorted({s for st in states for s in _STATE_SOURCES[st]})
    candidates: list[tuple[float, str]] = []
    for name in names:
        queue = get_queue(name, redis)
        for source in sources:
            candidates.extend(_ids(queue, source))
    ordered = _newest_first(redis, candidates)
    from app.queues import JsonJob

    page: list[dict[str, Any]] = []
    position = offset
    while position < len(ordered) and len(page) < limit:
        chunk = ordered[position : position + limit * 2]
        for job in JsonJob.fetch_many(chunk, connection=redis):
            position += 1
            if job is None:
                continue
            view = describe(job)
            if state is not None and view["state"] != state.value:
                continue
            if task is not None and view["task"] != task:
                continue
            page.append(view)
            if len(page) == limit:
                break
    return page, (position if position < len(ordered) else None)
