"""The OpenAPI 3.1 document of the HTTP API, generated from the task registry.

One ``POST /api/v1/tasks/<name>`` (and its batch form) per catalogue task, with the task's
input JSON Schema as the ``args`` of the request body and the policy in force (after the
operator's TASK_OVERRIDES, which it names) in the operation's description and its
``x-tasklane-policy``; every other route of the API with its answers, and every error
in the one error shape.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from app.catalogue.registry import REGISTRY, QueueName, TaskSpec
from app.core.dispatch import BatchOptions, EnqueueOptions
from app.core.states import State

#: OpenAPI version of the document.
OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: not JSON, not an object, unknown keys, nested too deep",
    401: "No valid bearer token (the answer carries WWW-Authenticate)",
    404: "Not found",
    409: "Conflict",
    413: "Request body larger than MAX_REQUEST_BYTES",
    415: "A body not sent as application/json",
    422: "Invalid arguments: `details` lists each bad field",
    429: "Rate limited",
    503: "The job store (Redis) is unreachable; retry after Retry-After seconds",
}
#: An enqueue's 503: Redis unreachable, or ENQUEUE_MIN_REPLICAS not met in time.
_ENQUEUE_503 = (
    "The job store (Redis) is unreachable (`redis_unavailable`), or with ENQUEUE_MIN_REPLICAS set fewer "
    "replicas acknowledged the job in time (`not_replicated`: the primary has it, a failover now could "
    "lose it); retry after Retry-After seconds with the same Idempotency-Key"
)
#: The errors of enqueueing a task, as API.md lists them.
ENQUEUE_ERRORS = (400, 401, 404, 409, 413, 415, 422, 429, 503)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page_param(name: str, lowest: int, highest: int, default: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": lowest, "maximum": highest, "default": default}
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description or _ERROR_DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status == 503:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _ok(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def model_schema(model: type[BaseModel], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON Schema whose definitions are moved to components, named ``<prefix>.<Model>``."""
    schema = model.model_json_schema(ref_template=f"#/components/schemas/{prefix}.{{model}}")
    for name, definition in schema.pop("$defs", {}).items():
        components[f"{prefix}.{name}"] = definition
    return schema


_COUNT = {"type": "integer", "minimum": 0}
_QUEUE_COUNTS = ("waiting", "started", "scheduled", "deferred", "failed", "finished", "canceled")
#: One queue of GET /api/v1/queues.
_QUEUE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "waiting", "paused"],
    "properties": {
        "name": {"type": "string"},
        **{state: _COUNT for state in _QUEUE_COUNTS},
        "paused": {"type": "boolean", "description": "no worker takes jobs from it (POST .../pause)"},
        "waiting_by_priority": {
            "type": "object",
            "additionalProperties": _COUNT,
            "description": "waiting jobs by priority ('0' .. '9'; those with any), summing to waiting",
        },
        "waiting_groups": {**_COUNT, "description": "how many fairness groups have waiting jobs"},
    },
}


