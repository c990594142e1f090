"""Jobs: status, revoke, retry, and the paged list (``state=FAILURE`` is the dead-letter view)."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify, request, url_for
from rq.exceptions import DeserializationError, NoSuchJobError

from app.core import bulk, filtering
from app.core.listing import Cursor, decode_cursor, list_jobs
from app.core.outcomes import JobFinished, JobNotFailed, remove_set_aside, retry_failed, revoke
from app.core.queues import JsonJob, fetch_job
from app.core.states import State, describe, set_aside_views
from app.foundation import defaults
from app.foundation.runtime import runtime
from app.surfaces.api.blueprint import api
from app.surfaces.api.bodies import json_object
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


def _filter(query: dict[str, str]) -> filtering.JobFilter:
    try:
        return filtering.from_query(query)
    except filtering.FilterError as exc:
        code = {"state": "bad_state", "queue": "bad_queue"}.get(exc.field, "bad_filter")
        details = [{"field": exc.field, "message": exc.message}]
        raise APIError(400, code, str(exc), details) from None


@api.get("/jobs")
def list_all_jobs() -> Response:
    """Jobs newest first, filtered by state, task, queue, arguments and age, one page at a time."""
    args = request.args
    job_filter = _filter(args.to_dict())
    try:
        limit = min(int(args.get("limit", defaults.PAGE_SIZE)), 500)
    except ValueError:
        raise APIError(400, "bad_limit", "limit must be a whole number") from None
    if limit < 1:
        raise APIError(400, "bad_limit", "limit must be at least 1")
    cursor = _cursor(args.get("cursor"))
    jobs, next_cursor = list_jobs(
        runtime().redis, job_filter.state, job_filter.task, job_filter.queue, cursor, limit,
        job_filter=job_filter,
    )  # fmt: skip
    return jsonify({"jobs": jobs, "next_cursor": next_cursor})


#: The body of ``POST /api/v1/jobs/bulk``, as messages show it.
BULK_SHAPE = (
    '{"action": "retry"|"revoke"|"delete", "filter": {"state", "task", "queue", "since", "args": {...}}, '
    '"dry_run": false}'
)


@api.post("/jobs/bulk")
def bulk_action() -> tuple[Response, int]:
    """Retry, revoke or delete every job a filter matches (in the background); ``dry_run`` only counts."""
    body = json_object(shape=BULK_SHAPE)
    unknown = sorted(set(body) - {"action", "filter", "dry_run"})
    if unknown:
        raise APIError(422, "invalid_bulk", f"unknown field {unknown[0]!r}; the body is {BULK_SHAPE}")
    try:
        action = bulk.Action(str(body.get("action")))
    except ValueError:
        raise APIError(
            422, "invalid_bulk", "action must be retry, revoke or delete",
            [{"field": "action", "message": "must be retry, revoke or delete"}],
        ) from None  # fmt: skip
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise APIError(422, "invalid_bulk", "dry_run must be true or false")
    try:
        job_filter = filtering.from_body(body.get("filter"))
    except filtering.FilterError as exc:
        raise APIError(
            422, "invalid_bulk", str(exc), [{"field": exc.field, "message": exc.message}]
        ) from None
    return run_bulk(action, job_filter, f"api:{g.get('caller', '?')}", dry_run)


def run_bulk(
    action: bulk.Action, job_filter: filtering.JobFilter, who: str, dry_run: bool
) -> tuple[Response, int]:
    """Match and start a bulk action (the console's too): 202 ``{"matched", "bulk_id"}``; dry run 200."""
    try:
        out = bulk.start(runtime().redis, action, job_filter, who, dry_run=dry_run)
    except bulk.TooMany as exc:
        raise APIError(422, "too_many_jobs", str(exc)) from None
    if not dry_run:
        out["links"] = {"self": url_for("api.get_bulk", bulk_id=out["bulk_id"])}
    return jsonify(out), 200 if dry_run else 202


@api.get("/jobs/bulk/<bulk_id>")
def get_bulk(bulk_id: str) -> Response:
    """A bulk action's progress: matched, done, skipped, failed, and when it finished."""
    found = bulk.progress(runtime().redis, bulk_id)
    if found is None:
        raise APIError(404, "bulk_not_found", f"no bulk action with id {bulk_id!r} (kept a day)")
    return jsonify(found)
