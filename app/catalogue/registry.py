"""The task registry: one declaration beside each task function, read by everything else.

The API validates and enqueues from it, the worker executes through it, the scheduler
registers its periodic entries from it, and the catalogue endpoint and OpenAPI document
describe it. Adding a task is adding a function and its ``@task(...)`` declaration in a
module under ``app/tasks/``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json
from rq.timeouts import JobTimeoutException

from app.foundation import defaults, runtime, ticks
from app.foundation.config import RATE_PATTERN, TaskOverride

F = TypeVar("F", bound=Callable[..., Any])

_RATE = RATE_PATTERN
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class QueueName(StrEnum):
    """The queues, highest priority first."""

    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


class CatalogueError(ValueError):
    """The catalogue is inconsistent (two tasks with one name, a module that cannot be imported)."""


class TaskInput(BaseModel):
    """Base of every task's input model: strict (no string-to-number or bool-to-number
    coercion), and unknown fields are an error, not ignored."""

    model_config = ConfigDict(strict=True, extra="forbid")


#: What a sensitive argument is shown as, wherever a job's arguments are shown.
MASK = "***"


def sensitive_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of an input model declared ``Field(json_schema_extra={"sensitive": True})``."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("sensitive") is True
    )


class NoInput(TaskInput):
    """The input of a task that takes no arguments."""


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait between attempts.

    The delay before retry ``n`` (1-based) is ``min(backoff_cap, backoff_base * 2**(n-1))``
    seconds; ``countdowns`` lists them for a job's whole life.
    """

    max_retries: int = 0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    jitter: bool = True
    retry_for: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_for: tuple[type[BaseException], ...] = ()

    def delay(self, attempt: int, rand: float) -> float:
        """The delay before retry ``attempt`` with full jitter (``rand`` in [0, 1)) when enabled."""
        ceiling = self.countdown(attempt)
        return max(0.5, ceiling * rand) if self.jitter else ceiling

    def countdown(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (1-based), in seconds."""
        return float(min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempt - 1)))

    def countdowns(self) -> list[int]:
        """Every retry's delay in whole seconds, first retry first."""
        return [max(1, round(self.countdown(n))) for n in range(1, self.max_retries + 1)]

    def should_retry(self, exc: BaseException) -> bool:
        """True when ``exc`` is a failure this policy retries."""
        if isinstance(exc, self.dont_retry_for):
            return False
        return isinstance(exc, self.retry_for)

    def describe(self) -> dict[str, Any]:
        """The policy as JSON for the catalogue."""
        return {
            "max_retries": self.max_retries,
            "backoff": {"base": self.backoff_base, "cap": self.backoff_cap, "jitter": self.jitter},
            "retry_for": [e.__name__ for e in self.retry_for],
            "dont_retry_for": [e.__name__ for e in self.dont_retry_for],
        }


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit passes; catch it to stop cleanly.

    Defined beside the policies so that tasks can catch it (``from app.limits import ...``
    works too: the limits module enforces it).
    """


#: The soft deadline (time.monotonic()) of the task running in this thread, while it has one.
_soft_limit = threading.local()


def set_soft_deadline(deadline: float | None) -> None:
    """Record (or clear, with None) when the soft limit of the task running in this thread passes."""
    _soft_limit.deadline = deadline


def check_soft_limit() -> None:
    """Raise :class:`SoftTimeLimitExceeded` once the running task's soft limit has passed.

    For long loops in tasks: the limit's own exception is raised asynchronously, and when it
    lands inside a finalizer (a weakref callback, a ``__del__``) Python prints and drops it;
    a loop that calls this between units of work stops all the same.
    """
    deadline = getattr(_soft_limit, "deadline", None)
    if deadline is not None and time.monotonic() >= deadline:
        _soft_limit.deadline = None
        raise SoftTimeLimitExceeded("soft time limit exceeded")


class TimeLimitExceeded(JobTimeoutException):
    """The task ran past its hard time limit and was stopped."""


class RetryTask(Exception):
    """Raise from a task to ask for another attempt after ``countdown`` seconds.

    The attempt counts against the task's ``max_retries``; with none left the job fails.
    Declared here, beside the policy, so that task modules reach it without importing the
    execution layer that acts on it.
    """

    def __init__(self, countdown: float = 0.0, reason: str = "retry requested by the task") -> None:
        super().__init__(reason)
        self.countdown = max(0.0, float(countdown))


class Snooze(Exception):
    """Raise (or return) from a task to run the job again after ``seconds``: no retry is spent and
    no failure recorded; the job waits as a delayed one (``PENDING``, ``scheduled_for``) and its
    view counts the snoozes (``snoozed``)."""

    def __init__(self, seconds: float, reason: str = "snoozed by the task") -> None:
        super().__init__(reason)
        self.seconds = min(max(0.0, float(seconds)), float(defaults.MAX_DELAY))


def honour_retry_after(seconds: float | None, reason: str) -> None:
    """Raise RetryTask after a peer's ``Retry-After`` (at most RETRY_AFTER_LIMIT s); without one, return.

    Call it where a transient failure is caught: when it returns, re-raise the failure and
    the task's back-off decides when to try again.
    """
    if seconds is not None:
        raise RetryTask(countdown=min(seconds, defaults.RETRY_AFTER_LIMIT), reason=reason)


def snooze_on_429(status_code: int, seconds: float | None, reason: str) -> None:
    """Raise Snooze when a peer answered 429 Too Many Requests with a readable ``Retry-After``
    (at most RETRY_AFTER_LIMIT s): the job runs again then, no retry spent. Otherwise (another
    status, no or a garbled header) return: the task's normal retry path decides."""
    if status_code == 429 and seconds is not None:
        raise Snooze(min(seconds, defaults.RETRY_AFTER_LIMIT), reason=reason)


#: What a schedule does when a tick comes while its previous run has not ended.
OVERLAP_POLICIES = ("skip", "allow")


@dataclass(frozen=True)
class Schedule:
    """When a periodic task runs: a cron expression (5 fields, or 6 with seconds first) on the wall
    clock of ``timezone`` (IANA, default UTC), or a fixed interval in seconds.

    ``overlap``: ``"skip"`` (no new run while the previous run has not ended) or ``"allow"``.
    ``catchup_window``: ticks missed while no scheduler ran are still enqueued if at most this
    many seconds old. These are the declaration in code; an operator's edits (API, CLI) win
    over it field by field (see app/core/schedules.py).
    """

    cron: str | None = None
    interval: int | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    overlap: str = "skip"
    catchup_window: int = defaults.CATCHUP_WINDOW

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a Schedule needs exactly one of cron or interval")
        if self.interval is not None and self.interval < 1:
            raise ValueError("a Schedule's interval must be at least 1 second")
        if self.cron is not None:
            object.__setattr__(self, "cron", ticks.check_cron(self.cron))
        ticks.zone(self.timezone)
        if self.overlap not in OVERLAP_POLICIES:
            raise ValueError(
                f"a Schedule's overlap is one of {', '.join(OVERLAP_POLICIES)}, not {self.overlap!r}"
            )
        if self.catchup_window < 0:
            raise ValueError("a Schedule's catchup_window is at least 0 seconds")

    def describe(self) -> dict[str, Any]:
        """The schedule as JSON for the catalogue."""
        return {
            "cron": self.cron,
            "interval": self.interval,
            "args": dict(self.args),
            "timezone": self.timezone,
            "overlap": self.overlap,
            "catchup_window": self.catchup_window,
        }


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` starts per ``period`` seconds, across all workers."""

    count: int
    period: int
    text: str

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"10/m"``, ``"5/s"`` or ``"100/h"``."""
        match = _RATE.match(text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"rate limit must look like '10/m' (per s, m or h), got {text!r}")
        return cls(count=int(match.group(1)), period=_PERIODS[match.group(2)], text=text.strip())


@dataclass(frozen=True)
class TaskSpec:
    """Everything the platform knows about one task."""

    name: str
    func: Callable[..., Any]
    input_model: type[BaseModel]
    description: str
    queue: QueueName = QueueName.DEFAULT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    time_limit: int = defaults.TIME_LIMIT
    soft_time_limit: int | None = None
    rate_limit: RateLimit | None = None
    concurrency: int | None = None
    concurrency_key: str | None = None
    #: The input field whose value is a job's ``rate_key`` (each value its own bucket of ``rate_limit``).
    rate_key: str | None = None
    #: Starts of one bucket of ``rate_limit`` let through at once before the spacing applies.
    burst: int | None = None
    unique: bool = False
    result_ttl: int | None = None
    #: Seconds a job that failed for good stays (in the failed registry); None: FAILED_JOB_TTL.
    failure_ttl: int | None = None
    #: Seconds a revoked (or expired) job stays before it is pruned; None: as a failed one.
    revoked_ttl: int | None = None
    #: Seconds after its enqueue a job that has not started never runs (ends REVOKED, ``expired``);
    #: None: no expiry unless the call gives one.
    expires: int | None = None
    # --- unique and debounce (issue 19) ---
    #: ``unique={"period": s}``: the lock holds at most this long (s); None with ``unique``: until the end.
    unique_period: int | None = None
    #: ``debounce={"delay": s, "key": ...}``: every call is debounced unless it sets its own start.
    debounce_delay: float | None = None
    debounce_key: str | None = None
    #: The input field whose value names the job's sequence (jobs with the same value run one at a
    #: time, in enqueue order); None: no sequence unless the call gives one.
    sequence_key: str | None = None
    #: The priority of its jobs in their queue, 0 (first) .. 9 (last), unless a call gives one.
    priority: int = defaults.DEFAULT_PRIORITY
    #: The fairness group of its jobs (round robin over groups in a queue), unless a call gives one.
    group: str | None = None
    schedule: Schedule | None = None
    critical: bool = False
    #: Called as ``on_success(result, job_id, kwargs)`` after the job succeeded (Celery's Task.on_success).
    on_success: Callable[..., Any] | None = None
    #: Called as ``on_failure(error, job_id, kwargs)`` after it failed for good; ``error`` is
    #: ``{"type", "message"}`` (Celery's Task.on_failure).
    on_failure: Callable[..., Any] | None = None
    #: Declared ``sensitive=True``: every job's args and result are stored encrypted.
    encrypted: bool = False
    #: The policy fields the operator changed (TASK_OVERRIDES), each with its declared value.
    overridden: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The dotted import path RQ stores as the job's function name."""
        return f"{self.func.__module__}.{self.func.__qualname__}"

    @cached_property
    def sensitive(self) -> frozenset[str]:
        """The input fields never shown: in logs, the dashboard, job descriptions, error bodies."""
        return sensitive_fields(self.input_model)

    def masked(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` with every sensitive field's value replaced by ``MASK``."""
        return {k: (MASK if k in self.sensitive else v) for k, v in kwargs.items()}

    def validate(self, args: Mapping[str, Any]) -> BaseModel:
        """Validate call arguments as JSON (raises pydantic.ValidationError).

        Arguments arrive as JSON (the API, a job in Redis) or become JSON (a Python call), so
        they are judged by JSON's rules: with a strict model a string is never a number, but
        an ISO 8601 string is a datetime and a UUID string a UUID, as the schema says.
        """
        return self.input_model.model_validate_json(to_json(dict(args)))

    def describe(self) -> dict[str, Any]:
        """The catalogue entry: what the API's /tasks lists."""
        return {
            "name": self.name,
            "description": self.description,
            "queue": self.queue.value,
            "input_schema": self.input_model.model_json_schema(),
            "retry": self.retry.describe(),
            "time_limit": self.time_limit,
            "soft_time_limit": self.soft_time_limit,
            "rate_limit": self.rate_limit.text if self.rate_limit else None,
            "concurrency": self.concurrency,
            "concurrency_key": self.concurrency_key,
            "rate_key": self.rate_key,
            "burst": self.burst,
            "unique": self.unique,
            "result_ttl": self.result_ttl,
            "failure_ttl": self.failure_ttl,
            "revoked_ttl": self.revoked_ttl,
            "expires": self.expires,
            "unique_period": self.unique_period,
            "debounce": self.policy_value("debounce"),
            "sequence_key": self.sequence_key,
            "priority": self.priority,
            "group": self.group,
            "schedule": self.schedule.describe() if self.schedule else None,
            "critical": self.critical,
            "encrypted": self.encrypted,
            "overridden": {
                name: {"declared": declared, "in_force": self.policy_value(name)}
                for name, declared in self.overridden.items()
            },
        }

    def policy_value(self, name: str) -> Any:
        """The value in force of one overridable policy field (as TASK_OVERRIDES spells it), as JSON."""
        if name in ("max_retries",):
            return self.retry.max_retries
        if name in ("backoff_base", "backoff_cap"):
            return getattr(self.retry, name)
        if name == "queue":
            return self.queue.value
        if name == "rate_limit":
            return self.rate_limit.text if self.rate_limit else None
        if name == "unique":
            return {"period": self.unique_period} if self.unique and self.unique_period else self.unique
        if name == "debounce":
            if self.debounce_delay is None:
                return None
            return {"delay": self.debounce_delay, "key": self.debounce_key}
        return getattr(self, name)

    def with_override(self, override: TaskOverride) -> TaskSpec:
        """This spec with the operator's changes applied (raises CatalogueError if they clash)."""
        changes = override.as_dict()
        retry_fields = ("max_retries", "backoff_base", "backoff_cap")
        retry_changes = {k: v for k, v in changes.items() if k in retry_fields}
        spec_changes: dict[str, Any] = {
            k: v
            for k, v in changes.items()
            if k
            in (
                "time_limit",
                "soft_time_limit",
                "result_ttl",
                "failure_ttl",
                "revoked_ttl",
                "expires",
                "burst",
            )
            or k in ("priority", "group")
        }
        if "sequence_key" in changes:
            field_name = changes["sequence_key"]
            if field_name is not None and field_name not in self.input_model.model_fields:
                raise CatalogueError(
                    f"TASK_OVERRIDES: task {self.name!r}: sequence_key {field_name!r} is not an input field"
                )
            spec_changes["sequence_key"] = field_name
        if "queue" in changes:
            spec_changes["queue"] = QueueName(changes["queue"])
        if "rate_limit" in changes:
            rate = changes["rate_limit"]
            spec_changes["rate_limit"] = RateLimit.parse(rate) if rate else None
        if retry_changes:
            spec_changes["retry"] = dataclasses.replace(self.retry, **retry_changes)
        if "unique" in changes:
            spec_changes["unique"], spec_changes["unique_period"] = unique_policy(changes["unique"])
        if "debounce" in changes:
            delay, key = debounce_policy(changes["debounce"])
            spec_changes["debounce_delay"], spec_changes["debounce_key"] = delay, key
        declared = {name: self.policy_value(name) for name in changes}
        out = dataclasses.replace(self, overridden=declared, **spec_changes)
        if out.soft_time_limit is not None and out.soft_time_limit >= out.time_limit:
            raise CatalogueError(
                f"TASK_OVERRIDES: task {self.name!r}: soft_time_limit ({out.soft_time_limit}) "
                f"must be below time_limit ({out.time_limit})"
            )
        if out.burst is not None and out.rate_limit is None:
            raise CatalogueError(
                f"TASK_OVERRIDES: task {self.name!r}: burst ({out.burst}) needs a rate_limit (none is set)"
            )
        if out.debounce_delay is not None and out.unique:
            raise CatalogueError(
                f"TASK_OVERRIDES: task {self.name!r}: unique and debounce cannot both be set "
                "(a debounced call is one job per key already; a call cannot give both either)"
            )
        return out


class TaskRegistry:
    """Task specs by name and by import path; loads the catalogue on first use."""

    def __init__(self, catalogue_module: str | None = "app.tasks") -> None:
        self._by_name: dict[str, TaskSpec] = {}
        self._by_path: dict[str, TaskSpec] = {}
        self._catalogue_module = catalogue_module
        self._loaded = catalogue_module is None
        self._lock = threading.Lock()
        self._overridden: dict[tuple[str, TaskOverride], TaskSpec] = {}

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded and self._catalogue_module:
                importlib.import_module(self._catalogue_module)
                self._loaded = True

    def load_modules(self, modules: tuple[str, ...]) -> None:
        """Import extra task modules (TASK_MODULES) so that their declarations register."""
        self._ensure_loaded()
        for module in modules:
            importlib.import_module(module)

    def register(self, spec: TaskSpec) -> TaskSpec:
        """Add a task; a second task with the same name is a programming error."""
        existing = self._by_name.get(spec.name)
        if existing is not None and existing.path != spec.path:
            raise CatalogueError(f"task {spec.name!r} is declared twice ({existing.path} and {spec.path})")
        self._by_name[spec.name] = spec
        self._by_path[spec.path] = spec
        return spec

    def get(self, name: str) -> TaskSpec | None:
        """The task called ``name`` with the operator's overrides in force, or None."""
        self._ensure_loaded()
        return self._in_force(self._by_name.get(name))

    def by_path(self, path: str) -> TaskSpec | None:
        """The task whose function lives at ``path`` (overrides in force), or None."""
        self._ensure_loaded()
        return self._in_force(self._by_path.get(path))

    def declared(self, name: str) -> TaskSpec | None:
        """The task called ``name`` as its declaration says, without overrides."""
        self._ensure_loaded()
        return self._by_name.get(name)

    def all_declared(self) -> list[TaskSpec]:
        """Every task as its declaration says (no overrides), by name."""
        self._ensure_loaded()
        return sorted(self._by_name.values(), key=lambda s: s.name)

    def __iter__(self) -> Iterator[TaskSpec]:
        self._ensure_loaded()
        specs = sorted(self._by_name.values(), key=lambda s: s.name)
        return iter([self._in_force(s) or s for s in specs])

    def _in_force(self, spec: TaskSpec | None) -> TaskSpec | None:
        """``spec`` with the override of the settings in force (see :func:`overrides_in_force`)."""
        if spec is None:
            return None
        for override in overrides_in_force():
            if override.task == spec.name:
                key = (spec.path, override)
                found = self._overridden.get(key)
                if found is None:
                    found = self._overridden[key] = spec.with_override(override)
                return found
        return spec

    def check_overrides(self, overrides: tuple[TaskOverride, ...]) -> None:
        """Raise CatalogueError when an override names no task or clashes with its declaration."""
        self._ensure_loaded()
        for override in overrides:
            spec = self._by_name.get(override.task)
            if spec is None:
                known = ", ".join(sorted(self._by_name))
                raise CatalogueError(f"TASK_OVERRIDES: no task named {override.task!r} (tasks: {known})")
            spec.with_override(override)

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._by_name)

    def periodic(self) -> list[TaskSpec]:
        """The tasks that have a schedule."""
        return [spec for spec in self if spec.schedule is not None]


