"""Job filters: one model behind ``GET /api/v1/jobs``, ``POST /api/v1/jobs/bulk`` and the console.

A filter is typed as text in the console, ``state:failure task:add args.user_id:42 queue:low
since:1h``: space-separated ``key:value`` terms (quote a value that holds spaces,
``args.name:"Ada Lovelace"``), each term narrowing the match. The same filter arrives as
query parameters (``state=``, ``task=``, ``queue=``, ``since=``, ``args.<path>=``) or as the
JSON ``filter`` object of a bulk action (``{"state", "task", "queue", "since", "args": {...}}``).

* ``state``: one of the API's states, any case.
* ``task``, ``queue``: a task's name; one of the declared queues.
* ``args.<path>``: the argument at that dotted path (``args.user.id``; a number picks a list
  item). The value is read as JSON when it parses (``42``, ``true``, ``"42"``), and matches an
  equal argument; a string argument also matches the value's plain text, so ``args.user_id:42``
  finds ``42`` and ``"42"``. A task's sensitive arguments never match (a filter cannot probe them).
* ``since``: jobs whose latest time (ended, else started, else enqueued, else created) is at
  most that long ago: a number and a unit, ``90s``, ``15m``, ``1h``, ``7d``, ``2w`` (at most 366 days).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq.job import Job

from app.catalogue.registry import QueueName
from app.core.queues import task_spec
from app.core.states import State

#: What the console shows under its filter box.
SYNTAX = "state:failure task:call_external_api args.user_id:42 queue:low since:1h"
KEYS = ("state", "task", "queue", "since")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$")
#: Longest ``since`` accepted: a year (jobs are not kept that long).
MAX_SINCE = 366 * 86400
#: Longest filter text, and most argument terms, accepted.
MAX_CHARS = 2000
MAX_ARGS = 10


class FilterError(ValueError):
    """A filter that cannot be read; ``field`` names the term or parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class JobFilter:
    """Which jobs: every term given must hold."""

    state: State | None = None
    task: str | None = None
    queue: str | None = None
    #: (dotted path, the value's text) per argument term.
    args: tuple[tuple[str, str], ...] = ()
    #: Seconds back from now; None: any time.
    since: int | None = None

    @property
    def empty(self) -> bool:
        return self == JobFilter()

    def text(self) -> str:
        """The filter as the console's box spells it (parse(text()) == self)."""
        terms = []
        if self.state:
            terms.append(f"state:{self.state.value.lower()}")
        for key in ("task", "queue"):
            if getattr(self, key):
                terms.append(f"{key}:{shlex.quote(getattr(self, key))}")
        terms += [f"args.{path}:{shlex.quote(value)}" for path, value in self.args]
        if self.since is not None:
            terms.append(f"since:{_since_text(self.since)}")
        return " ".join(terms)

    def as_query(self) -> dict[str, str]:
        """The filter as ``GET /api/v1/jobs`` query parameters."""
        out = {}
        if self.state:
            out["state"] = self.state.value
        if self.task:
            out["task"] = self.task
        if self.queue:
            out["queue"] = self.queue
        if self.since is not None:
            out["since"] = _since_text(self.since)
        out.update({f"args.{path}": value for path, value in self.args})
        return out

    def as_body(self) -> dict[str, Any]:
        """The filter as a bulk action's ``filter`` object."""
        out: dict[str, Any] = {k: v for k, v in self.as_query().items() if not k.startswith("args.")}
        if self.args:
            out["args"] = dict(self.args)
        return out

    def cutoff(self, now: float | None = None) -> datetime | None:
        if self.since is None:
            return None
        return datetime.fromtimestamp((time.time() if now is None else now) - self.since, UTC)

    def matches_rest(self, job: Job, cutoff: datetime | None) -> bool:
        """Whether ``job`` meets the argument and time terms (state, task, queue are checked apart)."""
        if cutoff is not None:
            latest = job.ended_at or job.started_at or job.enqueued_at or job.created_at
            if latest is None or _aware(latest) < cutoff:
                return False
        if not self.args:
            return True
        spec = task_spec(job)
        hidden = spec.sensitive if spec is not None else frozenset()
        try:
            kwargs = job.kwargs
        except Exception:  # unreadable (not JSON, or encrypted): never matches an argument term
            return False
        if not isinstance(kwargs, dict):
            return False
        for path, raw in self.args:
            parts = path.split(".")
            if parts[0] in hidden:
                return False
            found, value = _at(kwargs, parts)
            if not found or not _equal(value, raw):
                return False
        return True


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _since_text(seconds: int) -> str:
    for unit, size in sorted(_UNITS.items(), key=lambda u: -u[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _at(value: Any, parts: list[str]) -> tuple[bool, Any]:
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _equal(stored: Any, raw: str) -> bool:
    if isinstance(stored, str) and stored == raw:
        return True
    try:
        wanted = json.loads(raw)
    except ValueError:
        return False
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return stored is wanted
    if isinstance(stored, str) and isinstance(wanted, int | float):
        return False
    return bool(stored == wanted)


def parse_since(raw: str, field: str = "since") -> int:
    found = _SINCE.match(raw)
    if not found:
        raise FilterError(field, f"{raw!r} is not a duration such as 90s, 15m, 1h, 7d or 2w")
    seconds = int(found.group(1)) * _UNITS[found.group(2)]
    if seconds > MAX_SINCE:
        raise FilterError(field, f"at most {MAX_SINCE // 86400} days")
    return seconds


def _path(raw: str, field: str) -> str:
    if not raw or any(not p or len(p) > 100 for p in raw.split(".")) or len(raw) > 200:
        raise FilterError(field, "an argument path is dotted names, such as args.user.id")
    return raw


def build(terms: Mapping[str, str], args: list[tuple[str, str]], field_of: Any = lambda k: k) -> JobFilter:
    """A filter from its terms (key -> text) and argument terms; FilterError names a bad one."""
    state = None
    if terms.get("state"):
        try:
            state = State(terms["state"].upper())
        except ValueError:
            allowed = ", ".join(s.value.lower() for s in State)
            raise FilterError(field_of("state"), f"state must be one of {allowed}") from None
    queue = terms.get("queue") or None
    if queue is not None and queue not in {q.value for q in QueueName}:
        known = ", ".join(q.value for q in QueueName)
        raise FilterError(field_of("queue"), f"no queue named {queue!r}; there are {known}")
    since = parse_since(terms["since"], field_of("since")) if terms.get("since") else None
    if len(args) > MAX_ARGS:
        raise FilterError("args", f"at most {MAX_ARGS} argument terms")
    return JobFilter(
        state=state,
        task=terms.get("task") or None,
        queue=queue,
        args=tuple((_path(p, field_of(f"args.{p}")), v) for p, v in args),
        since=since,
    )


def parse(text: str) -> JobFilter:
    """The filter typed in the console's box (see the module's syntax)."""
    if len(text) > MAX_CHARS:
        raise FilterError("filter", f"at most {MAX_CHARS} characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise FilterError("filter", f"cannot read it ({exc})") from None
    terms: dict[str, str] = {}
    args: list[tuple[str, str]] = []
    for word in words:
        key, colon, value = word.partition(":")
        if not colon:
            raise FilterError(word, f"a term is key:value, such as {SYNTAX.split()[0]}")
        key = key.lower() if not key.startswith("args.") else key
        if key.startswith("args."):
            args.append((key[len("args.") :], value))
        elif key in KEYS:
            if key in terms:
                raise FilterError(key, "given twice")
            terms[key] = value
        else:
            known = ", ".join((*KEYS, "args.<path>"))
            raise FilterError(key, f"unknown term; the terms are {known}")
    return build(terms, args)


def from_query(query: Mapping[str, str]) -> JobFilter:
    """The filter of ``GET /api/v1/jobs``'s query parameters."""
    terms = {k: query[k] for k in KEYS if query.get(k)}
    args = [(k[len("args.") :], v) for k, v in query.items() if k.startswith("args.")]
    return build(terms, args)


def from_body(body: Any) -> JobFilter:
    """The ``filter`` object of a bulk action."""
    if body is None:
        return JobFilter()
    if not isinstance(body, dict):
        raise FilterError("filter", "must be an object")
    unknown = set(body) - {*KEYS, "args"}
    if unknown:
        raise FilterError(
            f"filter.{sorted(unknown)[0]}", "unknown; a filter has state, task, queue, since, args"
        )
    terms: dict[str, str] = {}
    for key in KEYS:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise FilterError(f"filter.{key}", "must be a string")
        terms[key] = value
    args_body = body.get("args") or {}
    if not isinstance(args_body, dict):
        raise FilterError("filter.args", "must be an object of dotted path -> value")
    args = [
        (str(path), value if isinstance(value, str) else json.dumps(value))
        for path, value in args_body.items()
    ]
    return build(terms, args, field_of=lambda k: f"filter.{k}")
