"""Transactional enqueue: ``apply_async(..., session=...)`` on SQLite, PostgreSQL and MariaDB.

The job exists only if the caller's transaction commits, reaches Redis after the commit (at
once from the caller, or by the scheduler's relay when the caller died), and is pushed once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from flask import Flask
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session

from app import create_app
from app.calling.result import AsyncResult
from app.core import outbox
from app.core.queues import JsonJob
from app.foundation.models import OutboxEntry
from app.processes.scheduling import SchedulerProcess
from app.tasks import add
from tests.conftest import make_env
from tests.servers import ROOT, wait_for


@pytest.fixture
def env(tmp_path: Path, redis_url: str, db_url: str) -> dict[str, str]:
    return make_env(tmp_path, redis_url, DATABASE_URL=db_url)


@pytest.fixture
def db_app(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app


def engine_of(app: Flask) -> Engine:
    return app.extensions["tasklane"].engine


def in_redis(rconn: redis.Redis, job_id: str) -> bool:
    return bool(rconn.exists(f"rq:job:{job_id}"))


def outbox_rows(engine: Engine) -> int:
    """Committed rows of the outbox, as another connection sees them."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(OutboxEntry)) or 0)


def relay(app: Flask, rconn: redis.Redis) -> int:
    return outbox.relay(engine_of(app), rconn, app.extensions["tasklane"].settings)


def test_a_session_commit_pushes_at_once_and_a_rollback_leaves_nothing(
    db_app: Flask, rconn: redis.Redis
) -> None:
    """Inside the transaction the job is neither in Redis nor visible to others; the commit puts it
    in Redis before commit() returns; a rolled-back enqueue leaves no job and no row."""
    engine = engine_of(db_app)
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        result = add.apply_async((2, 3), session=session)
        assert isinstance(result, AsyncResult) and result.state == "PENDING"
        assert not in_redis(rconn, result.id) and outbox_rows(engine) == 0
        session.commit()
        assert in_redis(rconn, result.id)
    assert outbox_rows(engine) == 0
    with Session(engine) as session:
        dropped = add.apply_async((1, 1), session=session, countdown=5)
        session.rollback()
    assert not in_redis(rconn, dropped.id) and outbox_rows(engine) == 0
    assert relay(db_app, rconn) == 0 and not in_redis(rconn, dropped.id)


def test_a_connection_commit_pushes_after_it_and_a_rollback_leaves_nothing(
    db_app: Flask, rconn: redis.Redis
) -> None:
    """With a Connection: pushed when its next transaction begins, or when it goes back to the pool
    (``engine.begin()``); a rollback, or a connection closed uncommitted, leaves nothing."""
    engine = engine_of(db_app)
    with engine.connect() as conn:
        first = add.apply_async((1, 2), session=conn)
        assert not in_redis(rconn, first.id)
        conn.commit()
        conn.execute(text("SELECT 1"))  # the next transaction: the commit is done
        assert in_redis(rconn, first.id)
        rolled = add.apply_async((1, 3), session=conn)
        conn.rollback()
        left_open = add.apply_async((1, 4), session=conn)
    with engine.begin() as conn:
        second = add.apply_async(kwargs={"x": 2, "y": 2}, session=conn)
        assert not in_redis(rconn, second.id)
    wait_for(lambda: in_redis(rconn, second.id), 5, message="the push after the connection's return")
    wait_for(lambda: outbox_rows(engine) == 0, 5, message="the pushed rows to go")
    assert not in_redis(rconn, rolled.id) and not in_redis(rconn, left_open.id)
    assert relay(db_app, rconn) == 0


def test_pushing_a_row_twice_enqueues_it_once(db_app: Flask, rconn: redis.Redis) -> None:
    """The job id is the row's key: a row pushed again (by the relay racing the caller, or whose
    delete was lost) is only deleted; the queue holds one job."""
    engine = engine_of(db_app)
    settings = db_app.extensions["tasklane"].settings
    with Session(engine) as session:
        result = add.apply_async((5, 5), session=session)
        session.commit()
    with engine.begin() as conn:  # as if the delete after the push had been lost
        conn.execute(
            insert(OutboxEntry).values(job_id=result.id, task="add", kwargs='{"x":5,"y":5}', options="{}")
        )
    assert outbox.push(engine, rconn, settings, [result.id]) == 0
    assert relay(db_app, rconn) == 0 and outbox_rows(engine) == 0
    assert rconn.lrange("rq:queue:default", 0, -1) == [result.id.encode()]


