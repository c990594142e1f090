"""Task handles and Celery's canvas over HTTP, shared by :class:`Tasklane` and :class:`AsyncTasklane`.

``Task``, ``Signature``, ``chain``, ``group`` and ``chord`` only describe calls; the client that
made them (its ``_enqueue`` and ``_start_workflow``) sends them, so the same objects serve the
sync client (results at once) and the asyncio one (coroutines to await).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from tasklane_client.errors import InvalidArguments

__all__ = ["Signature", "Task", "arguments", "chain", "chord", "group"]

J = TypeVar("J", covariant=True)  # what enqueueing one task gives
W = TypeVar("W", covariant=True)  # what starting a workflow gives


class Caller(Protocol[J, W]):
    """The client a handle belongs to."""

    def _enqueue(
        self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: dict[str, Any]
    ) -> J:
        """Enqueue one task (positional ``args`` mapped onto its input fields)."""

    def _start_workflow(self, canvas: Canvas[Any, Any]) -> W:
        """Create the workflow a canvas describes."""


def arguments(
    task: str, fields: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any], skip: int = 0
) -> dict[str, Any]:
    """Keyword arguments from positional and keyword ones: positional ones fill ``fields[skip:]`` in order."""
    names = list(fields)[skip:]
    if len(args) > len(names):
        message = f"takes at most {len(names)} positional argument(s), got {len(args)}"
        details = [{"field": "args", "message": message, "type": "args"}]
        text = f"invalid input for task {task!r}: {message}"
        raise InvalidArguments(422, "invalid_arguments", text, details)
    out = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key in out:
            details = [{"field": f"args.{key}", "message": "given twice", "type": "duplicate"}]
            raise InvalidArguments(422, "invalid_arguments", f"invalid input for task {task!r}", details)
        out[key] = value
    return out


class Task(Generic[J, W]):
    """A catalogue task of the remote service, as Celery code knows one: ``delay``, ``apply_async``, ``s``."""

    def __init__(self, caller: Caller[J, W], name: str) -> None:
        self.caller = caller
        self.name = name

    def delay(self, *args: Any, **kwargs: Any) -> J:
        """Enqueue with these arguments (``apply_async`` without options)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> J:
        """Enqueue; ``options`` are those of ``POST /api/v1/tasks/<name>``: ``countdown``, ``eta`` (a
        datetime, naive = UTC, or ISO 8601 text), ``queue``, ``priority``, ``group``, ``job_id`` (or
        ``task_id``), ``result_ttl``, ``expires``, ``rate_key``, ... and ``idempotency_key``."""
        return self.caller._enqueue(self.name, tuple(args or ()), dict(kwargs or {}), options)

    def s(self, *args: Any, **kwargs: Any) -> Signature[J, W]:
        """A signature: in a chain it receives the previous result as its first argument."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature[J, W]:
        """An immutable signature: it ignores the previous result."""
        return Signature(self, args, kwargs, immutable=True)

    def __repr__(self) -> str:
        return f"<remote task {self.name}>"


class Signature(Generic[J, W]):
    """A task with some of its arguments: a step of a chain, a group or a chord."""

    def __init__(
        self, task: Task[J, W], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:  # fmt: skip
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable

    def tasks(self) -> set[str]:
        """The tasks whose input fields this step needs to know (those given positional arguments)."""
        return {self.task.name} if self.args else set()

    def node(self, receives: bool, fields: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """This step in a workflow request; when it ``receives``, its first field is left for the input."""
        skip = 1 if receives and not self.immutable else 0
        if not self.args:
            return {"task": self.task.name, "args": dict(self.kwargs)}
        names = fields.get(self.task.name, ())
        args = arguments(self.task.name, names, self.args, self.kwargs, skip)
        return {"task": self.task.name, "args": args}

    def apply_async(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> J:
        """Enqueue the task alone; ``args`` go before the signature's own (Celery's partials)."""
        return self.task.apply_async(tuple(args) + self.args, {**self.kwargs, **(kwargs or {})}, **options)

    def delay(self, *args: Any, **kwargs: Any) -> J:
        """``apply_async`` with these extra arguments."""
        return self.apply_async(args, kwargs)

    def __or__(self, other: Signature[J, W] | Canvas[J, W]) -> chain[J, W]:
        return chain(self.task.caller, self, other)

    def __repr__(self) -> str:
        return f"{self.task.name}.{'si' if self.immutable else 's'}{self.args}"


class Canvas(Generic[J, W]):
    """A composite of signatures that runs as one workflow (``POST /api/v1/workflows``)."""

    kind = ""

    def __init__(self, caller: Caller[J, W]) -> None:
        self.caller = caller

    def children(self) -> list[Signature[J, W] | Canvas[J, W]]:
        """The steps inside."""
        raise NotImplementedError

    def tasks(self) -> set[str]:
        """The tasks whose input fields the request needs to know."""
        return set().union(*(child.tasks() for child in self.children()))

    def node(self, receives: bool, fields: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """This composite in a workflow request."""
        raise NotImplementedError

    def apply_async(self, **_options: Any) -> W:
        """Create the workflow; its result's ``get()`` is the final result."""
        return self.caller._start_workflow(self)

    def delay(self) -> W:
        """``apply_async()``."""
        return self.apply_async()

    def __or__(self, other: Signature[J, W] | Canvas[J, W]) -> chain[J, W]:
        return chain(self.caller, self, other)


def _steps(items: tuple[Any, ...]) -> list[Any]:
    if len(items) == 1 and not isinstance(items[0], Signature | Canvas) and isinstance(items[0], Iterable):
        return list(items[0])
    return list(items)


class chain(Canvas[J, W]):
    """Steps one after another, each receiving the previous step's result."""

    kind = "chain"

    def __init__(self, caller: Caller[J, W], *steps: Any) -> None:
        super().__init__(caller)
        self.steps: list[Signature[J, W] | Canvas[J, W]] = _steps(steps)

    def children(self) -> list[Signature[J, W] | Canvas[J, W]]:
        return self.steps

    def node(self, receives: bool, fields: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        steps = [s.node(receives or n > 0, fields) for n, s in enumerate(self.steps)]
        return {"type": "chain", "steps": steps}


class group(Canvas[J, W]):
    """Steps side by side; the result is the list of their results, in order."""

    kind = "group"

    def __init__(self, caller: Caller[J, W], *steps: Any) -> None:
        super().__init__(caller)
        self.steps: list[Signature[J, W] | Canvas[J, W]] = _steps(steps)

    def children(self) -> list[Signature[J, W] | Canvas[J, W]]:
        return self.steps

    def node(self, receives: bool, fields: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        return {"type": "group", "steps": [s.node(receives, fields) for s in self.steps]}


class chord(Canvas[J, W]):
    """A group whose results go, as a list, to a callback: ``chord(header, body)``."""

    kind = "chord"

    def __init__(self, caller: Caller[J, W], header: Any, body: Signature[J, W]) -> None:
        super().__init__(caller)
        self.header: list[Signature[J, W] | Canvas[J, W]] = (
            header.steps if isinstance(header, group) else _steps((header,))
        )
        self.body = body

    def children(self) -> list[Signature[J, W] | Canvas[J, W]]:
        return [*self.header, self.body]

    def node(self, receives: bool, fields: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        return {
            "type": "chord",
            "steps": [s.node(receives, fields) for s in self.header],
            "callback": self.body.node(True, fields),
        }
