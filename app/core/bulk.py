"""Bulk actions on every job a filter matches: retry, revoke or delete (``POST /api/v1/jobs/bulk``).

The matching jobs are found at once (the whole listing, at most MAX_MATCHED, reading only
ids), then acted on in the background, a job at a time, each through the same operation as
its single-job endpoint: retry requeues a failed job, revoke cancels a waiting job or stops
a running one, delete removes a job that is not running (revoke a running one first). A job
that no longer fits the action when its turn comes (retried meanwhile, finished, gone) is
skipped, never an error. The progress is kept in Redis under ``tasklane:bulk:<id>`` for a
day. Each action is idempotent over its filter: if the web process stops midway, the same
request again finishes the rest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from redis import Redis
from rq.job import Job, JobStatus

from app.core.filtering import JobFilter
from app.core.listing import decode_cursor, list_jobs
from app.core.outcomes import JobFinished, JobNotFailed, retry_failed, revoke
from app.core.queues import JsonJob
from app.foundation import keys
from app.foundation.timeutil import iso, utcnow

log = logging.getLogger("tasklane.bulk")

#: Most jobs one bulk action may match.
MAX_MATCHED = 100_000
#: Jobs listed per listing page while matching.
PAGE = 500
#: Longest the matching may take (it runs in the request, under gunicorn's 30 s timeout).
MATCH_SECONDS = 20.0
#: How long a bulk action's progress is kept.
PROGRESS_TTL = 86400


class Action(StrEnum):
    RETRY = "retry"
    REVOKE = "revoke"
    DELETE = "delete"


class TooMany(Exception):
    """The filter matches more jobs than one bulk action may act on, or takes too long to match."""


def progress_key(bulk_id: str) -> str:
    return keys.bulk(bulk_id)


def _job_id(job: Job) -> str:
    return job.id


def matching_ids(
    redis: Redis,
    job_filter: JobFilter,
    cap: int = MAX_MATCHED,
    now: float | None = None,
    budget: float = MATCH_SECONDS,
) -> list[str]:
    """Every matching job's id, newest first; TooMany past ``cap`` jobs or ``budget`` seconds."""
    deadline = time.monotonic() + budget
    found: list[str] = []
    seen: set[str] = set()
    cursor = None
    while True:
        ids, next_cursor = list_jobs(
            redis, job_filter.state, job_filter.task, job_filter.queue, cursor, PAGE,
            job_filter=job_filter, view=_job_id, now=now,
        )  # fmt: skip
        for job_id in ids:
            if job_id not in seen:
                seen.add(job_id)
                found.append(job_id)
        if len(found) > cap:
            raise TooMany(f"the filter matches more than {cap} jobs; narrow it")
        if next_cursor is None:
            return found
        if time.monotonic() > deadline:
            raise TooMany(
                f"matching took more than {budget:g} s ({len(found)} jobs so far); "
                "narrow the filter with task:, queue: or state:"
            )
        cursor = decode_cursor(next_cursor)


def act(redis: Redis, action: Action, job_id: str) -> bool:
    """Apply ``action`` to one job; False when it no longer fits (skipped)."""
    job = JsonJob.fetch_many([job_id], connection=redis)[0]
    if job is None:
        return False
    try:
        if action is Action.RETRY:
            retry_failed(job)
        elif action is Action.REVOKE:
            if job.get_status() in (JobStatus.CANCELED, JobStatus.STOPPED):
                return False
            revoke(job)
        else:
            if job.get_status() == JobStatus.STARTED:
                return False
            job.delete(remove_from_queue=True)
    except (JobNotFailed, JobFinished):
        return False
    return True


def run(redis: Redis, bulk_id: str, action: Action, ids: list[str]) -> dict[str, int]:
    """Act on every job of ``ids``, recording the progress; the final counts."""
    key = progress_key(bulk_id)
    done = skipped = failed = 0
    for n, job_id in enumerate(ids, 1):
        try:
            if act(redis, action, job_id):
                done += 1
            else:
                skipped += 1
        except Exception:
            failed += 1
            log.exception("bulk %s %s: job %s failed", bulk_id, action.value, job_id)
        if n % 200 == 0 or n == len(ids):
            redis.hset(key, mapping={"done": done, "skipped": skipped, "failed": failed})
    redis.hset(key, mapping={"finished_at": iso(utcnow()) or ""})
    log.info(
        "bulk %s %s finished: %d done, %d skipped, %d failed", bulk_id, action.value, done, skipped, failed
    )
    return {"done": done, "skipped": skipped, "failed": failed}


def start(
    redis: Redis,
    action: Action,
    job_filter: JobFilter,
    who: str,
    *,
    dry_run: bool = False,
    background: Callable[[Callable[[], Any]], None] | None = None,
) -> dict[str, Any]:
    """Match now, then act in the background (a thread unless ``background`` is given); the answer.

    Raises TooMany past MAX_MATCHED.
    """
    ids = matching_ids(redis, job_filter)
    if dry_run:
        return {"matched": len(ids), "dry_run": True}
    bulk_id = str(uuid.uuid4())
    record: dict[Any, Any] = {
        "action": action.value,
        "filter": json.dumps(job_filter.as_body()),
        "matched": len(ids),
        "by": who,
        "started_at": iso(utcnow()) or "",
        "done": 0,
        "skipped": 0,
        "failed": 0,
    }
    redis.hset(progress_key(bulk_id), mapping=record)
    redis.expire(progress_key(bulk_id), PROGRESS_TTL)
    log.info(
        "bulk %s: %s on %d jobs matching %r, by %s", bulk_id, action.value, len(ids), job_filter.text(), who
    )

    def work() -> None:
        run(redis, bulk_id, action, ids)

    if background is not None:
        background(work)
    else:
        threading.Thread(target=work, name=f"bulk-{bulk_id[:8]}", daemon=True).start()
    return {"matched": len(ids), "bulk_id": bulk_id}


def progress(redis: Redis, bulk_id: str) -> dict[str, Any] | None:
    raw = redis.hgetall(progress_key(bulk_id))
    if not raw:
        return None
    out: dict[str, Any] = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    for field in ("matched", "done", "skipped", "failed"):
        out[field] = int(out.get(field, 0))
    out["filter"] = json.loads(out.get("filter") or "{}")
    out["bulk_id"] = bulk_id
    return out
