"""The SQL database: one SQLAlchemy engine per process, SQLite by default."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's directory is created when missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return create_engine(url, connect_args={"timeout": 15})
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)


def ping(engine: Engine) -> None:
    """Run ``SELECT 1`` (raises on any database error)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
