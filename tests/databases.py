"""SQL databases for the data tasks' tests: SQLite always, PostgreSQL and MariaDB when reachable.

Each server engine gets a uniquely named database per test session (created here, dropped
at the end), so parallel runs on one machine never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from app.foundation.db import make_engine
from app.foundation.models import Base

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("sqlite", "postgresql", "mariadb")
#: Where the machine's servers listen, and as whom the tests connect (trust / empty password).
SERVERS = {
    "postgresql": ("127.0.0.1", 5432, ("postgres", "root")),
    "mariadb": ("127.0.0.1", 3306, ("root",)),
}
#: The Debian packages that bring each engine's client tools (psql/pg_dump, mariadb/mariadb-dump).
CLIENT_PACKAGES = {
    "postgresql": ("postgresql-client", "pg_dump"),
    "mariadb": ("mariadb-client", "mariadb-dump"),
}


def reachable(host: str, port: int) -> bool:
    """True when something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def server_url(engine: str, database: str) -> str | None:
    """A SQLAlchemy URL of ``database`` on the machine's server, or None when it is not reachable."""
    host, port, users = SERVERS[engine]
    if not reachable(host, port):
        return None
    for user in users:
        if engine == "postgresql":
            url = f"postgresql+psycopg://{user}@{host}:{port}/{database}"
        else:
            url = f"mysql+pymysql://{user}@{host}:{port}/{database}"
        try:
            probe = create_engine(url.rsplit("/", 1)[0] + ("/postgres" if engine == "postgresql" else "/"))
            with probe.connect() as conn:
                conn.execute(text("SELECT 1"))
            probe.dispose()
            return url
        except Exception:
            continue
    return None


def admin_engine(url: str) -> Engine:
    """An autocommit engine on the server (not on the test's database) to create and drop databases."""
    base = url.rsplit("/", 1)[0]
    if url.startswith("postgresql"):
        return create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    return create_engine(base + "/", isolation_level="AUTOCOMMIT")


def create_database(url: str) -> None:
    """CREATE DATABASE for the last part of ``url``."""
    name = url.rsplit("/", 1)[1]
    admin = admin_engine(url)
    with admin.connect() as conn:
        if url.startswith("postgresql"):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    admin.dispose()


def drop_database(url: str) -> None:
    """DROP DATABASE (closing others' connections on PostgreSQL)."""
    name = url.rsplit("/", 1)[1]
    admin = admin_engine(url)
    with admin.connect() as conn:
        if url.startswith("postgresql"):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def unique_name(prefix: str = "tasklane_test") -> str:
    """A database name no other test session uses."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def migrate(url: str) -> None:
    """``alembic upgrade head`` on ``url`` (migrations/env.py reads DATABASE_URL)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "APP_ENV")}
    os.environ["DATABASE_URL"] = url
    os.environ.pop("APP_ENV", None)
    try:
        command.upgrade(config, "head")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def database(engine: str, directory: Path) -> Iterator[str | None]:
    """A migrated, uniquely named database of ``engine`` (None when its server is unreachable)."""
    if engine == "sqlite":
        url = f"sqlite:///{directory / unique_name()}.db"
        migrate(url)
        yield url
        return
    url = server_url(engine, unique_name())
    if url is None:
        yield None
        return
    create_database(url)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(url)


def empty(engine: Engine) -> None:
    """Delete every row of every table (children first)."""
    with Session(engine) as session, session.begin():
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())


def client_tool(engine: str) -> str | None:
    """The dump tool for ``engine``; installed from Debian when missing and running as root, else None."""
    package, tool = CLIENT_PACKAGES[engine]
    found = shutil.which(tool) or (shutil.which("mysqldump") if engine == "mariadb" else None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300, check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    return shutil.which(tool)


def fresh_engine(url: str) -> Engine:
    """The application's engine for ``url``."""
    return make_engine(url)