def _queue_switch(operation: str, summary: str) -> dict[str, Any]:
    """POST /api/v1/queues/{name}/pause or .../resume."""
    answer = {
        "type": "object",
        "required": ["name", "paused"],
        "properties": {"name": {"type": "string"}, "paused": {"type": "boolean"}},
    }
    return {
        "post": {
            "operationId": operation,
            "tags": ["operations"],
            "summary": summary,
            "parameters": [{"name": "queue", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _ok("The queue's state now", answer),
                "401": _error(401),
                "404": _error(404, "No such queue"),
            },
        }
    }


def _policy(spec: TaskSpec) -> dict[str, Any]:
    described = spec.describe()
    return {k: v for k, v in described.items() if k not in ("name", "description", "input_schema")}


def _policy_text(spec: TaskSpec) -> str:
    parts = [f"queue `{spec.queue.value}`", f"time limit {spec.time_limit} s"]
    if spec.soft_time_limit:
        parts.append(f"soft time limit {spec.soft_time_limit} s")
    parts.append(f"max retries {spec.retry.max_retries}")
    if spec.rate_limit:
        parts.append(f"rate limit {spec.rate_limit.text}")
    if spec.unique:
        parts.append("unique")
    text = "Policy in force: " + ", ".join(parts) + "."
    if spec.overridden:
        changed = ", ".join(
            f"{name} (declared {value!r})" if value is not None else f"{name} (declared none)"
            for name, value in spec.overridden.items()
        )
        text += f" Overridden by the operator (TASK_OVERRIDES): {changed}."
    return text


def _task_paths(spec: TaskSpec, components: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    args = model_schema(spec.input_model, spec.name, components)
    components[f"{spec.name}.Args"] = args
    body = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"args": _ref(f"{spec.name}.Args"), "options": options},
    }
    if spec.input_model.model_json_schema().get("required"):
        body["required"] = ["args"]
    errors = {str(status): _error(status) for status in ENQUEUE_ERRORS}
    errors["503"] = _error(503, _ENQUEUE_503)
    errors["404"] = _error(404, "No such task")
    errors["409"] = _error(409, "job_id taken, or Idempotency-Key reused with other arguments")
    location = {"Location": {"description": "The job's URL", "schema": {"type": "string"}}}
    enqueue = {
        "operationId": f"enqueue_{spec.name}",
        "tags": ["tasks"],
        "summary": spec.description,
        "description": _policy_text(spec),
        "x-tasklane-policy": _policy(spec),
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A repeat of the same request within 24 h returns the same job",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"202": _ok("Enqueued", _ref("Enqueued"), location), **errors},
    }
    batch_body = {
        "type": "object",
        "additionalProperties": False,
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"args": _ref(f"{spec.name}.Args")},
                },
            },
            "queue": _ref("Queue"),
            "options": _ref("BatchOptions"),
            "encrypt": {"type": "boolean", "description": "store every job's args and result encrypted"},
        },
    }
    batch = {
        "operationId": f"enqueue_{spec.name}_batch",
        "tags": ["tasks"],
        "summary": f"Enqueue up to 1000 jobs of {spec.name} in one round trip",
        "requestBody": {"required": True, "content": {"application/json": {"schema": batch_body}}},
        "responses": {
            "202": _ok("Enqueued", _ref("BatchEnqueued")),
            **{str(s): _error(s) for s in (400, 401, 404, 413, 415, 422, 503)},
        },
    }
    return {
        f"/api/v1/tasks/{spec.name}": {"post": enqueue},
        f"/api/v1/tasks/{spec.name}/batch": {"post": batch},
    }


