"""Data tasks on the application's SQL database: user activity and profiles, cleanups,
analytics roll-ups and monthly invoices.

Each job opens its own session and commits or rolls back before it returns; rows are
written with one statement per race (insert-or-ignore, upsert) so a task run twice, or
by two workers at once, leaves the same rows.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt, field_validator
from sqlalchemy import Table, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.catalogue.registry import QueueName, RetryPolicy, Schedule, TaskInput, task
from app.foundation import defaults, keys
from app.foundation.db import dialect_of, insert_ignore, upsert
from app.foundation.models import (
    AuthToken,
    Invoice,
    JobRollup,
    LatencyRollup,
    RequestRollup,
    Subscription,
    SubscriptionStatus,
    User,
    UserProfile,
    UserSession,
    UserStats,
)
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso, utcnow
from app.ops import metrics
from app.services import services
from app.services.currency import CURRENCY_EXPONENTS
from app.services.mail import MailError

#: Database errors worth another attempt: a lost connection, a lock timeout, a deadlock.
TRANSIENT_DB = (OperationalError,)


class UnknownUser(LookupError):
    """No user has the id; retrying will not create one."""


def aware(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite and MySQL hand back naive ones)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _require_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UnknownUser(f"no user with id {user_id}")
    return user


# --- users -----------------------------------------------------------------------------------------


class UserInput(TaskInput):
    """Which user."""

    user_id: PositiveInt = Field(description="the user's id")


@task(
    input=UserInput,
    queue=QueueName.DEFAULT,
    time_limit=60,
    retry=RetryPolicy(max_retries=3, backoff_base=1, backoff_cap=60, retry_for=TRANSIENT_DB),
)
def update_user_stats(user_id: int) -> dict[str, Any]:
    """Set the user's last_activity to now and add one to login_count; an unknown user fails at once."""
    now = utcnow()
    with Session(runtime().engine) as session, session.begin():
        _require_user(session, user_id)
        table: Table = UserStats.__table__  # type: ignore[assignment]
        upsert(
            session,
            table,
            [{"user_id": user_id, "login_count": 1, "last_activity": now}],
            keys=("user_id",),
            increment=("login_count",),
        )
        stats = session.get(UserStats, user_id, populate_existing=True)
        assert stats is not None and stats.last_activity is not None
        return {
            "user_id": user_id,
            "login_count": stats.login_count,
            "last_activity": iso(aware(stats.last_activity)),
        }


class ProfileInput(TaskInput):
    """Whose profile."""

    user_id: PositiveInt = Field(description="the user's id")
    bio: str = Field(default="", max_length=2000, description="the profile's text")


@task(
    input=ProfileInput,
    queue=QueueName.DEFAULT,
    time_limit=60,
    retry=RetryPolicy(max_retries=3, backoff_base=1, backoff_cap=60, retry_for=TRANSIENT_DB),
)
def create_user_profile(user_id: int, bio: str = "") -> dict[str, Any]:
    """Create the user's profile once: ``created``, or ``already_exists`` with the existing profile's id."""
    with Session(runtime().engine) as session, session.begin():
        user = _require_user(session, user_id)
        table: Table = UserProfile.__table__  # type: ignore[assignment]
        created = insert_ignore(
            session, table, {"user_id": user_id, "display_name": user.name, "bio": bio}, keys=("user_id",)
        )
    with Session(runtime().engine) as session:  # a fresh snapshot (see _invoice_one)
        profile_id = session.scalars(select(UserProfile.id).where(UserProfile.user_id == user_id)).one()
    return {
        "status": "created" if created else "already_exists",
        "profile_id": profile_id,
        "user_id": user_id,
    }


# --- cleanups --------------------------------------------------------------------------------------


def delete_in_batches(
    table: Table, condition: ColumnElement[bool], batch: int = defaults.CLEANUP_BATCH
) -> int:
    """Delete the rows matching ``condition`` ``batch`` at a time, each batch its own transaction.

    Each round selects at most ``batch`` ids (through an index on the condition's column)
    and deletes exactly those, so no statement holds locks on more than ``batch`` rows
    and other writers get in between batches. Stops after CLEANUP_MAX_BATCHES; returns
    the number of rows deleted.
    """
    engine = runtime().engine
    pk = table.c.id
    total = 0
    for _ in range(defaults.CLEANUP_MAX_BATCHES):
        with Session(engine) as session, session.begin():
            ids = list(session.scalars(select(pk).where(condition).order_by(pk).limit(batch)))
            if not ids:
                break
            session.execute(delete(table).where(pk.in_(ids)))
        total += len(ids)
        if len(ids) < batch:
            break
    return total


