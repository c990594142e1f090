"""The SQL schema: SQLAlchemy 2 declarative models, migrated with Alembic (``alembic upgrade head``)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Base of every table; the catalogue's domain modules add theirs."""
