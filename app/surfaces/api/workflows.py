"""Workflows: ``POST /api/v1/workflows`` and ``GET /api/v1/workflows/<id>``."""

from __future__ import annotations

from flask import Response, jsonify, request, url_for

from app.core import workflows
from app.core.sealing import EncryptionUnavailable
from app.foundation import defaults
from app.foundation.runtime import runtime
from app.surfaces.api.blueprint import api
from app.surfaces.api.bodies import parse_body
from app.surfaces.api.errors import APIError

#: The body of ``POST /api/v1/workflows``, as messages show it.
SHAPE = '{"type": "chain"|"group"|"chord", "steps": [{"task", "args"}, ...], "callback": {"task", "args"}}'


@api.post("/workflows")
def create_workflow() -> tuple[Response, int, dict[str, str]]:
    """Check every step, then create the workflow's jobs."""
    body = parse_body(
        workflows.WorkflowBody,
        shape=SHAPE,
        status=422,
        code="invalid_workflow",
        message="the workflow is malformed",
        prefix="workflow",
    )
    rt = runtime()
    try:
        record = workflows.create(body, rt.redis, rt.settings)
    except workflows.WorkflowError as exc:
        raise APIError(422, "invalid_workflow", str(exc), exc.details) from None
    except EncryptionUnavailable as exc:
        field = [{"field": "workflow.encrypt", "message": str(exc), "type": "encryption_unavailable"}]
        raise APIError(422, "encryption_unavailable", str(exc), field) from None
    location = url_for("api.get_workflow", workflow_id=record["workflow_id"])
    out = {"workflow_id": record["workflow_id"], "job_ids": record["job_ids"], "links": {"self": location}}
    return jsonify(out), 202, {"Location": location}


@api.get("/workflows/<workflow_id>")
def get_workflow(workflow_id: str) -> Response:
    """The workflow's state, its steps counted by state, its steps (paged: ``cursor``, ``limit``),
    and its result."""
    cursor = _whole_number("cursor", 0, 0, defaults.MAX_WORKFLOW_STEPS)
    limit = _whole_number("limit", defaults.WORKFLOW_STEPS_PAGE, 1, defaults.WORKFLOW_STEPS_PAGE)
    found = workflows.status(workflow_id, runtime().redis, cursor, limit)
    if found is None:
        raise APIError(404, "workflow_not_found", f"no workflow with id {workflow_id!r}")
    return jsonify(found)


def _whole_number(name: str, default: int, lowest: int, highest: int) -> int:
    """A query parameter that is a whole number from ``lowest`` to ``highest``; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lowest <= int(raw) <= highest:
        message = f"{name} must be a whole number from {lowest} to {highest}"
        raise APIError(400, f"bad_{name}", message, [{"field": name, "message": message}])
    return int(raw)
