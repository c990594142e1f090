"""Every environment variable of the operator contract, parsed and validated in one place.

A process reads its settings once, at start, through :func:`load_or_exit`: a missing or
malformed value stops it with one line naming the variable, never a traceback.
Defaults serve local development only; ``APP_ENV=production`` insists on the secrets.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

from app.foundation import crypto, defaults

_E = TypeVar("_E", bound=StrEnum)


class ConfigError(ValueError):
    """A setting is missing or malformed; ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class RedisTlsVerify(StrEnum):
    """Whether a ``rediss://`` server's certificate is checked (Heroku Redis's is self-signed)."""

    REQUIRED = "required"
    NONE = "none"


#: The task policy fields an operator may override (TASK_OVERRIDES), and what each takes.
OVERRIDE_FIELDS = (
    "queue",
    "max_retries",
    "backoff_base",
    "backoff_cap",
    "time_limit",
    "soft_time_limit",
    "rate_limit",
    "result_ttl",
    "failure_ttl",
    "revoked_ttl",
    "expires",
    # --- unique and debounce (issue 19) ---
    "unique",
    "debounce",
    "burst",
    "sequence_key",
    "priority",
    "group",
)


@dataclass(frozen=True)
class TaskOverride:
    """The operator's changes to one task's declared policy (from TASK_OVERRIDES).

    ``changes`` holds ``(field, value)`` pairs in OVERRIDE_FIELDS order; a value of None
    removes a policy (no rate limit, no soft limit, the default result, failure or revoked TTL).
    """

    task: str
    changes: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        """The changes as a mapping."""
        return dict(self.changes)