def _job_id_param(name: str = "job_id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _common_schemas() -> dict[str, Any]:
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    state = {"type": "string", "enum": [s.value for s in State]}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"description": "field errors, or null"},
                    },
                }
            },
        },
        "Queue": {"type": "string", "enum": [q.value for q in QueueName]},
        "State": state,
        "Links": {"type": "object", "properties": {"self": {"type": "string"}}},
        "Enqueued": {
            "type": "object",
            "required": ["job_id", "task", "state", "links"],
            "properties": {
                "job_id": {"type": "string"},
                "task": {"type": "string"},
                "state": _ref("State"),
                "links": _ref("Links"),
                "deduplicated": {
                    "type": "boolean",
                    "description": "POST /tasks/<name>: true when unique or debounce returned an earlier job",
                },
            },
        },
        "BatchEnqueued": {
            "type": "object",
            "required": ["task", "job_ids", "state"],
            "properties": {
                "task": {"type": "string"},
                "job_ids": {"type": "array", "items": {"type": "string"}},
                "state": _ref("State"),
                "deduplicated": {
                    "type": "array",
                    "items": {"type": "boolean"},
                    "description": "with options.unique: per item, true when an earlier job was returned",
                },
            },
        },
        "Job": {
            "type": "object",
            "required": ["job_id", "task", "queue", "state", "status"],
            "properties": {
                "job_id": {"type": "string"},
                "task": {"type": ["string", "null"]},
                "queue": {"type": "string"},
                "state": _ref("State"),
                "status": {"type": ["string", "null"], "description": "RQ's own status word"},
                "progress": {
                    "type": ["object", "null"],
                    "properties": {
                        "current": {"type": "number"},
                        "total": {"type": "number"},
                        "percent": {"type": "number"},
                        "stage": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "result": {"description": "what the task returned (SUCCESS)"},
                "error": {
                    "type": ["object", "null"],
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "traceback": {"type": ["string", "null"]},
                        "attempts": {"type": "array"},
                    },
                },
                "retries": {"type": "integer"},
                "attempts": {"type": "array", "items": {"type": "object"}},
                "next_retry_at": nullable_time,
                "scheduled_for": {
                    **nullable_time,
                    "description": "when a delayed job is due (countdown, eta, retry, snooze)",
                },
                "snoozed": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "times the task snoozed (raise Snooze(seconds)): no retry spent",
                },
                "sequence": {
                    "type": ["object", "null"],
                    "description": "the job's sequence (option sequence): its key and how many of its "
                    "jobs are before this one (0: its turn; null once it ended)",
                    "properties": {"key": {"type": "string"}, "ahead": {"type": ["integer", "null"]}},
                },
                "priority": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 9,
                    "description": "its priority in its queue: 0 first .. 9 last (default 5)",
                },
                "group": {"type": ["string", "null"], "description": "its fairness group in its queue"},
                "enqueued_at": nullable_time,
                "started_at": nullable_time,
                "ended_at": nullable_time,
                "worker": {"type": ["string", "null"]},
            },
        },
        "JobPage": {
            "type": "object",
            "required": ["jobs", "next_cursor"],
            "properties": {
                "jobs": {"type": "array", "items": _ref("Job")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "JobFilter": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "state": {"type": "string"},
                "task": {"type": "string"},
                "queue": _ref("Queue"),
                "since": {"type": "string", "pattern": "^[0-9]{1,7}[smhdw]$"},
                "args": {"type": "object", "description": "dotted argument path -> value"},
            },
        },
        "BulkAction": {
            "type": "object",
            "required": ["action"],
            "additionalProperties": False,
            "properties": {
                "action": {"enum": ["retry", "revoke", "delete"]},
                "filter": _ref("JobFilter"),
                "dry_run": {"type": "boolean", "default": False},
            },
        },
        "BulkStarted": {
            "type": "object",
            "required": ["matched"],
            "properties": {
                "matched": {"type": "integer"},
                "bulk_id": {"type": "string"},
                "dry_run": {"type": "boolean"},
                "links": {"type": "object"},
            },
        },
        "BulkProgress": {
            "type": "object",
            "properties": {
                "bulk_id": {"type": "string"},
                "action": {"type": "string"},
                "filter": _ref("JobFilter"),
                "matched": {"type": "integer"},
                "done": {"type": "integer"},
                "skipped": {"type": "integer"},
                "failed": {"type": "integer"},
                "by": {"type": "string"},
                "started_at": {"type": "string"},
                "finished_at": {"type": "string"},
            },
        },
        "Revoked": {"type": "object", "properties": {"job_id": {"type": "string"}, "state": _ref("State")}},
        "Task": {
            "type": "object",
            "required": ["name", "description", "queue", "input_schema", "retry", "time_limit", "overridden"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "queue": _ref("Queue"),
                "input_schema": {"type": "object"},
                "retry": {"type": "object"},
                "time_limit": {"type": "integer"},
                "soft_time_limit": {"type": ["integer", "null"]},
                "rate_limit": {"type": ["string", "null"]},
                "rate_key": {
                    "type": ["string", "null"],
                    "description": "the argument whose value is each job's bucket of rate_limit",
                },
                "burst": {
                    "type": ["integer", "null"],
                    "description": "starts of a bucket let through at once",
                },
                "schedule": {"type": ["object", "null"]},
                "encrypted": {"type": "boolean", "description": "declared sensitive: every job is encrypted"},
                "overridden": {
                    "type": "object",
                    "description": "fields the operator changed (TASK_OVERRIDES), declared and in force",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"declared": {}, "in_force": {}},
                    },
                },
            },
        },
        "StepRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "task": {"type": "string"},
                "args": {"type": "object"},
                "type": {"type": "string", "enum": ["chain", "group", "chord"]},
                "steps": {"type": "array", "items": _ref("StepRequest")},
                "callback": _ref("StepRequest"),
            },
        },
        "WorkflowRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "steps"],
            "properties": {
                "type": {"type": "string", "enum": ["chain", "group", "chord"]},
                "steps": {"type": "array", "minItems": 1, "items": _ref("StepRequest")},
                "callback": _ref("StepRequest"),
                "encrypt": {"type": "boolean", "description": "store every step's args and result encrypted"},
            },
        },
        "WorkflowCreated": {
            "type": "object",
            "required": ["workflow_id", "job_ids"],
            "properties": {
                "workflow_id": {"type": "string"},
                "job_ids": {"type": "array", "items": {"type": "string"}},
                "links": _ref("Links"),
            },
        },
        "Workflow": {
            "type": "object",
            "properties": {
                "workflow_id": {"type": "string"},
                "state": _ref("State"),
                "counts": {
                    "type": "object",
                    "description": "the steps by how they ended, and those not ended",
                    "properties": {
                        k: {"type": "integer"} for k in ("SUCCESS", "FAILURE", "REVOKED", "unfinished")
                    },
                },
                "steps": {"type": "array", "items": {"type": "object"}, "description": "a page of the steps"},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "the next page's cursor; null on the last",
                },
                "error": {
                    "type": ["object", "null"],
                    "description": "the first failed step's error (FAILURE), else null",
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
                "failed_step": {
                    "type": ["object", "null"],
                    "description": "the first failed step (FAILURE), else null",
                    "properties": {
                        "job_id": {"type": "string"},
                        "task": {"type": "string"},
                        "path": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "Check": {"type": "object", "properties": {"status": {"type": "string"}}},
    }


def _list(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: {"type": "array", "items": item}}}


def _other_paths() -> dict[str, Any]:
    no_auth: list[dict[str, Any]] = []
    job = [_job_id_param()]
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["probes"],
                "summary": "Liveness",
                "security": no_auth,
                "responses": {
                    "200": _ok("Up", {"type": "object", "properties": {"status": {"const": "ok"}}})
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["probes"],
                "summary": "Readiness: Redis, database, workers, the last health report (no secrets)",
                "security": no_auth,
                "responses": {
                    "200": _ok("Ready", _ref("Readiness")),
                    "503": _ok("Not ready: see each check", _ref("Readiness")),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["docs"],
                "summary": "This document",
                "security": no_auth,
                "responses": {"200": _ok("The OpenAPI 3.1 document", {"type": "object"})},
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "tags": ["docs"],
                "summary": "A page to browse this document (works offline)",
                "security": no_auth,
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/api/v1/tasks": {
            "get": {
                "operationId": "list_tasks",
                "tags": ["tasks"],
                "summary": "The catalogue, with each task's input JSON Schema and the policy in force",
                "responses": {"200": _ok("The catalogue", _list("tasks", _ref("Task"))), "401": _error(401)},
            }
        },
        "/api/v1/jobs": {
            "get": {
                "operationId": "list_jobs",
                "tags": ["jobs"],
                "summary": "Jobs newest first, paged; state=FAILURE is the dead-letter view",
                "description": "Also `args.<path>=<value>`: jobs whose argument at that dotted path "
                "(`args.user.id`) equals the value, read as JSON when it parses (a string argument also "
                "matches the value's text); a task's sensitive arguments never match. Combinable with "
                "every other filter.",
                "parameters": [
                    {"name": "state", "in": "query", "schema": _ref("State")},
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                    {"name": "queue", "in": "query", "schema": _ref("Queue")},
                    {
                        "name": "since",
                        "in": "query",
                        "description": "Only jobs whose latest time (ended, started, enqueued, created) "
                        "is at most this long ago: 90s, 15m, 1h, 7d, 2w (at most 366 days)",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,7}[smhdw]$"},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
                "responses": {
                    "200": _ok("A page of jobs", _ref("JobPage")),
                    "400": _error(400),
                    "401": _error(401),
                },
            }
        },
        "/api/v1/jobs/bulk": {
            "post": {
                "operationId": "bulk_jobs",
                "tags": ["jobs"],
                "summary": "Retry, revoke or delete every job a filter matches (at most 100,000)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BulkAction")}},
                },
                "responses": {
                    "200": _ok("Dry run: how many jobs match", _ref("BulkStarted")),
                    "202": _ok("Matched and started", _ref("BulkStarted")),
                    "400": _error(400),
                    "401": _error(401),
                    "422": _error(422, "Bad action or filter; over 100,000 jobs match or matching took 20 s"),
                },
            }
        },
        "/api/v1/jobs/bulk/{bulk_id}": {
            "get": {
                "operationId": "get_bulk",
                "tags": ["jobs"],
                "summary": "A bulk action's progress (kept a day)",
                "parameters": [
                    {"name": "bulk_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _ok("Its progress", _ref("BulkProgress")),
                    "401": _error(401),
                    "404": _error(404, "No such bulk action"),
                },
            }
        },
        "/api/v1/jobs/{job_id}": {
            "get": {
                "operationId": "get_job",
                "tags": ["jobs"],
                "summary": "A job's state, progress, result or error",
                "parameters": job,
                "responses": {
                    "200": _ok("The job", _ref("Job")),
                    "401": _error(401),
                    "404": _error(404, "No such job"),
                    "409": _error(409, "The job is not stored as JSON"),
                    "503": _error(503),
                },
            },
            "delete": {
                "operationId": "revoke_job",
                "tags": ["jobs"],
                "summary": "Revoke: cancel a waiting job, stop a running one",
                "parameters": job,
                "responses": {
                    "202": _ok("Revoked", _ref("Revoked")),
                    "401": _error(401),
                    "404": _error(404, "No such job"),
                    "409": _error(409, "The job already finished"),
                    "503": _error(503),
                },
            },
        },
        "/api/v1/jobs/{job_id}/retry": {
            "post": {
                "operationId": "retry_job",
                "tags": ["jobs"],
                "summary": "Requeue a failed job",
                "parameters": job,
                "responses": {
                    "202": _ok("Requeued", _ref("Enqueued")),
                    "401": _error(401),
                    "404": _error(404, "No such job"),
                    "409": _error(409, "The job is not failed"),
                    "503": _error(503),
                },
            }
        },
        "/api/v1/workflows": {
            "post": {
                "operationId": "create_workflow",
                "tags": ["workflows"],
                "summary": "A chain, group or chord of tasks",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WorkflowRequest")}},
                },
                "responses": {
                    "202": _ok("Created", _ref("WorkflowCreated")),
                    **{str(s): _error(s) for s in (400, 401, 413, 415, 422, 503)},
                },
            }
        },
        "/api/v1/workflows/{workflow_id}": {
            "get": {
                "operationId": "get_workflow",
                "tags": ["workflows"],
                "summary": "The workflow's state, its steps counted by state, a page of steps, its result",
                "parameters": [
                    _job_id_param("workflow_id"),
                    _page_param("cursor", 0, 10_000, 0),
                    _page_param("limit", 1, 200, 200),
                ],
                "responses": {
                    "200": _ok("The workflow", _ref("Workflow")),
                    "400": _error(400, "A bad cursor or limit"),
                    "401": _error(401),
                    "404": _error(404, "No such workflow"),
                },
            }
        },
        "/api/v1/queues": {
            "get": {
                "operationId": "list_queues",
                "tags": ["operations"],
                "summary": "Per queue: the counts of each state, and whether it is paused",
                "responses": {"200": _ok("Queues", _list("queues", _QUEUE)), "401": _error(401)},
            }
        },
        "/api/v1/queues/{queue}/pause": _queue_switch(
            "pause_queue",
            "Every worker on every host stops taking jobs from the queue within 1 s (jobs in hand finish); "
            "enqueues still land; kept in Redis, so it survives restarts",
        ),
        "/api/v1/queues/{queue}/resume": _queue_switch(
            "resume_queue", "Workers take jobs from the queue again; idle ones pick up within 1 s"
        ),
        "/api/v1/workers": {
            "get": {
                "operationId": "list_workers",
                "tags": ["operations"],
                "summary": "Per worker: name, host, pid, state, current job, queues, counts, last heartbeat",
                "responses": {
                    "200": _ok("Workers", _list("workers", {"type": "object"})),
                    "401": _error(401),
                },
            }
        },
        "/api/v1/search": {
            "get": {
                "operationId": "search_chunks",
                "tags": ["documents"],
                "summary": "The ingested chunks nearest to a query, with their cosine scores, best first",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 2000},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                    },
                ],
                "responses": {
                    "200": _ok(
                        "Nearest chunks",
                        {
                            "type": "object",
                            "required": ["query", "embedder", "results"],
                            "properties": {
                                "query": {"type": "string"},
                                "embedder": {"type": "string"},
                                "results": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["score", "chunk_id", "document_id", "path", "text"],
                                        "properties": {
                                            "score": {"type": "number"},
                                            "chunk_id": {"type": "integer"},
                                            "document_id": {"type": "integer"},
                                            "path": {"type": "string"},
                                            "title": {"type": "string"},
                                            "position": {"type": "integer"},
                                            "text": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    ),
                    "400": _error(400, "No q, or a bad limit"),
                    "401": _error(401),
                    "503": _error(
                        503,
                        "The database or the EMBEDDINGS_URL endpoint cannot answer "
                        "(database_unavailable, embeddings_unavailable)",
                    ),
                },
            }
        },
        **_schedule_paths(),
    }


