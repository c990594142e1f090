"""Jobs: status, revoke, retry, and the paged list (``state=FAILURE`` is the dead-letter view)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request, url_for
from rq.exceptions import DeserializationError, NoSuchJobError

from app.catalogue.registry import QueueName
from app.core.listing import Cursor, decode_cursor, list_jobs
from app.core.outcomes import JobFinished, JobNotFailed, remove_set_aside, retry_failed, revoke
from app.core.queues import JsonJob, fetch_job
from app.core.states import State, describe, set_aside_views
from app.foundation import defaults
from app.foundation.runtime import runtime
from app.surfaces.api.blueprint import api
from app.surfaces.api.errors import APIError


def _job(job_id: str) -> JsonJob:
    try:
        return fetch_job(job_id, runtime().redis)
    except NoSuchJobError:
        raise APIError(404, "job_not_found", f"no job with id {job_id!r}") from None
    except DeserializationError:
        raise APIError(
            409, "job_unreadable", f"job {job_id!r} is not stored as JSON; it was not written by this service"
        ) from None


def _set_aside(job_id: str) -> dict[str, Any] | None:
    """The view of a job set aside unread by a worker (failed with its cause), or None."""
    return set_aside_views(runtime().redis, [job_id]).get(job_id)


@api.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """One job's state, progress, result or error (a job set aside unread: FAILURE with its cause)."""
    try:
        view = describe(_job(job_id))
    except APIError:
        if (set_aside := _set_aside(job_id)) is None:
            raise
        return jsonify(set_aside)
    if view["state"] == State.FAILURE.value and view["error"] is None:
        view = _set_aside(job_id) or view
    return jsonify(view)


@api.delete("/jobs/<job_id>")
def revoke_job(job_id: str) -> tuple[Response, int]:
    """Revoke: cancel a waiting job, stop a running one; delete a job set aside unread."""
    try:
        job = _job(job_id)
        revoke(job)
    except (APIError, JobFinished) as exc:
        if remove_set_aside(runtime().redis, job_id):
            return jsonify({"job_id": job_id, "state": State.FAILURE.value, "deleted": True}), 202
        if isinstance(exc, JobFinished):
            raise APIError(409, "job_finished", str(exc)) from None
        raise
    return jsonify({"job_id": job.id, "state": State.REVOKED.value}), 202


@api.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> tuple[Response, int, dict[str, str]]:
    """Requeue a failed job."""
    job = _job(job_id)
    try:
        retry_failed(job)
    except JobNotFailed as exc:
        raise APIError(409, "job_not_failed", str(exc)) from None
    location = url_for("api.get_job", job_id=job.id)
    return (
        jsonify({"job_id": job.id, "state": State.PENDING.value, "links": {"self": location}}),
        202,
        {"Location": location},
    )


def _cursor(raw: str | None) -> Cursor | None:
    if not raw:
        return None
    try:
        return decode_cursor(raw)
    except ValueError:  # also binascii.Error, UnicodeDecodeError and JSONDecodeError
        raise APIError(400, "bad_cursor", "cursor is not one this API returned") from None


@api.get("/jobs")
def list_all_jobs() -> Response:
    """Jobs newest first, filtered by state, task and queue, one page at a time."""
    args = request.args
    state = None
    if args.get("state"):
        try:
            state = State(args["state"].upper())
        except ValueError:
            allowed = ", ".join(s.value for s in State)
            raise APIError(400, "bad_state", f"state must be one of {allowed}") from None
    queue = args.get("queue") or None
    if queue is not None and queue not in {q.value for q in QueueName}:
        raise APIError(400, "bad_queue", f"no queue named {queue!r}")
    try:
        limit = min(int(args.get("limit", defaults.PAGE_SIZE)), 500)
    except ValueError:
        raise APIError(400, "bad_limit", "limit must be a whole number") from None
    if limit < 1:
        raise APIError(400, "bad_limit", "limit must be at least 1")
    cursor = _cursor(args.get("cursor"))
    jobs, next_cursor = list_jobs(runtime().redis, state, args.get("task") or None, queue, cursor, limit)
    return jsonify({"jobs": jobs, "next_cursor": next_cursor})
