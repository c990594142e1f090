"""Key rotation: every sealed value in Redis sealed again under the first of ``ENCRYPTION_KEYS``.

``flask keys rotate`` runs it after a new key is put first: each encrypted job's args (in its
hash) and results (in its result stream), and each stored schedule's args, are opened with
whichever key sealed them and sealed again under the first key; once it reports nothing left
under an old key, that key can be removed. A value sealed under a key that is already gone is
counted and left as it is (its job fails with a clear error when it runs).
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis
from redis.exceptions import WatchError
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from app.core import schedules, sealing
from app.core.queues import JsonJob
from app.foundation.crypto import DecryptError, KeyRing, is_sealed

__all__ = ["Rotation", "rotate_jobs"]

_BATCH = 200


@dataclass
class Rotation:
    """What a rotation did."""

    jobs: int = 0
    resealed: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)
    schedules: int = 0


def rotate_jobs(connection: Redis, ring: KeyRing) -> Rotation:
    """Seal every encrypted job's args and results again under ``ring``'s first key."""
    report = Rotation()
    batch: list[str] = []
    for key in connection.scan_iter(match="rq:job:*", count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        if name.count(":") == 2:  # a job's hash, not rq:job:<id>:dependents and the like
            batch.append(name.split(":", 2)[2])
        if len(batch) >= _BATCH:
            _rotate_batch(connection, ring, batch, report)
            batch = []
    _rotate_batch(connection, ring, batch, report)
    report.schedules = _rotate_schedules(connection, ring)
    return report


def _rotate_schedules(connection: Redis, ring: KeyRing) -> int:
    """Seal each stored schedule's args again under the first key; how many were rewritten."""
    count = 0
    for name, raw in connection.hgetall(schedules.records_key()).items():
        text = raw.decode() if isinstance(raw, bytes) else raw
        if "tlenc1." not in text or f"tlenc1.{ring.current_id}." in text:
            continue
        record = schedules.Record.loads(text)
        if record.sealed and not sealing.is_sealed_kwargs(record.args):  # opened: write it sealed anew
            connection.hset(schedules.records_key(), name, record.dumps())
            count += 1
    return count


def _rotate_batch(connection: Redis, ring: KeyRing, ids: list[str], report: Rotation) -> None:
    for job in JsonJob.fetch_many(ids, connection=connection):
        if job is None or not sealing.is_encrypted(job):
            continue
        report.jobs += 1
        try:
            changed = _reseal_args(connection, ring, job) + _reseal_results(connection, ring, job.id)
        except DecryptError as exc:
            report.unreadable.append(f"{job.id}: {exc}")
            continue
        if changed:
            report.resealed += 1
        else:
            report.current += 1


def _reseal_args(connection: Redis, ring: KeyRing, job: Job) -> int:
    envelope = dict(job.kwargs).get(sealing.SEALED)
    if not isinstance(envelope, str) or ring.is_current(envelope):
        return 0
    job.kwargs = {sealing.SEALED: ring.reseal(envelope, job.id)}
    with connection.pipeline() as pipe:
        try:
            pipe.watch(job.key)
            if not pipe.exists(job.key):  # gone meanwhile (pruned): nothing to write
                return 0
            pipe.multi()
            pipe.hset(job.key, "data", zlib.compress(job.data))
            pipe.execute()
        except WatchError:
            # Written meanwhile (a worker took it): its args are unchanged, try once more.
            return _reseal_args(connection, ring, JsonJob.fetch(job.id, connection=connection))
    return 1


def _reseal_results(connection: Redis, ring: KeyRing, job_id: str) -> int:
    """Rewrite the job's result stream with each sealed return value sealed under the first key."""
    key = Result.get_key(job_id)
    with connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                entries = cast(list[tuple[bytes, dict[Any, Any]]], pipe.xrange(key))
                rewritten: list[tuple[bytes, dict[Any, Any]]] = []
                changed = 0
                for entry_id, fields in entries:
                    raw = fields.get(b"return_value")
                    if raw is not None:
                        value = JSONSerializer.loads(base64.b64decode(raw))
                        if is_sealed(value) and not ring.is_current(value):
                            value = ring.reseal(value, job_id)
                            fields = {
                                **fields,
                                b"return_value": base64.b64encode(JSONSerializer.dumps(value)),
                            }
                            changed += 1
                    rewritten.append((entry_id, fields))
                if not changed:
                    pipe.reset()
                    return 0
                ttl = pipe.pttl(key)
                pipe.multi()
                pipe.delete(key)
                for entry_id, fields in rewritten:
                    pipe.xadd(key, fields, id=entry_id)
                if ttl and ttl > 0:
                    pipe.pexpire(key, ttl)
                pipe.execute()
                return changed
            except WatchError:
                continue
