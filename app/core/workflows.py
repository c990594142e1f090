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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import Redis
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from app.catalogue.registry import MASK, REGISTRY, TaskSpec
from app.core import outcomes, sealing
from app.core.dispatch import EnqueueOptions, enqueue
from app.core.queues import JsonJob, get_queue, ring_doorbell
from app.core.states import State, describe
from app.core.steps import ENDED, job_ids, resolve
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


class _Writes:
    """The build's writes, in pipelines of WORKFLOW_WRITE_CHUNK jobs: the steps that wait for
    others (deferred) apart from the first steps (queued at once), which are sent last, so no step
    runs (and ends) before every step behind it is registered. No read, no round trip per step."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self.waiting: list[Any] = []
        self.first: list[Any] = []
        self._counts: dict[int, int] = {}
        self._pushed: dict[int, Counter[str]] = {}

    def for_step(self, waits: bool, queue: str) -> Any:
        pipes = self.waiting if waits else self.first
        if not pipes or self._counts[id(pipes[-1])] >= defaults.WORKFLOW_WRITE_CHUNK:
            # No transaction: nothing runs before the first steps are sent, and each of those is
            # written whole (its hash) before its id is pushed.
            pipe = self.connection.pipeline(transaction=False)
            pipes.append(pipe)
            self._counts[id(pipe)] = 0
            self._pushed[id(pipe)] = Counter()
        self._counts[id(pipes[-1])] += 1
        if not waits:
            self._pushed[id(pipes[-1])][queue] += 1
        return pipes[-1]

    def send(self, before_first: Any) -> None:
        """Send the waiting steps, then ``before_first(pipe)``'s writes, then the first steps (each
        pipeline with its queues' doorbells rung once for each job it pushed, up to the cap)."""
        for pipe in self.waiting:
            pipe.execute()
        with self.connection.pipeline() as pipe:
            before_first(pipe)
            pipe.execute()
        for pipe in self.first:
            for queue, count in self._pushed[id(pipe)].items():
                ring_doorbell(pipe, queue, count)
            pipe.execute()


def _build(
    tree: dict[str, Any],
    upstream: Any,
    connection: Redis,
    settings: Any,
    wf_id: str,
    made: list[str],
    encrypt: bool | None = None,
    writes: _Writes | None = None,
) -> Any:
    """Create the jobs of ``tree`` after ``upstream``; returns the node's output reference.
    With ``writes``, the jobs are written there (sent by the caller), not one by one."""
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
            pipeline=writes.for_step(bool(depends), planned.spec.queue.value) if writes is not None else None,
        )
        made.append(job.id)
        return {"job": job.id}
    if "chain" in tree:
        output = upstream
        for step in tree["chain"]:
            output = _build(step, output, connection, settings, wf_id, made, encrypt, writes)
        return output
    return [
        _build(child, upstream, connection, settings, wf_id, made, encrypt, writes) for child in tree["group"]
    ]


def _one_by_one(tree: dict[str, Any]) -> bool:
    """Whether the workflow's jobs are enqueued one by one (a step of a unique or concurrency-capped
    task, whose enqueue reads Redis), not written in a few pipelines."""
    return any(p.spec.unique or p.spec.concurrency for p in _planned(tree))


def create(body: WorkflowBody, connection: Redis, settings: Any) -> dict[str, Any]:
    """Check the whole request, then create every job; returns the workflow record."""
    root = StepBody(type=body.type, steps=body.steps, callback=body.callback)
    problems: list[dict[str, Any]] = []
    tree = _plan(root, "workflow", False, problems)
    if problems:
        raise WorkflowError("the workflow has invalid steps", problems)
    if (count := _count(tree)) > defaults.MAX_WORKFLOW_STEPS:
        message = f"a workflow may have at most {defaults.MAX_WORKFLOW_STEPS} steps"
        detail = {"field": "steps", "message": f"{count} steps (callbacks included): {message}",
                  "type": "too_many_steps"}  # fmt: skip
        raise WorkflowError(message, [detail])
    # Before any job exists: a step that must be encrypted without ENCRYPTION_KEYS stops it all.
    rings = [
        sealing.ring_for(spec, body.encrypt) for spec in {id(p.spec): p.spec for p in _planned(tree)}.values()
    ]
    wf_id = str(uuid.uuid4())
    made: list[str] = []
    # A unique or concurrency-capped task's job is enqueued with its checks, one by one: the
    # workflow's jobs are then created in order, and a step that ended early is caught after.
    writes = None if _one_by_one(tree) else _Writes(connection)
    output = _build(tree, None, connection, settings, wf_id, made, body.encrypt, writes)
    if writes is None:
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

    def write_record(pipe: Any) -> None:
        pipe.set(keys.workflow(wf_id), json.dumps(record), ex=defaults.WORKFLOW_TTL)
        pipe.hset(keys.workflow_summary(wf_id), "total", len(made))
        pipe.expire(keys.workflow_summary(wf_id), defaults.WORKFLOW_TTL)
        for name in {p.spec.queue.value for p in _planned(tree)}:  # RQ's set of queues, for waiting steps
            queue = get_queue(name, connection)
            pipe.sadd(queue.redis_queues_keys, queue.key)

    if writes is None:
        with connection.pipeline() as pipe:
            write_record(pipe)
            pipe.execute()
    else:
        writes.send(write_record)
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


