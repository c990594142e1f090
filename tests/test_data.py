"""The data tasks, called in-process against SQLite, PostgreSQL and MariaDB (when reachable).

The tasks run inside an app built for the test's database and the session's real Redis;
mail goes to an aiosmtpd server on loopback. The same tasks through real workers are in
test_data_integration.py.
"""

from __future__ import annotations

import csv
import email
import email.policy
import gzip
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session

from app.catalogue.registry import SoftTimeLimitExceeded
from app.core.limits import TaskTimeLimits
from app.factory import create_app
from app.foundation import keys
from app.foundation.models import (
    AuthToken,
    Base,
    Invoice,
    JobRollup,
    LatencyRollup,
    RequestRollup,
    Subscription,
    User,
    UserSession,
    UserStats,
)
from app.ops import metrics
from app.ops.metrics import RequestStats
from app.surfaces.seed import seed
from app.tasks import reports
from app.tasks.backup import BackupFailed, BackupToolMissing, backup_database
from app.tasks.data import (
    UnknownUser,
    analytics_aggregation,
    cleanup_expired_data,
    cleanup_expired_tokens,
    cleanup_old_sessions,
    create_user_profile,
    generate_monthly_invoices,
    update_user_stats,
)
from app.tasks.reports import generate_report, process_batch_export
from tests.conftest import make_env
from tests.databases import (
    client_tool,
    create_database,
    drop_database,
    fresh_engine,
    unique_name,
)
from tests.peers import SmtpPeer


@pytest.fixture
def smtp(smtp_peer: Callable[..., SmtpPeer], certificates: Any, monkeypatch: pytest.MonkeyPatch) -> SmtpPeer:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))
    return smtp_peer()


@pytest.fixture
def data_app(tmp_path: Path, redis_url: str, db_url: str, smtp: SmtpPeer) -> Iterator[Flask]:
    """An app on the test's database, Redis and SMTP server; its context is pushed."""
    app = create_app(make_env(tmp_path, redis_url, DATABASE_URL=db_url, SMTP_URL=smtp.url))
    with app.app_context():
        yield app
    app.extensions["tasklane"].close()


def engine_of(app: Flask) -> Engine:
    return app.extensions["tasklane"].engine


def naive(engine: Engine, moment: datetime) -> datetime:
    return moment.replace(tzinfo=None) if engine.dialect.name in ("sqlite", "mysql") else moment


def add_users(engine: Engine, count: int) -> list[int]:
    with Session(engine) as session, session.begin():
        users = [User(email=f"u{n}@example.com", name=f"User {n}") for n in range(count)]
        session.add_all(users)
        session.flush()
        return [u.id for u in users]


def table_rows(engine: Engine, model: Any) -> list[tuple[Any, ...]]:
    table = getattr(model, "__table__", model)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*table.c).order_by(*table.primary_key.columns))]


# --- users -----------------------------------------------------------------------------------------


def test_user_stats_and_profile(data_app: Flask) -> None:
    """It counts logins per user atomically, refuses an unknown user, and creates a profile only once."""
    engine = engine_of(data_app)
    alice, bob = add_users(engine, 2)
    first = update_user_stats(alice)
    second = update_user_stats(alice)
    update_user_stats(bob)
    assert (first["login_count"], second["login_count"]) == (1, 2)
    assert datetime.fromisoformat(second["last_activity"]) >= datetime.fromisoformat(first["last_activity"])
    assert datetime.now(UTC) - datetime.fromisoformat(second["last_activity"]) < timedelta(minutes=1)
    assert [(r[0], r[1]) for r in table_rows(engine, UserStats)] == [(alice, 2), (bob, 1)]
    with pytest.raises(UnknownUser, match="no user with id 999999"):
        update_user_stats(999999)

    made = create_user_profile(alice, bio="hello")
    again = create_user_profile(alice, bio="other")
    assert made["status"] == "created" and again == {**made, "status": "already_exists"}
    with pytest.raises(UnknownUser):
        create_user_profile(999999)


# --- cleanups --------------------------------------------------------------------------------------


