"""Realistic development data for the data tasks (``flask seed``): users and everything around them.

Rows go in through Core bulk inserts (thousands a statement), so 100,000 users take
seconds. Each call tags its rows with a fresh run id (in e-mail addresses and token
hashes), so seeding twice adds to the database instead of colliding.
"""

from __future__ import annotations

import hashlib
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.foundation.config import load_or_exit
from app.foundation.db import make_engine
from app.foundation.models import (
    AuthToken,
    Invoice,
    JobRollup,
    LatencyRollup,
    Payment,
    RequestRollup,
    Subscription,
    User,
    UserProfile,
    UserSession,
)

#: Rows per INSERT statement.
CHUNK = 2000
FIRST = (
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Edsger",
    "Margaret",
    "Ken",
    "Radia",
    "Donald",
    "Frances",
)
LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Hamilton", "Thompson", "Perlman")
PLANS = (("starter", 900, "USD"), ("team", 4900, "USD"), ("business", 19900, "EUR"), ("yen", 1500, "JPY"))
ROUTES = ("/api/v1/tasks/<name>", "/api/v1/jobs/<job_id>", "/api/v1/jobs", "/api/v1/queues", "/healthz")
TASKS = ("add", "send_welcome_email", "send_notification", "process_payment", "update_user_stats")


