"""The database layer: engines never share a connection across a fork; dialect upserts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session

from app.foundation.db import insert_ignore, make_engine, upsert
from app.foundation.models import User, UserStats
from tests.databases import ENGINES, database


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as made:
        if made is None:
            pytest.skip(f"{request.param} is not reachable on 127.0.0.1")
        yield made


def test_a_forked_child_opens_its_own_connection(url: str) -> None:
    """A child forked while the parent's pool holds a connection opens a new one (another server session)."""
    if url.startswith("sqlite"):
        pytest.skip("SQLite has no server session to compare")
    engine = make_engine(url)
    query = "SELECT pg_backend_pid()" if url.startswith("postgresql") else "SELECT CONNECTION_ID()"
    with engine.connect() as conn:
        parent_session = conn.execute(text(query)).scalar()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its session id, never run the parent's teardown
        try:
            with engine.connect() as conn:
                os.write(write, str(conn.execute(text(query)).scalar()).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_session = int(os.read(read, 64).decode())
    os.waitpid(pid, 0)
    with engine.connect() as conn:  # the parent's pooled connection still works after the fork
        assert conn.execute(text(query)).scalar() == parent_session
    assert child_session != parent_session
    engine.dispose()


def test_insert_ignore_and_upsert(url: str) -> None:
    """insert_ignore says whether the row went in; upsert replaces values and adds increments."""
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        user = User(email="a@example.com", name="A")
        session.add(user)
        session.flush()
        uid = user.id
        table: Table = UserStats.__table__  # type: ignore[assignment]
        assert insert_ignore(session, table, {"user_id": uid, "login_count": 5}, ("user_id",)) is True
        assert insert_ignore(session, table, {"user_id": uid, "login_count": 9}, ("user_id",)) is False
        upsert(session, table, [{"user_id": uid, "login_count": 2}], ("user_id",), increment=("login_count",))
    with Session(engine) as session:
        assert session.scalar(select(UserStats.login_count)) == 7
    engine.dispose()
