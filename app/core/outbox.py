"""Transactional enqueue: ``task.apply_async(..., session=conn)`` inside the caller's SQL transaction.

The classic bug of a Redis queue beside a database: a job enqueued inside a transaction that
then rolls back, or that a worker runs before the commit is visible. Here the job is written
as a row of ``job_outbox`` through the caller's own Connection or Session, so it exists only
if that transaction commits; it reaches Redis after the commit:

- at once, by the caller's process: a Session's ``after_commit``; a Connection's next
  transaction or its return to the pool (a Connection has no after-commit event: its
  ``commit`` event comes before the database's commit);
- and by the scheduler's relay (every sweep) for any row whose caller died, or lost its
  connection to Redis, between the commit and the push.

Each row is pushed once: the job id is the row's key, so a second push finds the job (RQ
refuses the id) or the delivered mark, and only deletes the row. A push reads the row
through its own connection, so an id whose transaction rolled back (or is not committed
yet) pushes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import has_app_context
from pydantic import BaseModel
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, delete, event, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.catalogue.registry import REGISTRY, TaskSpec
from app.core import sealing
from app.core.dispatch import EnqueueOptions, JobExistsError, enqueue
from app.foundation import defaults, keys
from app.foundation.config import Settings
from app.foundation.db import dialect_of
from app.foundation.models import OutboxEntry
from app.foundation.runtime import runtime
from app.foundation.timeutil import utcnow

__all__ = ["push", "relay", "relay_pending", "stage"]

log = logging.getLogger("tasklane.outbox")

#: Keys in a Session's or a pooled connection's ``info``.
_STAGED = "tasklane_outbox_staged"
_COMMITTED = "tasklane_outbox_committed"


@dataclass(frozen=True)
class _Target:
    """Where a caller's staged jobs go once committed."""

    engine: Engine
    redis: Redis
    settings: Settings


def stage(
    bind: Session | Connection,
    spec: TaskSpec,
    model: BaseModel,
    options: EnqueueOptions,
    redis: Redis,
    settings: Settings,
) -> str:
    """Write the job into the outbox through ``bind``'s transaction; the job's id.

    The job is pushed to Redis after that transaction commits; a rollback leaves nothing.
    """
    if not isinstance(bind, Session | Connection):
        raise TypeError(f"session= takes a SQLAlchemy Connection or Session, not {type(bind).__name__}")
    job_id = options.job_id or str(uuid.uuid4())
    stored = options.model_dump(mode="json", exclude_none=True, exclude={"job_id"})
    if options.countdown:  # from now, not from whenever the row is pushed
        stored.pop("countdown")
        stored["eta"] = (utcnow() + timedelta(seconds=options.countdown)).isoformat()
    kwargs: dict[str, Any] = model.model_dump(mode="json")
    ring = sealing.ring_for(spec, options.encrypt)
    if ring is not None:  # the row holds the args sealed for the job, as its hash will
        kwargs = sealing.seal_kwargs(ring, job_id, kwargs)
        stored["encrypt"] = True
    expires_at = options.expires_at(spec)  # also the task's default: from now, as countdown
    if expires_at is not None:
        stored["expires"] = expires_at.isoformat()
    row = {
        "job_id": job_id,
        "task": spec.name,
        "kwargs": json.dumps(kwargs, separators=(",", ":")),
        "options": json.dumps(stored, separators=(",", ":")),
    }
    bind.execute(insert(OutboxEntry).values(**row))
    if isinstance(bind, Session):
        engine = bind.get_bind().engine
        _hook_session(bind)
    else:
        engine = bind.engine
        _hook_connection(bind)
    staged: list[tuple[str, _Target]] = bind.info.setdefault(_STAGED, [])
    staged.append((job_id, _Target(engine, redis, settings)))
    return job_id


# --- after the caller's commit -------------------------------------------------------------------


def _hook_session(session: Session) -> None:
    if event.contains(session, "after_commit", _session_committed):
        return
    event.listen(session, "after_commit", _session_committed)
    event.listen(session, "after_rollback", _session_rolled_back)


def _session_committed(session: Session) -> None:
    _push_staged(session.info.pop(_STAGED, []))


def _session_rolled_back(session: Session) -> None:
    session.info.pop(_STAGED, None)


_hooked_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_hook_lock = threading.Lock()


def _hook_connection(conn: Connection) -> None:
    if not event.contains(conn, "commit", _connection_committing):
        event.listen(conn, "commit", _connection_committing)
        event.listen(conn, "rollback", _connection_rolled_back)
        event.listen(conn, "begin", _connection_begins)
    pool = conn.engine.pool
    with _hook_lock:
        if pool not in _hooked_pools:
            event.listen(pool, "checkin", _connection_returned)
            _hooked_pools.add(pool)


def _connection_committing(conn: Connection) -> None:
    # Before the database's commit: only move the ids aside; they are pushed once it is done.
    staged = conn.info.pop(_STAGED, [])
    if staged:
        conn.info.setdefault(_COMMITTED, []).extend(staged)


def _connection_rolled_back(conn: Connection) -> None:
    conn.info.pop(_STAGED, None)


def _connection_begins(conn: Connection) -> None:
    """The connection's next transaction: the previous one's commit is done, push what it staged."""
    _push_staged(conn.info.pop(_COMMITTED, []))