@dataclass
class Seeded:
    """How many rows of each kind one seeding added."""

    users: int = 0
    profiles: int = 0
    sessions: int = 0
    tokens: int = 0
    subscriptions: int = 0
    invoices: int = 0
    payments: int = 0
    analytics_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by table."""
        return asdict(self)


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert(session: Session, model: Any, rows: Iterator[dict[str, Any]]) -> int:
    table: Table = model.__table__
    count = 0
    for batch in _chunks(rows):
        session.execute(insert(table), batch)
        count += len(batch)
    return count


def _hash(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def seed(
    engine: Engine, users: int = 1000, hours: int = 48, now: datetime | None = None, seed_value: int = 7
) -> Seeded:
    """Add ``users`` users with profiles, sessions, tokens, subscriptions, invoices and payments,
    and ``hours`` hours of analytics rows; returns what was added."""
    rng = random.Random(seed_value)
    now = now or datetime.now(UTC)
    naive = engine.dialect.name in ("sqlite", "mysql")

    def at(moment: datetime) -> datetime:
        return moment.replace(tzinfo=None) if naive else moment

    tag = uuid.uuid4().hex[:8]
    out = Seeded()
    with Session(engine) as session, session.begin():
        first_id = (session.scalar(select(func.max(User.id))) or 0) + 1
        ids = range(first_id, first_id + users)
        out.users = _insert(
            session,
            User,
            (
                {
                    "id": i,
                    "email": f"user{i}-{tag}@example.com",
                    "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    "webhook_url": None,
                    "created_at": at(
                        now - timedelta(days=rng.randint(0, 720), seconds=rng.randint(0, 86399))
                    ),
                }
                for i in ids
            ),
        )
        out.profiles = _insert(
            session,
            UserProfile,
            (
                {"user_id": i, "display_name": f"user {i}", "bio": "", "created_at": at(now)}
                for i in ids
                if i % 2
            ),
        )
        out.sessions = _insert(
            session,
            UserSession,
            (
                {
                    "user_id": i,
                    "token_hash": _hash(tag, "session", i, n),
                    "created_at": at(now - timedelta(days=age + 1)),
                    "last_seen_at": at(now - timedelta(days=age)),
                }
                for i in ids
                for n, age in enumerate((0, rng.randint(1, 20), rng.randint(31, 120)))
            ),
        )
        out.tokens = _insert(
            session,
            AuthToken,
            (
                {
                    "user_id": i,
                    "kind": kind,
                    "token_hash": _hash(tag, kind, i),
                    "created_at": at(now - timedelta(days=40)),
                    "expires_at": at(now + timedelta(days=rng.choice((-10, -1, 5, 30)))),
                }
                for i in ids
                for kind in ("api", "refresh")
            ),
        )
        plans = {i: rng.choice(PLANS) for i in ids}
        out.subscriptions = _insert(
            session,
            Subscription,
            (
                {
                    "id": i,
                    "user_id": i,
                    "plan": plans[i][0],
                    "amount_minor": plans[i][1],
                    "currency": plans[i][2],
                    "status": "active" if i % 5 else "cancelled",
                    "created_at": at(now - timedelta(days=100)),
                }
                for i in ids
            ),
        )
        months = [(now.replace(day=1) - timedelta(days=28 * k)).strftime("%Y-%m") for k in (1, 2)]
        out.invoices = _insert(
            session,
            Invoice,
            (
                {
                    "subscription_id": i,
                    "month": month,
                    "amount_minor": plans[i][1],
                    "currency": plans[i][2],
                    "created_at": at(now - timedelta(days=28 * k + 1)),
                    "emailed_at": at(now - timedelta(days=28 * k)),
                }
                for i in ids
                for k, month in enumerate(months, start=1)
            ),
        )
        out.payments = _insert(
            session,
            Payment,
            (
                {
                    "payment_id": f"seed-{tag}-{i}",
                    "amount_minor": plans[i][1],
                    "currency": plans[i][2],
                    "status": "approved" if i % 7 else "declined",
                    "gateway_reference": f"ch_{tag}_{i}",
                    "decline_code": None if i % 7 else "insufficient_funds",
                    "decline_message": None,
                    "recorded_at": at(now - timedelta(days=rng.randint(0, 60))),
                }
                for i in ids
            ),
        )
        top = now.replace(minute=0, second=0, microsecond=0)
        windows = [top - timedelta(hours=h) for h in range(1, hours + 1)]
        taken = (
            set(
                session.scalars(
                    select(RequestRollup.window_start).where(RequestRollup.window_start >= at(windows[-1]))
                )
            )
            if windows
            else set()
        )
        fresh = [w for w in windows if at(w) not in taken and w.replace(tzinfo=None) not in taken]
        out.analytics_rows = _insert(
            session,
            RequestRollup,
            (
                {"window_start": at(w), "method": m, "route": r, "status": s, "requests": rng.randint(1, 500)}
                for w in fresh
                for r in ROUTES
                for m, s in (("GET", 200), ("POST", 202), ("GET", 404), ("POST", 500))
            ),
        )
        out.analytics_rows += _insert(
            session,
            LatencyRollup,
            (
                {
                    "window_start": at(w),
                    "route": r,
                    "requests": 100,
                    "mean_ms": 12.0,
                    "p50_ms": 8.0 + rng.random(),
                    "p95_ms": 40.0 + 20 * rng.random(),
                    "p99_ms": 90.0 + 50 * rng.random(),
                }
                for w in fresh
                for r in ROUTES
            ),
        )
        out.analytics_rows += _insert(
            session,
            JobRollup,
            (
                {
                    "window_start": at(w),
                    "task": t,
                    "succeeded": rng.randint(10, 1000),
                    "failed": rng.randint(0, 10),
                    "retried": rng.randint(0, 20),
                    "other": 0,
                    "mean_s": 0.2,
                    "p50_s": 0.1,
                    "p95_s": 0.8 + rng.random(),
                    "p99_s": 2.0 + rng.random(),
                }
                for w in fresh
                for t in TASKS
            ),
        )
    return out


#: What ``scripts/run`` prints on a first run, while the database has no users.
FIRST_RUN_HINT = (
    "first run: the database has no users yet; send_notification and the data tasks need some.\n"
    "  Add 1,000 users and 48 h of activity from another terminal, in this folder:\n"
    "    . .venv/bin/activate && flask seed"
)


def first_run_hint(engine: Engine) -> str | None:
    """:data:`FIRST_RUN_HINT` while the ``users`` table is empty (or missing), else None."""
    try:
        with engine.connect() as conn:
            has_users = conn.execute(select(User.id).limit(1)).first() is not None
    except DBAPIError:  # no table yet (migrations not run): nothing seeded either
        has_users = False
    return None if has_users else FIRST_RUN_HINT


def main() -> None:
    """``python -m app.surfaces.seed --first-run-hint``: print the hint when the database has no users."""
    if sys.argv[1:] != ["--first-run-hint"]:
        sys.exit("usage: python -m app.surfaces.seed --first-run-hint  (flask seed adds the data)")
    engine = make_engine(load_or_exit(process="run").database_url)
    try:
        hint = first_run_hint(engine)
    finally:
        engine.dispose()
    if hint:
        print(hint)


if __name__ == "__main__":
    main()
