"""Workflows: chain, group and chord, nested, built on RQ job dependencies.

A workflow is a tree. A task node is one job; a group runs its children side by side
and its output is the list of theirs; a chain runs its steps one after another, each
receiving the output of the one before; a chord is a group whose output goes to a
callback. A step that receives an output gets it in the first field of its input model
that its ``args`` leave out (as Celery passes it as the first argument); a step whose
args fill every field receives nothing.

Each job waits for the jobs its input comes from (RQ ``depends_on``); the worker reads
their results just before the step runs (``inputs_for``). When a step fails for good,
every job that can no longer run (its transitive dependents) is revoked.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import Redis
from rq.job import JobStatus

from app.catalogue.registry import REGISTRY, TaskSpec
from app.core import outcomes, sealing
from app.core.dispatch import EnqueueOptions, enqueue
from app.core.queues import JsonJob
from app.core.states import State, describe
from app.core.steps import job_ids, resolve
from app.foundation import defaults, keys
from app.foundation.meta import Meta
from app.foundation.timeutil import iso, utcnow

NodeType = Literal["chain", "group", "chord"]


class StepBody(BaseModel):
    """One node of a workflow request: a task, or a nested chain/group/chord."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    type: NodeType | None = None
    steps: list[StepBody] = Field(default_factory=list)
    callback: StepBody | None = None


class WorkflowBody(BaseModel):
    """The body of ``POST /api/v1/workflows``."""

    model_config = ConfigDict(extra="forbid")

    type: NodeType
    steps: list[StepBody] = Field(min_length=1)
    callback: StepBody | None = None
    #: Every step's args and result stored encrypted (as the enqueue option ``encrypt``).
    encrypt: bool | None = None


class WorkflowError(ValueError):
    """The workflow request is malformed; ``details`` lists the problems with their paths."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


@dataclass
class _Planned:
    """A task node after checking: where its input goes, and its job once created."""

    spec: TaskSpec
    args: dict[str, Any]
    input_field: str | None
    path: str
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def _receiving_field(spec: TaskSpec, args: dict[str, Any]) -> str | None:
    for name in spec.input_model.model_fields:
        if name not in args:
            return name
    return None


def _check_task(node: StepBody, path: str, receives: bool, problems: list[dict[str, Any]]) -> _Planned | None:
    spec = REGISTRY.get(node.task or "")
    if spec is None:
        problems.append(
            {"field": f"{path}.task", "message": f"no task named {node.task!r}", "type": "unknown_task"}
        )
        return None
    input_field = _receiving_field(spec, node.args) if receives else None
    try:
        spec.validate(node.args)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            loc = tuple(str(p) for p in err["loc"])
            if input_field is not None and err["type"] == "missing" and loc == (input_field,):
                continue  # filled at run time from the previous step
            problems.append(
                {"field": ".".join((path, "args", *loc)), "message": err["msg"], "type": err["type"]}
            )
    return _Planned(spec=spec, args=dict(node.args), input_field=input_field, path=path)


def _plan(node: StepBody, path: str, receives: bool, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Check one node and turn it into the tree that build() walks."""
    if node.task is not None:
        if node.type is not None or node.steps or node.callback is not None:
            problems.append(
                {"field": path, "message": "a step is either a task or a type with steps", "type": "bad"}
            )
        planned = _check_task(node, path, receives, problems)
        return {"task": planned}
    if node.type is None or not node.steps:
        problems.append(
            {"field": path, "message": "a step needs a task, or a type and steps", "type": "bad_step"}
        )
        return {"group": []}
    if node.type == "chord" and node.callback is None:
        problems.append(
            {"field": f"{path}.callback", "message": "a chord needs a callback", "type": "missing"}
        )
    if node.type != "chord" and node.callback is not None:
        problems.append(
            {"field": f"{path}.callback", "message": "only a chord has a callback", "type": "bad"}
        )
    if node.type == "chain":
        steps = [
            _plan(s, f"{path}.steps[{i}]", receives or i > 0, problems) for i, s in enumerate(node.steps)
        ]
        return {"chain": steps}
    group = {"group": [_plan(s, f"{path}.steps[{i}]", receives, problems) for i, s in enumerate(node.steps)]}
    if node.type == "chord" and node.callback is not None:
        return {"chain": [group, _plan(node.callback, f"{path}.callback", True, problems)]}
    return group


def _count(tree: dict[str, Any]) -> int:
    if "task" in tree:
        return 1
    return sum(_count(child) for child in next(iter(tree.values())))


def _planned(tree: dict[str, Any]) -> list[_Planned]:
    if "task" in tree:
        return [tree["task"]]
    return [p for child in next(iter(tree.values())) for p in _planned(child)]


