"""Celery's canvas: signatures, ``chain``, ``group`` and ``chord``, as Tasklane workflows.

``chain(add.s(2, 2), add.s(3)).apply_async()`` creates the same workflow as
``POST /api/v1/workflows`` (visible at ``GET /api/v1/workflows/<id>``) and returns a
:class:`WorkflowResult` whose ``get()`` is the final result. Celery's rules hold: in a
chain each result is prepended to the next signature's positional arguments (``si``
ignores it); a group's result is the list of its results in order; a chord passes that
list to its callback; a group followed by a task in a chain is a chord.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from app.calling.eager import is_eager
from app.calling.result import (
    AsyncResult,
    EagerResult,
    StateQueries,
    TaskError,
    TaskRevokedError,
    remote_error,
)
from app.catalogue.registry import REGISTRY, TaskSpec
from app.core import outcomes, workflows
from app.core.states import State
from app.foundation.runtime import client_runtime

__all__ = ["InvalidTaskArguments", "Signature", "WorkflowResult", "chain", "chord", "field_errors", "group"]


class InvalidTaskArguments(ValueError):
    """The arguments of a call do not satisfy the task's input model; ``errors`` lists each field."""

    def __init__(self, task: str, errors: list[dict[str, Any]]) -> None:
        fields = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid arguments for task {task!r}: {fields}")
        self.task = task
        self.errors = errors