def test_cleanups_delete_in_batches_and_count(data_app: Flask) -> None:
    """It deletes only sessions older than N days and expired tokens, past one batch of 1000; counts them."""
    engine = engine_of(data_app)
    (user,) = add_users(engine, 1)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        session.execute(
            insert(UserSession),
            [
                {
                    "user_id": user,
                    "token_hash": f"s{n}",
                    "created_at": naive(engine, now - timedelta(days=90)),
                    "last_seen_at": naive(engine, now - timedelta(days=31 if n < 1500 else 29)),
                }
                for n in range(1600)
            ],
        )
        session.execute(
            insert(AuthToken),
            [
                {
                    "user_id": user,
                    "kind": "api" if n % 2 else "refresh",
                    "token_hash": f"t{n}",
                    "created_at": naive(engine, now - timedelta(days=9)),
                    "expires_at": naive(engine, now + timedelta(hours=-1 if n < 1200 else 1)),
                }
                for n in range(1300)
            ],
        )
    assert cleanup_old_sessions(days=30) == {"deleted": 1500, "older_than_days": 30}
    assert cleanup_old_sessions(days=30)["deleted"] == 0
    assert len(table_rows(engine, UserSession)) == 100
    assert cleanup_old_sessions(days=1)["deleted"] == 100
    assert cleanup_expired_tokens() == {"deleted": 1200}
    assert {r[3] for r in table_rows(engine, AuthToken)} == {f"t{n}" for n in range(1200, 1300)}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cleanup_expired_data(data_app: Flask, rconn: redis.Redis, tmp_path: Path) -> None:
    """It removes cache keys that never expire (SCAN over the cache prefixes) and old temp files only."""
    rconn.set(keys.cache("leaked"), "x")
    rconn.set(keys.model_cache("ollama"), "[]")
    rconn.set(keys.cache("fresh"), "x", ex=600)
    rconn.set("tasklane:health:latest", "{}")  # not a cache key
    rconn.set("someone-else:key", "x")
    temp = data_app.extensions["tasklane"].settings.temp_dir
    (temp / "nested").mkdir(parents=True)
    old, new = temp / "nested" / "old.bin", temp / "new.bin"
    old.write_bytes(b"x" * 100)
    new.write_bytes(b"y")
    past = time.time() - 3 * 3600
    os.utime(old, (past, past))
    result = cleanup_expired_data(max_age_hours=2)
    assert result["temp_files_deleted"] == 1 and result["temp_bytes_freed"] == 100
    assert not old.exists() and new.exists()
    assert result["cache_keys_examined"] == 3 and result["cache_keys_deleted"] == 0  # touched just now
    result = cleanup_expired_data(max_age_hours=0)
    assert result["cache_keys_deleted"] == 2 and result["temp_files_deleted"] == 1
    assert sorted(k.decode() for k in rconn.keys("*")) == [
        "someone-else:key",
        keys.cache("fresh"),
        "tasklane:health:latest",
    ]


# --- analytics -------------------------------------------------------------------------------------


def test_analytics_aggregation_is_idempotent(data_app: Flask, rconn: redis.Redis) -> None:
    """It rolls this hour's request and job metrics into rows; twice: same rows; new data updates them."""
    engine = engine_of(data_app)
    stats = RequestStats(rconn)
    for n in range(40):
        stats.observe("GET", "/api/v1/jobs/<job_id>", 200 if n < 38 else 404, 0.004 if n < 30 else 0.2)
    stats.observe("POST", "/api/v1/tasks/<name>", 202, 0.03)
    stats.flush()
    with rconn.pipeline() as pipe:
        for n in range(10):
            metrics.record_job(pipe, "add", "success", 0.002 if n < 9 else 3.0)
        metrics.record_job(pipe, "add", "failure", 0.5)
        metrics.record_job(pipe, "send_welcome_email", "retry", 1.0)
        pipe.execute()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = hour.isoformat()
    assert rconn.ttl(keys.hourly_jobs(hour.strftime("%Y%m%d%H"))) > 7 * 24 * 3600

    first = analytics_aggregation(window)
    assert first["requests"] == 41 and first["jobs"] == 12
    assert (first["request_rows"], first["latency_rows"], first["job_rows"]) == (3, 2, 2)
    snapshot = [table_rows(engine, m) for m in (RequestRollup, LatencyRollup, JobRollup)]
    assert analytics_aggregation(window) == first
    assert [table_rows(engine, m) for m in (RequestRollup, LatencyRollup, JobRollup)] == snapshot

    with Session(engine) as session:
        add = session.scalars(select(JobRollup).where(JobRollup.task == "add")).one()
        assert (add.succeeded, add.failed, add.retried) == (10, 1, 0)
        assert add.p50_s <= 0.005 and 2.5 <= add.p99_s <= 5.0
        latency = session.scalars(
            select(LatencyRollup).where(LatencyRollup.route == "/api/v1/jobs/<job_id>")
        ).one()
        assert latency.requests == 40 and latency.p50_ms <= 5.0 and 100 <= latency.p95_ms <= 250
        counts = dict(
            session.execute(
                select(RequestRollup.status, RequestRollup.requests).where(
                    RequestRollup.route == "/api/v1/jobs/<job_id>"
                )
            ).all()
        )
        assert counts == {200: 38, 404: 2}

    stats.observe("GET", "/api/v1/jobs/<job_id>", 404, 0.01)
    stats.flush()
    assert analytics_aggregation(window)["requests"] == 42
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(RequestRollup)) == 3
        assert session.scalar(select(RequestRollup.requests).where(RequestRollup.status == 404)) == 3
    empty_hour = analytics_aggregation((hour - timedelta(hours=5)).isoformat())
    assert empty_hour["request_rows"] == empty_hour["job_rows"] == 0


