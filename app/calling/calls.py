"""Calling tasks from Python the Celery way: ``add.delay(2, 3)``, ``add.apply_async(...)``, ``add(2, 3)``.

``from app.tasks import add`` gives a :class:`Task`: calling it runs the function here and
now; ``delay`` and ``apply_async`` validate exactly as ``POST /api/v1/tasks/<name>`` does
(positional arguments map to the input model's fields in order) and enqueue, returning an
:class:`~app.result.AsyncResult`. A bad call raises :class:`InvalidTaskArguments` (a
``ValueError``) naming each bad field, before anything is enqueued.

Eager mode (Celery's ``task_always_eager``), for users' own unit tests: with
``TASKS_ALWAYS_EAGER=1`` in the environment, or inside ``with eager():``, calls run inline
and return an :class:`~app.result.EagerResult` with the same surface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.calling.canvas import InvalidTaskArguments, Signature, field_errors, run_eagerly
from app.calling.eager import eager, is_eager
from app.calling.result import AsyncResult, EagerResult
from app.catalogue.registry import REGISTRY, TaskSpec
from app.core import outbox
from app.core.dispatch import EnqueueOptions, OptionRefused, deduplicated, enqueue, rate_key_refused
from app.foundation.runtime import client_runtime

__all__ = ["InvalidTaskArguments", "Task", "eager", "is_eager", "task_handle"]


class Task:
    """A catalogue task as Celery code knows one: call it, ``delay`` it, sign it."""

    def __init__(self, spec: TaskSpec) -> None:
        self._declared = spec
        self.name = spec.name
        self.__doc__ = spec.func.__doc__
        self.__wrapped__ = spec.func

    @property
    def spec(self) -> TaskSpec:
        """The task's spec with the operator's overrides in force (TASK_OVERRIDES) where it is used."""
        return REGISTRY.get(self.name) or self._declared

    def fields(self) -> list[str]:
        """The input model's fields, in the order positional arguments fill them."""
        return list(self.spec.input_model.model_fields)

    def arguments(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, skip: int = 0
    ) -> dict[str, Any]:
        """Keyword arguments from a call's positional and keyword ones (``skip`` leading fields)."""
        fields = self.fields()[skip:]
        if len(args) > len(fields):
            message = f"takes at most {len(fields)} positional argument(s), got {len(args)}"
            raise InvalidTaskArguments(self.name, [{"field": "args", "message": message, "type": "args"}])
        out = dict(zip(fields, args, strict=False))
        for key, value in (kwargs or {}).items():
            if key in out:
                error = {"field": f"args.{key}", "message": "given twice", "type": "duplicate"}
                raise InvalidTaskArguments(self.name, [error])
            out[key] = value
        return out

    def validate(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> BaseModel:
        """The validated input model, as the API would accept it (raises InvalidTaskArguments)."""
        try:
            return self.spec.validate(self.arguments(args, kwargs))
        except ValidationError as exc:
            raise InvalidTaskArguments(self.name, field_errors(exc)) from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task's function here and now, with validated arguments."""
        model = self.validate(args, kwargs)
        return self.spec.func(**{name: getattr(model, name) for name in type(model).model_fields})

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult | EagerResult:
        """Enqueue with these arguments (``apply_async`` without options)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        task_id: str | None = None,
        result_ttl: int | None = None,
        expires: float | datetime | None = None,
        encrypt: bool | None = None,
        unique: Mapping[str, Any] | None = None,
        debounce: Mapping[str, Any] | None = None,
        rate_key: str | None = None,
        priority: int | None = None,
        group: str | None = None,
        session: Session | Connection | None = None,
        sequence: str | None = None,
    ) -> AsyncResult | EagerResult:
        """Validate and enqueue; the options are those of ``POST /api/v1/tasks/<name>``.

        ``task_id`` is Celery's name for ``job_id``; a naive ``eta`` (or ``expires``) is taken as UTC;
        ``expires`` (seconds or a time): a job not started by then never runs. With
        ``session`` (a SQLAlchemy Connection or Session on DATABASE_URL) the enqueue is part of
        that transaction: the job exists only if it commits, and reaches Redis after the commit.
        ``encrypt=True`` stores the args and result encrypted (ENCRYPTION_KEYS; docs/OPERATIONS.md).
        ``unique={"period": s, "key": ...}`` and ``debounce={"delay": s, "key": ...}`` as the API's;
        the result's ``deduplicated`` is True when an earlier job was returned.
        ``rate_key``: the job starts in that key's own bucket of the task's rate limit (a task
        without one refuses it).
        ``sequence="user-42"``: jobs with the same key run one at a time, in enqueue order.
        ``priority`` (0 first .. 9 last, default 5) and ``group`` (round robin over groups) place the
        job in its queue (docs/FLOW_CONTROL.md).
        """
        model = self.validate(args or (), kwargs)
        if eta is not None and eta.tzinfo is None:
            eta = eta.replace(tzinfo=UTC)
        if isinstance(expires, datetime) and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        raw = {"countdown": countdown, "eta": eta, "queue": queue, "job_id": job_id or task_id,
               "result_ttl": result_ttl, "encrypt": encrypt, "expires": expires,
               "unique": unique, "debounce": debounce, "rate_key": rate_key,
               "sequence": sequence, "priority": priority, "group": group}  # fmt: skip
        try:
            options = EnqueueOptions.model_validate({k: v for k, v in raw.items() if v is not None})
        except ValidationError as exc:
            raise InvalidTaskArguments(self.name, field_errors(exc, "options")) from None
        if (problem := rate_key_refused(self.spec, options.rate_key)) is not None:
            refused = {"field": "options.rate_key", "message": problem, "type": "rate_key_without_rate_limit"}
            raise InvalidTaskArguments(self.name, [refused])
        if is_eager():
            return run_eagerly(self.spec, model, options.job_id)
        rt = client_runtime()
        if session is not None and options.debounce is not None:
            no_debounce = {"field": "options.debounce", "message": "debounce is not taken with session=",
                           "type": "option_refused"}  # fmt: skip
            raise InvalidTaskArguments(self.name, [no_debounce])
        if session is not None:
            job_id = outbox.stage(session, self.spec, model, options, rt.redis, rt.settings)
            return AsyncResult(job_id, rt.redis)
        try:
            job = enqueue(
                self.spec,
                model,
                rt.redis,
                options,
                default_result_ttl=rt.settings.result_ttl,
                failure_ttl=rt.settings.failed_job_ttl,
            )
        except OptionRefused as exc:
            refused = {"field": exc.field, "message": str(exc), "type": "option_refused"}
            raise InvalidTaskArguments(self.name, [refused]) from None
        result = AsyncResult(job.id, rt.redis)
        result.deduplicated = deduplicated(job)  # unique and debounce (issue 19)
        return result

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: in a chain it receives the previous result as its first argument."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it ignores the previous result."""
        return Signature(self, args, kwargs, immutable=True)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def task_handle(name: str) -> Task:
    """The :class:`Task` of the catalogue task called ``name`` (raises AttributeError if none)."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise AttributeError(f"no task named {name!r} in the catalogue")
    return Task(spec)
