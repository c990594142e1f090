"""The ten data tasks through the release step, `flask seed` and a real worker.py, per engine.

SQLite runs in the default suite; PostgreSQL and MariaDB (each in a database of its own,
dropped afterwards) run with --long, as does the 100,000-row export.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.factory import create_app
from app.foundation.models import Invoice, JobRollup, Subscription, UserProfile
from tests.conftest import make_env
from tests.databases import client_tool, database
from tests.databases import migrate as migrate_in_process
from tests.peers import SmtpPeer, engine_for, migrate
from tests.servers import FINAL, Starter, enqueue, start_worker, wait_state

ENGINE_PARAMS = [
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=pytest.mark.long),
    pytest.param("mariadb", marks=pytest.mark.long),
]


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        if url is None:
            pytest.skip(f"{request.param} is not reachable on 127.0.0.1")
        yield url


@pytest.fixture
def smtp(smtp_peer: Callable[..., SmtpPeer]) -> SmtpPeer:
    return smtp_peer()


@pytest.fixture
def env(tmp_path: Path, redis_url: str, db_url: str, smtp: SmtpPeer, certificates: Any) -> dict[str, str]:
    return make_env(
        tmp_path,
        redis_url,
        DATABASE_URL=db_url,
        SMTP_URL=smtp.url,
        SSL_CERT_FILE=str(certificates.ca),
        LOG_LEVEL="WARNING",
    )


@pytest.fixture
def app(env: dict[str, str]) -> Flask:
    return create_app(env)


def run_flask(start: Starter, *args: str) -> str:
    proc = start("-m", "flask", "--app", "app.factory:create_app", *args)
    assert start.wait(proc, 120) == 0, start.output(proc)
    return start.output(proc)


def wait_all(
    client: FlaskClient, auth: dict[str, str], jobs: dict[str, str], timeout: float
) -> dict[str, Any]:
    return {name: wait_state(client, auth, job, FINAL, timeout=timeout) for name, job in jobs.items()}


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_url", ENGINE_PARAMS, indirect=True)
def test_all_ten_data_tasks_through_a_worker(
    db_url: str,
    env: dict[str, str],
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    smtp: SmtpPeer,
    app: Flask,
) -> None:
    """Migrated and seeded by `flask seed`, every data task succeeds through worker.py (fork mode);
    an unknown user fails at once, without retries, and is listed in the dead-letter view."""
    engine_name = "mariadb" if db_url.startswith("mysql") else db_url.split(":", 1)[0].split("+")[0]
    if engine_name != "sqlite" and client_tool(engine_name) is None:
        pytest.skip(f"no dump tool for {engine_name}")
    migrate_in_process(db_url)
    out = app.test_cli_runner().invoke(args=["seed", "--users", "20", "--hours", "30"])
    assert out.exit_code == 0, out.output
    seeded = json.loads(out.stdout)
    assert seeded["added"]["users"] == 20 and seeded["added"]["analytics_rows"] == 30 * (20 + 5 + 5)
    start_worker(start, rconn)
    engine = engine_for(env)
    with Session(engine) as session:
        first_user = session.scalar(select(func.min(Subscription.user_id)))
        active = session.scalar(select(func.count()).where(Subscription.status == "active"))
    (Path(env["VAR_DIR"]) / "tmp").mkdir(parents=True, exist_ok=True)

    unknown = enqueue(client, auth, "update_user_stats", {"user_id": 987654})
    jobs = {
        "update_user_stats": enqueue(client, auth, "update_user_stats", {"user_id": first_user}),
        "create_user_profile": enqueue(client, auth, "create_user_profile", {"user_id": first_user}),
        "cleanup_old_sessions": enqueue(client, auth, "cleanup_old_sessions", {"days": 30}),
        "cleanup_expired_tokens": enqueue(client, auth, "cleanup_expired_tokens", {}),
        "cleanup_expired_data": enqueue(client, auth, "cleanup_expired_data", {"max_age_hours": 1}),
        "generate_report": enqueue(
            client, auth, "generate_report", {"report_type": "usage", "period": "day"}
        ),
        "process_batch_export": enqueue(
            client, auth, "process_batch_export", {"entity": "users", "requested_by": "ops@example.com"}
        ),
        "generate_monthly_invoices": enqueue(client, auth, "generate_monthly_invoices", {"month": "2030-01"}),
        "backup_database": enqueue(client, auth, "backup_database", {"retention_days": 7}),
    }
    failed = wait_state(client, auth, unknown, FINAL)
    assert failed["state"] == "FAILURE" and failed["retries"] == 0, failed
    assert failed["error"]["type"] == "UnknownUser"
    dead = client.get("/api/v1/jobs?state=FAILURE&task=update_user_stats", headers=auth).get_json()
    assert [j["job_id"] for j in dead["jobs"]] == [unknown]

    done = wait_all(client, auth, jobs, timeout=90)
    for name, view in done.items():
        assert view["state"] == "SUCCESS", (name, view)
    result = {name: view["result"] for name, view in done.items()}
    assert result["update_user_stats"]["login_count"] == 1
    assert result["create_user_profile"]["status"] == "already_exists"  # seeded: the first user has one
    assert result["cleanup_old_sessions"]["deleted"] == 20  # one seeded session per user is 31+ days old
    assert result["cleanup_expired_tokens"]["deleted"] > 0
    assert result["generate_report"]["status"] == "complete" and result["generate_report"]["rows"] == 23 * 20
    assert all(Path(f).exists() for f in result["generate_report"]["files"])
    export = result["process_batch_export"]
    assert export["rows"] == 20 and done["process_batch_export"]["progress"]["current"] == 20
    with open(export["file"]) as handle:
        assert len(list(csv.reader(handle))) == 21
    invoices = result["generate_monthly_invoices"]
    assert invoices["created"] == invoices["emailed"] == active and invoices["failed"] == []
    backup = result["backup_database"]
    assert Path(backup["file"]).stat().st_size == backup["bytes"] > 0
    assert backup["engine"] == ("mysql" if engine_name == "mariadb" else engine_name)
    with Session(engine) as session:
        assert (
            session.scalar(select(func.count()).select_from(Invoice).where(Invoice.month == "2030-01"))
            == active
        )
        assert session.scalar(select(func.count()).select_from(UserProfile)) == 10
    mailed = sorted(m.rcpt_tos[0] for m in smtp.received)
    assert mailed.count("ops@example.com") == 1 and len(mailed) == active + 1

    # The hour's job outcomes, rolled up by a worker: every task above, counted once, twice over.
    window = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime())
    rolled = [enqueue(client, auth, "analytics_aggregation", {"window": window}) for _ in range(2)]
    views = wait_all(client, auth, dict(zip(("first", "second"), rolled, strict=True)), timeout=30)
    assert views["first"]["state"] == views["second"]["state"] == "SUCCESS"
    # The second also counts the first (a job of this hour): same windows, one more task row.
    assert views["second"]["result"]["job_rows"] == views["first"]["result"]["job_rows"] + 1
    with Session(engine) as session:
        rows = {r.task: r for r in session.scalars(select(JobRollup).where(JobRollup.task.in_(list(jobs))))}
        assert rows["update_user_stats"].succeeded == 1 and rows["update_user_stats"].failed == 1
        assert rows["backup_database"].succeeded == 1 and rows["backup_database"].p50_s > 0
    engine.dispose()


def insert_users(engine: Any, count: int) -> None:
    """``count`` users through Core bulk inserts (no per-row validation: the addresses are well-formed)."""
    from sqlalchemy import insert

    from app.foundation.models import User

    with Session(engine) as session, session.begin():
        for first in range(0, count, 5000):
            session.execute(
                insert(User),
                [
                    {"email": f"bulk{n}@example.com", "name": f"Bulk User {n}"}
                    for n in range(first, min(count, first + 5000))
                ],
            )


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("db_url", "rows"),
    [
        pytest.param("sqlite", 10_000, id="sqlite-10k", marks=pytest.mark.long),
        pytest.param("sqlite", 100_000, id="sqlite-100k", marks=pytest.mark.long),
        pytest.param("postgresql", 100_000, id="postgresql-100k", marks=pytest.mark.long),
        pytest.param("mariadb", 100_000, id="mariadb-100k", marks=pytest.mark.long),
    ],
    indirect=["db_url"],
)
def test_export_streams_rows_in_constant_memory(
    db_url: str,
    rows: int,
    env: dict[str, str],
    start: Starter,
    rconn: redis.Redis,
    client: FlaskClient,
    auth: dict[str, str],
    smtp: SmtpPeer,
) -> None:
    """A worker's export writes every row, reports progress per batch of 1000, and its work horse's
    resident memory grows by far less than the rows would take if held at once."""
    migrate(start)
    engine = engine_for(env)
    insert_users(engine, rows)
    engine.dispose()
    start_worker(start, rconn)
    job = enqueue(
        client, auth, "process_batch_export", {"entity": "users", "requested_by": "ops@example.com"}
    )
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        view = client.get(f"/api/v1/jobs/{job}", headers=auth).get_json()
        if view["progress"]:
            seen.append(view["progress"]["current"])
        if view["state"] in FINAL:
            break
        time.sleep(0.05)
    assert view["state"] == "SUCCESS", view
    result = view["result"]
    assert result["rows"] == rows and view["progress"] == {
        "current": rows,
        "total": rows,
        "percent": 100.0,
        "stage": "export",
    }
    assert all(n % 1000 == 0 or n == rows for n in seen) and seen == sorted(seen)
    with open(result["file"]) as handle:
        assert sum(1 for _ in handle) == rows + 1
    growth = result["memory"]["rss_peak_bytes"] - result["memory"]["rss_start_bytes"]
    print(
        f"\nexport {db_url.split(':')[0]} {rows} rows: {result['rows_per_second']} rows/s, "
        f"{result['bytes']} bytes, RSS start {result['memory']['rss_start_bytes'] >> 20} MiB, "
        f"peak growth {growth / 2**20:.1f} MiB"
    )
    assert growth < 32 * 2**20, result["memory"]
    (mail,) = smtp.received
    assert mail.rcpt_tos == ["ops@example.com"]
