"""Shared fixtures: a real redis-server per session (flushed per test), apps, clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.foundation import clock
from app.foundation.clock import ManualClock
from app.foundation.config import Settings
from tests.databases import ENGINES, database, empty, fresh_engine
from tests.peers import Certificates, HttpPeer, SmtpPeer
from tests.servers import RedisServer, Starter

TOKEN = "test-token-0123456789abcdef"
DASHBOARD = ("operator", "dashboard-secret-123")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=bool(os.environ.get("TASKLANE_LONG")),
        help="also run the tests marked long (full-size loads, soaks); also TASKLANE_LONG=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``long`` run only with --long (the README names them and how long they take)."""
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long: run with `scripts/test --long` (or TASKLANE_LONG=1)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def manual_clock() -> Iterator[ManualClock]:
    """The app's clock (app/foundation/clock.py), stopped at the real time: the test moves it with
    ``advance()``/``set()`` instead of sleeping; the system clock is put back afterwards."""
    manual = ManualClock()
    previous = clock.install(manual)
    try:
        yield manual
    finally:
        clock.install(previous)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied before the test."""
    redis_server.client().flushall()
    return redis_server.url


def make_env(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """A complete test environment for create_app / the processes."""
    return {
        "APP_ENV": "test",
        "VAR_DIR": str(tmp_path / "var"),
        "REDIS_URL": redis_url,
        "API_TOKENS": TOKEN,
        "DASHBOARD_USERNAME": DASHBOARD[0],
        "DASHBOARD_PASSWORD": DASHBOARD[1],
        "LOG_LEVEL": "WARNING",
        "TASK_MODULES": "tests.jobs",
        **extra,
    }


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """The environment of a test's app and processes."""
    return make_env(tmp_path, redis_url)


@pytest.fixture
def start(env: dict[str, str], tmp_path: Path) -> Iterator[Starter]:
    """Starts ``python <args>`` processes with the test env (see Starter); all are stopped at teardown."""
    starter = Starter(env, tmp_path)
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture
def rconn(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis (emptied before the test), closed at teardown."""
    conn = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield conn
    conn.close()


@pytest.fixture
def app(env: dict[str, str]) -> Flask:
    """The web app against the session's real Redis."""
    return create_app(env)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    """Headers that authenticate an API call."""
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fake_app(tmp_path: Path) -> Flask:
    """The web app on fakeredis (with Lua), for unit tests."""
    application = create_app(Settings.from_env(make_env(tmp_path, "redis://fake.invalid:6379/0")))
    fake = fakeredis.FakeRedis()
    application.extensions["tasklane"].redis = fake
    application.redis_conn = fake  # type: ignore[attr-defined]  # what rq-dashboard reads
    return application


@pytest.fixture
def fake_redis(fake_app: Flask) -> Any:
    return fake_app.extensions["tasklane"].redis


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a localhost server certificate, made for the session (workers trust it via SSL_CERT_FILE)."""
    return Certificates.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def http_peer() -> Iterator[Callable[..., HttpPeer]]:
    """Starts scripted loopback HTTP peers (``http_peer()``, ``http_peer(port=p)``); all closed afterwards."""
    started: list[HttpPeer] = []

    def make(host: str = "127.0.0.1", port: int = 0) -> HttpPeer:
        started.append(HttpPeer(host, port))
        return started[-1]

    yield make
    for peer in started:
        peer.close()


@pytest.fixture
def smtp_peer(certificates: Certificates) -> Iterator[Callable[..., SmtpPeer]]:
    """Starts aiosmtpd servers on loopback (STARTTLS + AUTH unless told otherwise); all stopped afterwards."""
    started: list[SmtpPeer] = []

    def make(**options: Any) -> SmtpPeer:
        started.append(SmtpPeer(certificates, **options))
        return started[-1]

    yield make
    for peer in started:
        peer.close()


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str | None]]:
    """Each engine's session database (SQLite, and PostgreSQL and MariaDB where reachable), created on
    first use and dropped at the end; the SQL tests' ``db_url`` (a file may define its own)."""
    stack = ExitStack()
    made: dict[str, str | None] = {}
    directory = tmp_path_factory.mktemp("sql")

    def get(engine: str) -> str | None:
        if engine not in made:
            made[engine] = stack.enter_context(database(engine, directory))
        return made[engine]

    with stack:
        yield get


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, database_urls: Callable[[str], str | None]) -> str:
    """A migrated database of each engine, emptied before the test (skipped when unreachable)."""
    url = database_urls(request.param)
    if url is None:
        pytest.skip(f"{request.param} is not reachable on 127.0.0.1 (or refuses the test users)")
    engine = fresh_engine(url)
    empty(engine)
    engine.dispose()
    return url