def _connection_returned(_dbapi_connection: Any, record: Any) -> None:
    """The connection goes back to the pool (after its commit): push what it staged, from a
    thread (the pool is still returning this connection; a push needs one of its own)."""
    if record is None:
        return
    record.info.pop(_STAGED, None)  # staged but never committed: rolled back with the connection
    committed = record.info.pop(_COMMITTED, [])
    if committed:
        threading.Thread(target=_push_staged, args=(committed,), name="outbox-push", daemon=True).start()


def _push_staged(staged: Sequence[tuple[str, _Target]]) -> None:
    """Push each committed id; a failure leaves the row to the scheduler's relay (never raises)."""
    by_target: dict[_Target, list[str]] = {}
    for job_id, target in staged:
        by_target.setdefault(target, []).append(job_id)
    for target, ids in by_target.items():
        try:
            push(target.engine, target.redis, target.settings, ids)
        except (SQLAlchemyError, RedisError) as exc:
            log.warning(
                "could not push %d committed job(s) yet (%s); the scheduler's relay will", len(ids), exc
            )


# --- pushing rows ----------------------------------------------------------------------------------


def push(engine: Engine, redis: Redis, settings: Settings, job_ids: Iterable[str]) -> int:
    """Push the committed outbox rows of ``job_ids`` to Redis and delete them; how many this call
    enqueued (a row already pushed, or not there, counts 0)."""
    ids = list(job_ids)
    if not ids:
        return 0
    with engine.connect() as conn:
        rows = conn.execute(_locked(conn, _ROWS.where(OutboxEntry.job_id.in_(ids)))).all()
        enqueued = _deliver(conn, redis, settings, rows)
        conn.commit()
    return enqueued


def relay(engine: Engine, redis: Redis, settings: Settings, batch: int = defaults.OUTBOX_BATCH) -> int:
    """Push every committed row still in the outbox (its caller died or lost Redis before pushing
    it), oldest first, ``batch`` per transaction; how many jobs this call enqueued."""
    enqueued = 0
    while True:
        with engine.connect() as conn:
            query = _ROWS.order_by(OutboxEntry.created_at, OutboxEntry.job_id).limit(batch)
            rows = conn.execute(_locked(conn, query)).all()
            enqueued += _deliver(conn, redis, settings, rows)
            conn.commit()
        if len(rows) < batch:
            return enqueued


_ROWS = select(OutboxEntry.job_id, OutboxEntry.task, OutboxEntry.kwargs, OutboxEntry.options)
_last_problem: list[str] = [""]


def relay_pending(redis: Redis) -> int:
    """The scheduler's relay pass, on the app's database; a database that cannot answer (down, or
    not migrated yet) is logged once per kind of problem and never stops the scheduler."""
    if not has_app_context():
        return 0
    rt = runtime()
    try:
        return relay(rt.engine, redis, rt.settings)
    except SQLAlchemyError as exc:
        problem = type(exc).__name__ + str(getattr(exc, "orig", ""))[:200]
        if problem != _last_problem[0]:
            _last_problem[0] = problem
            log.warning("the outbox relay cannot read the database (run `alembic upgrade head`?): %s", exc)
        return 0


def _locked(conn: Connection, query: Any) -> Any:
    """Rows another pusher holds are skipped (PostgreSQL, MariaDB); SQLite has one writer at a time."""
    return query if dialect_of(conn) == "sqlite" else query.with_for_update(skip_locked=True)


def _deliver(conn: Connection, redis: Redis, settings: Settings, rows: Sequence[Any]) -> int:
    """Enqueue each row's job unless it is there already, then delete the rows (in ``conn``'s
    transaction, which the caller commits)."""
    enqueued = sum(_enqueue(redis, settings, row) for row in rows)
    if rows:
        conn.execute(delete(OutboxEntry).where(OutboxEntry.job_id.in_([row.job_id for row in rows])))
    return enqueued


def _enqueue(redis: Redis, settings: Settings, entry: Any) -> bool:
    """Enqueue one row's job; False when it was delivered before (or names no task)."""
    delivered = keys.outbox_delivered(entry.job_id)
    if redis.exists(delivered):
        return False
    spec = REGISTRY.get(entry.task)
    if spec is None:
        log.error("outbox row %s names no task %r in this release; dropping it", entry.job_id, entry.task)
        return False
    stored = json.loads(entry.options)
    eta = stored.get("eta")
    if eta is not None and datetime.fromisoformat(eta) <= utcnow():
        stored.pop("eta")  # its time came while it waited for the push: run it now
    options = EnqueueOptions.model_validate({**stored, "job_id": entry.job_id})
    try:
        job = enqueue(
            spec,
            sealing.open_or_keep(entry.job_id, json.loads(entry.kwargs)),
            redis,
            options,
            default_result_ttl=settings.result_ttl,
            failure_ttl=settings.failed_job_ttl,
        )
        created = job.id == entry.job_id
        if not created:
            log.info(
                "outbox job %s not enqueued: %s is unique and job %s with the same arguments is live",
                entry.job_id,
                spec.name,
                job.id,
            )
    except JobExistsError:  # pushed before, and the row's delete was lost
        created = False
    redis.set(delivered, "1", ex=defaults.OUTBOX_DELIVERED_TTL)
    return created
