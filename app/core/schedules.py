"""Schedules as data: periodic jobs kept in Redis, which operators create, edit, pause and run now.

One record per schedule, in the hash ``tasklane:schedules`` (name -> JSON):

- the catalogue's declared schedules (``@task(schedule=Schedule(...))``) are seeded from the
  code by the scheduler at start (:func:`seed`), named after their task. An operator's edit
  (API, CLI) marks the fields it changed as the operator's (``operator_fields``): a later
  change of the declaration in code is applied to every other field, never to those, so
  edits survive restarts and deploys. A catalogue schedule is paused, never deleted;
- created schedules (``origin: "api"``) run any catalogue task with arguments its input
  model accepts.

Per schedule, ``tasklane:schedule:<name>:state`` holds ``through`` (every tick up to this
UNIX second has been dealt with), ``last_run``, ``last_job_id``; ``...:history`` the last
:data:`HISTORY_LENGTH` outcomes, newest first.

Exactly once per tick: a scheduler deals with tick T only after moving ``through`` from
below T to T in one atomic step (:data:`_CLAIM`), so of two schedulers (or a slow pass and
the next) one enqueues T, records it skipped or missed; the other sees it taken. The job of
tick T is ``periodic-<name>-<T>``, created with RQ's unique enqueue, as a second guard.

Time is read in one place, :func:`_now`; everything else takes ``now`` explicitly.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.client import Pipeline
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import JobStatus

from app.catalogue.registry import MASK, OVERLAP_POLICIES, REGISTRY, TaskRegistry, TaskSpec
from app.core import sealing
from app.core.dispatch import EnqueueOptions, JobExistsError, digest, enqueue
from app.core.queues import JsonJob, fetch_job
from app.core.states import state_of
from app.foundation import clock, defaults, keys
from app.foundation.lua import LuaScript
from app.foundation.meta import Meta
from app.foundation.ticks import Cadence
from app.foundation.timeutil import iso

log = logging.getLogger("tasklane.schedules")

#: The prefix of a schedule's entry in rq-scheduler and of its tick jobs' ids.
PERIODIC_PREFIX = "periodic-"
#: Outcomes kept per schedule.
HISTORY_LENGTH = 50
#: Missed ticks counted one by one at most (a longer outage is reported as "at least").
MISSED_COUNT_LIMIT = 10_000
#: Ticks of one schedule one pass enqueues at most (the catch-up window bounds them anyway).
PASS_LIMIT = 10_000
#: The fields of a record that a declaration in code sets and an operator may change.
DECLARED_FIELDS = ("args", "cron", "interval", "timezone", "overlap", "catchup_window")
#: The fields ``PATCH`` takes.
EDITABLE_FIELDS = (*DECLARED_FIELDS, "paused")
#: Error types whose message a task's own validator wrote (and may have put the value in).
_FREE_TEXT_ERRORS = frozenset({"value_error", "assertion_error"})
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: RQ statuses of a job that has not ended (a retry waiting in the scheduled registry included).
_NOT_ENDED = {s.value for s in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)}

# Move the state's ``through`` (KEYS[1]) up to ARGV[1] if it is below; 1 if moved, else 0.
_CLAIM = LuaScript(
    """
local through = tonumber(redis.call('HGET', KEYS[1], 'through') or '-1')
if through < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'through', ARGV[1])
  return 1
end
return 0
"""
)


def _now() -> int:
    """The current UNIX second: the one place this module reads the clock (app.foundation.clock)."""
    return int(clock.time())


# --- keys ------------------------------------------------------------------------------------


def records_key() -> str:
    return f"{keys.PREFIX}:schedules"


def version_key() -> str:
    """Bumped on every change of a record: the scheduler re-reads the records when it moves."""
    return f"{keys.PREFIX}:schedules:version"


def state_key(name: str) -> str:
    return f"{keys.PREFIX}:schedule:{name}:state"


def history_key(name: str) -> str:
    return f"{keys.PREFIX}:schedule:{name}:history"


def entry_id(name: str) -> str:
    """The schedule's entry in rq-scheduler (and the prefix of its tick jobs)."""
    return f"{PERIODIC_PREFIX}{name}"


# --- errors ----------------------------------------------------------------------------------


class ScheduleNotFound(LookupError):
    """No schedule of that name."""