CALLER = """
import os, signal, sys
from sqlalchemy import event, text
from sqlalchemy.orm import Session
from app.foundation.runtime import client_runtime
from app.tasks import add

with Session(client_runtime().engine) as session:
    session.execute(text("SELECT 1"))
    result = add.apply_async((20, 22), session=session)
    print(result.id, flush=True)
    if sys.argv[1] == "in-transaction":
        os.kill(os.getpid(), signal.SIGKILL)
    # Killed after the database's commit, before the push (the first after_commit handler).
    event.listen(session, "after_commit", lambda s: os.kill(os.getpid(), signal.SIGKILL), insert=True)
    session.commit()
"""


@pytest.mark.parametrize("when", ["in-transaction", "between-commit-and-push"])
def test_a_caller_killed_loses_and_duplicates_nothing(
    db_app: Flask, rconn: redis.Redis, env: dict[str, str], when: str
) -> None:
    """A caller killed (SIGKILL) inside its transaction leaves no job; one killed between the commit
    and the push leaves a row that the scheduler's relay pushes, once."""
    engine = engine_of(db_app)
    caller = subprocess.run(
        [sys.executable, "-c", CALLER, when],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert caller.returncode == -signal.SIGKILL, caller.stderr[-2000:]
    job_id = caller.stdout.strip()
    assert job_id and not in_redis(rconn, job_id)
    if when == "in-transaction":
        wait_for(lambda: outbox_rows(engine) == 0, 10, message="the dead caller's transaction to end")
        assert relay(db_app, rconn) == 0 and not in_redis(rconn, job_id)
        return
    assert outbox_rows(engine) == 1
    SchedulerProcess(rconn, settings=db_app.extensions["tasklane"].settings).tick()  # its sweep relays
    assert in_redis(rconn, job_id) and outbox_rows(engine) == 0
    assert relay(db_app, rconn) == 0
    assert rconn.lrange("rq:queue:default", 0, -1) == [job_id.encode()]


def test_a_commit_while_redis_is_unreachable_loses_nothing(
    tmp_path: Path, db_url: str, db_app: Flask, rconn: redis.Redis
) -> None:
    """The caller's commit succeeds though Redis cannot be reached (the push is logged and left);
    the relay pushes the row once Redis answers."""
    cut_off = create_app(make_env(tmp_path, "redis://127.0.0.1:1/0", DATABASE_URL=db_url))
    with cut_off.app_context(), Session(engine_of(cut_off)) as session:
        result = add.apply_async((3, 4), session=session)
        session.commit()
    cut_off.extensions["tasklane"].close()
    engine = engine_of(db_app)
    assert outbox_rows(engine) == 1 and not in_redis(rconn, result.id)
    assert relay(db_app, rconn) == 1
    assert in_redis(rconn, result.id) and outbox_rows(engine) == 0


def test_the_relay_outlives_a_database_it_cannot_read(
    tmp_path: Path, redis_url: str, rconn: redis.Redis
) -> None:
    """A database not migrated yet: the scheduler's relay pass logs and returns, never raises."""
    app = create_app(make_env(tmp_path, redis_url, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}"))
    with app.app_context():
        assert outbox.relay_pending(rconn) == 0


def test_session_must_be_a_connection_or_a_session(db_app: Flask) -> None:
    """Anything else is refused before a row is written."""
    with pytest.raises(TypeError, match="Connection or Session"):
        add.apply_async((1, 2), session=engine_of(db_app))  # type: ignore[arg-type]


def test_expires_counts_from_the_call_not_from_the_push(db_app: Flask, rconn: redis.Redis) -> None:
    """``expires`` in seconds is made a time when the row is written, as countdown is: a row pushed
    late (by the relay, say) keeps its expiry."""
    engine = engine_of(db_app)
    called = datetime.now(UTC)
    with Session(engine) as session:
        staged = add.apply_async((2, 3), session=session, expires=30)
        stored = session.scalar(select(OutboxEntry.options).where(OutboxEntry.job_id == staged.id))
        assert stored is not None and '"expires":"20' in stored  # an absolute time
        session.commit()
    expires = datetime.fromisoformat(JsonJob.fetch(staged.id, connection=rconn).meta["expires"])
    assert timedelta(seconds=29) <= expires - called <= timedelta(seconds=32)
