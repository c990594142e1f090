"""Job status: ``GET /api/v1/jobs/<id>``."""

from __future__ import annotations

from flask import Response, jsonify
from rq.exceptions import DeserializationError, NoSuchJobError

from app.api import api
from app.api.errors import APIError
from app.jobs import describe
from app.queues import fetch_job
from app.runtime import runtime


@api.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """One job's state, progress, result or error."""
    try:
        job = fetch_job(job_id, runtime().redis)
        job.func_name  # noqa: B018 - decodes the job data now, as JSON or not at all
    except (NoSuchJobError, ValueError):
        raise APIError(404, "job_not_found", f"no job with id {job_id!r}") from None
    except DeserializationError:
        raise APIError(
            409, "job_unreadable", f"job {job_id!r} is not stored as JSON; it was not written by this service"
        ) from None
    return jsonify(describe(job))