def field_errors(exc: ValidationError, prefix: str = "args") -> list[dict[str, Any]]:
    """Pydantic errors as the API reports them: ``[{"field", "message", "type"}]``."""
    return [
        {"field": ".".join(str(p) for p in (prefix, *err["loc"])), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def run_eagerly(spec: TaskSpec, model: BaseModel, job_id: str | None = None) -> EagerResult:
    """Run a validated call inline, through app/core/outcomes.py (the signals, hooks and JSON
    result of a worker's run); the outcome is kept as a worker would report it."""
    result_id = job_id or str(uuid.uuid4())
    values = {name: getattr(model, name) for name in type(model).model_fields}
    value, error = outcomes.eager_run(spec, values, result_id)
    if error is not None:
        return EagerResult(result_id, error=remote_error(error))
    return EagerResult(result_id, value=value)


class Signature:
    """A task with some of its arguments: a step of a chain, a group or a chord."""

    def __init__(self, task: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                 immutable: bool = False) -> None:  # fmt: skip
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        #: Enqueue options given with :meth:`set` (Celery's ``sig.set(expires=60)``).
        self.options: dict[str, Any] = {}

    def set(self, **options: Any) -> Signature:
        """Enqueue options for this signature, as ``apply_async`` takes them (``expires``, ``countdown``,
        ``queue``, ...); returns the signature, as Celery's does."""
        self.options.update(options)
        return self

    def node(self, receives: bool) -> dict[str, Any]:
        """This step in a workflow request; when it ``receives``, its first field is left for the input."""
        if self.options:
            raise ValueError(
                f"{self!r}: enqueue options ({', '.join(sorted(self.options))}) apply to a signature "
                "enqueued alone, not yet to a step of a workflow"
            )
        skip = 1 if receives and not self.immutable else 0
        return {"task": self.task.name, "args": self.task.arguments(self.args, self.kwargs, skip=skip)}

    def apply_async(
        self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Enqueue the task alone; ``args`` go before the signature's own (Celery's partials); ``options``
        add to (and win over) those of :meth:`set`."""
        merged = {**self.options, **options}
        return self.task.apply_async(tuple(args) + self.args, {**self.kwargs, **(kwargs or {})}, **merged)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async`` with these extra arguments."""
        return self.apply_async(args, kwargs)

    def __or__(self, other: Any) -> chain:
        return chain(self, other)

    def __repr__(self) -> str:
        return f"{self.task.name}{'si' if self.immutable else 's'}{self.args}"


class _Canvas:
    """A composite of signatures that runs as one workflow."""

    kind = ""

    def node(self, receives: bool) -> dict[str, Any]:  # pragma: no cover - each kind defines it
        raise NotImplementedError

    def apply_async(self, encrypt: bool | None = None, **_options: Any) -> WorkflowResult | EagerResult:
        """Create the workflow (or, in eager mode, run it inline); ``encrypt=True`` stores every
        step's args and result encrypted (raises EncryptionUnavailable without ENCRYPTION_KEYS)."""
        root = self.node(False)
        if is_eager():
            return _run_eagerly(root)
        body = workflows.WorkflowBody.model_validate({**root, "encrypt": encrypt})
        rt = client_runtime()
        try:
            record = workflows.create(body, rt.redis, rt.settings)
        except workflows.WorkflowError as exc:
            raise InvalidTaskArguments(self.kind, exc.details) from None
        return WorkflowResult(record["workflow_id"], record["job_ids"], record["output"], rt.redis)

    def delay(self) -> WorkflowResult | EagerResult:
        """``apply_async()``."""
        return self.apply_async()

    def __or__(self, other: Any) -> chain:
        return chain(self, other)


def _steps(items: tuple[Any, ...]) -> list[Any]:
    if len(items) == 1 and not isinstance(items[0], Signature | _Canvas) and isinstance(items[0], Iterable):
        return list(items[0])
    return list(items)


class chain(_Canvas):
    """Steps one after another, each receiving the previous step's result."""

    kind = "chain"

    def __init__(self, *steps: Any) -> None:
        self.steps = _steps(steps)

    def node(self, receives: bool) -> dict[str, Any]:
        return {"type": "chain", "steps": [s.node(receives or n > 0) for n, s in enumerate(self.steps)]}


class group(_Canvas):
    """Steps side by side; the result is the list of their results, in order."""

    kind = "group"

    def __init__(self, *steps: Any) -> None:
        self.steps = _steps(steps)

    def node(self, receives: bool) -> dict[str, Any]:
        return {"type": "group", "steps": [s.node(receives) for s in self.steps]}


class chord(_Canvas):
    """A group whose results go, as a list, to a callback: ``chord(header, body)`` or ``(header)(body)``."""

    kind = "chord"

    def __init__(self, header: Any, body: Signature | None = None) -> None:
        self.header = header.steps if isinstance(header, group) else _steps((header,))
        self.body = body

    def __call__(self, body: Signature) -> WorkflowResult | EagerResult:
        """Celery's ``chord(header)(callback)``: set the callback and apply."""
        self.body = body
        return self.apply_async()

    def node(self, receives: bool) -> dict[str, Any]:
        if self.body is None:
            raise InvalidTaskArguments("chord", [{"field": "callback", "message": "a chord needs a callback",
                                                  "type": "missing"}])  # fmt: skip
        return {
            "type": "chord",
            "steps": [s.node(receives) for s in self.header],
            "callback": self.body.node(True),
        }


class WorkflowResult(StateQueries):
    """The result of a workflow: ``id`` (the workflow id), ``get()`` the final result."""

    def __init__(self, id: str, job_ids: list[str], output: Any, connection: Any) -> None:
        self.id = id
        self.job_ids = job_ids
        self.output = output
        self.connection = connection

    def _status(self) -> dict[str, Any]:
        return workflows.status(self.id, self.connection) or {"state": State.PENDING.value, "steps": []}

    @property
    def state(self) -> str:
        """The workflow's aggregate state."""
        return str(self._status()["state"])

    status = state

    @property
    def results(self) -> list[AsyncResult]:
        """One result per job of the workflow, in creation order."""
        return [AsyncResult(job_id, self.connection) for job_id in self.job_ids]

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait for the final steps and return the workflow's result (a list for a group)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._resolve(self.output, deadline)
        except TaskRevokedError:
            failure = next(
                (s for s in self._status()["steps"] if s.get("state") == State.FAILURE.value), None
            )
            error: TaskError = (
                remote_error(failure["error"]) if failure else TaskRevokedError("TaskRevokedError", "")
            )
            if propagate:
                raise error from None
            return error
        except TaskError as exc:
            if propagate:
                raise
            return exc

    def _resolve(self, output: Any, deadline: float | None) -> Any:
        if isinstance(output, dict):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            return AsyncResult(output["job"], self.connection).get(timeout=remaining)
        return [self._resolve(item, deadline) for item in output]

    def revoke(self) -> None:
        """Revoke every job of the workflow that has not finished."""
        for result in self.results:
            result.revoke()

    def __repr__(self) -> str:
        return f"<WorkflowResult: {self.id}>"


def _run_eagerly(root: dict[str, Any]) -> EagerResult:
    """Run a workflow request inline, as the workers would, passing results along."""

    def run(node: dict[str, Any], upstream: Any, receives: bool) -> Any:
        if "task" in node:
            spec = REGISTRY.get(node["task"])
            assert spec is not None
            args = dict(node["args"])
            if receives:
                missing = next((f for f in spec.input_model.model_fields if f not in args), None)
                if missing is not None:
                    args[missing] = upstream
            outcome = run_eagerly(spec, spec.validate(args))
            return outcome.get()
        if node["type"] == "chain":
            value = upstream
            for n, step in enumerate(node["steps"]):
                value = run(step, value, receives or n > 0)
            return value
        values = [run(step, upstream, receives) for step in node["steps"]]
        if node["type"] == "chord":
            return run(node["callback"], values, True)
        return values

    result_id = str(uuid.uuid4())
    try:
        return EagerResult(result_id, value=run(root, None, False))
    except TaskError as exc:
        return EagerResult(result_id, error=exc)