class ScheduleExists(Exception):
    """A schedule of that name exists already (or the name is a catalogue task's)."""


class InvalidSchedule(ValueError):
    """A schedule's fields are wrong; ``errors`` lists ``{"field", "message", "type"}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _error(field: str, message: str, kind: str = "value_error") -> dict[str, Any]:
    return {"field": field, "message": message, "type": kind}


# --- records ---------------------------------------------------------------------------------


@dataclass
class Record:
    """One schedule as stored."""

    name: str
    task: str
    args: dict[str, Any]
    cron: str | None
    interval: int | None
    timezone: str
    overlap: str
    catchup_window: int
    paused: bool
    origin: str  # "catalogue" or "api"
    anchor: int
    created_at: int
    updated_at: int
    operator_fields: list[str]
    declared: dict[str, Any] | None = None

    @classmethod
    def loads(cls, raw: bytes | str) -> Record:
        fields = json.loads(raw)
        owner = _owner(fields["name"])
        fields["args"] = _opened(fields["args"], owner)
        if isinstance(fields.get("declared"), dict):
            fields["declared"] = {**fields["declared"], "args": _opened(fields["declared"]["args"], owner)}
        return cls(**fields)

    def dumps(self) -> str:
        """The record as stored; the args (and the declared ones) sealed when its task's jobs are."""
        fields = dict(self.__dict__)
        ring = _ring_for(self.task)
        if ring is not None:
            fields["args"] = _sealed(ring, self.args, _owner(self.name))
            if isinstance(self.declared, dict):
                fields["declared"] = {
                    **self.declared,
                    "args": _sealed(ring, self.declared["args"], _owner(self.name)),
                }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @property
    def sealed(self) -> bool:
        """True when the stored args are encrypted (their task's jobs are)."""
        return _ring_for(self.task) is not None or sealing.is_sealed_kwargs(self.args)

    @property
    def cadence(self) -> Cadence:
        return Cadence(cron=self.cron, interval=self.interval, timezone=self.timezone, anchor=self.anchor)

    def definition(self) -> dict[str, Any]:
        """What the tick jobs depend on: a change of it replaces the rq-scheduler entry."""
        return {
            "task": self.task,
            # Stored in the rq-scheduler entry's meta: the args of an encrypted task only as a digest.
            "args": {"digest": digest(self.args)} if self.sealed else self.args,
            "cron": self.cron,
            "interval": self.interval,
            "timezone": self.timezone,
            "anchor": self.anchor,
        }


def _owner(name: str) -> str:
    """The associated data of a schedule's sealed args: they open for this schedule only."""
    return f"schedule:{name}"


def _ring_for(task: str) -> Any:
    """The ring that seals the stored args of a schedule of ``task``, or None (stored in clear)."""
    spec = REGISTRY.get(task)
    if spec is None:
        return None
    try:
        return sealing.ring_for(spec, None)
    except sealing.EncryptionUnavailable:
        return None


def _sealed(ring: Any, args: Any, owner: str) -> Any:
    if not isinstance(args, dict) or sealing.is_sealed_kwargs(args):
        return args
    return {sealing.SEALED: ring.seal(args, owner)}


def _opened(args: Any, owner: str) -> Any:
    """Stored args opened; kept sealed when this process cannot open them (its ticks then fail
    validation and are recorded as invalid, never run with wrong arguments)."""
    if not isinstance(args, dict) or not sealing.is_sealed_kwargs(args):
        return args
    ring = sealing.keyring()
    if ring is None:
        return args
    try:
        opened = ring.open(args[sealing.SEALED], owner)
    except sealing.DecryptError:
        return args
    return opened if isinstance(opened, dict) else args


def _catalogue_record(name: str, fields: dict[str, Any], now: int) -> Record:
    """A catalogue task's schedule as its declaration says, new at ``now``, no field the operator's."""
    return Record(
        name=name,
        task=name,
        paused=False,
        origin="catalogue",
        anchor=now,
        created_at=now,
        updated_at=now,
        operator_fields=[],
        declared=fields,
        **fields,
    )


def _declared(spec: TaskSpec) -> dict[str, Any]:
    schedule = spec.schedule
    assert schedule is not None
    return {
        "args": dict(schedule.args),
        "cron": schedule.cron,
        "interval": schedule.interval,
        "timezone": schedule.timezone,
        "overlap": schedule.overlap,
        "catchup_window": schedule.catchup_window,
    }


