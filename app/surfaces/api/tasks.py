"""The catalogue and enqueueing: ``GET /api/v1/tasks``, ``POST /api/v1/tasks/<name>`` and its batch form."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any, ClassVar, TypeVar

from flask import Response, g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from redis import Redis

from app.catalogue.registry import REGISTRY, QueueName, TaskSpec
from app.core.dispatch import (
    BatchOptions,
    EnqueueOptions,
    Idempotency,
    IdempotencyConflict,
    JobExistsError,
    OptionRefused,
    deduplicated,
    digest,
    enqueue,
    enqueue_many,
    rate_key_refused,
)
from app.core.sealing import EncryptionUnavailable
from app.core.states import state_of
from app.foundation import keys
from app.foundation.config import Settings
from app.foundation.runtime import runtime
from app.surfaces.api.blueprint import api
from app.surfaces.api.bodies import parse_body
from app.surfaces.api.errors import APIError, field_errors

M = TypeVar("M")

#: Most jobs one batch request may enqueue.
MAX_BATCH = 1000

_QUEUE: TypeAdapter[QueueName] = TypeAdapter(QueueName)


class TaskRequest(BaseModel):
    """The body of ``POST /api/v1/tasks/<name>``; either key may be left out, no other is allowed.

    Only the JSON types are checked here (a mismatch is a 400: not a request this route
    takes); the values are the task's input model's and EnqueueOptions' to judge (422).
    """

    model_config = ConfigDict(strict=True, extra="forbid")
    SHAPE: ClassVar[str] = '{"args": {...}, "options": {...}}'

    args: dict[str, Any] = Field(default_factory=dict, description="the task's arguments")
    options: dict[str, Any] = Field(default_factory=dict, description="countdown, eta, queue, job_id, ...")


class BatchRequest(BaseModel):
    """The body of ``POST /api/v1/tasks/<name>/batch``.

    As for TaskRequest, a mismatch of keys or JSON types is a 400; each item (a BatchItem)
    and the queue are judged afterwards, so that the 422 names every bad one.
    """

    model_config = ConfigDict(strict=True, extra="forbid")
    SHAPE: ClassVar[str] = (
        '{"items": [{"args": {...}}, ...], "queue": "...", "encrypt": true|false, '
        '"options": {"expires": ..., "rate_key": "...", "priority": 0-9, "group": "..."}}'
    )

    items: list[Any]
    queue: str | None = None
    encrypt: bool | None = None
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="expires, rate_key, unique, sequence (the items in order), priority, group: once for "
        "every item",
    )


class BatchItem(BaseModel):
    """One job of a batch."""

    model_config = ConfigDict(strict=True, extra="forbid")

    args: dict[str, Any] = Field(default_factory=dict)


@api.get("/tasks")
def list_tasks() -> Response:
    """The catalogue."""
    return jsonify({"tasks": [spec.describe() for spec in REGISTRY]})


def _idempotency(task: str, args: dict[str, Any], options: dict[str, Any]) -> Idempotency | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise APIError(400, "bad_idempotency_key", "Idempotency-Key must be 1 to 255 printable characters")
    return Idempotency(caller=g.caller, key=key, request_digest=digest([task, args, options]))


def _task(name: str) -> TaskSpec:
    spec = REGISTRY.get(name)
    if spec is None:
        raise APIError(404, "unknown_task", f"no task named {name!r}; GET /api/v1/tasks lists them")
    return spec


#: Error types whose message the task's own validator wrote (and may have put the value in).
_FREE_TEXT_ERRORS = frozenset({"value_error", "assertion_error"})


def _invalid(spec: TaskSpec, errors: list[dict[str, Any]]) -> APIError:
    if spec.sensitive:
        for error in errors:
            parts = error["field"].split(".")
            on_sensitive = any(p == "args" and n in spec.sensitive for p, n in pairwise(parts))
            if on_sensitive and error["type"] in _FREE_TEXT_ERRORS:
                error["message"] = "invalid value (not shown: the field is sensitive)"
    return APIError(422, "invalid_arguments", f"invalid input for task {spec.name!r}", errors)


def _check(validate: Callable[[Any], M], raw: Any, field: str, errors: list[dict[str, Any]]) -> M | None:
    """``validate(raw)``, or None with its field errors, named from ``field``, added to ``errors``."""
    try:
        return validate(raw)
    except ValidationError as exc:
        errors += field_errors(exc, field)
        return None


@api.post("/tasks/<name>")
def enqueue_task(name: str) -> tuple[Response, int, dict[str, str]]:
    """Validate the arguments against the task's model and enqueue it."""
    spec = _task(name)
    body = parse_body(TaskRequest, shape=TaskRequest.SHAPE, optional=True)
    errors: list[dict[str, Any]] = []
    args = _check(spec.validate, body.args, "args", errors)
    options = _check(EnqueueOptions.model_validate, body.options, "options", errors)
    if options is not None and (problem := rate_key_refused(spec, options.rate_key)) is not None:
        errors.append(
            {"field": "options.rate_key", "message": problem, "type": "rate_key_without_rate_limit"}
        )
    if args is None or options is None or errors:
        raise _invalid(spec, errors)
    idempotency = None
    if "Idempotency-Key" in request.headers:  # the request's digest only when it is remembered
        # Without the options added since (unset), the digest is the one earlier releases stored: a
        # retry across an upgrade matches.
        unstated = {name for name in _LATER_OPTIONS if getattr(options, name) is None}
        stated = options.model_dump(mode="json", exclude=unstated or None)
        idempotency = _idempotency(name, args.model_dump(mode="json"), stated)
    rt = runtime()
    try:
        job = enqueue(
            spec,
            args,
            rt.redis,
            options,
            default_result_ttl=rt.settings.result_ttl,
            failure_ttl=rt.settings.failed_job_ttl,
            idempotency=idempotency,
        )
    except JobExistsError as exc:
        raise APIError(409, "job_exists", str(exc)) from None
    except IdempotencyConflict as exc:
        raise APIError(409, "idempotency_conflict", str(exc)) from None
    except EncryptionUnavailable as exc:
        raise _no_keys(exc) from None
    except OptionRefused as exc:
        raise _refused(spec, exc) from None
    await_replicas(rt.redis, rt.settings)
    location = url_for("api.get_job", job_id=job.id)
    out: dict[str, Any] = {"job_id": job.id, "task": spec.name, "state": state_of(job).value,
                           "links": {"self": location}}  # fmt: skip
    out["deduplicated"] = deduplicated(job)  # unique and debounce (issue 19)
    return jsonify(out), 202, {"Location": location}