REGISTRY = TaskRegistry()


def overrides_in_force() -> tuple[TaskOverride, ...]:
    """The operator's task overrides: the current app's settings (a request, a worker, the
    scheduler, a CLI command), else TASK_OVERRIDES of the environment (code calling tasks
    without an app, which also takes REDIS_URL from there): see :func:`runtime.settings`."""
    return runtime.settings().task_overrides


def task(
    name: str | None = None,
    *,
    input: type[BaseModel] = NoInput,
    queue: QueueName = QueueName.DEFAULT,
    retry: RetryPolicy | None = None,
    time_limit: int = defaults.TIME_LIMIT,
    soft_time_limit: int | None = None,
    rate_limit: str | None = None,
    concurrency: int | None = None,
    concurrency_key: str | None = None,
    rate_key: str | None = None,
    burst: int | None = None,
    unique: bool | Mapping[str, Any] = False,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
    revoked_ttl: int | None = None,
    expires: int | None = None,
    debounce: Mapping[str, Any] | None = None,
    sequence_key: str | None = None,
    priority: int = defaults.DEFAULT_PRIORITY,
    group: str | None = None,
    schedule: Schedule | None = None,
    critical: bool = False,
    on_success: Callable[..., Any] | None = None,
    on_failure: Callable[..., Any] | None = None,
    sensitive: bool = False,
    registry: TaskRegistry | None = None,
) -> Callable[[F], F]:
    """Declare a task: the function is returned unchanged and its spec is registered.

    ``rate_limit="10/m"`` spaces starts across all workers; ``concurrency=N`` caps how many
    run (or wait in a queue) at once, per task or, with ``concurrency_key="user_id"``, per
    value of that argument; ``unique=True`` makes a second enqueue with the same
    arguments, while the first waits or runs, return the first job; ``critical=True``
    alerts on final failure; ``on_success`` / ``on_failure`` are called after those outcomes,
    in the process that saw them (a handler that raises is logged, never fails the job).
    Retention per state: ``result_ttl`` (succeeded), ``failure_ttl`` (failed for good) and
    ``revoked_ttl`` (revoked or expired), in seconds; the outcome counters outlive them.
    ``sensitive=True`` stores every job's args and result encrypted (ENCRYPTION_KEYS required).
    ``expires`` (seconds): a job not started that long after its enqueue never runs (a call's
    own ``expires`` wins). ``unique={"period": 3600}``: as ``unique=True``, the lock held at most
    that long; ``debounce={"delay": 5, "key": "..."}``: every call debounced (a call's own wins).
    ``rate_key="account_id"`` applies ``rate_limit`` per value of that argument (each its own
    bucket; a call's ``rate_key`` option wins); ``burst=N`` lets N starts of a bucket through at
    once before the spacing applies. ``sequence_key="user_id"``: jobs with the same value of that argument
    run one at a time, in enqueue order (a call's own ``sequence`` wins).
    ``priority`` (0 first .. 9 last, default 5) and ``group`` (a fairness key: round robin over
    groups) place its jobs in their queue (a call's own values win).
    """

    def decorate(func: F) -> F:
        task_name = name or func.__name__
        if not _TASK_NAME.match(task_name):
            raise ValueError(f"task name {task_name!r} must be lower-case letters, digits and underscores")
        if time_limit < 1:
            raise ValueError(f"task {task_name!r}: time_limit must be at least 1 second")
        if soft_time_limit is not None and not 0 < soft_time_limit < time_limit:
            raise ValueError(f"task {task_name!r}: soft_time_limit must be below time_limit")
        for label, ttl in (("failure_ttl", failure_ttl), ("revoked_ttl", revoked_ttl)):
            if ttl is not None and ttl < 1:
                raise ValueError(f"task {task_name!r}: {label} must be at least 1 second")
        if expires is not None and not 1 <= expires <= defaults.MAX_DELAY:
            raise ValueError(f"task {task_name!r}: expires must be from 1 s to 366 days")
        if sequence_key is not None and sequence_key not in input.model_fields:
            raise ValueError(f"task {task_name!r}: sequence_key must name an input field")
        if not defaults.MIN_PRIORITY <= priority <= defaults.MAX_PRIORITY or isinstance(priority, bool):
            raise ValueError(f"task {task_name!r}: priority must be from 0 to 9")
        if group is not None and not re.match(defaults.GROUP_PATTERN, group):
            raise ValueError(f"task {task_name!r}: group must be 1-64 letters, digits, '_', '.', '@' or '-'")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"task {task_name!r}: concurrency must be at least 1")
        if concurrency_key is not None and (concurrency is None or concurrency_key not in input.model_fields):
            raise ValueError(
                f"task {task_name!r}: concurrency_key must name an input field, with concurrency"
            )
        try:
            is_unique, unique_period = unique_policy(unique)
            debounce_delay, debounce_key = debounce_policy(debounce)
        except ValueError as exc:
            raise ValueError(f"task {task_name!r}: {exc}") from None
        if rate_key is not None and (rate_limit is None or rate_key not in input.model_fields):
            raise ValueError(f"task {task_name!r}: rate_key must name an input field, with rate_limit")
        if burst is not None and (rate_limit is None or not 1 <= burst <= defaults.MAX_BURST):
            raise ValueError(
                f"task {task_name!r}: burst must be from 1 to {defaults.MAX_BURST}, with rate_limit"
            )
        doc = (func.__doc__ or "").strip().splitlines()
        spec = TaskSpec(
            name=task_name,
            func=func,
            input_model=input,
            description=doc[0] if doc else task_name,
            queue=QueueName(queue),
            retry=retry or RetryPolicy(),
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            rate_limit=RateLimit.parse(rate_limit) if rate_limit else None,
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            rate_key=rate_key,
            burst=burst,
            unique=is_unique,
            unique_period=unique_period,
            debounce_delay=debounce_delay,
            debounce_key=debounce_key,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
            revoked_ttl=revoked_ttl,
            expires=expires,
            sequence_key=sequence_key,
            priority=priority,
            group=group,
            schedule=schedule,
            critical=critical,
            on_success=on_success,
            on_failure=on_failure,
            encrypted=sensitive,
        )
        (registry if registry is not None else REGISTRY).register(spec)
        return func

    return decorate


