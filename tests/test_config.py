"""Settings: every variable parsed and validated in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.foundation.config import ConfigError, Environment, LogFormat, Settings, integer_or_exit, load_or_exit


def test_defaults_serve_development() -> None:
    """It needs no variable at all in development, with SQLite under ./var."""
    s = Settings.from_env({})
    assert s.app_env is Environment.DEVELOPMENT
    assert s.database_url == "sqlite:///var/tasklane.db"
    assert s.max_request_bytes == 1024 * 1024
    assert s.input_dirs == (Path("var/files"),)
    assert s.log_format is LogFormat.CONSOLE
    assert s.redis_wait_seconds == 60
    assert s.scheduler_heartbeat_ttl == 30


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_URL": "ftp://host"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://host:notaport"}, "REDIS_URL"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_REQUEST_BYTES": "12"}, "MAX_REQUEST_BYTES"),
        ({"DATABASE_URL": "oracle://x/y"}, "DATABASE_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"API_TOKENS": "short"}, "API_TOKENS"),
        ({"SMTP_URL": "http://mail"}, "SMTP_URL"),
        ({"HEALTH_CHECK_URLS": "http://ok.example/health,not a url"}, "HEALTH_CHECK_URLS"),
        ({"OUTBOUND_URL_ALLOWLIST": "10.0.0.0/99"}, "OUTBOUND_URL_ALLOWLIST"),
        ({"DASHBOARD_USERNAME": "admin"}, "DASHBOARD_PASSWORD"),
        ({"TASK_MODULES": "my tasks"}, "TASK_MODULES"),
        ({"REDIS_WAIT_SECONDS": "soon"}, "REDIS_WAIT_SECONDS"),
        ({"REDIS_WAIT_SECONDS": "-1"}, "REDIS_WAIT_SECONDS"),
        ({"SCHEDULER_HEARTBEAT_TTL": "1"}, "SCHEDULER_HEARTBEAT_TTL"),
        ({"SCHEDULER_HEARTBEAT_TTL": "a while"}, "SCHEDULER_HEARTBEAT_TTL"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    """It rejects a malformed value with an error naming the variable."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_production_requires_tokens_and_dashboard_credentials() -> None:
    """It refuses production without API_TOKENS, then without dashboard credentials."""
    base = {"APP_ENV": "production", "REDIS_URL": "redis://redis.internal:6379/0"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(base)
    assert info.value.variable == "API_TOKENS"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**base, "API_TOKENS": "a" * 32})
    assert info.value.variable == "DASHBOARD_USERNAME"
    ok = Settings.from_env(
        {**base, "API_TOKENS": "a" * 32, "DASHBOARD_USERNAME": "u", "DASHBOARD_PASSWORD": "p"}
    )
    assert ok.is_production


def test_production_requires_redis_url() -> None:
    """It will not guess a Redis in production."""
    env = {
        "APP_ENV": "production",
        "API_TOKENS": "a" * 32,
        "DASHBOARD_USERNAME": "u",
        "DASHBOARD_PASSWORD": "p",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == "REDIS_URL"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u:p@db/app", "postgresql+psycopg://u:p@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("mysql://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test"),
        ("mariadb://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_urls_are_normalised(given: str, expected: str) -> None:
    """It accepts Heroku's postgres:// and picks the installed drivers."""
    assert Settings.from_env({"DATABASE_URL": given}).database_url == expected


def test_lists_are_split_and_trimmed() -> None:
    """It splits comma- and colon-separated lists."""
    s = Settings.from_env(
        {
            "API_TOKENS": " aaaaaaaaaaaaaaaa , bbbbbbbbbbbbbbbb ",
            "HEALTH_CHECK_URLS": "http://a.example/x, https://b.example/y",
            "INPUT_DIRS": "/data/in:/srv/files",
            "OUTBOUND_URL_ALLOWLIST": "10.0.0.0/8, api.internal",
            "REDIS_URL": "redis+sentinel://s1:26379,s2:26379/mymaster/0",
        }
    )
    assert s.api_tokens == ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb")
    assert s.health_check_urls == ("http://a.example/x", "https://b.example/y")
    assert s.input_dirs == (Path("/data/in"), Path("/srv/files"))
    assert s.outbound_url_allowlist == ("10.0.0.0/8", "api.internal")


def test_public_view_masks_secrets() -> None:
    """It never shows tokens, passwords or URL credentials."""
    s = Settings.from_env(
        {
            "API_TOKENS": "secret-token-123456",
            "DASHBOARD_USERNAME": "u",
            "DASHBOARD_PASSWORD": "hunter2-password",
            "REDIS_URL": "redis://:redispass@redis.example:6379/0",
        }
    )
    text = repr(s.public())
    for secret in ("secret-token-123456", "hunter2-password", "redispass"):
        assert secret not in text


def test_load_or_exit_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """It stops the process with exit status 2 and one line naming the variable."""
    with pytest.raises(SystemExit) as info:
        load_or_exit({"PORT": "eighty"}, process="worker")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("worker: configuration error: PORT: ")


def test_integer_or_exit_reads_as_every_setting_and_stops_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It is the integer reader of Settings, for variables read elsewhere (gunicorn.conf.py, web.py)."""
    assert integer_or_exit("WEB_THREADS", 4, minimum=1, environ={}) == 4
    assert integer_or_exit("WEB_THREADS", 4, minimum=1, environ={"WEB_THREADS": " 8 "}) == 8
    for raw, problem in (("abc", "must be a whole number, got 'abc'"), ("0", "must be at least 1, got 0")):
        with pytest.raises(SystemExit) as info:
            integer_or_exit("WEB_THREADS", 4, minimum=1, process="web", environ={"WEB_THREADS": raw})
        assert info.value.code == 2
        assert capsys.readouterr().err == f"web: configuration error: WEB_THREADS: {problem}\n"