def _refused(spec: TaskSpec, exc: OptionRefused) -> APIError:
    """An option that cannot apply to this call: a 422 naming it."""
    return _invalid(spec, [{"field": exc.field, "message": str(exc), "type": "option_refused"}])


def _no_keys(exc: EncryptionUnavailable) -> APIError:
    field = [{"field": "options.encrypt", "message": str(exc), "type": "encryption_unavailable"}]
    return APIError(422, "encryption_unavailable", str(exc), field)


def await_replicas(redis: Redis, settings: Settings) -> None:
    """With ENQUEUE_MIN_REPLICAS=n, wait (up to ENQUEUE_REPLICA_TIMEOUT_MS) until n replicas have
    this request's writes; answer 503 ``not_replicated`` when fewer acknowledge them in time.

    WAIT counts the writes of its own connection: a probe write on that connection, after
    the enqueue's writes completed, makes its acknowledgement cover them whichever pooled
    connection they went through.
    """
    wanted = settings.enqueue_min_replicas
    if not wanted:
        return
    with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.replication_probe(), "1", ex=60)
        pipe.execute_command("WAIT", wanted, settings.enqueue_replica_timeout_ms)
        acked = int(pipe.execute()[1])
    if acked < wanted:
        raise APIError(
            503,
            "not_replicated",
            f"the job is stored on the primary, but {acked} of {wanted} replica(s) acknowledged it within "
            f"{settings.enqueue_replica_timeout_ms} ms; it may be lost if the primary fails now. Retry "
            "with the same Idempotency-Key to be sure it is stored once",
            headers={"Retry-After": "1"},
        )