# --- reports ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report_type", "period", "expected", "summary"),
    [("usage", "day", 23 * 5 * 4, 5), ("jobs", "week", 30 * 5, 5), ("billing", "month", 50, 1)],
)
def test_generate_report_writes_csv_and_pdf(
    data_app: Flask, report_type: str, period: str, expected: int, summary: int
) -> None:
    """It writes a CSV of the period's rows and a PDF with a table and a chart into REPORTS_DIR."""
    engine = engine_of(data_app)
    seed(engine, users=50, hours=30)
    result = generate_report(report_type, period)
    assert result["status"] == "complete", result
    csv_path, pdf_path = (Path(f) for f in result["files"])
    reports_dir = data_app.extensions["tasklane"].settings.reports_dir
    assert csv_path.parent == reports_dir and csv_path.suffix == ".csv" and pdf_path.suffix == ".pdf"
    with csv_path.open() as handle:
        lines = list(csv.reader(handle))
    # The seeded hours end an hour before now: 23 of them in the last day. Invoices: 29 days old.
    assert len(lines) - 1 == result["rows"] == expected
    body = pdf_path.read_bytes()
    assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF")
    assert result["summary_rows"] >= summary
    assert not list(reports_dir.glob(".*.part"))


def test_a_soft_limit_between_a_row_written_and_counted_leaves_the_count_true(
    data_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soft limit is raised asynchronously: here it lands just after the 7th row is written
    and before it is counted, with an 8th row's first bytes already out. The partial CSV keeps
    the 7 whole rows and says 7 (CI once saw a file with one more row than the result claimed)."""
    engine = engine_of(data_app)
    seed(engine, users=2, hours=24)

    class LimitAfterAWrite:
        def __init__(self, handle: Any) -> None:
            self.inner, self.handle, self.rows = csv.writer(handle), handle, 0

        def writerow(self, row: list[str]) -> None:
            self.inner.writerow(row)
            self.rows += 1
            if self.rows == 8:  # the header and 7 rows
                self.handle.write("2026-01-01T00:00:00Z,GET,/api/v1/jo")
                raise SoftTimeLimitExceeded("soft time limit exceeded")

    monkeypatch.setattr(reports, "csv", SimpleNamespace(writer=LimitAfterAWrite, reader=csv.reader))
    result = generate_report("usage", "month")
    assert result["status"] == "partial" and result["stopped_in"] == "csv", result
    (partial,) = result["files"]
    with open(partial, newline="") as handle:
        lines = list(csv.reader(handle))
    assert result["rows"] == len(lines) - 1 == 7
    assert all(len(line) == len(lines[0]) for line in lines)
    assert Path(partial).read_bytes().endswith(b"\r\n")


def test_generate_report_past_soft_limit_is_partial(data_app: Flask) -> None:
    """Past its soft time limit it stops, keeps the rows written so far, and returns status partial."""
    engine = engine_of(data_app)
    seed(engine, users=10, hours=24 * 12)  # 5,760 usage rows in the month
    with TaskTimeLimits(30, soft_timeout=0.02):
        result = generate_report("usage", "month")
    assert result["status"] == "partial" and result["stopped_in"] in ("csv", "pdf"), result
    for name in result["files"]:
        assert Path(name).exists()
    if result["stopped_in"] == "csv":
        (partial,) = result["files"]
        assert partial.endswith(".partial.csv")
        with open(partial) as handle:
            assert len(list(csv.reader(handle))) - 1 == result["rows"] < 5_760
    reports_dir = data_app.extensions["tasklane"].settings.reports_dir
    assert not list(reports_dir.glob(".*.part"))


# --- exports ---------------------------------------------------------------------------------------


def test_process_batch_export_streams_and_mails(data_app: Flask, smtp: SmtpPeer) -> None:
    """It writes every matching row in batches to a CSV under EXPORTS_DIR and mails its location."""
    engine = engine_of(data_app)
    with Session(engine) as session, session.begin():
        session.execute(insert(User), [{"email": f"x{n}@example.com", "name": f"X {n}"} for n in range(1500)])
        ids = list(session.scalars(select(User.id).order_by(User.id)))
        session.execute(
            insert(Subscription),
            [
                {"user_id": i, "plan": "team", "amount_minor": 4900, "currency": "USD", "status": "active"}
                if n % 5
                else {
                    "user_id": i,
                    "plan": "team",
                    "amount_minor": 4900,
                    "currency": "USD",
                    "status": "cancelled",
                }
                for n, i in enumerate(ids)
            ],
        )
    result = process_batch_export("users", "ops@example.com")
    path = Path(result["file"])
    assert path.parent == data_app.extensions["tasklane"].settings.exports_dir
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [c.name for c in User.__table__.c] and len(rows) - 1 == result["rows"] == 1500
    assert len({r[0] for r in rows[1:]}) == 1500
    assert not list(path.parent.glob(".*.part"))
    (mail,) = smtp.received
    message = email.message_from_bytes(mail.content, policy=email.policy.default)
    text_part = message.get_body(("plain",))
    assert text_part is not None and str(path.resolve()) in text_part.get_content()
    assert mail.rcpt_tos == ["ops@example.com"] and "1500 rows" in text_part.get_content()

    active = process_batch_export("subscriptions", "ops@example.com", {"status": "cancelled"})
    assert active["rows"] == 300


# --- invoices --------------------------------------------------------------------------------------


def add_subscriptions(engine: Engine, count: int) -> list[int]:
    users = add_users(engine, count)
    with Session(engine) as session, session.begin():
        subs = [
            Subscription(user_id=u, plan="team", amount_minor=4900, currency="USD", status="active")
            for u in users
        ]
        subs.append(
            Subscription(user_id=users[0], plan="old", amount_minor=100, currency="USD", status="cancelled")
        )
        session.add_all(subs)
        session.flush()
        return [s.id for s in subs if s.status == "active"]


def test_invoices_twice_concurrently_once_each(data_app: Flask, smtp: SmtpPeer) -> None:
    """Two runs at once create one invoice per active subscription, and send each invoice's mail once."""
    engine = engine_of(data_app)
    active = add_subscriptions(engine, 20)
    results: list[dict[str, Any]] = []

    def run() -> None:
        with data_app.app_context():
            results.append(generate_monthly_invoices("2026-11"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and all(r["failed"] == [] for r in results), results
    assert sum(r["created"] for r in results) == 20
    assert sum(r["emailed"] for r in results) == 20
    rows = table_rows(engine, Invoice)
    assert sorted(r[1] for r in rows) == sorted(active) and {r[2] for r in rows} == {"2026-11"}
    assert all(r[6] is not None for r in rows)  # emailed_at
    assert len(smtp.received) == 20
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == sorted(f"u{n}@example.com" for n in range(20))

    again = generate_monthly_invoices("2026-11")
    assert (again["created"], again["already_existed"], again["emailed"]) == (0, 20, 0)
    assert len(table_rows(engine, Invoice)) == 20 and len(smtp.received) == 20


def test_invoices_one_failing_subscription_is_reported(data_app: Flask, smtp: SmtpPeer) -> None:
    """A subscription whose mail is refused is reported, the others invoiced and mailed; a rerun mails it."""
    engine = engine_of(data_app)
    add_subscriptions(engine, 5)
    smtp.refuse("u2@example.com", "550 5.1.1 no such mailbox")
    result = generate_monthly_invoices("2026-12")
    assert result["created"] == 5 and result["emailed"] == 4
    (failure,) = result["failed"]
    assert "PermanentMailError" in failure["error"] and "no such mailbox" in failure["error"]
    rerun = generate_monthly_invoices("2026-12")
    assert (rerun["created"], rerun["emailed"], rerun["failed"]) == (0, 1, [])
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == [f"u{n}@example.com" for n in range(5)]


# --- backups ---------------------------------------------------------------------------------------


def restore(url: str, dump: Path, directory: Path) -> str:
    """Restore ``dump`` into a fresh database of the same engine; that database's URL."""
    if url.startswith("sqlite"):
        target = directory / f"{unique_name('restored')}.db"
        with gzip.open(dump, "rb") as src:
            target.write_bytes(src.read())
        return f"sqlite:///{target}"
    fresh = url.rsplit("/", 1)[0] + "/" + unique_name("restored")
    create_database(fresh)
    name = fresh.rsplit("/", 1)[1]
    host_user = fresh.split("://", 1)[1].split("/", 1)[0]
    user, _, hostport = host_user.rpartition("@")
    host, _, port = hostport.partition(":")
    if url.startswith("postgresql"):
        command = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user, "-d", name]
    else:
        command = ["mariadb", "-h", host, "-P", port, "-u", user, name]
    with gzip.open(dump, "rb") as src:
        done = subprocess.run(command, input=src.read(), capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return fresh


def test_backup_restores_row_by_row(data_app: Flask, db_url: str, tmp_path: Path) -> None:
    """A backup restored into a fresh database equals it row by row in every table; old ones are pruned."""
    engine_name = "mariadb" if db_url.startswith("mysql") else db_url.split(":", 1)[0].split("+")[0]
    if engine_name != "sqlite" and client_tool(engine_name) is None:
        pytest.skip(f"no dump tool for {engine_name} (not root, or apt-get failed)")
    engine = engine_of(data_app)
    seed(engine, users=200, hours=5)
    backups = data_app.extensions["tasklane"].settings.backup_dir / "database"
    backups.mkdir(parents=True)
    stale = backups / "tasklane-20200101T000000Z.sql.gz"
    stale.write_bytes(b"old")
    result = backup_database(retention_days=30)
    dump = Path(result["file"])
    assert dump.parent == backups and result["bytes"] == dump.stat().st_size > 1000
    assert result["removed"] == [stale.name] and not stale.exists()
    assert sorted(p.name for p in backups.iterdir()) == [dump.name]

    restored_url = restore(db_url, dump, tmp_path)
    restored = fresh_engine(restored_url)
    try:
        for table in Base.metadata.sorted_tables:
            assert table_rows(restored, table) == table_rows(engine, table), table.name
        assert all(table_rows(restored, t) for t in (User, UserSession, AuthToken, Subscription, Invoice))
        with restored.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 200
    finally:
        restored.dispose()
        if not restored_url.startswith("sqlite"):
            drop_database(restored_url)


def test_backup_missing_tool_and_failed_dump(
    data_app: Flask, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing dump program is a failure naming it; a failed dump leaves no file behind."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite is backed up through Python's API: there is no program to miss")
    backups = data_app.extensions["tasklane"].settings.backup_dir / "database"
    monkeypatch.setenv("PATH", "/nonexistent")
    tool = "pg_dump" if db_url.startswith("postgresql") else "mariadb-dump nor mysqldump"
    with pytest.raises(BackupToolMissing, match=tool):
        backup_database()
    monkeypatch.undo()
    monkeypatch.setenv("SSL_CERT_FILE", "/dev/null")
    rt = data_app.extensions["tasklane"]
    broken = rt.settings.__class__(
        **{**rt.settings.__dict__, "database_url": db_url.rsplit("/", 1)[0] + "/no_such_db_x"}
    )
    monkeypatch.setattr(rt, "settings", broken)
    with pytest.raises(BackupFailed, match="exited with status"):
        backup_database()
    assert list(backups.iterdir()) == []
