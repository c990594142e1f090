"""The process's settings and live clients (Redis, database), kept in app.extensions.

Each app has its own Runtime: two apps with different settings in one process use
different Redis servers and databases side by side.

Settings are read one way, through this module:

- :func:`settings` answers "which settings are in force here": the current app's (in a
  request, a job, a CLI command, the scheduler's loop), else, in code that calls tasks
  without an app, the ones :func:`client_runtime` read from the environment once per process;
- :func:`runtime` (or :func:`runtime_of` for an app at hand, outside its context) when the
  clients are needed too: ``runtime().settings`` is the same object as ``settings()``.

Nothing else in ``app/`` reads ``current_app.extensions`` or ``app.config`` for settings, or
builds ``Settings`` from the environment: only the entry points (``app.factory``) parse them,
once, and hand them to :func:`init_app`. An object built from the settings for a while (the
scheduler process, a worker, the service clients) is given them by the code that read them
here; a test may pass its own instead.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, has_app_context
from redis import Redis
from redis_sentinel_url import connect as _sentinel_connect
from sqlalchemy.engine import Engine

from app.foundation import defaults
from app.foundation.config import RedisTlsVerify, Settings
from app.foundation.db import make_engine

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
    rt = Runtime(settings=settings, redis=connect_settings(settings))
    app.extensions[EXTENSION] = rt
    return rt


def runtime_of(app: Flask) -> Runtime:
    """The runtime ``app`` holds (given by :func:`init_app`)."""
    found: Runtime = app.extensions[EXTENSION]
    return found


def runtime() -> Runtime:
    """The runtime of the current Flask app (inside a request, a worker or a CLI command)."""
    return runtime_of(current_app)


def settings() -> Settings:
    """The settings in force: the current app's, else the environment's (see :func:`client_runtime`)."""
    return client_runtime().settings


_standalone: dict[int, Runtime] = {}
_standalone_lock = threading.Lock()


def client_runtime() -> Runtime:
    """The runtime for code that calls tasks: the current app's, or else one built from the
    environment (REDIS_URL, ...) once per process, so that callers need no set-up call."""
    if has_app_context() and EXTENSION in current_app.extensions:
        return runtime()
    pid = os.getpid()  # a forked child builds its own: connections must not cross a fork
    found = _standalone.get(pid)
    if found is None:
        with _standalone_lock:
            found = _standalone.get(pid)
            if found is None:
                settings = Settings.from_env()
                found = _standalone[pid] = Runtime(settings=settings, redis=connect_settings(settings))
    return found


def connect_settings(settings: Settings) -> Redis:
    """The Redis client of ``settings`` (REDIS_URL, REDIS_TIMEOUT, REDIS_TLS_VERIFY)."""
    verify = settings.redis_tls_verify is RedisTlsVerify.REQUIRED
    return connect(settings.redis_url, timeout=settings.redis_timeout, tls_verify=verify)


def connect(
    url: str, timeout: float | None = defaults.REDIS_SOCKET_TIMEOUT, tls_verify: bool = True
) -> Redis:
    """A Redis client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URLs.

    ``tls_verify=False`` (REDIS_TLS_VERIFY=none) encrypts a ``rediss://`` connection without
    checking the server's certificate: Heroku Redis's is self-signed.
    """
    options: dict[str, Any] = {"health_check_interval": 30}
    if timeout is not None:
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    if not tls_verify and url.startswith("rediss://"):
        options.update(ssl_cert_reqs="none", ssl_check_hostname=False)
    _, client = _sentinel_connect(url, client_class=Redis, client_options=options)
    if client is None:
        raise ValueError("a redis+sentinel:// URL must name a service (redis+sentinel://host:port/service)")
    return client