class Environment(StrEnum):
    """Where the service runs; production refuses to start without its secrets."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class LogFormat(StrEnum):
    """How log lines are written."""

    JSON = "json"
    CONSOLE = "console"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: A rate limit: "<count>/<s|m|h>" (the registry parses it with the same pattern).
RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


class TracesExporter(StrEnum):
    """Where spans go (OTEL_TRACES_EXPORTER); ``none``: no tracing at all."""

    NONE = "none"
    CONSOLE = "console"
    OTLP = "otlp"


@dataclass(frozen=True)
class Settings:
    """The validated settings of one process."""

    app_env: Environment = Environment.DEVELOPMENT
    var_dir: Path = Path("var")
    redis_url: str = defaults.REDIS_URL
    database_url: str = ""
    port: int = defaults.PORT
    api_tokens: tuple[str, ...] = ()
    dashboard_username: str = ""
    dashboard_password: str = ""
    #: (name, password) of each console user who may look but not act (CONSOLE_READONLY_USERS).
    console_readonly_users: tuple[tuple[str, str], ...] = ()
    smtp_url: str = ""
    mail_from: str = defaults.MAIL_FROM
    webhook_secret: str = ""
    payment_gateway_url: str = ""
    ollama_url: str = ""
    litellm_url: str = ""
    embeddings_url: str = ""
    alert_webhook_url: str = ""
    health_check_urls: tuple[str, ...] = ()
    outbound_url_allowlist: tuple[str, ...] = ()
    input_dirs: tuple[Path, ...] = ()
    input_max_bytes: int = defaults.INPUT_MAX_BYTES
    embeddings_model: str = defaults.EMBEDDINGS_MODEL
    media_dir: Path = Path("var/media")
    backup_dir: Path = Path("var/backups")
    exports_dir: Path = Path("var/exports")
    reports_dir: Path = Path("var/reports")
    temp_dir: Path = Path("var/tmp")
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.CONSOLE
    failed_job_ttl: int = defaults.FAILED_JOB_TTL
    result_ttl: int = defaults.RESULT_TTL
    redis_timeout: float = defaults.REDIS_SOCKET_TIMEOUT
    task_modules: tuple[str, ...] = ()
    worker_ttl: int = defaults.WORKER_TTL
    worker_max_jobs_per_child: int = defaults.WORKER_MAX_JOBS_PER_CHILD
    worker_max_memory_per_child_mb: int = defaults.WORKER_MAX_MEMORY_PER_CHILD_MB
    metrics_token: str = ""
    redis_wait_seconds: int = defaults.REDIS_WAIT_SECONDS
    scheduler_heartbeat_ttl: int = defaults.SCHEDULER_HEARTBEAT_TTL
    scheduler_lock_ttl: int = int(defaults.SCHEDULER_LOCK_TTL)
    enqueue_min_replicas: int = defaults.ENQUEUE_MIN_REPLICAS
    enqueue_replica_timeout_ms: int = defaults.ENQUEUE_REPLICA_TIMEOUT_MS
    task_overrides: tuple[TaskOverride, ...] = ()
    redis_tls_verify: RedisTlsVerify = RedisTlsVerify.REQUIRED
    sentry_dsn: str = ""
    traces_exporter: TracesExporter = TracesExporter.NONE
    service_name: str = "tasklane"
    worker_shutdown_grace: int = defaults.WORKER_SHUTDOWN_GRACE
    job_memory_limit_mb: int = defaults.JOB_MEMORY_LIMIT_MB
    #: ENCRYPTION_KEYS, each key as given (base64 of 32 bytes); the first encrypts, all decrypt.
    encryption_keys: tuple[str, ...] = ()

    @property
    def is_production(self) -> bool:
        """True when APP_ENV=production."""
        return self.app_env is Environment.PRODUCTION

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate settings from an environment mapping (os.environ by default)."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        app_env = reader.choice("APP_ENV", Environment, Environment.DEVELOPMENT)
        var_dir = Path(reader.text("VAR_DIR", "var"))
        settings = cls(
            app_env=app_env,
            var_dir=var_dir,
            redis_url=reader.redis_url(
                "REDIS_URL", required=app_env is Environment.PRODUCTION, var_dir=var_dir
            ),
            database_url=reader.database_url("DATABASE_URL", var_dir),
            port=reader.integer("PORT", defaults.PORT, minimum=1, maximum=65535),
            api_tokens=reader.tokens("API_TOKENS"),
            dashboard_username=reader.text("DASHBOARD_USERNAME", ""),
            dashboard_password=reader.text("DASHBOARD_PASSWORD", ""),
            console_readonly_users=reader.credentials("CONSOLE_READONLY_USERS"),
            smtp_url=reader.url("SMTP_URL", ("smtp", "smtps")),
            mail_from=reader.text("MAIL_FROM", defaults.MAIL_FROM),
            webhook_secret=reader.text("WEBHOOK_SECRET", ""),
            payment_gateway_url=reader.url("PAYMENT_GATEWAY_URL", ("http", "https")),
            ollama_url=reader.url("OLLAMA_URL", ("http", "https")),
            litellm_url=reader.url("LITELLM_URL", ("http", "https")),
            embeddings_url=reader.url("EMBEDDINGS_URL", ("http", "https")),
            alert_webhook_url=reader.url("ALERT_WEBHOOK_URL", ("http", "https")),
            health_check_urls=reader.url_list("HEALTH_CHECK_URLS"),
            outbound_url_allowlist=reader.allowlist("OUTBOUND_URL_ALLOWLIST"),
            input_dirs=tuple(
                Path(p) for p in reader.text("INPUT_DIRS", str(var_dir / "files")).split(":") if p
            ),
            input_max_bytes=reader.integer("INPUT_MAX_BYTES", defaults.INPUT_MAX_BYTES, minimum=1),
            embeddings_model=reader.text("EMBEDDINGS_MODEL", defaults.EMBEDDINGS_MODEL),
            media_dir=Path(reader.text("MEDIA_DIR", str(var_dir / "media"))),
            backup_dir=Path(reader.text("BACKUP_DIR", str(var_dir / "backups"))),
            exports_dir=Path(reader.text("EXPORTS_DIR", str(var_dir / "exports"))),
            reports_dir=Path(reader.text("REPORTS_DIR", str(var_dir / "reports"))),
            temp_dir=Path(reader.text("TEMP_DIR", str(var_dir / "tmp"))),
            max_request_bytes=reader.integer("MAX_REQUEST_BYTES", defaults.MAX_REQUEST_BYTES, minimum=1024),
            log_level=reader.log_level("LOG_LEVEL"),
            log_format=reader.choice("LOG_FORMAT", LogFormat, LogFormat.CONSOLE),
            failed_job_ttl=reader.integer("FAILED_JOB_TTL", defaults.FAILED_JOB_TTL, minimum=60),
            result_ttl=reader.integer("RESULT_TTL", defaults.RESULT_TTL, minimum=0),
            redis_timeout=float(
                reader.integer("REDIS_TIMEOUT", int(defaults.REDIS_SOCKET_TIMEOUT), minimum=1)
            ),
            task_modules=reader.modules("TASK_MODULES"),
            worker_ttl=reader.integer("WORKER_TTL", defaults.WORKER_TTL, minimum=20, maximum=86400),
            worker_max_jobs_per_child=reader.integer(
                "WORKER_MAX_JOBS_PER_CHILD", defaults.WORKER_MAX_JOBS_PER_CHILD, minimum=0
            ),
            worker_max_memory_per_child_mb=reader.integer(
                "WORKER_MAX_MEMORY_PER_CHILD_MB", defaults.WORKER_MAX_MEMORY_PER_CHILD_MB, minimum=0
            ),
            metrics_token=reader.text("METRICS_TOKEN", ""),
            redis_wait_seconds=reader.integer(
                "REDIS_WAIT_SECONDS", defaults.REDIS_WAIT_SECONDS, minimum=0, maximum=86400
            ),
            scheduler_heartbeat_ttl=reader.integer(
                "SCHEDULER_HEARTBEAT_TTL", defaults.SCHEDULER_HEARTBEAT_TTL, minimum=3, maximum=3600
            ),
            scheduler_lock_ttl=reader.integer(
                "SCHEDULER_LOCK_TTL", int(defaults.SCHEDULER_LOCK_TTL), minimum=3, maximum=600
            ),
            enqueue_min_replicas=reader.integer(
                "ENQUEUE_MIN_REPLICAS", defaults.ENQUEUE_MIN_REPLICAS, minimum=0, maximum=16
            ),
            enqueue_replica_timeout_ms=reader.integer(
                "ENQUEUE_REPLICA_TIMEOUT_MS", defaults.ENQUEUE_REPLICA_TIMEOUT_MS, minimum=1, maximum=60000
            ),
            task_overrides=reader.task_overrides("TASK_OVERRIDES"),
            redis_tls_verify=reader.choice("REDIS_TLS_VERIFY", RedisTlsVerify, RedisTlsVerify.REQUIRED),
            sentry_dsn=reader.url("SENTRY_DSN", ("http", "https")),
            traces_exporter=reader.traces_exporter(),
            service_name=reader.text("OTEL_SERVICE_NAME", "tasklane") or "tasklane",
            worker_shutdown_grace=reader.integer(
                "WORKER_SHUTDOWN_GRACE", defaults.WORKER_SHUTDOWN_GRACE, minimum=0, maximum=86400
            ),
            job_memory_limit_mb=reader.integer(
                "JOB_MEMORY_LIMIT_MB", defaults.JOB_MEMORY_LIMIT_MB, minimum=0, maximum=1024 * 1024
            ),
            encryption_keys=reader.encryption_keys("ENCRYPTION_KEYS"),
        )
        if settings.is_production:
            if not settings.api_tokens:
                raise ConfigError("API_TOKENS", "required when APP_ENV=production")
            if not (settings.dashboard_username and settings.dashboard_password):
                raise ConfigError(
                    "DASHBOARD_PASSWORD" if settings.dashboard_username else "DASHBOARD_USERNAME",
                    "dashboard credentials are required when APP_ENV=production",
                )
        if any(name == settings.dashboard_username for name, _ in settings.console_readonly_users):
            raise ConfigError("CONSOLE_READONLY_USERS", "a read-only user cannot share DASHBOARD_USERNAME")
        if bool(settings.dashboard_username) != bool(settings.dashboard_password):
            missing = "DASHBOARD_PASSWORD" if settings.dashboard_username else "DASHBOARD_USERNAME"
            raise ConfigError(missing, "set both DASHBOARD_USERNAME and DASHBOARD_PASSWORD, or neither")
        return settings

    def secret_values(self) -> list[str]:
        """Every secret in the settings (tokens, passwords, credentials in URLs), for redaction."""
        out = [*self.api_tokens, self.dashboard_password, self.webhook_secret, self.metrics_token]
        out += self.encryption_keys
        out += [password for _, password in self.console_readonly_users]
        for f in fields(self):
            value = getattr(self, f.name)
            urls = value if isinstance(value, tuple) else (value,)
            for url in urls:
                if isinstance(url, str) and "@" in url and f.name.endswith(("_url", "_urls", "_dsn")):
                    try:
                        password = urlsplit(url).password
                    except ValueError:
                        continue
                    if password:
                        out += [password, unquote(password)]
                    if f.name.endswith("_dsn") and urlsplit(url).username:
                        # A Sentry DSN's user part is its key: whoever has it can send events.
                        out += [urlsplit(url).username or "", unquote(urlsplit(url).username or "")]
        return [v for v in out if v]

    def public(self) -> dict[str, object]:
        """The settings with secrets masked, for logs and diagnostics."""
        secret = {"api_tokens", "dashboard_password", "webhook_secret", "metrics_token", "encryption_keys"}
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in secret:
                out[f.name] = "***" if value else ""
            elif f.name == "console_readonly_users":
                out[f.name] = [name for name, _ in value]
            elif f.name.endswith("_url") and isinstance(value, str):
                out[f.name] = mask_url(value)
            elif f.name.endswith("_dsn") and isinstance(value, str):
                out[f.name] = mask_url(value, user=True)
            else:
                out[f.name] = value if not isinstance(value, Path) else str(value)
        return out


def load_or_exit(environ: Mapping[str, str] | None = None, process: str = "tasklane") -> Settings:
    """Load settings, or stop the process with one line naming the bad variable."""
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        _stop(process, exc)


def integer_or_exit(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    process: str = "tasklane",
    environ: Mapping[str, str] | None = None,
) -> int:
    """The whole number in variable ``name`` (``default`` when unset or blank), read as every
    integer setting is; or stop the process with one line naming the variable.

    For settings read outside :class:`Settings`, such as gunicorn's WEB_CONCURRENCY.
    """
    try:
        return _Reader(os.environ if environ is None else environ).integer(name, default, minimum, maximum)
    except ConfigError as exc:
        _stop(process, exc)


def _stop(process: str, exc: ConfigError) -> NoReturn:
    print(f"{process}: configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def mask_url(url: str, user: bool = False) -> str:
    """The URL with its password (and with ``user``, its user name too) replaced by ***."""
    if not url:
        return url
    parts = urlsplit(url)
    if user and "@" in parts.netloc:
        return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


class _Reader:
    """Reads one variable at a time and raises ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be at most {maximum}, got {value}")
        return value

    def choice(self, name: str, enum: type[_E], default: _E) -> _E:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        try:
            return enum(raw)
        except ValueError:
            allowed = ", ".join(e.value for e in enum)
            raise ConfigError(name, f"must be one of {allowed}, got {raw!r}") from None

    def log_level(self, name: str) -> str:
        raw = self.env.get(name, "").strip().upper() or "INFO"
        if raw not in LOG_LEVELS:
            raise ConfigError(name, f"must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
        return raw

    def tokens(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
        for token in tokens:
            if len(token) < defaults.MIN_TOKEN_LENGTH:
                raise ConfigError(
                    name, f"each token must have at least {defaults.MIN_TOKEN_LENGTH} characters"
                )
            if any(c.isspace() for c in token):
                raise ConfigError(name, "tokens must not contain white space")
        return tokens

    def encryption_keys(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        try:
            crypto.parse_keys(raw)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
        return tuple(p.strip() for p in raw.split(",") if p.strip())

    def credentials(self, name: str) -> tuple[tuple[str, str], ...]:
        """Comma-separated ``user:password`` pairs (a password may hold colons, not commas)."""
        out: list[tuple[str, str]] = []
        for item in (i.strip() for i in self.env.get(name, "").split(",")):
            if not item:
                continue
            user, colon, password = item.partition(":")
            if not colon or not user or not password:
                raise ConfigError(name, "each entry is user:password, entries separated by commas")
            if len(password) < defaults.MIN_TOKEN_LENGTH:
                raise ConfigError(
                    name, f"each password must have at least {defaults.MIN_TOKEN_LENGTH} characters"
                )
            if any(u == user for u, _ in out):
                raise ConfigError(name, f"user {user!r} is listed twice")
            out.append((user, password))
        return tuple(out)

    def url(self, name: str, schemes: tuple[str, ...], required: bool = False) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            if required:
                raise ConfigError(name, "is required")
            return ""
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ConfigError(
                name, f"scheme must be one of {', '.join(schemes)}, got {parts.scheme or 'none'!r}"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(name, "has no host")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(name, "has a malformed port") from None
        return raw

    def traces_exporter(self) -> TracesExporter:
        """OpenTelemetry's own variables: OTEL_TRACES_EXPORTER, else ``otlp`` when an OTLP endpoint is
        set, else none; OTEL_SDK_DISABLED=true turns it off whatever the rest says."""
        if self.env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return TracesExporter.NONE
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            self.url(name, ("http", "https"))
        default = TracesExporter.NONE
        if self.env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or self.env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            default = TracesExporter.OTLP
        return self.choice("OTEL_TRACES_EXPORTER", TracesExporter, default)

    def url_list(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        urls = tuple(u.strip() for u in raw.split(",") if u.strip())
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(name, f"every entry must be an http(s) URL, got {url!r}")
        return urls

    def redis_url(self, name: str, required: bool, var_dir: Path | None = None) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            if required:
                raise ConfigError(name, "is required when APP_ENV=production")
            # Beside a local `scripts/run`, a `flask ...` command in the same folder reaches that
            # run's embedded Redis, not whatever listens on 6379.
            socket = (
                None
                if var_dir is None
                else var_dir / defaults.EMBEDDED_REDIS_DIR / defaults.EMBEDDED_REDIS_SOCKET
            )
            if socket is not None and socket.is_socket():
                return f"unix://{socket.resolve()}?db=0"
            return defaults.REDIS_URL
        parts = urlsplit(raw)
        if parts.scheme not in REDIS_SCHEMES:
            raise ConfigError(name, f"scheme must be one of {', '.join(REDIS_SCHEMES)}, got {parts.scheme!r}")
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigError(name, "a unix:// URL needs a socket path")
            return raw
        if parts.scheme == "redis+sentinel":
            hosts = parts.netloc.rpartition("@")[2].split(",")
            if not all(re.fullmatch(r"[\w.\-\[\]:]+?(:\d{1,5})?", h) for h in hosts):
                raise ConfigError(name, "sentinel hosts must be host:port pairs separated by commas")
            if not parts.path.strip("/"):
                raise ConfigError(name, "a redis+sentinel:// URL must name the service: .../<service>/<db>")
            return raw
        if not parts.hostname:
            raise ConfigError(name, "has no host")
        try:
            parts.port  # noqa: B018
        except ValueError:
            raise ConfigError(name, "has a malformed port") from None
        return raw

    def database_url(self, name: str, var_dir: Path) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            return f"sqlite:///{(var_dir / 'tasklane.db').as_posix()}"
        scheme = urlsplit(raw).scheme
        dialect = scheme.split("+", 1)[0]
        if dialect not in SQL_SCHEMES:
            raise ConfigError(
                name, f"must be a sqlite, postgresql or mysql/mariadb URL, got scheme {scheme!r}"
            )
        # Heroku still hands out postgres://, which SQLAlchemy 2 no longer accepts.
        if dialect == "postgres":
            raw = "postgresql" + raw[len("postgres") :]
            dialect = "postgresql"
        if scheme == "postgresql" or raw.startswith("postgresql://"):
            raw = "postgresql+psycopg://" + raw.split("://", 1)[1]
        elif dialect in ("mysql", "mariadb") and "+" not in scheme:
            raw = "mysql+pymysql://" + raw.split("://", 1)[1]
        return raw

    def modules(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        names = tuple(m.strip() for m in raw.split(",") if m.strip())
        for module in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
                raise ConfigError(name, f"{module!r} is not a Python module path")
        return names

    def allowlist(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        entries = tuple(e.strip() for e in raw.split(",") if e.strip())
        for entry in entries:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ConfigError(name, f"{entry!r} is neither a host name nor a CIDR") from None
            elif any(c in entry for c in " :@?#"):
                raise ConfigError(name, f"{entry!r} is neither a host name nor a CIDR")
        return entries

    def task_overrides(self, name: str) -> tuple[TaskOverride, ...]:
        """``{"task": {"queue": "high", "max_retries": 8, ...}}`` as JSON text, or the path of a JSON file."""
        raw = self.env.get(name, "").strip()
        if not raw:
            return ()
        if not raw.startswith("{"):
            try:
                raw = Path(raw).read_text()
            except OSError as exc:
                problem = f"is neither a JSON object nor a readable file: {exc.strerror}"
                raise ConfigError(name, problem) from None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(name, f"is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ConfigError(name, 'must be a JSON object: {"<task>": {"<field>": <value>, ...}, ...}')
        out = []
        for task_name, changes in value.items():
            if not isinstance(changes, dict) or not changes:
                raise ConfigError(name, f"task {task_name!r}: must map to a non-empty object of fields")
            for field_name in changes:
                if field_name not in OVERRIDE_FIELDS:
                    allowed = ", ".join(OVERRIDE_FIELDS)
                    problem = f"task {task_name!r}: unknown field {field_name!r} (one of {allowed})"
                    raise ConfigError(name, problem)
            checked = tuple(
                (f, _override_value(name, task_name, f, changes[f])) for f in OVERRIDE_FIELDS if f in changes
            )
            out.append(TaskOverride(task=task_name, changes=checked))
        return tuple(out)


def _override_value(name: str, task_name: str, field_name: str, value: Any) -> Any:
    """One overridden policy value, checked; ConfigError naming the variable, task and field."""

    def bad(problem: str) -> ConfigError:
        return ConfigError(name, f"task {task_name!r}: {field_name} {problem}, got {json.dumps(value)}")

    def whole(minimum: int, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("must be a whole number")
        if value < minimum or (maximum is not None and value > maximum):
            raise bad(f"must be from {minimum} to {maximum}" if maximum else f"must be at least {minimum}")
        return value

    if field_name == "queue":
        if value not in defaults.WORKER_QUEUES:
            raise bad(f"must be one of {', '.join(defaults.WORKER_QUEUES)}")
        return value
    if field_name == "max_retries":
        return whole(0, 100)
    if field_name in ("backoff_base", "backoff_cap"):
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number or not math.isfinite(value) or value <= 0:
            raise bad("must be a number of seconds above 0")
        return float(value)
    if field_name == "time_limit":
        return whole(1)
    if field_name in ("failure_ttl", "revoked_ttl"):
        return None if value is None else whole(60)
    if field_name == "expires":
        return None if value is None else whole(1, defaults.MAX_DELAY)
    # --- unique and debounce (issue 19) ---
    if field_name == "unique":
        period: Any = value.get("period") if isinstance(value, dict) and set(value) == {"period"} else 0
        if isinstance(value, bool) or (
            isinstance(period, int) and not isinstance(period, bool) and 1 <= period <= defaults.MAX_DELAY
        ):
            return value if isinstance(value, bool) else tuple(sorted(value.items()))  # hashable
        raise bad('must be true, false or {"period": whole seconds from 1 to 366 days}')
    if field_name == "debounce":
        if value is None:
            return None
        delay: Any = value.get("delay") if isinstance(value, dict) and set(value) <= {"delay", "key"} else 0
        key = value.get("key") if isinstance(value, dict) else None
        number = isinstance(delay, int | float) and not isinstance(delay, bool)
        if number and 1 <= delay <= defaults.MAX_DELAY and (key is None or (isinstance(key, str) and key)):
            return tuple(sorted(value.items()))  # hashable, as every override
        raise bad('must be null or {"delay": seconds from 1 to 366 days, "key": "..." (optional)}')
    if field_name == "burst":
        return None if value is None else whole(1, defaults.MAX_BURST)
    if field_name == "sequence_key":
        if value is not None and not (isinstance(value, str) and value.isidentifier()):
            raise bad("must name one of the task's input fields, or null")
        return value
    if field_name == "priority":
        return whole(defaults.MIN_PRIORITY, defaults.MAX_PRIORITY)
    if field_name == "group":
        if value is not None and not (isinstance(value, str) and re.match(defaults.GROUP_PATTERN, value)):
            raise bad("must be 1-64 letters, digits, '_', '.', '@' or '-', or null")
        return value
    if field_name in ("soft_time_limit", "result_ttl"):
        if value is None:
            return None
        return whole(1) if field_name == "soft_time_limit" else whole(-1)
    # rate_limit
    if value is None:
        return None
    if not isinstance(value, str) or not (m := RATE_PATTERN.match(value)) or int(m.group(1)) < 1:
        raise bad("must look like '10/m' (per s, m or h) or null")
    return value.strip()
