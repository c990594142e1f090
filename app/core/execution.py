"""How a worker runs one attempt of a job: through its registry entry, never around it.

The job's stored arguments are validated again against the task's input model (the job
may have been written to Redis by something other than the API), the task function is
called with the validated values, and its result is made JSON before RQ stores it.
A failure is handed to app/core/outcomes.py (``attempt_failed``), which records it as an
attempt and decides whether it may be retried; RQ's worker then asks the job class
(``should_retry``, ``retry``), which asks outcomes again. Everything that follows an outcome
is the outcomes module's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from rq.job import Job
from rq.queue import Queue

from app.catalogue.registry import RetryTask, Snooze, TaskSpec
from app.core import outcomes, sealing
from app.core.queues import JsonJob, UnknownTaskError, task_spec
from app.core.steps import StepInputExpired, inputs_for
from app.foundation import proc, signals
from app.foundation.meta import Meta
from app.ops import observability
from app.ops.logs import hold_secrets, redact, release_secrets

if TYPE_CHECKING:
    from redis.client import Pipeline

__all__ = ["ExecutingJob", "InvalidJobArguments", "JobRevoked", "RetryTask", "execute", "spec_for"]

log = logging.getLogger("tasklane.execution")


class InvalidJobArguments(ValueError):
    """The arguments stored with a job do not satisfy its task's input model."""


class JobRevoked(RuntimeError):
    """The job was revoked before it started; it is not run."""


class ExecutingJob(JsonJob):
    """The job class of workers: RQ's ``perform`` runs the task through :func:`execute`; whether a
    failed attempt is retried, and when, is app/core/outcomes.py's decision."""

    def _execute(self) -> Any:
        return execute(self)

    @property
    def should_retry(self) -> bool:
        """RQ's retry budget, unless outcomes says this failure is final (see outcomes.may_retry)."""
        return outcomes.may_retry(self, budget_left=super().should_retry)

    def retry(self, queue: Queue, pipeline: Pipeline) -> None:
        """Schedule the next attempt (RQ calls it from its failure handling): outcomes.schedule_retry."""
        outcomes.schedule_retry(self, queue, pipeline)


def spec_for(job: Job) -> TaskSpec:
    """The registry entry of the job's task (raises UnknownTaskError)."""
    spec = task_spec(job)
    if spec is None:
        raise UnknownTaskError(f"{job.func_name!r} is not a registered task; refusing to run it")
    return spec


def _never_retry(exc: BaseException) -> bool:
    return isinstance(
        exc, InvalidJobArguments | JobRevoked | UnknownTaskError | StepInputExpired | sealing.DecryptError
    )


def _validated(spec: TaskSpec, job: Job) -> dict[str, Any]:
    if job.args:
        raise InvalidJobArguments(f"task {spec.name!r} takes keyword arguments only")
    kwargs = inputs_for(job, _opened(job))
    try:
        model = spec.validate(kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + (
                "invalid value (not shown: the field is sensitive)"
                if e["loc"][:1] and e["loc"][0] in spec.sensitive
                else e["msg"]
            )
            for e in exc.errors(include_url=False)
        )
        raise InvalidJobArguments(f"invalid arguments for task {spec.name!r}: {problems}") from None
    return {name: getattr(model, name) for name in type(model).model_fields}


def _opened(job: Job) -> dict[str, Any]:
    """The job's stored arguments, decrypted just before the call when the job is encrypted."""
    try:
        return sealing.job_kwargs(job)
    except sealing.DecryptError as exc:
        raise sealing.DecryptError(f"the arguments of job {job.id} cannot be decrypted: {exc}") from None


def execute(job: Job) -> Any:
    """Run ``job`` through its task's declaration and return a JSON-ready result (traced, when on)."""
    if observability.TRACER is None:
        return _execute(job)
    task = str(job.meta.get(Meta.TASK) or job.func_name)
    with observability.job_span(job.id, task, job.origin, job.meta.get(Meta.TRACE)):
        return _execute(job)


def _execute(job: Job) -> Any:
    for key in (Meta.NO_RETRY, Meta.RETRY_COUNTDOWN, Meta.NEXT_RETRY_AT, Meta.SNOOZE_FOR):
        job.meta.pop(key, None)
    spec: TaskSpec | None = None
    held: list[str] = []
    try:
        spec = spec_for(job)
        if job.meta.get(Meta.REVOKED):
            raise JobRevoked(f"job {job.id} was revoked")
        values = _validated(spec, job)
        if spec.sensitive or sealing.is_encrypted(job):
            # Out of every log line while the job runs, its own error message included.
            held = sealing.secret_values(spec, values, sealing.is_encrypted(job))
            hold_secrets(held)
        started = time.monotonic()
        log.info("task started", extra={"job_id": job.id, "task": spec.name})
        signals.send(signals.task_prerun, spec.name, job_id=job.id, kwargs=values)
        try:
            result = spec.func(**values)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
            if isinstance(result, Snooze):
                raise result
        finally:
            signals.send(signals.task_postrun, spec.name, job_id=job.id, kwargs=values)
    except Snooze as exc:
        # Neither an attempt nor a failure: the worker puts the job back (outcomes.snoozed).
        job.meta[Meta.SNOOZE_FOR] = exc.seconds
        job.save_meta()
        raise
    except BaseException as exc:
        message = proc.memory_error_message(exc) or str(exc)
        if held and redact(message) != message:
            message = redact(message)
            # RQ formats the traceback it stores, shows and logs from the exception itself.
            with contextlib.suppress(Exception):
                exc.args = (message,)
        outcomes.attempt_failed(job, spec, exc, message, retryable=not _never_retry(exc))
        raise
    finally:
        if held:
            release_secrets(held)
    log.info(
        "task succeeded",
        extra={
            "job_id": job.id,
            "task": spec.name,
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
        },
    )
    return sealing.sealed_result(job, to_jsonable_python(result))


async def _await(awaitable: Any) -> Any:
    return await awaitable
