"""The SQL database: one SQLAlchemy engine per process, SQLite by default.

Connections never cross a fork: a pooled connection records the process that opened it
and a child that inherits the pool discards it instead of sharing the socket with its
parent (SQLAlchemy's recipe for multiprocessing), and every engine's pool is emptied
without closing in a freshly forked child. A worker therefore opens its own connections
whether it runs jobs inline, in threads, or in a forked work horse.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, event, exc, insert, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session

from app.foundation import defaults

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_inherited_pools() -> None:
    for engine in list(_engines):
        engine.dispose(close=False)  # the parent still uses those sockets: drop, don't close


os.register_at_fork(after_in_child=_forget_inherited_pools)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's directory is created when missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": defaults.SQLITE_BUSY_TIMEOUT})
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_size=defaults.DB_POOL_SIZE,
            max_overflow=defaults.DB_MAX_OVERFLOW,
            pool_timeout=defaults.DB_POOL_TIMEOUT,
        )
    _guard_pid(engine)
    _engines.add(engine)
    return engine


def _guard_pid(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _checkout(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError("a connection opened in another process is not reused")


def ping(engine: Engine) -> None:
    """Run ``SELECT 1`` (raises on any database error)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def dialect_of(bind: Engine | Connection | Session) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included)."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return str(engine.dialect.name)


def insert_ignore(session: Session, table: Table, row: Mapping[str, Any], keys: Sequence[str]) -> bool:
    """Insert ``row`` unless a row with the same ``keys`` (a unique constraint) exists; True if inserted.

    One statement whatever the race: PostgreSQL and SQLite ``ON CONFLICT DO NOTHING``,
    MySQL/MariaDB ``INSERT IGNORE``. Never a check-then-insert.
    """
    dialect = dialect_of(session)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**row).on_conflict_do_nothing(index_elements=list(keys))
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**row).on_conflict_do_nothing(index_elements=list(keys))
    else:
        stmt = insert(table).values(**row).prefix_with("IGNORE")
        return bool(session.execute(stmt).rowcount == 1)  # type: ignore[attr-defined]
    # RETURNING says whether a row went in (psycopg's rowcount is not reliable here).
    key = next(iter(table.primary_key.columns))
    return session.execute(stmt.returning(key)).first() is not None


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    increment: Sequence[str] = (),
) -> None:
    """Insert ``rows``, or update the existing row with the same ``keys`` to the new values.

    Columns named in ``increment`` are added to the stored value instead of replacing it.
    PostgreSQL and SQLite ``ON CONFLICT DO UPDATE``, MySQL/MariaDB ``ON DUPLICATE KEY UPDATE``.
    """
    if not rows:
        return
    dialect = dialect_of(session)
    columns = [c for c in rows[0] if c not in keys]
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        stmt: Any = dialect_insert(table).values(list(rows))
        new = stmt.excluded
        sets = {c: (table.c[c] + new[c]) if c in increment else new[c] for c in columns}
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=sets)
    else:
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(table).values(list(rows))
        new = stmt.inserted
        sets = {c: (table.c[c] + new[c]) if c in increment else new[c] for c in columns}
        stmt = stmt.on_duplicate_key_update(**sets)
    session.execute(stmt)
