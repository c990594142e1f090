"""Workflows: ``POST /api/v1/workflows`` and ``GET /api/v1/workflows/<id>``."""

from __future__ import annotations

from flask import Response, jsonify, request, url_for
from pydantic import ValidationError

from app import workflows
from app.api import api
from app.api.errors import APIError, field_errors
from app.runtime import runtime


@api.post("/workflows")
def create_workflow() -> tuple[Response, int, dict[str, str]]:
    """Check every step, then create the workflow's jobs."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise APIError(400, "malformed_json", "the request body must be a JSON object")
    try:
        parsed = workflows.WorkflowBody.model_validate(body)
    except ValidationError as exc:
        raise APIError(
            422, "invalid_workflow", "the workflow is malformed", field_errors(exc, "workflow")
        ) from None
    rt = runtime()
    try:
        record = workflows.create(parsed, rt.redis, rt.settings)
    except workflows.WorkflowError as exc:
        raise APIError(422, "invalid_workflow", str(exc), exc.details) from None
    location = url_for("api.get_workflow", workflow_id=record["workflow_id"])
    out = {"workflow_id": record["workflow_id"], "job_ids": record["job_ids"], "links": {"self": location}}
    return jsonify(out), 202, {"Location": location}


@api.get("/workflows/<workflow_id>")
def get_workflow(workflow_id: str) -> Response:
    """The workflow's state, each step's state, and its result."""
    found = workflows.status(workflow_id, runtime().redis)
    if found is None:
        raise APIError(404, "workflow_not_found", f"no workflow with id {workflow_id!r}")
    return jsonify(found)