def _build(
    tree: dict[str, Any],
    upstream: Any,
    connection: Redis,
    settings: Any,
    wf_id: str,
    made: list[str],
    encrypt: bool | None = None,
) -> Any:
    """Create the jobs of ``tree`` after ``upstream``; returns the node's output reference."""
    if "task" in tree:
        planned: _Planned = tree["task"]
        depends = job_ids(upstream) if upstream is not None else []
        workflow_meta: dict[str, Any] = {"id": wf_id, "path": planned.path}
        if planned.input_field is not None and upstream is not None:
            workflow_meta["input"] = {"field": planned.input_field, "from": upstream}
        job = enqueue(
            planned.spec,
            planned.args,
            connection,
            EnqueueOptions(encrypt=encrypt),
            default_result_ttl=settings.result_ttl,
            failure_ttl=settings.failed_job_ttl,
            meta={Meta.WORKFLOW: workflow_meta},
            depends_on=depends or None,
            job_id=planned.job_id,
        )
        made.append(job.id)
        return {"job": job.id}
    if "chain" in tree:
        output = upstream
        for step in tree["chain"]:
            output = _build(step, output, connection, settings, wf_id, made, encrypt)
        return output
    return [_build(child, upstream, connection, settings, wf_id, made, encrypt) for child in tree["group"]]


def create(body: WorkflowBody, connection: Redis, settings: Any) -> dict[str, Any]:
    """Check the whole request, then create every job; returns the workflow record."""
    root = StepBody(type=body.type, steps=body.steps, callback=body.callback)
    problems: list[dict[str, Any]] = []
    tree = _plan(root, "workflow", False, problems)
    if problems:
        raise WorkflowError("the workflow has invalid steps", problems)
    if _count(tree) > defaults.MAX_WORKFLOW_STEPS:
        raise WorkflowError(f"a workflow may have at most {defaults.MAX_WORKFLOW_STEPS} steps", [])
    # Before any job exists: a step that must be encrypted without ENCRYPTION_KEYS stops it all.
    rings = [sealing.ring_for(p.spec, body.encrypt) for p in _planned(tree)]
    wf_id = str(uuid.uuid4())
    made: list[str] = []
    output = _build(tree, None, connection, settings, wf_id, made, body.encrypt)
    _revoke_behind_early_failures(made, connection)
    request: Any = body.model_dump(mode="json")
    ring = next((r for r in rings if r is not None), None)
    if ring is not None:  # some step's args are secret: so is the request that holds them all
        request = {sealing.SEALED: ring.seal(request, f"workflow:{wf_id}")}
    record = {
        "workflow_id": wf_id,
        "type": body.type,
        "created_at": iso(utcnow()),
        "job_ids": made,
        "output": output,
        "request": request,
    }
    connection.set(keys.workflow(wf_id), json.dumps(record), ex=defaults.WORKFLOW_TTL)
    return record


def _revoke_behind_early_failures(job_ids: list[str], connection: Redis) -> None:
    """Revoke what waits on a step that ended badly before the steps behind it were created.

    A step that fails for good revokes its dependents through app/core/outcomes.py, but only those
    already registered behind it. One that failed while the workflow was still being built
    (a fast worker, a large group) is found here, once every job exists: any failure after
    this read sees all its dependents itself.
    """
    for job in JsonJob.fetch_many(job_ids, connection=connection):
        if job is not None and job.get_status(refresh=False) in _ENDED_BADLY:
            outcomes.revoke_dependents(job)


_ENDED_BADLY = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def status(workflow_id: str, connection: Redis) -> dict[str, Any] | None:
    """The workflow's aggregate state, each step's state, and the final result; a failed one's
    ``error`` and ``failed_step`` (job id, task, path) are those of its first failed step."""
    raw = connection.get(keys.workflow(workflow_id))
    if raw is None:
        return None
    record = json.loads(raw)
    jobs = JsonJob.fetch_many(record["job_ids"], connection=connection)
    steps = []
    results: dict[str, Any] = {}
    for job_id, job in zip(record["job_ids"], jobs, strict=True):
        if job is None:
            steps.append({"job_id": job_id, "state": "EXPIRED"})
            continue
        view = describe(job)
        view["path"] = (job.meta.get(Meta.WORKFLOW) or {}).get("path")
        steps.append(view)
        results[job_id] = view["result"]
    states = {s["state"] for s in steps}
    if State.FAILURE.value in states:
        state = State.FAILURE
    elif State.REVOKED.value in states:
        state = State.REVOKED
    elif states == {State.SUCCESS.value}:
        state = State.SUCCESS
    elif states & {State.STARTED.value, State.PROGRESS.value, State.RETRY.value, State.SUCCESS.value}:
        state = State.STARTED
    else:
        state = State.PENDING
    done = sum(1 for s in steps if s["state"] == State.SUCCESS.value)
    # The step that failed the workflow, at the top so a caller needs no walk of the steps.
    failed = next((s for s in steps if s["state"] == State.FAILURE.value), None)
    return {
        "workflow_id": record["workflow_id"],
        "type": record["type"],
        "state": state.value,
        "created_at": record["created_at"],
        "progress": {"current": done, "total": len(steps), "percent": round(100.0 * done / len(steps), 1)},
        "result": resolve(record["output"], results) if state is State.SUCCESS else None,
        "error": failed["error"] if failed is not None else None,
        "failed_step": (
            {"job_id": failed["job_id"], "task": failed.get("task"), "path": failed.get("path")}
            if failed is not None
            else None
        ),
        "steps": steps,
    }