def _views(job_ids: list[str], connection: Redis) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each step's view (in order) and each existing step's result."""
    steps = []
    results: dict[str, Any] = {}
    for job_id, job in zip(job_ids, JsonJob.fetch_many(job_ids, connection=connection), strict=True):
        if job is None:
            steps.append({"job_id": job_id, "state": "EXPIRED"})
            continue
        view = describe(job)
        view["path"] = (job.meta.get(Meta.WORKFLOW) or {}).get("path")
        steps.append(view)
        results[job_id] = view["result"]
    return steps, results


def _results(job_ids: list[str], connection: Redis) -> dict[str, Any]:
    """The results of succeeded steps, read in pipelines of WORKFLOW_WRITE_CHUNK jobs (a finished
    10,000-step group's result holds 10,000 of them: a full view of each, with its round trips,
    took 4 s a call); a step gone from Redis (its result_ttl) has none."""
    out: dict[str, Any] = {}
    for start in range(0, len(job_ids), defaults.WORKFLOW_WRITE_CHUNK):
        chunk = job_ids[start : start + defaults.WORKFLOW_WRITE_CHUNK]
        jobs = JsonJob.fetch_many(chunk, connection=connection)
        with connection.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
            latest = pipe.execute()
        for job_id, job, entries in zip(chunk, jobs, latest, strict=True):
            if job is None or not entries:
                continue
            result_id, payload = entries[0]
            value = Result.restore(job_id, _text(result_id), payload, connection, JSONSerializer).return_value
            try:
                out[job_id] = sealing.job_result(job, value)
            except sealing.DecryptError:
                out[job_id] = MASK  # sealed under a key that is gone: never the envelope
    return out


_UNDER_WAY = {State.STARTED.value, State.PROGRESS.value, State.RETRY.value, State.SUCCESS.value}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def status(
    workflow_id: str, connection: Redis, cursor: int = 0, limit: int | None = None
) -> dict[str, Any] | None:
    """The workflow's aggregate state, its steps counted by how they ended (``counts``), a page of
    its steps (``steps`` from ``cursor``, at most ``limit``, ``next_cursor`` for the next page) and
    the final result; a failed one's ``error`` and ``failed_step`` (job id, task, path) are those of
    its first failed step.

    A workflow whose steps fit in one page is judged from every step, as it always was. A larger
    one is judged from its summary (the ended steps counted by the outcome path with each step's
    end, see :func:`steps.count_end`) and the page: no read of every step. It is ``STARTED`` once a
    step has ended or one on the page is under way."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.get(keys.workflow(workflow_id))
        pipe.hgetall(keys.workflow_summary(workflow_id))
        raw, summary_raw = pipe.execute()
    if raw is None:
        return None
    record = json.loads(raw)
    all_ids: list[str] = record["job_ids"]
    total = len(all_ids)
    limit = limit or defaults.WORKFLOW_STEPS_PAGE
    steps, results = _views(all_ids[cursor : cursor + limit], connection)
    seen = {s["state"] for s in steps}
    failed: dict[str, Any] | None
    if cursor == 0 and total <= limit:  # every step is on the page
        counts = {state: sum(1 for step in steps if step["state"] == state) for state in ENDED}
        failed = next((s for s in steps if s["state"] == State.FAILURE.value), None)
        under_way = bool(seen & _UNDER_WAY)
    else:
        summary = {_text(k): _text(v) for k, v in summary_raw.items()}
        counts = {state: max(0, int(summary.get(state, 0))) for state in ENDED}
        failed = None
        if counts[State.FAILURE.value] and summary.get("failed_step"):
            found, _ = _views([summary["failed_step"]], connection)
            failed = found[0] if found[0]["state"] == State.FAILURE.value else None
        under_way = bool(counts[State.SUCCESS.value] or seen & _UNDER_WAY)
    ended = sum(counts.values())
    if counts[State.FAILURE.value]:
        state = State.FAILURE
    elif counts[State.REVOKED.value] or State.REVOKED.value in seen:
        state = State.REVOKED
    elif counts[State.SUCCESS.value] == total:
        state = State.SUCCESS
    elif under_way:
        state = State.STARTED
    else:
        state = State.PENDING
    done = counts[State.SUCCESS.value]
    result = None
    if state is State.SUCCESS:
        missing = [i for i in job_ids(record["output"]) if i not in results]
        results.update(_results(missing, connection) if missing else {})
        result = resolve(record["output"], results)
    nxt = cursor + limit
    return {
        "workflow_id": record["workflow_id"],
        "type": record["type"],
        "state": state.value,
        "created_at": record["created_at"],
        "progress": {"current": done, "total": total, "percent": round(100.0 * done / total, 1)},
        "counts": {**counts, "unfinished": max(0, total - ended)},
        "result": result,
        "error": failed["error"] if failed is not None else None,
        # The step that failed the workflow, at the top so a caller needs no walk of the steps.
        "failed_step": (
            {"job_id": failed["job_id"], "task": failed.get("task"), "path": failed.get("path")}
            if failed is not None
            else None
        ),
        "steps": steps,
        "next_cursor": str(nxt) if nxt < total else None,
    }