def load(redis: Redis, name: str, registry: TaskRegistry = REGISTRY) -> Record:
    """The stored schedule ``name``; a catalogue schedule no scheduler has seeded yet is seeded now."""
    raw = redis.hget(records_key(), name)
    if raw is None and any(spec.name == name for spec in registry.periodic()):
        seed(redis, registry)
        raw = redis.hget(records_key(), name)
    if raw is None:
        raise ScheduleNotFound(f"no schedule named {name!r}; GET /api/v1/schedules lists them")
    return Record.loads(raw)


def load_all(redis: Redis) -> dict[str, Record]:
    raw = redis.hgetall(records_key())
    return {_text(k): Record.loads(v) for k, v in raw.items()}


def _write(pipe: Pipeline, record: Record) -> None:
    pipe.hset(records_key(), record.name, record.dumps())
    pipe.incr(version_key())


def validate(
    fields: Mapping[str, Any], registry: TaskRegistry, task: str, *, partial: bool = False
) -> dict[str, Any]:
    """The fields of a schedule for ``task``, checked; InvalidSchedule naming each bad one.

    ``partial``: only the fields given (a PATCH) are checked, besides the cadence as a whole.
    """
    errors: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    spec = registry.get(task)
    if "args" in fields or not partial:
        args = fields.get("args", {})
        if not isinstance(args, dict):
            errors.append(_error("args", "args is an object of the task's arguments", "dict_type"))
        elif spec is not None:
            try:
                spec.validate(args)
                out["args"] = args
            except ValidationError as exc:
                for err in exc.errors(include_url=False, include_input=False):
                    path = ".".join(str(p) for p in ("args", *err["loc"]))
                    message = err["msg"]
                    if err["loc"] and err["loc"][0] in spec.sensitive and err["type"] in _FREE_TEXT_ERRORS:
                        message = "invalid value (not shown: the field is sensitive)"
                    errors.append(_error(path, message, err["type"]))
    if "timezone" in fields:
        value = fields["timezone"]
        try:
            Cadence(interval=1, timezone=value)
            out["timezone"] = value
        except ValueError as exc:
            errors.append(_error("timezone", str(exc)))
    if "cron" in fields and fields["cron"] is not None:
        try:
            out["cron"] = Cadence(cron=fields["cron"]).cron
        except ValueError as exc:
            errors.append(_error("cron", str(exc)))
    if "interval" in fields and fields["interval"] is not None:
        value = fields["interval"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(_error("interval", "interval is a whole number of seconds, at least 1"))
        else:
            out["interval"] = value
    if "cron" in fields and "interval" in fields and fields["cron"] is not None and fields["interval"]:
        errors.append(_error("cron", "give cron or interval, not both"))
    elif not partial and fields.get("cron") is None and fields.get("interval") is None:
        errors.append(_error("cron", "give cron (or interval)", "missing"))
    if "overlap" in fields:
        if fields["overlap"] not in OVERLAP_POLICIES:
            errors.append(_error("overlap", f"overlap is one of {', '.join(OVERLAP_POLICIES)}"))
        else:
            out["overlap"] = fields["overlap"]
    if "catchup_window" in fields:
        value = fields["catchup_window"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors.append(_error("catchup_window", "catchup_window is a whole number of seconds, at least 0"))
        else:
            out["catchup_window"] = value
    if "paused" in fields:
        if not isinstance(fields["paused"], bool):
            errors.append(_error("paused", "paused is true or false", "bool_type"))
        else:
            out["paused"] = fields["paused"]
    if errors:
        raise InvalidSchedule(errors)
    return out


def create(redis: Redis, fields: Mapping[str, Any], registry: TaskRegistry = REGISTRY) -> Record:
    """Create a schedule from the API's fields (``name``, ``task``, ``args``, ``cron`` or
    ``interval``, ``timezone``, ``overlap``, ``catchup_window``, ``paused``)."""
    known = {"name", "task", *EDITABLE_FIELDS}
    errors = [_error(k, "not a field of a schedule", "extra_forbidden") for k in fields if k not in known]
    name, task = fields.get("name"), fields.get("task")
    if not isinstance(name, str) or not NAME.match(name):
        errors.append(
            _error("name", "name is 1 to 100 letters, digits, '_', '.', '-', starting alphanumeric")
        )
    task_spec = registry.get(task) if isinstance(task, str) else None
    if task_spec is None:
        errors.append(_error("task", f"no task named {task!r}; GET /api/v1/tasks lists them"))
    else:
        try:
            sealing.ring_for(task_spec, None)
        except sealing.EncryptionUnavailable as exc:
            errors.append(_error("task", str(exc), "encryption_unavailable"))
    try:
        checked = validate(fields, registry, str(task))
    except InvalidSchedule as exc:
        errors += exc.errors
    if errors:
        raise InvalidSchedule(errors)
    assert isinstance(name, str) and isinstance(task, str)
    now = _now()
    record = Record(
        name=name,
        task=task,
        args=checked["args"],
        cron=checked.get("cron"),
        interval=checked.get("interval"),
        timezone=checked.get("timezone", "UTC"),
        overlap=checked.get("overlap", "skip"),
        catchup_window=checked.get("catchup_window", defaults.CATCHUP_WINDOW),
        paused=checked.get("paused", False),
        origin="api",
        anchor=now,
        created_at=now,
        updated_at=now,
        operator_fields=[],
    )
    taken = any(spec.name == name for spec in registry.periodic())
    if taken or not redis.hsetnx(records_key(), name, record.dumps()):
        raise ScheduleExists(f"a schedule named {name!r} exists already")
    with redis.pipeline() as pipe:
        pipe.hset(state_key(name), mapping={"through": now - 1})
        pipe.incr(version_key())
        pipe.execute()
    return record


def update(redis: Redis, name: str, fields: Mapping[str, Any], registry: TaskRegistry = REGISTRY) -> Record:
    """Apply an operator's edit (PATCH); the fields it changes become the operator's."""
    unknown = [k for k in fields if k not in EDITABLE_FIELDS]
    if unknown:
        raise InvalidSchedule([_error(k, "not a field PATCH changes", "extra_forbidden") for k in unknown])
    load(redis, name, registry)  # 404 before anything else; seeds a catalogue schedule if need be
    result: list[Record] = []

    def apply(pipe: Pipeline) -> None:
        raw = pipe.hget(records_key(), name)
        if raw is None:  # pragma: no cover - load() above found it a moment ago
            raise ScheduleNotFound(f"no schedule named {name!r}; GET /api/v1/schedules lists them")
        record = Record.loads(raw)
        checked = validate(fields, registry, record.task, partial=True)
        now = _now()
        changed = set()
        if "cron" in fields or "interval" in fields:
            cron = checked.get("cron") if "cron" in fields else None
            interval = checked.get("interval") if "interval" in fields else None
            if cron is None and interval is None:
                raise InvalidSchedule([_error("cron", "give cron or interval", "missing")])
            if interval is not None and interval != record.interval:
                record.anchor = now  # a new interval counts from now
            record.cron, record.interval = cron, interval
            changed |= {"cron", "interval"}
        for key in ("args", "timezone", "overlap", "catchup_window"):
            if key in checked:
                setattr(record, key, checked[key])
                changed.add(key)
        resumed = "paused" in checked and record.paused and not checked["paused"]
        if "paused" in checked:
            record.paused = checked["paused"]
            changed.add("paused")
        if record.origin == "catalogue":
            record.operator_fields = sorted(set(record.operator_fields) | changed)
        record.updated_at = now
        pipe.multi()
        _write(pipe, record)
        if resumed:  # the ticks of the pause are neither run nor missed
            pipe.hset(state_key(name), "through", now)
        result.append(record)

    redis.transaction(apply, records_key())
    return result[-1]


def delete(redis: Redis, name: str, registry: TaskRegistry = REGISTRY) -> bool:
    """Remove a created schedule (True), or pause a catalogue one (False)."""
    record = load(redis, name, registry)
    if record.origin == "catalogue":
        update(redis, name, {"paused": True}, registry)
        return False
    with redis.pipeline() as pipe:
        pipe.hdel(records_key(), name)
        pipe.delete(state_key(name), history_key(name))
        pipe.incr(version_key())
        pipe.execute()
    return True


def seed(redis: Redis, registry: TaskRegistry = REGISTRY) -> list[str]:
    """Make the stored catalogue schedules match the code's declarations, the operator's fields
    excepted; add new ones, remove those whose task lost its schedule. Returns their names."""
    declared = {spec.name: _declared(spec) for spec in registry.periodic()}

    def apply(pipe: Pipeline) -> None:
        now = _now()
        stored = {_text(k): Record.loads(v) for k, v in pipe.hgetall(records_key()).items()}
        pipe.multi()
        for name, record in stored.items():
            if record.origin == "catalogue" and name not in declared:
                log.info("removing schedule %s (no longer declared in the catalogue)", name)
                pipe.hdel(records_key(), name)
                pipe.delete(state_key(name))
                pipe.incr(version_key())
        for name, fields in declared.items():
            found = stored.get(name)
            if found is None or found.origin != "catalogue":
                if found is not None:
                    log.warning(
                        "created schedule %s is replaced by the catalogue's schedule of that name", name
                    )
                record = _catalogue_record(name, fields, now)
                pipe.hsetnx(state_key(name), "through", now - 1)
                _write(pipe, record)
                continue
            record = found
            before = record.dumps()
            own = set(record.operator_fields)
            for key, value in fields.items():
                if key not in own:
                    setattr(record, key, value)
            if {"cron", "interval"} & own:
                pass  # the operator's cadence stands as a whole
            elif record.interval != (record.declared or {}).get("interval") and record.interval is not None:
                record.anchor = now
            record.declared = fields
            if record.dumps() != before:
                record.updated_at = now
                log.info("schedule %s follows its changed declaration", name)
                _write(pipe, record)

    redis.transaction(apply, records_key())
    return sorted(declared)


# --- running ---------------------------------------------------------------------------------


def _state(redis: Redis, name: str) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in redis.hgetall(state_key(name)).items()}


def next_run(record: Record, through: int, now: int) -> int | None:
    """The next tick a scheduler will enqueue (None while paused)."""
    if record.paused:
        return None
    return record.cadence.next_after(max(through, now - 1))


def next_due(record: Record, through: int) -> int | None:
    """When the scheduler must next look at the schedule: its first tick not yet dealt with."""
    return None if record.paused else record.cadence.next_after(through)


def _record(pipe: Redis | Pipeline, name: str, entry: dict[str, Any]) -> None:
    pipe.lpush(history_key(name), json.dumps(entry, separators=(",", ":")))
    pipe.ltrim(history_key(name), 0, HISTORY_LENGTH - 1)


def _running(redis: Redis, job_id: str | None) -> bool:
    if not job_id:
        return False
    status = redis.hget(JsonJob.key_for(job_id), "status")
    return status is not None and _text(status) in _NOT_ENDED


@dataclass
class Ttls:
    result_ttl: int = defaults.RESULT_TTL
    failed_job_ttl: int = defaults.FAILED_JOB_TTL


def _enqueue(redis: Redis, record: Record, spec: TaskSpec, job_id: str, tick: int, ttls: Ttls) -> JsonJob:
    return enqueue(  # type: ignore[return-value]
        spec,
        spec.validate(record.args),
        redis,
        EnqueueOptions(job_id=job_id),
        default_result_ttl=ttls.result_ttl,
        failure_ttl=ttls.failed_job_ttl,
        meta={Meta.PERIODIC: entry_id(record.name), Meta.TICK: tick},
    )


def fire_due(
    redis: Redis,
    name: str,
    now: int | None = None,
    registry: TaskRegistry = REGISTRY,
    ttls: Ttls | None = None,
) -> tuple[list[str], int | None]:
    """Deal with every tick of schedule ``name`` due by ``now``: enqueue it, or record it skipped
    (overlap ``skip`` while the previous run has not ended) or missed (older than the catch-up
    window). Returns the ids of the jobs enqueued and when the schedule is next due."""
    now = _now() if now is None else now
    ttls = ttls or Ttls()
    try:
        record = load(redis, name, registry)
    except ScheduleNotFound:
        return [], None
    through = int(_state(redis, name).get("through", now - 1))
    if record.paused:
        return [], None
    spec = registry.get(record.task)
    if spec is None:
        log.warning("schedule %s names no registered task %r; not run", name, record.task)
        return [], None
    cadence = record.cadence
    horizon = now - record.catchup_window  # ticks before this second are missed
    enqueued: list[str] = []
    first_missed = cadence.next_after(through)
    if first_missed is not None and first_missed < horizon:
        count = cadence.count(through, horizon - 1, MISSED_COUNT_LIMIT)
        if _CLAIM(redis, keys=[state_key(name)], args=[horizon - 1]):
            log.warning("schedule %s: %d tick(s) missed beyond its catch-up window", name, count)
            _record(
                redis,
                name,
                {
                    "tick": first_missed,
                    "until": horizon - 1,
                    "kind": "missed",
                    "count": count,
                    "at_least": count >= MISSED_COUNT_LIMIT,
                },
            )
        through = max(through, horizon - 1)
    for tick in cadence.ticks(through, now, PASS_LIMIT):
        job_id = f"{entry_id(name)}-{tick}"
        # Enqueue first, then mark the tick dealt with: a scheduler killed in between leaves a job
        # that the next pass finds (and marks), never a tick lost.
        if redis.exists(JsonJob.key_for(job_id)):
            _CLAIM(redis, keys=[state_key(name)], args=[tick])
            continue  # enqueued by another scheduler, or by this one before it died
        state = _state(redis, name)
        if int(state.get("through", -1)) >= tick:
            continue  # another scheduler dealt with it meanwhile
        if record.overlap == "skip" and _running(redis, state.get("last_job_id")):
            if _CLAIM(redis, keys=[state_key(name)], args=[tick]):
                log.info(
                    "schedule %s: tick %s skipped, run %s has not ended", name, tick, state["last_job_id"]
                )
                _record(
                    redis,
                    name,
                    {"tick": tick, "kind": "skipped", "job_id": None, "running": state.get("last_job_id")},
                )
            continue
        try:
            job = _enqueue(redis, record, spec, job_id, tick, ttls)
        except JobExistsError:
            log.debug("tick %s of %s was enqueued by another scheduler", tick, name)
            continue
        except (ValidationError, sealing.EncryptionUnavailable) as exc:
            if _CLAIM(redis, keys=[state_key(name)], args=[tick]):
                log.warning(
                    "schedule %s: its args no longer fit task %s (%s); tick %s not run",
                    name,
                    spec.name,
                    f"{exc.error_count()} errors" if isinstance(exc, ValidationError) else exc,
                    tick,
                )
                _record(redis, name, {"tick": tick, "kind": "invalid", "job_id": None})
            continue
        _CLAIM(redis, keys=[state_key(name)], args=[tick])
        with redis.pipeline() as pipe:
            pipe.hset(state_key(name), mapping={"last_run": tick, "last_job_id": job.id})
            _record(pipe, name, {"tick": tick, "kind": "scheduled", "job_id": job.id})
            pipe.execute()
        log.info("enqueued %s for tick %s", job.id, tick, extra={"job_id": job.id, "task": spec.name})
        enqueued.append(job.id)
    through = max(through, int(_state(redis, name).get("through", through)))
    return enqueued, next_due(record, through)


def run_now(redis: Redis, name: str, registry: TaskRegistry = REGISTRY, ttls: Ttls | None = None) -> str:
    """Enqueue schedule ``name`` now, whatever its cadence, pause or overlap; returns the job id."""
    record = load(redis, name, registry)
    spec = registry.get(record.task)
    if spec is None:
        raise InvalidSchedule([_error("task", f"task {record.task!r} is not in the catalogue")])
    now = _now()
    job_id = f"{entry_id(name)}-run-{uuid.uuid4().hex}"
    try:
        job = _enqueue(redis, record, spec, job_id, now, ttls or Ttls())
    except ValidationError as exc:
        message = f"the stored args no longer fit the task ({exc.error_count()} errors)"
        raise InvalidSchedule([_error("args", message)]) from None
    except sealing.EncryptionUnavailable as exc:
        raise InvalidSchedule([_error("args", str(exc), "encryption_unavailable")]) from None
    with redis.pipeline() as pipe:
        pipe.hset(state_key(name), mapping={"last_run": now, "last_job_id": job.id})
        _record(pipe, name, {"tick": now, "kind": "manual", "job_id": job.id})
        pipe.execute()
    return job.id


# --- views -----------------------------------------------------------------------------------


def _all_masked(args: Any) -> Any:
    if not isinstance(args, dict) or sealing.is_sealed_kwargs(args):
        return MASK
    return dict.fromkeys(args, MASK)


def view(
    record: Record, state: Mapping[str, str], now: int, registry: TaskRegistry = REGISTRY
) -> dict[str, Any]:
    """A schedule as ``GET /api/v1/schedules`` shows it."""
    through = int(state.get("through", now - 1))
    nxt = next_run(record, through, now)
    last_run = state.get("last_run")
    spec = registry.get(record.task)
    declared = record.declared
    if spec is not None and spec.sensitive and declared is not None:
        declared = {**declared, "args": spec.masked(declared.get("args") or {})}
    if record.sealed:  # every argument of an encrypted task is a secret
        declared = {**declared, "args": _all_masked(declared.get("args"))} if declared is not None else None
        shown = _all_masked(record.args)
    else:
        shown = spec.masked(record.args) if spec else record.args
    return {
        "name": record.name,
        "id": entry_id(record.name),
        "task": record.task,
        "queue": spec.queue.value if spec else None,
        "args": shown,
        "cron": record.cron,
        "interval": record.interval,
        "timezone": record.timezone,
        "overlap": record.overlap,
        "catchup_window": record.catchup_window,
        "paused": record.paused,
        "next_run": iso_of(nxt),
        "last_run": iso_of(int(last_run)) if last_run else None,
        "last_job_id": state.get("last_job_id"),
        "origin": record.origin,
        "operator_fields": record.operator_fields,
        "declared": declared,
    }


def iso_of(second: int | None) -> str | None:
    """A UNIX second as ISO 8601 UTC (``Z``), or None."""
    return iso(datetime.fromtimestamp(second, UTC)) if second is not None else None


def _declared_view(spec: TaskSpec, now: int) -> dict[str, Any]:
    """A catalogue schedule no scheduler has seeded yet, as its declaration says."""
    record = _catalogue_record(spec.name, _declared(spec), now)
    out = view(record, {}, now)
    out["next_run"] = None  # not registered: no scheduler has started since it was declared
    return out


def list_views(
    redis: Redis, registry: TaskRegistry = REGISTRY, now: int | None = None
) -> list[dict[str, Any]]:
    """Every schedule: the stored ones, and the catalogue's not yet seeded."""
    now = _now() if now is None else now
    records = load_all(redis)
    with redis.pipeline() as pipe:
        for name in records:
            pipe.hgetall(state_key(name))
        states = pipe.execute()
    out = [
        view(record, {_text(k): _text(v) for k, v in state.items()}, now, registry)
        for record, state in zip(records.values(), states, strict=True)
    ]
    out += [_declared_view(spec, now) for spec in registry.periodic() if spec.name not in records]
    return sorted(out, key=lambda v: str(v["name"]))


def get_view(
    redis: Redis, name: str, registry: TaskRegistry = REGISTRY, now: int | None = None
) -> dict[str, Any]:
    """One schedule as the list shows it."""
    record = load(redis, name, registry)
    return view(record, _state(redis, name), _now() if now is None else now, registry)


def history(
    redis: Redis, name: str, limit: int = HISTORY_LENGTH, registry: TaskRegistry = REGISTRY
) -> list[dict[str, Any]]:
    """The last runs of schedule ``name``, newest first: tick, kind, job id, the job's state and
    its run time in seconds (while the job is kept: ``RESULT_TTL``)."""
    load(redis, name, registry)
    out = []
    for raw in redis.lrange(history_key(name), 0, limit - 1):
        entry = json.loads(raw)
        item: dict[str, Any] = {
            "tick": iso_of(entry["tick"]),
            "kind": entry["kind"],
            "job_id": entry.get("job_id"),
            "state": entry["kind"].upper() if entry["kind"] in ("skipped", "missed", "invalid") else None,
            "duration": None,
        }
        if entry["kind"] == "missed":
            item["count"] = entry.get("count")
            item["until"] = iso_of(entry.get("until"))
            item["at_least"] = entry.get("at_least", False)
        if entry["kind"] == "skipped":
            item["running"] = entry.get("running")
        if item["job_id"]:
            item.update(_job_outcome(redis, item["job_id"]))
        out.append(item)
    return out


def _job_outcome(redis: Redis, job_id: str) -> dict[str, Any]:
    try:
        job = fetch_job(job_id, redis)
    except (NoSuchJobError, DeserializationError):
        return {"state": "EXPIRED"}  # the job's record outlived its result TTL
    duration = None
    if job.started_at and job.ended_at:
        duration = round((job.ended_at - job.started_at).total_seconds(), 3)
    return {"state": state_of(job).value, "duration": duration}