_SCHEDULE_FIELDS: dict[str, Any] = {
    "args": {"type": "object", "description": "the task's arguments, checked by its input model"},
    "cron": {
        "type": ["string", "null"],
        "description": "5 fields, or 6 with seconds first, on the wall clock of `timezone`",
        "examples": ["30 2 * * *", "*/10 * * * * *"],
    },
    "interval": {"type": ["integer", "null"], "minimum": 1, "description": "seconds (instead of cron)"},
    "timezone": {
        "type": "string",
        "default": "UTC",
        "description": "IANA name",
        "examples": ["America/New_York"],
    },
    "overlap": {"enum": ["skip", "allow"], "default": "skip"},
    "catchup_window": {"type": "integer", "minimum": 0, "default": 60, "description": "seconds"},
    "paused": {"type": "boolean", "default": False},
}


def _schedule_schemas() -> dict[str, Any]:
    schedule = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "id": {"type": "string", "description": "rq-scheduler's entry: `periodic-<name>`"},
            "task": {"type": "string"},
            "queue": {"type": ["string", "null"]},
            **_SCHEDULE_FIELDS,
            "next_run": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "UTC; null while paused",
            },
            "last_run": {"type": ["string", "null"], "format": "date-time"},
            "last_job_id": {"type": ["string", "null"]},
            "origin": {"enum": ["catalogue", "api"]},
            "operator_fields": {
                "type": "array",
                "items": {"type": "string"},
                "description": "fields of a catalogue schedule an operator changed: the code's declaration "
                "no longer applies to them",
            },
            "declared": {"type": ["object", "null"], "description": "the catalogue's declaration in code"},
        },
    }
    run = {
        "type": "object",
        "properties": {
            "tick": {"type": "string", "format": "date-time"},
            "kind": {"enum": ["scheduled", "manual", "skipped", "missed", "invalid"]},
            "job_id": {"type": ["string", "null"]},
            "state": {
                "type": ["string", "null"],
                "description": "the job's state, or SKIPPED / MISSED / EXPIRED",
            },
            "duration": {"type": ["number", "null"], "description": "seconds the run took"},
            "count": {"type": "integer", "description": "missed: how many ticks"},
        },
    }
    return {"Schedule": schedule, "ScheduleRun": run}