def _cutoff(engine_dialect: str, moment: datetime) -> datetime:
    # SQLite compares the stored text; MySQL stores naive UTC: compare like with like.
    return moment.replace(tzinfo=None) if engine_dialect in ("sqlite", "mysql") else moment


class SessionsInput(TaskInput):
    """How old a session must be to go."""

    days: int = Field(default=30, ge=1, le=3650, description="delete sessions not seen for this many days")


@task(
    input=SessionsInput,
    queue=QueueName.LOW,
    time_limit=1800,
    retry=RetryPolicy(max_retries=2, backoff_base=30, backoff_cap=300, retry_for=TRANSIENT_DB),
    schedule=Schedule(cron="0 2 * * *"),
)
def cleanup_old_sessions(days: int = 30) -> dict[str, Any]:
    """Delete sessions not seen for ``days`` days, in batches; returns the count."""
    cutoff = _cutoff(dialect_of(runtime().engine), utcnow() - timedelta(days=days))
    table: Table = UserSession.__table__  # type: ignore[assignment]
    deleted = delete_in_batches(table, table.c.last_seen_at < cutoff)
    return {"deleted": deleted, "older_than_days": days}


@task(
    queue=QueueName.LOW,
    time_limit=1800,
    retry=RetryPolicy(max_retries=2, backoff_base=30, backoff_cap=300, retry_for=TRANSIENT_DB),
    schedule=Schedule(cron="0 0 * * *"),
)
def cleanup_expired_tokens() -> dict[str, Any]:
    """Delete expired API and refresh tokens, in batches; returns the count."""
    now = _cutoff(dialect_of(runtime().engine), utcnow())
    table: Table = AuthToken.__table__  # type: ignore[assignment]
    deleted = delete_in_batches(table, table.c.expires_at <= now)
    return {"deleted": deleted}


class ExpiredDataInput(TaskInput):
    """How old cache entries and temporary files must be to go."""

    max_age_hours: int = Field(default=24, ge=0, le=24 * 365, description="age in hours")


def _expired_cache_keys(max_age_hours: int) -> tuple[int, int]:
    """Delete the app's cache keys that never expire and were not touched for ``max_age_hours``.

    Cache entries are written with a TTL, and Redis removes those itself; one without a
    TTL (written by an older release, or whose EXPIRE was lost) would stay forever. SCAN
    walks only the cache patterns (never KEYS); OBJECT IDLETIME says how long since it was
    used. Returns (keys examined, keys deleted).
    """
    redis = runtime().redis
    examined = deleted = 0
    limit = max_age_hours * 3600
    for pattern in keys.CACHE_PATTERNS:
        for batch in _chunks(redis.scan_iter(match=pattern, count=500), 500):
            examined += len(batch)
            with redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.ttl(key)
                    pipe.object("idletime", key)
                replies = pipe.execute(raise_on_error=False)
            stale = [
                key
                for key, ttl, idle in zip(batch, replies[::2], replies[1::2], strict=True)
                if ttl == -1 and isinstance(idle, int) and idle >= limit
            ]
            if stale:
                deleted += int(redis.unlink(*stale))
    return examined, deleted


