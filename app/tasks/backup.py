"""backup_database: the configured database dumped with its native tool, gzipped, kept N days.

PostgreSQL: ``pg_dump`` (plain SQL); MySQL/MariaDB: ``mariadb-dump`` or ``mysqldump``
(``--single-transaction``: a consistent snapshot without locking InnoDB tables); SQLite:
Python's online backup API (a consistent copy while others write). The dump streams
through gzip into ``BACKUP_DIR/database/.<name>.part`` and is renamed when complete, so a
failed dump leaves no file behind. The README lists each engine's restore command.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field
from sqlalchemy.engine import URL, make_url

from app.catalogue.registry import QueueName, RetryPolicy, Schedule, TaskInput, task
from app.foundation.runtime import runtime
from app.foundation.timeutil import stamp, utcnow

#: Bytes copied from the dump tool to gzip at a time.
CHUNK = 1024 * 1024
#: A backup file's name: ``<database>-<YYYYmmddTHHMMSSZ>.<ext>.gz``.
BACKUP_NAME = re.compile(r"^(?P<label>.+)-(?P<stamp>\d{8}T\d{6}Z)\.(sql|sqlite3)\.gz$")


class BackupToolMissing(RuntimeError):
    """The dump program for the configured database is not installed (no retry can help)."""


class BackupFailed(RuntimeError):
    """The dump program failed; its exit status and last lines of output say why."""


class BackupInput(TaskInput):
    """How long backups are kept."""

    retention_days: int = Field(default=30, ge=1, le=3650, description="delete backups older than this")


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    package = "postgresql-client" if names[0] == "pg_dump" else "mariadb-client"
    listed = f"neither {' nor '.join(names)} was" if len(names) > 1 else f"{names[0]} was not"
    raise BackupToolMissing(
        f"{listed} found on PATH: install the database's client tools (Debian: apt-get install {package})"
    )


def _run_dump(command: list[str], env: dict[str, str], target: Path) -> None:
    """Run ``command``, gzip its standard output into ``target``; BackupFailed on a non-zero exit."""
    with tempfile.TemporaryFile() as errors, gzip.open(target, "wb", compresslevel=6) as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(CHUNK):
                out.write(chunk)
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace").strip()
            raise BackupFailed(f"{Path(command[0]).name} exited with status {code}: {tail}")


def _postgres(url: URL, target: Path) -> str:
    tool = _tool("pg_dump")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    conninfo = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    _run_dump([tool, "--no-owner", "--no-privileges", "--format=plain", f"--dbname={conninfo}"], env, target)
    return Path(tool).name


def _mysql(url: URL, target: Path) -> str:
    tool = _tool("mariadb-dump", "mysqldump")
    env = dict(os.environ)
    if url.password:
        env["MYSQL_PWD"] = str(url.password)
    command = [tool, "--single-transaction", "--routines", "--triggers", "--default-character-set=utf8mb4"]
    if url.host:
        command += [f"--host={url.host}", f"--port={url.port or 3306}", "--protocol=TCP"]
    if url.username:
        command.append(f"--user={url.username}")
    command.append(str(url.database))
    _run_dump(command, env, target)
    return Path(tool).name


def _sqlite(url: URL, target: Path) -> str:
    source_path = str(url.database)
    raw = target.with_name(target.name + ".raw")
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        copy = sqlite3.connect(raw)
        try:
            source.backup(copy, pages=4096)
        finally:
            copy.close()
            source.close()
        with raw.open("rb") as src, gzip.open(target, "wb", compresslevel=6) as out:
            shutil.copyfileobj(src, out, CHUNK)
    finally:
        raw.unlink(missing_ok=True)
    return "sqlite3-backup-api"


def _age_cutoff(directory: Path, retention_days: int, keep: Path) -> list[str]:
    """Delete backups in ``directory`` older than ``retention_days`` (by the time in their name)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    removed = []
    for path in sorted(directory.iterdir()):
        match = BACKUP_NAME.match(path.name)
        if path == keep or not match:
            continue
        taken = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if taken < cutoff:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


@task(
    input=BackupInput,
    queue=QueueName.LOW,
    time_limit=3 * 3600,
    retry=RetryPolicy(
        max_retries=2,
        backoff_base=300,
        backoff_cap=1800,
        retry_for=(BackupFailed, OSError),
        dont_retry_for=(BackupToolMissing,),
    ),
    schedule=Schedule(cron="0 3 * * *"),
)
def backup_database(retention_days: int = 30) -> dict[str, Any]:
    """Dump the database with its native tool, gzipped into BACKUP_DIR/database/; drop old backups."""
    url = make_url(runtime().settings.database_url)
    backend = url.get_backend_name()
    directory = runtime().settings.backup_dir / "database"
    directory.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise BackupFailed("an in-memory SQLite database cannot be backed up")
        label, ext = Path(str(url.database)).stem, "sqlite3"
    else:
        label, ext = str(url.database), "sql"
    final = directory / f"{label}-{stamp(utcnow())}.{ext}.gz"
    temp = directory / f".{final.name}.part"
    started = time.monotonic()
    try:
        if backend == "postgresql":
            tool = _postgres(url, temp)
        elif backend in ("mysql", "mariadb"):
            tool = _mysql(url, temp)
        elif backend == "sqlite":
            tool = _sqlite(url, temp)
        else:
            raise BackupFailed(f"no backup method for {backend} databases")
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - started
    removed = _age_cutoff(directory, retention_days, final)
    return {
        "engine": backend,
        "tool": tool,
        "file": str(final),
        "bytes": final.stat().st_size,
        "seconds": round(seconds, 3),
        "retention_days": retention_days,
        "removed": removed,
    }
