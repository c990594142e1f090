"""Alembic environment: the database URL comes from DATABASE_URL through app.config."""

from __future__ import annotations

from alembic import context

from app.foundation.config import load_or_exit
from app.foundation.db import make_engine
from app.foundation.models import Base

settings = load_or_exit(process="release")
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=settings.database_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
