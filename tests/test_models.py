"""The SQL schema: the migrations build exactly the models' tables; users' emails are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.foundation.db import make_engine
from app.foundation.models import Base, Payment, User

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite file migrated to head (migrations/env.py reads DATABASE_URL)."""
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("APP_ENV", raising=False)
    command.upgrade(alembic_config(), "head")
    return url


def alembic_config() -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return config


def test_migrations_build_the_models_tables(database_url: str) -> None:
    """It leaves no difference between the migrated database and the models, and downgrades cleanly."""
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert {"users", "payments"} <= set(inspect(conn).get_table_names())
    command.downgrade(alembic_config(), "0001")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_user_email_is_validated_and_normalised(database_url: str) -> None:
    """It stores a valid address normalised; it refuses a bad one, a second user with it, a 2-line name."""
    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        user = User(email="Bob@EXAMPLE.com", name="Bob", webhook_url="https://hooks.example/bob")
        session.add(user)
        session.flush()
        user_id = user.id
    with Session(engine) as session:
        assert session.get(User, user_id).email == "Bob@example.com"  # type: ignore[union-attr]
    for bad in ("no-at-sign", "a@b", "two@@example.com"):
        with pytest.raises(ValueError, match="invalid email address"):
            User(email=bad, name="X")
    with pytest.raises(ValueError, match="one line"):
        User(email="c@example.com", name="C\r\nBcc: all@example.com")
    with pytest.raises(ValueError, match="http"):
        User(email="c@example.com", name="C", webhook_url="ftp://hooks.example/")
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(User(email="Bob@example.COM", name="Bob again"))  # the same, normalised
    engine.dispose()


def test_one_payment_row_per_payment_id(database_url: str) -> None:
    """It refuses a second outcome for the same payment id, and a status other than approved/declined."""
    engine = make_engine(database_url)
    row = {"payment_id": "p-1", "amount_minor": 100, "currency": "USD"}
    with Session(engine) as session, session.begin():
        session.add(Payment(**row, status="approved"))
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(Payment(**row, status="declined"))
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(Payment(**{**row, "payment_id": "p-2"}, status="maybe"))
    engine.dispose()


def test_records_loaded_before_0005_are_carried_over_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading to 0005 turns each record of the fixed columns into its JSON object, and back."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("APP_ENV", raising=False)
    command.upgrade(alembic_config(), "0004_documents")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO file_imports (id, job_id, path, format, status, lines, loaded, rejected)"
                " VALUES (1, 'j', 'p', 'csv', 'completed', 1, 1, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO loaded_records (import_id, line, record_id, name, email, amount, day)"
                " VALUES (1, 2, 7, 'Ann', 'a@b.io', 1.5, '2026-01-02')"
            )
        )
    command.upgrade(alembic_config(), "head")
    with engine.connect() as conn:
        data = conn.execute(text("SELECT data FROM loaded_records")).scalar_one()
    assert json.loads(data) == {
        "id": 7,
        "name": "Ann",
        "email": "a@b.io",
        "amount": 1.5,
        "date": "2026-01-02",
    }
    command.downgrade(alembic_config(), "0004_documents")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT record_id, name, email, amount, day FROM loaded_records")).one()
    assert tuple(row) == (7, "Ann", "a@b.io", 1.5, "2026-01-02")
    engine.dispose()