def _chunks(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _old_temp_files(directory: Path, max_age_hours: int) -> tuple[int, int]:
    """Delete regular files under ``directory`` not modified for ``max_age_hours``; (files, bytes)."""
    if not directory.is_dir():
        return 0, 0
    cutoff = time.time() - max_age_hours * 3600
    files = size = 0
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            try:
                info = path.lstat()
                if path.is_symlink() or info.st_mtime > cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue  # another run took it
            files += 1
            size += info.st_size
    return files, size


@task(
    input=ExpiredDataInput,
    queue=QueueName.LOW,
    time_limit=1800,
    schedule=Schedule(cron="30 1 * * *"),
)
def cleanup_expired_data(max_age_hours: int = 24) -> dict[str, Any]:
    """Delete the app's stale cache keys in Redis (SCAN) and files older than the age under TEMP_DIR."""
    examined, deleted_keys = _expired_cache_keys(max_age_hours)
    files, size = _old_temp_files(runtime().settings.temp_dir, max_age_hours)
    return {
        "cache_keys_examined": examined,
        "cache_keys_deleted": deleted_keys,
        "temp_files_deleted": files,
        "temp_bytes_freed": size,
    }


# --- analytics -------------------------------------------------------------------------------------


def _hour_start(text: str | None) -> datetime:
    if text is None:
        now = utcnow()
        return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class AnalyticsInput(TaskInput):
    """Which hour to roll up."""

    window: str | None = Field(
        default=None,
        description="the hour to roll up, ISO 8601 (minutes are dropped, UTC when no offset); "
        "default: the last complete hour",
    )

    @field_validator("window")
    @classmethod
    def _iso_hour(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _hour_start(value)
            except ValueError:
                raise ValueError("must be an ISO 8601 date and time, e.g. 2026-11-27T17:00:00Z") from None
        return value


def _window_value(session: Session, start: datetime) -> datetime:
    return start.replace(tzinfo=None) if dialect_of(session) in ("sqlite", "mysql") else start


@task(
    input=AnalyticsInput,
    queue=QueueName.LOW,
    time_limit=600,
    retry=RetryPolicy(max_retries=3, backoff_base=10, backoff_cap=300, retry_for=TRANSIENT_DB),
    schedule=Schedule(cron="5 * * * *"),
)
def analytics_aggregation(window: str | None = None) -> dict[str, Any]:
    """Roll one hour of API request metrics and job outcomes per task into the analytics tables (upserts)."""
    start = _hour_start(window)
    hour = start.strftime("%Y%m%d%H")
    redis = runtime().redis
    http = metrics.read_hourly(redis, keys.hourly_http(hour))
    jobs = metrics.read_hourly(redis, keys.hourly_jobs(hour))
    request_rows: list[dict[str, Any]] = []
    latency_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    with Session(runtime().engine) as session, session.begin():
        at = _window_value(session, start)
        for route, entry in sorted(http.items()):
            for method_status, count in sorted(entry["counts"].items()):
                method, _, status = method_status.partition("|")
                request_rows.append(
                    {
                        "window_start": at,
                        "method": method,
                        "route": route,
                        "status": int(status),
                        "requests": count,
                    }
                )
            observed = sum(entry["buckets"])
            if observed:
                latency_rows.append(
                    {
                        "window_start": at,
                        "route": route,
                        "requests": observed,
                        "mean_ms": round(1000 * entry["sum"] / observed, 3),
                        **{
                            f"p{q}_ms": round(1000 * metrics.quantile(q / 100, entry["buckets"]), 3)
                            for q in (50, 95, 99)
                        },
                    }
                )
        for name, entry in sorted(jobs.items()):
            counts = entry["counts"]
            timed = sum(entry["buckets"])
            job_rows.append(
                {
                    "window_start": at,
                    "task": name,
                    "succeeded": counts.get("success", 0),
                    "failed": counts.get("failure", 0),
                    "retried": counts.get("retry", 0),
                    "other": sum(v for k, v in counts.items() if k not in ("success", "failure", "retry")),
                    "mean_s": round(entry["sum"] / timed, 6) if timed else 0.0,
                    **{
                        f"p{q}_s": round(metrics.quantile(q / 100, entry["buckets"]), 6) for q in (50, 95, 99)
                    },
                }
            )
        upsert(session, RequestRollup.__table__, request_rows, ("window_start", "method", "route", "status"))  # type: ignore[arg-type]
        upsert(session, LatencyRollup.__table__, latency_rows, ("window_start", "route"))  # type: ignore[arg-type]
        upsert(session, JobRollup.__table__, job_rows, ("window_start", "task"))  # type: ignore[arg-type]
    return {
        "window_start": iso(start),
        "window_end": iso(start + timedelta(hours=1)),
        "request_rows": len(request_rows),
        "latency_rows": len(latency_rows),
        "job_rows": len(job_rows),
        "requests": sum(r["requests"] for r in request_rows),
        "jobs": sum(r["succeeded"] + r["failed"] + r["retried"] + r["other"] for r in job_rows),
    }


# --- invoices --------------------------------------------------------------------------------------


class InvoicesInput(TaskInput):
    """Which month to invoice."""

    month: str | None = Field(
        default=None,
        pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
        description="YYYY-MM; default: the current month (UTC)",
    )


def _amount(minor: int, currency: str) -> str:
    return str(Decimal(minor).scaleb(-CURRENCY_EXPONENTS.get(currency, 2)))


def _invoice_one(subscription_id: int, month: str) -> dict[str, Any]:
    """Create (once) and email (once) one subscription's invoice for ``month``."""
    engine = runtime().engine
    with Session(engine) as session, session.begin():
        sub = session.get(Subscription, subscription_id)
        if sub is None:
            raise LookupError(f"subscription {subscription_id} is gone")
        if sub.amount_minor < 0:
            raise ValueError(f"subscription {subscription_id} has a negative price")
        created = insert_ignore(
            session,
            Invoice.__table__,  # type: ignore[arg-type]
            {
                "subscription_id": sub.id,
                "month": month,
                "amount_minor": sub.amount_minor,
                "currency": sub.currency,
            },
            keys=("subscription_id", "month"),
        )
        plan, user_id = sub.plan, sub.user_id
    # A new transaction: under REPEATABLE READ (MariaDB) the first one's snapshot predates a
    # concurrent run's invoice, which our INSERT waited for and skipped.
    with Session(engine) as session, session.begin():
        invoice = session.scalars(
            select(Invoice).where(Invoice.subscription_id == subscription_id, Invoice.month == month)
        ).one()
        user = session.get(User, user_id)
        assert user is not None
        invoice_id, email, name = invoice.id, user.email, user.name
        amount, currency = invoice.amount_minor, invoice.currency
    # Claim the mail: the run whose UPDATE sets emailed_at sends it, so two runs never both do.
    with Session(engine) as session, session.begin():
        claimed = session.execute(
            update(Invoice)
            .where(Invoice.id == invoice_id, Invoice.emailed_at.is_(None))
            .values(emailed_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    emailed, error = False, None
    if getattr(claimed, "rowcount", 0) == 1:
        mail = services().mail
        number = f"INV-{month.replace('-', '')}-{invoice_id:06d}"
        try:
            mail.send(
                mail.compose(
                    email,
                    f"Invoice {number} for {month}",
                    "invoice",
                    {
                        "name": name,
                        "number": number,
                        "month": month,
                        "plan": plan,
                        "amount": _amount(amount, currency),
                        "currency": currency,
                    },
                    display_name=name,
                )
            )
        except BaseException as exc:
            with Session(engine) as session, session.begin():  # not sent: let the next run send it
                session.execute(update(Invoice).where(Invoice.id == invoice_id).values(emailed_at=None))
            if not isinstance(exc, MailError):
                raise
            error = f"{type(exc).__name__}: {exc}"
        else:
            emailed = True
    return {
        "subscription_id": subscription_id,
        "invoice_id": invoice_id,
        "created": created,
        "emailed": emailed,
        "error": error,
    }


@task(
    input=InvoicesInput,
    queue=QueueName.LOW,
    time_limit=3600,
    retry=RetryPolicy(max_retries=3, backoff_base=60, backoff_cap=900, retry_for=TRANSIENT_DB),
    schedule=Schedule(cron="0 0 1 * *"),
)
def generate_monthly_invoices(month: str | None = None) -> dict[str, Any]:
    """Create each active subscription's invoice for the month once and email it; failures are reported."""
    month = month or utcnow().strftime("%Y-%m")
    with Session(runtime().engine) as session:
        ids = list(
            session.scalars(
                select(Subscription.id)
                .where(Subscription.status == SubscriptionStatus.ACTIVE.value)
                .order_by(Subscription.id)
            )
        )
    created = existing = emailed = 0
    failed: list[dict[str, Any]] = []
    started = time.monotonic()
    for subscription_id in ids:
        try:
            outcome = _invoice_one(subscription_id, month)
        except (LookupError, ValueError, OperationalError) as exc:
            failed.append({"subscription_id": subscription_id, "error": f"{type(exc).__name__}: {exc}"})
            continue
        created += outcome["created"]
        existing += not outcome["created"]
        emailed += outcome["emailed"]
        if outcome["error"]:
            failed.append(
                {
                    "subscription_id": subscription_id,
                    "invoice_id": outcome["invoice_id"],
                    "error": outcome["error"],
                }
            )
    return {
        "month": month,
        "subscriptions": len(ids),
        "created": created,
        "already_existed": existing,
        "emailed": emailed,
        "failed": failed,
        "seconds": round(time.monotonic() - started, 3),
    }