def _schedule_paths() -> dict[str, Any]:
    name = [{"name": "schedule", "in": "path", "required": True, "schema": {"type": "string"}}]
    unknown = _error(404, "No such schedule")
    invalid = _error(422, "Bad cron, time zone, task or args (field errors in details)")
    create_body = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "task"],
        "properties": {"name": {"type": "string"}, "task": {"type": "string"}, **_SCHEDULE_FIELDS},
    }
    patch_body = {"type": "object", "additionalProperties": False, "properties": _SCHEDULE_FIELDS}
    return {
        "/api/v1/schedules": {
            "get": {
                "operationId": "list_schedules",
                "tags": ["operations"],
                "summary": "Periodic jobs with their cron or interval, time zone, next and last run",
                "responses": {
                    "200": _ok("Schedules", _list("schedules", _ref("Schedule"))),
                    "401": _error(401),
                },
            },
            "post": {
                "operationId": "create_schedule",
                "tags": ["operations"],
                "summary": "Create a schedule of a catalogue task, kept in Redis",
                "requestBody": {"required": True, "content": {"application/json": {"schema": create_body}}},
                "responses": {
                    "201": _ok("Created", _ref("Schedule")),
                    "400": _error(400),
                    "401": _error(401),
                    "409": _error(409, "Name taken"),
                    "422": invalid,
                },
            },
        },
        "/api/v1/schedules/{schedule}": {
            "get": {
                "operationId": "get_schedule",
                "tags": ["operations"],
                "summary": "One schedule",
                "parameters": name,
                "responses": {
                    "200": _ok("The schedule", _ref("Schedule")),
                    "401": _error(401),
                    "404": unknown,
                },
            },
            "patch": {
                "operationId": "edit_schedule",
                "tags": ["operations"],
                "summary": "Change cron or interval, timezone, args, paused, overlap, catchup_window "
                "(a catalogue schedule keeps the change across restarts and deploys)",
                "parameters": name,
                "requestBody": {"required": True, "content": {"application/json": {"schema": patch_body}}},
                "responses": {
                    "200": _ok("The schedule", _ref("Schedule")),
                    "400": _error(400),
                    "401": _error(401),
                    "404": unknown,
                    "422": invalid,
                },
            },
            "delete": {
                "operationId": "delete_schedule",
                "tags": ["operations"],
                "summary": "Remove a created schedule (a catalogue schedule is paused instead)",
                "parameters": name,
                "responses": {
                    "204": {"description": "Removed or paused"},
                    "401": _error(401),
                    "404": unknown,
                },
            },
        },
        "/api/v1/schedules/{schedule}/run": {
            "post": {
                "operationId": "run_schedule",
                "tags": ["operations"],
                "summary": "Enqueue it now",
                "parameters": name,
                "responses": {
                    "202": _ok("Enqueued", {"type": "object", "properties": {"job_id": {"type": "string"}}}),
                    "401": _error(401),
                    "404": unknown,
                },
            }
        },
        "/api/v1/schedules/{schedule}/history": {
            "get": {
                "operationId": "schedule_history",
                "tags": ["operations"],
                "summary": "The last 50 ticks: runs with state and duration, skipped and missed ticks",
                "parameters": name,
                "responses": {
                    "200": _ok("History", _list("history", _ref("ScheduleRun"))),
                    "401": _error(401),
                    "404": unknown,
                },
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document for the catalogue with the policy in force."""
    components = _common_schemas() | _schedule_schemas()
    components["Readiness"] = {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": _ref("Check")},
            "last_health_report": {"type": ["object", "null"]},
        },
    }
    options = model_schema(EnqueueOptions, "EnqueueOptions", components)
    components["EnqueueOptions"] = options
    components["BatchOptions"] = model_schema(BatchOptions, "BatchOptions", components)
    paths = _other_paths()
    for spec in REGISTRY:
        paths.update(_task_paths(spec, components, _ref("EnqueueOptions")))
    return copy.deepcopy(
        {
            "openapi": OPENAPI_VERSION,
            "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
            "info": {
                "title": "Tasklane",
                "version": API_VERSION,
                "description": "Background jobs: enqueue catalogue tasks, follow their jobs, run workflows. "
                "Every /api/v1 route but this document needs `Authorization: Bearer <token>`; every "
                'error has the shape {"error": {"code", "message", "details"}}.',
            },
            "servers": [{"url": "/"}],
            "security": [{"bearerAuth": []}],
            "tags": [{"name": n} for n in ("tasks", "jobs", "workflows", "operations", "probes", "docs")],
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            },
        }
    )
