"""Where a workflow step's input comes from: references to the jobs it waits for.

A step that receives the output of earlier steps carries, in its ``workflow`` meta, an
``input`` of ``{"field", "from"}``: ``from`` is a job reference ``{"job": id}`` or a
(nested) list of them, the output of a group. The worker resolves it just before the
step runs; the workflow module writes it when it plans the jobs.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

from app.core import sealing
from app.core.queues import JsonJob
from app.foundation import defaults, keys
from app.foundation.meta import Meta


class StepInputExpired(LookupError):
    """A result a step needs has expired; the workflow cannot go on."""


def job_ids(output: Any) -> list[str]:
    """Every job id an output reference names, in order."""
    if isinstance(output, dict):
        return [output["job"]]
    return [job_id for item in output for job_id in job_ids(item)]


def resolve(output: Any, results: dict[str, Any]) -> Any:
    """The value of an output reference, given each job's result."""
    if isinstance(output, dict):
        return results[output["job"]]
    return [resolve(item, results) for item in output]


def inputs_for(job: Job, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The step's arguments with the output of the steps it waits for filled in."""
    spec = (job.meta.get(Meta.WORKFLOW) or {}).get("input")
    if not spec:
        return kwargs
    ids = job_ids(spec["from"])
    results = {}
    for job_id, upstream in zip(ids, JsonJob.fetch_many(ids, connection=job.connection), strict=True):
        if upstream is None:
            raise StepInputExpired(f"the result of step {job_id} has expired; the workflow cannot go on")
        results[job_id] = sealing.job_result(upstream, upstream.return_value())
    return {**kwargs, spec["field"]: resolve(spec["from"], results)}


#: The states a workflow's summary counts: how a step ended.
ENDED = ("SUCCESS", "FAILURE", "REVOKED")


def count_end(job: Job, state: str, pipe: Any, by: int = 1) -> None:
    """Queue, on ``pipe`` (the writes of the step's end where there is one), the count of a
    workflow step that ended in ``state`` (one of :data:`ENDED`) in its workflow's summary; nothing
    for a job of no workflow. ``by`` -1 takes a count back (a failed step retried)."""
    workflow = job.meta.get(Meta.WORKFLOW)
    if not workflow:
        return
    key = keys.workflow_summary(workflow["id"])
    pipe.hincrby(key, state, by)
    if state == "FAILURE" and by > 0:
        pipe.hsetnx(key, "failed_step", job.id)
    pipe.expire(key, defaults.WORKFLOW_TTL)  # kept as long as the workflow's record (at most as long again)
