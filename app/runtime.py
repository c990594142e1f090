"""The process's live clients (Redis, database) built from its settings, kept in app.extensions."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from flask import Flask, current_app
from redis import Redis
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import make_engine
from app.queues import connect

EXTENSION = "tasklane"


@dataclass
class Runtime:
    """Settings plus the clients every part of the service shares."""

    settings: Settings
    redis: Redis
    _engine: Engine | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = make_engine(self.settings.database_url)
        return self._engine

    def close(self) -> None:
        """Release pooled connections (before a fork, or at exit)."""
        if self._engine is not None:
            self._engine.dispose()
        self.redis.close()


def init_app(app: Flask, settings: Settings) -> Runtime:
    """Build the runtime for ``settings`` and keep it in ``app.extensions``."""
    rt = Runtime(settings=settings, redis=connect(settings.redis_url, timeout=settings.redis_timeout))
    app.extensions[EXTENSION] = rt
    return rt


def runtime() -> Runtime:
    """The runtime of the current Flask app (inside a request, a worker or a CLI command)."""
    return current_app.extensions[EXTENSION]


def start_process(process: str) -> Flask:
    """The app of a worker or scheduler process: settings checked, logging set, Redis reached.

    Exits with one line naming the problem when a setting is bad or Redis does not answer.
    """
    import sys

    from redis.exceptions import RedisError

    from app import create_app
    from app.config import load_or_exit
    from app.logs import configure_logging

    settings = load_or_exit(process=process)
    configure_logging(settings)
    logging.getLogger(f"tasklane.{process}").debug("settings: %s", settings.public())
    app = create_app(settings)
    try:
        app.extensions[EXTENSION].redis.ping()
    except RedisError as exc:
        print(f"{process}: cannot reach Redis (REDIS_URL): {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return app
