"""Encrypted jobs: which jobs are sealed, and the one way in and out of their args and result.

A job enqueued with ``encrypt`` (or of a task declared ``sensitive=True``, or, once
``ENCRYPTION_KEYS`` is set, of a task with sensitive input fields) keeps in Redis only
``{"__sealed__": <envelope>}`` as its kwargs and an envelope as its result (the codec of
``app.foundation.crypto``, bound to the job's id), and ``meta["encrypted"] = true``.
Everything that needs the values reads them through :func:`job_kwargs` and
:func:`job_result`; what shows a job to people (the dashboard, descriptions, logs) shows
``***`` instead.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from rq.job import Job

from app.catalogue.registry import TaskSpec
from app.foundation import runtime
from app.foundation.crypto import DecryptError, KeyRing, is_sealed
from app.foundation.meta import Meta
from app.ops.logs import MIN_SECRET_LENGTH

__all__ = [
    "SEALED",
    "DecryptError",
    "EncryptionUnavailable",
    "is_encrypted",
    "job_kwargs",
    "job_result",
    "keyring",
    "ring_for",
    "seal_kwargs",
    "sealed_result",
]

#: The one key of a sealed job's kwargs.
SEALED = "__sealed__"


class EncryptionUnavailable(ValueError):
    """Encryption was asked for (or the task demands it) but ENCRYPTION_KEYS is not set."""


@functools.lru_cache(maxsize=8)
def _ring(keys: tuple[str, ...]) -> KeyRing:
    return KeyRing.from_text(",".join(keys))


def keyring() -> KeyRing | None:
    """The keys in force (ENCRYPTION_KEYS), or None when it is not set."""
    keys = runtime.settings().encryption_keys
    return _ring(keys) if keys else None


def ring_for(spec: TaskSpec, requested: bool | None) -> KeyRing | None:
    """The ring to seal a new job of ``spec`` with, or None to store it in clear.

    Sealed: when asked (``encrypt: true``), when the task is declared ``sensitive=True``,
    and when the task has sensitive input fields and keys are set. Raises
    EncryptionUnavailable when sealing is required and ENCRYPTION_KEYS is not set.
    """
    ring = keyring()
    if requested or spec.encrypted:
        if ring is None:
            why = "encrypt was asked for" if requested else f"task {spec.name!r} is declared sensitive"
            raise EncryptionUnavailable(f"{why}, but ENCRYPTION_KEYS is not set: nothing was stored")
        return ring
    if requested is None and spec.sensitive and ring is not None:
        return ring
    return None


def seal_kwargs(ring: KeyRing, job_id: str, kwargs: Mapping[str, Any]) -> dict[str, str]:
    """The kwargs a sealed job stores."""
    return {SEALED: ring.seal(dict(kwargs), job_id)}


def is_sealed_kwargs(kwargs: Mapping[str, Any]) -> bool:
    """True when ``kwargs`` is what a sealed job stores (``{"__sealed__": <envelope>}``)."""
    return len(kwargs) == 1 and is_sealed(kwargs.get(SEALED))


def open_or_keep(job_id: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Sealed ``kwargs`` opened when this process can (so that uniqueness and concurrency keys see
    the values), else kept sealed: the job's worker opens them, or fails the job saying why."""
    ring = keyring()
    if ring is None or not is_sealed_kwargs(kwargs):
        return dict(kwargs)
    try:
        opened = ring.open(str(kwargs[SEALED]), job_id)
    except DecryptError:
        return dict(kwargs)
    return opened if isinstance(opened, dict) else dict(kwargs)


def is_encrypted(job: Job) -> bool:
    """True when the job's args and result are sealed."""
    return bool(job.meta.get(Meta.ENCRYPTED))


def _ring_or_fail() -> KeyRing:
    ring = keyring()
    if ring is None:
        raise DecryptError("the job is encrypted, but ENCRYPTION_KEYS is not set in this process")
    return ring


def job_kwargs(job: Job) -> dict[str, Any]:
    """The job's arguments, opened when sealed (raises DecryptError, UnknownKeyError)."""
    kwargs = dict(job.kwargs)
    if not is_encrypted(job):
        return kwargs
    envelope = kwargs.get(SEALED)
    if not isinstance(envelope, str) or len(kwargs) != 1:
        raise DecryptError("the job is marked encrypted but its arguments are not an envelope")
    opened = _ring_or_fail().open(envelope, job.id)
    if not isinstance(opened, dict):
        raise DecryptError("the job's sealed arguments are not an object")
    return opened


def hook_kwargs(job: Job) -> dict[str, Any]:
    """The job's arguments for in-process handlers (signals, on_success / on_failure): opened when
    this process can, else as stored; never raises."""
    try:
        return job_kwargs(job)
    except Exception:
        try:
            return dict(job.kwargs)
        except Exception:
            return {}


def sealed_result(job: Job, value: Any) -> Any:
    """What the job stores as its result: ``value`` sealed when the job is encrypted."""
    if not is_encrypted(job) or value is None:
        return value
    return _ring_or_fail().seal(value, job.id)


def job_result(job: Job, value: Any) -> Any:
    """The job's result as the task returned it (``value`` is what Redis holds)."""
    if is_encrypted(job) and is_sealed(value):
        return _ring_or_fail().open(value, job.id)
    return value


def secret_values(spec: TaskSpec, values: Mapping[str, Any], encrypted: bool) -> list[str]:
    """The argument values kept out of logs, errors and Sentry events: the sensitive fields', and
    every text argument of an encrypted job."""
    if encrypted:
        found = [v for v in values.values() if isinstance(v, str)]
    else:
        found = [str(values[n]) for n in spec.sensitive if values.get(n) is not None]
    return [v for v in found if len(v) >= MIN_SECRET_LENGTH]