@api.post("/tasks/<name>/batch")
def enqueue_batch(name: str) -> tuple[Response, int]:
    """Validate every argument set, then enqueue them all in one round trip to Redis."""
    spec = _task(name)
    body = parse_body(BatchRequest, shape=BatchRequest.SHAPE)
    if not 1 <= len(body.items) <= MAX_BATCH:
        raise APIError(422, "invalid_arguments", f"a batch holds 1 to {MAX_BATCH} items", [])
    unique_batch = isinstance(body.options, dict) and body.options.get("unique") is not None
    if spec.concurrency or (spec.unique and not unique_batch) or (spec.debounce_delay and not unique_batch):
        raise APIError(
            422, "invalid_arguments", f"task {name!r} is unique, debounced or capped: one job at a time"
        )
    errors: list[dict[str, Any]] = []
    many_args = [_batch_item(spec, n, item, errors) for n, item in enumerate(body.items)]
    queue = _check(_QUEUE.validate_python, body.queue, "queue", errors) if body.queue else None
    options = _check(BatchOptions.model_validate, body.options, "options", errors)
    if options is not None and (problem := rate_key_refused(spec, options.rate_key)) is not None:
        errors.append(
            {"field": "options.rate_key", "message": problem, "type": "rate_key_without_rate_limit"}
        )
    if errors or options is None:
        raise _invalid(spec, errors)
    rt = runtime()
    ttls = {"default_result_ttl": rt.settings.result_ttl, "failure_ttl": rt.settings.failed_job_ttl}
    if options.unique is not None:
        checked = [a for a in many_args if a is not None]
        return _unique_batch(spec, checked, queue, body.encrypt, options, ttls)
    try:
        jobs = enqueue_many(
            spec,
            [a for a in many_args if a is not None],
            rt.redis,
            queue=queue,
            encrypt=body.encrypt,
            expires_at=options.expires_at(spec),
            rate_key=options.rate_key,
            sequence=options.sequence,
            priority=options.priority,
            group=options.group,
            **ttls,
        )
    except EncryptionUnavailable as exc:
        raise _no_keys(exc) from None
    await_replicas(rt.redis, rt.settings)
    return jsonify({"task": spec.name, "job_ids": [job.id for job in jobs], "state": "PENDING"}), 202


#: Enqueue options added after Idempotency-Key digests were first stored: left out of the digest when unset.
_LATER_OPTIONS = ("encrypt", "rate_key", "unique", "debounce", "sequence", "priority", "group")


def _unique_batch(
    spec: TaskSpec,
    many_args: list[BaseModel],
    queue: QueueName | None,
    encrypt: bool | None,
    options: BatchOptions,
    ttls: dict[str, int],
) -> tuple[Response, int]:
    """A batch with ``unique``: each item keyed by its own args, one atomic enqueue per item (the
    uniqueness check needs one transaction per key, so not the plain batch's one round trip)."""
    rt = runtime()
    per_item = EnqueueOptions(
        queue=queue, encrypt=encrypt, expires=options.expires, unique=options.unique,
        rate_key=options.rate_key, sequence=options.sequence, priority=options.priority,
        group=options.group,
    )  # fmt: skip
    try:
        jobs = [
            enqueue(
                spec,
                args,
                rt.redis,
                per_item,
                default_result_ttl=ttls["default_result_ttl"],
                failure_ttl=ttls["failure_ttl"],
            )
            for args in many_args
        ]
    except EncryptionUnavailable as exc:
        raise _no_keys(exc) from None
    await_replicas(rt.redis, rt.settings)
    out: dict[str, Any] = {"task": spec.name, "job_ids": [job.id for job in jobs], "state": "PENDING"}
    out["deduplicated"] = [deduplicated(job) for job in jobs]
    return jsonify(out), 202


def _batch_item(spec: TaskSpec, n: int, raw: Any, errors: list[dict[str, Any]]) -> BaseModel | None:
    """The validated arguments of item ``n`` of a batch, or None with its errors added."""
    try:
        item = BatchItem.model_validate(raw)
    except ValidationError:
        errors.append({"field": f"items[{n}]", "message": 'each item is {"args": {...}}', "type": "bad_item"})
        return None
    return _check(spec.validate, item.args, f"items[{n}].args", errors)
