"""The catalogue and enqueueing: ``GET /api/v1/tasks``, ``POST /api/v1/tasks/<name>``."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify, request, url_for
from pydantic import ValidationError

from app.api import api
from app.api.errors import APIError, field_errors
from app.dispatch import (
    EnqueueOptions,
    Idempotency,
    IdempotencyConflict,
    JobExistsError,
    digest,
    enqueue,
    enqueue_many,
)
from app.registry import REGISTRY, QueueName
from app.runtime import runtime
from app.states import state_of


@api.get("/tasks")
def list_tasks() -> Response:
    """The catalogue."""
    return jsonify({"tasks": [spec.describe() for spec in REGISTRY]})


def _json_body() -> dict[str, Any]:
    if not request.data:
        return {}
    body = request.get_json(silent=True)
    if body is None:
        raise APIError(400, "malformed_json", "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise APIError(400, "malformed_json", 'the request body must be a JSON object: {"args": {...}}')
    unknown = set(body) - {"args", "options"}
    if unknown:
        raise APIError(400, "bad_request", f"unknown top-level keys: {', '.join(sorted(unknown))}")
    return body


def _idempotency(task: str, args: dict[str, Any], options: dict[str, Any]) -> Idempotency | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise APIError(400, "bad_idempotency_key", "Idempotency-Key must be 1 to 255 printable characters")
    return Idempotency(caller=g.caller, key=key, request_digest=digest([task, args, options]))


@api.post("/tasks/<name>")
def enqueue_task(name: str) -> tuple[Response, int, dict[str, str]]:
    """Validate the arguments against the task's model and enqueue it."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise APIError(404, "unknown_task", f"no task named {name!r}; GET /api/v1/tasks lists them")
    body = _json_body()
    raw_args = body.get("args", {})
    raw_options = body.get("options", {})
    if not isinstance(raw_args, dict) or not isinstance(raw_options, dict):
        raise APIError(400, "bad_request", "args and options must be JSON objects")
    errors: list[dict[str, Any]] = []
    try:
        args = spec.validate(raw_args)
    except ValidationError as exc:
        errors += field_errors(exc, "args")
    try:
        options = EnqueueOptions.model_validate(raw_options)
    except ValidationError as exc:
        errors += field_errors(exc, "options")
    if errors:
        raise APIError(422, "invalid_arguments", f"invalid input for task {name!r}", errors)
    idempotency = _idempotency(name, args.model_dump(mode="json"), options.model_dump(mode="json"))
    rt = runtime()
    try:
        job = enqueue(
            spec,
            args,
            rt.redis,
            options,
            default_result_ttl=rt.settings.result_ttl,
            failure_ttl=rt.settings.failed_job_ttl,
            idempotency=idempotency,
        )
    except JobExistsError as exc:
        raise APIError(409, "job_exists", str(exc)) from None
    except IdempotencyConflict as exc:
        raise APIError(409, "idempotency_conflict", str(exc)) from None
    location = url_for("api.get_job", job_id=job.id)
    body_out = {
        "job_id": job.id,
        "task": spec.name,
        "state": state_of(job).value,
        "links": {"self": location},
    }
    return jsonify(body_out), 202, {"Location": location}


#: Most jobs one batch request may enqueue.
MAX_BATCH = 1000


@api.post("/tasks/<name>/batch")
def enqueue_batch(name: str) -> tuple[Response, int]:
    """Validate every argument set, then enqueue them all in one round trip to Redis."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise APIError(404, "unknown_task", f"no task named {name!r}; GET /api/v1/tasks lists them")
    body = request.get_json(silent=True)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("items"), list)
        or set(body) - {"items", "queue"}
    ):
        raise APIError(400, "malformed_json", 'the body must be {"items": [{"args": {...}}, ...]}')
    items = body["items"]
    if not 1 <= len(items) <= MAX_BATCH:
        raise APIError(422, "invalid_arguments", f"a batch holds 1 to {MAX_BATCH} items", [])
    if spec.unique or spec.concurrency:
        raise APIError(
            422, "invalid_arguments", f"task {name!r} is unique or capped: enqueue it one job at a time"
        )
    errors: list[dict[str, Any]] = []
    validated = []
    for n, item in enumerate(items):
        args = item.get("args", {}) if isinstance(item, dict) else None
        if not isinstance(args, dict) or set(item) - {"args"}:
            errors.append(
                {"field": f"items[{n}]", "message": 'each item is {"args": {...}}', "type": "bad_item"}
            )
            continue
        try:
            validated.append(spec.validate(args))
        except ValidationError as exc:
            errors += field_errors(exc, f"items[{n}].args")
    try:
        queue = QueueName(body["queue"]) if body.get("queue") else None
    except ValueError:
        errors.append({"field": "queue", "message": "unknown queue", "type": "enum"})
    if errors:
        raise APIError(422, "invalid_arguments", f"invalid input for task {name!r}", errors)
    rt = runtime()
    ttls = {"default_result_ttl": rt.settings.result_ttl, "failure_ttl": rt.settings.failed_job_ttl}
    jobs = enqueue_many(spec, validated, rt.redis, queue=queue, **ttls)
    return jsonify({"task": spec.name, "job_ids": [job.id for job in jobs], "state": "PENDING"}), 202