# --- unique and debounce (issue 19) -----------------------------------------------------------


def unique_policy(value: Any) -> tuple[bool, int | None]:
    """A task's ``unique`` (True, False or ``{"period": s}``) as (unique, period); ValueError if bad."""
    value = dict(value) if isinstance(value, tuple) else value  # TASK_OVERRIDES' form: (key, value) pairs
    if isinstance(value, bool):
        return value, None
    if isinstance(value, Mapping) and set(value) == {"period"}:
        period = value["period"]
        if isinstance(period, int) and not isinstance(period, bool) and 1 <= period <= defaults.MAX_DELAY:
            return True, period
    raise ValueError('unique must be true, false or {"period": whole seconds from 1 to 366 days}')


def debounce_policy(value: Any) -> tuple[float | None, str | None]:
    """A task's ``debounce`` (None or ``{"delay": s, "key": "..."}``) as (delay, key); ValueError if bad."""
    if value is None:
        return None, None
    value = dict(value) if isinstance(value, tuple) else value  # TASK_OVERRIDES' form: (key, value) pairs
    if isinstance(value, Mapping) and "delay" in value and set(value) <= {"delay", "key"}:
        delay, key = value["delay"], value.get("key")
        number = isinstance(delay, int | float) and not isinstance(delay, bool)
        if number and 1 <= delay <= defaults.MAX_DELAY and (key is None or (isinstance(key, str) and key)):
            return float(delay), key
    raise ValueError('debounce must be null or {"delay": seconds from 1 to 366 days, "key": "..."}')
