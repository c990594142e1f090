"""How a worker runs a job: through its registry entry, never around it.

The job's stored arguments are validated again against the task's input model (the job
may have been written to Redis by something other than the API), the task function is
called with the validated values, and its result is made JSON before RQ stores it.
A failure is recorded as an attempt, and the task's retry policy decides here whether
another attempt follows (RQ's worker then schedules it through JsonJob.retry).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from app.hooks import record_attempt
from app.queues import META_NEXT_RETRY_AT, META_NO_RETRY, META_RETRY_COUNTDOWN, META_REVOKED, UnknownTaskError
from app.registry import REGISTRY, TaskSpec

if TYPE_CHECKING:
    from rq.job import Job

__all__ = ["InvalidJobArguments", "JobRevoked", "RetryTask", "execute", "spec_for"]

log = logging.getLogger("tasklane.execution")


class InvalidJobArguments(ValueError):
    """The arguments stored with a job do not satisfy its task's input model."""


class JobRevoked(RuntimeError):
    """The job was revoked before it started; it is not run."""


class RetryTask(Exception):
    """Raise from a task to ask for another attempt after ``countdown`` seconds.

    The attempt counts against the task's ``max_retries``; with none left the job fails.
    """

    def __init__(self, countdown: float = 0.0, reason: str = "retry requested by the task") -> None:
        super().__init__(reason)
        self.countdown = max(0.0, float(countdown))


def spec_for(job: Job) -> TaskSpec:
    """The registry entry of the job's task (raises UnknownTaskError)."""
    spec = REGISTRY.by_path(job.func_name or "")
    if spec is None:
        raise UnknownTaskError(f"{job.func_name!r} is not a registered task; refusing to run it")
    return spec


def _never_retry(exc: BaseException) -> bool:
    return isinstance(exc, InvalidJobArguments | JobRevoked | UnknownTaskError)


def execute(job: Job) -> Any:
    """Run ``job`` through its task's declaration and return a JSON-ready result."""
    for key in (META_NO_RETRY, META_RETRY_COUNTDOWN, META_NEXT_RETRY_AT):
        job.meta.pop(key, None)
    spec: TaskSpec | None = None
    try:
        spec = spec_for(job)
        if job.meta.get(META_REVOKED):
            raise JobRevoked(f"job {job.id} was revoked")
        if job.args:
            raise InvalidJobArguments(f"task {spec.name!r} takes keyword arguments only")
        kwargs = dict(job.kwargs)
        if job.meta.get("workflow"):
            from app.workflows import inputs_for

            kwargs = inputs_for(job, kwargs)
        try:
            model = spec.validate(kwargs)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise InvalidJobArguments(f"invalid arguments for task {spec.name!r}: {problems}") from None
        values = {name: getattr(model, name) for name in type(model).model_fields}
        started = time.monotonic()
        log.info("task started", extra={"job_id": job.id, "task": spec.name})
        result = spec.func(**values)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except BaseException as exc:
        record_attempt(job, type(exc).__name__, str(exc))
        if isinstance(exc, RetryTask):
            job.meta[META_RETRY_COUNTDOWN] = exc.countdown
        elif spec is None or _never_retry(exc) or not spec.retry.should_retry(exc):
            job.meta[META_NO_RETRY] = True
        job.save_meta()
        raise
    log.info(
        "task succeeded",
        extra={
            "job_id": job.id,
            "task": spec.name,
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
        },
    )
    return to_jsonable_python(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable
