"""How a worker runs a job: through its registry entry, never around it.

The job's stored arguments are validated again against the task's input model (the job
may have been written to Redis by something other than the API), the task function is
called with the validated values, and its result is made JSON before RQ stores it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from app.registry import REGISTRY, TaskSpec

if TYPE_CHECKING:
    from rq.job import Job

log = logging.getLogger("tasklane.execution")

ERROR_META_KEY = "error"


class InvalidJobArguments(ValueError):
    """The arguments stored with a job do not satisfy its task's input model."""


def spec_for(job: Job) -> TaskSpec:
    """The registry entry of the job's task (raises UnknownTaskError)."""
    from app.queues import UnknownTaskError

    spec = REGISTRY.by_path(job.func_name or "")
    if spec is None:
        raise UnknownTaskError(f"{job.func_name!r} is not a registered task; refusing to run it")
    return spec


def execute(job: Job) -> Any:
    """Run ``job`` through its task's declaration and return a JSON-ready result."""
    spec = spec_for(job)
    if job.args:
        raise InvalidJobArguments(f"task {spec.name!r} takes keyword arguments only")
    try:
        try:
            model = spec.validate(job.kwargs)
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
        # Keep the type and message apart from RQ's formatted traceback, which may span lines.
        job.meta[ERROR_META_KEY] = {"type": type(exc).__name__, "message": str(exc)}
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
