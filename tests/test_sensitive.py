"""Sensitive task arguments and the service's secrets never reach a log line, the dashboard,
a job view or an error body; the task itself still receives the real value."""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from app import create_app
from app.catalogue.registry import REGISTRY
from app.core.queues import JsonJob, JsonQueue
from app.foundation.config import Settings
from app.ops.logs import configure_logging, release_secrets
from app.processes.workers import JsonInlineWorker
from tests.conftest import DASHBOARD, TOKEN, make_env
from tests.peers import Answer, Certificates, HttpPeer, SmtpPeer
from tests.servers import RedisServer, Starter, start_web, wait_for

SECRET = "sk-live-5ecret-0f-the-caller"
SHORT = "s3cr3t!"  # too short for the field: its 422 must not echo it
WEBHOOK = "webhook-signing-key-42"
SMTP_PASSWORD = "smtp-pass-9876"
GATEWAY_PASSWORD = "gw-pass-5555"


@pytest.fixture
def logged(tmp_path: Path, redis_url: str) -> Iterator[tuple[Flask, Settings, io.StringIO]]:
    """The app, with this process's logging set as a worker's is (DEBUG, JSON lines), written to a buffer."""
    env = make_env(
        tmp_path,
        redis_url,
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        WEBHOOK_SECRET=WEBHOOK,
        SMTP_URL=f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:2525",
        PAYMENT_GATEWAY_URL=f"http://shop:{GATEWAY_PASSWORD}@127.0.0.1:9/",
    )
    settings = Settings.from_env(env)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(settings)
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield create_app(settings), settings, buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        release_secrets(settings.secret_values())


def _basic() -> dict[str, str]:
    raw = base64.b64encode(f"{DASHBOARD[0]}:{DASHBOARD[1]}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_sensitive_fields_are_declared_in_the_schema() -> None:
    REGISTRY.load_modules(("tests.jobs",))
    spec = REGISTRY.get("use_secret")
    assert spec is not None
    assert spec.sensitive == {"api_key"}
    assert spec.input_model.model_json_schema()["properties"]["api_key"]["sensitive"] is True
    assert spec.masked({"path": "p", "api_key": SECRET}) == {"path": "p", "api_key": "***"}


def test_secrets_reach_no_log_line_dashboard_job_view_or_error_body(
    logged: tuple[Flask, Settings, io.StringIO], tmp_path: Path
) -> None:
    app, settings, buffer = logged
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bodies: list[str] = []

    def post(args: dict[str, object], status: int) -> dict[str, object]:
        r = client.post("/api/v1/tasks/use_secret", json={"args": args}, headers=auth)
        bodies.append(r.get_data(as_text=True))
        assert r.status_code == status, r.get_data(as_text=True)
        return dict(r.get_json())

    ok_file, fail_file = tmp_path / "ok.txt", tmp_path / "fail.txt"
    ok_id = str(post({"path": str(ok_file), "api_key": SECRET}, 202)["job_id"])
    fail_id = str(post({"path": str(fail_file), "api_key": SECRET, "fail": True}, 202)["job_id"])
    # 422s: the sensitive value itself invalid, and another field invalid beside a valid secret.
    post({"path": "x", "api_key": SHORT}, 422)
    post({"path": 5, "api_key": SECRET}, 422)
    post({"path": "x", "api_key": SECRET, "unknown": SECRET}, 422)
    echoed = post({"path": "x", "api_key": f"bad-{SECRET}"}, 422)
    assert echoed["error"]["details"][0]["message"] == "invalid value (not shown: the field is sensitive)"
    items = [{"args": {"path": "y", "api_key": SHORT}}, {"args": {"path": "y", "api_key": f"bad-{SECRET}"}}]
    batch = client.post("/api/v1/tasks/use_secret/batch", json={"items": items}, headers=auth)
    assert batch.status_code == 422
    bodies.append(batch.get_data(as_text=True))

    redis = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)
    logging.getLogger("tests").warning("settings: %s %s %s", WEBHOOK, SMTP_PASSWORD, settings.smtp_url)

    # The task received the real value, in both runs.
    assert ok_file.read_text() == SECRET and fail_file.read_text() == SECRET
    ok, failed = (client.get(f"/api/v1/jobs/{i}", headers=auth) for i in (ok_id, fail_id))
    assert ok.get_json()["state"] == "SUCCESS" and failed.get_json()["state"] == "FAILURE"
    assert "the peer refused key ***" in failed.get_data(as_text=True)
    bodies += [ok.get_data(as_text=True), failed.get_data(as_text=True)]
    for query in ("?task=use_secret", "?state=FAILURE", ""):
        bodies.append(client.get(f"/api/v1/jobs{query}", headers=auth).get_data(as_text=True))

    pages = [
        "/rq/",
        "/rq/0/data/jobs/default/finished/10/asc/1.json",
        "/rq/0/data/jobs/default/failed/10/asc/1.json",
    ]
    for job_id in (ok_id, fail_id):
        pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
    for page in pages:
        r = client.get(page, headers=_basic())
        assert r.status_code == 200, (page, r.status_code)
        bodies.append(r.get_data(as_text=True))
    description = client.get(f"/rq/0/data/job/{ok_id}.json", headers=_basic()).get_json()["description"]
    assert "api_key=" in description and "***" in description
    assert "api_key='***'" in JsonJob.fetch(ok_id, connection=redis).description

    logs = buffer.getvalue()
    assert "calling the peer with key ***" in logs  # the task's own line, redacted
    assert "task succeeded" in logs and "exception raised while executing" in logs
    for secret in (SECRET, SHORT, WEBHOOK, SMTP_PASSWORD, GATEWAY_PASSWORD, DASHBOARD[1], TOKEN):
        assert secret not in logs, secret
        for body in bodies:
            assert secret not in body, (secret, body[:300])


@pytest.mark.integration
# The fork mode runs in test_every_configured_secret_stays_out_of_logs_listings_pages_and_errors.
@pytest.mark.parametrize("mode", ["inline"])
def test_a_real_run_of_web_and_worker_logs_no_secret(mode: str, start: Starter, tmp_path: Path) -> None:
    """gunicorn and worker.py at DEBUG: every line they write, every page and body, without a secret."""
    import requests

    extra = {
        "LOG_LEVEL": "DEBUG",
        "WEBHOOK_SECRET": WEBHOOK,
        "SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:2525",
        "PAYMENT_GATEWAY_URL": f"http://shop:{GATEWAY_PASSWORD}@127.0.0.1:9/",
    }
    base = start_web(start, **extra)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bodies: list[str] = []
    ids = []
    for fail in (False, True):
        args = {"path": str(tmp_path / f"{fail}.txt"), "api_key": SECRET, "fail": fail}
        r = requests.post(f"{base}/api/v1/tasks/use_secret", json={"args": args}, headers=auth, timeout=10)
        assert r.status_code == 202, r.text
        ids.append(r.json()["job_id"])
    r = requests.post(
        f"{base}/api/v1/tasks/use_secret",
        json={"args": {"path": 1, "api_key": SECRET}},
        headers=auth,
        timeout=10,
    )
    assert r.status_code == 422
    bodies.append(r.text)
    worker = start("worker.py", "--burst", "--mode", mode, **extra)
    assert start.wait(worker, 30) == 0, start.output(worker)

    assert (tmp_path / "False.txt").read_text() == SECRET == (tmp_path / "True.txt").read_text()
    states = [requests.get(f"{base}/api/v1/jobs/{i}", headers=auth, timeout=10) for i in ids]
    assert [s.json()["state"] for s in states] == ["SUCCESS", "FAILURE"]
    bodies += [s.text for s in states]
    bodies.append(requests.get(f"{base}/api/v1/jobs?task=use_secret", headers=auth, timeout=10).text)
    for job_id in ids:
        for page in (f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"):
            r = requests.get(f"{base}{page}", auth=DASHBOARD, timeout=10)
            assert r.status_code == 200, page
            bodies.append(r.text)

    logs = "".join(start.output(p) for p in start.procs)
    assert "calling the peer with key ***" in logs and "the peer refused key ***" in logs
    for secret in (SECRET, WEBHOOK, SMTP_PASSWORD, GATEWAY_PASSWORD, DASHBOARD[1], TOKEN):
        assert secret not in logs, (secret, [line for line in logs.splitlines() if secret in line][:3])
        for body in bodies:
            assert secret not in body, (secret, body[:300])


def test_the_sentry_dsn_key_is_a_secret_too() -> None:
    """A Sentry DSN's user part is its key (anyone holding it can send events): it is redacted from
    logs and masked in the settings shown, as the passwords of the other URLs are."""
    dsn = "https://dsnkey123:dsnsecret456@o1.ingest.example/7"
    settings = Settings.from_env({"SENTRY_DSN": dsn, "API_TOKENS": TOKEN})
    assert {"dsnkey123", "dsnsecret456"} <= set(settings.secret_values())
    assert settings.public()["sentry_dsn"] == "https://***@o1.ingest.example/7"


# --- every secret of app/foundation/config.py at once, through real processes -------------------------------

#: One distinct value per secret the settings hold (Settings.secret_values and the DSN's key).
EVERY = {
    "API_TOKENS": ("api-token-one-7f3a9c", "api-token-two-1b8e4d"),
    "DASHBOARD_PASSWORD": "dash-pass-8c1f",
    "WEBHOOK_SECRET": "whsec-4d2a77",
    "METRICS_TOKEN": "metrics-token-5e91",
    "REDIS_PASSWORD": "redis-pass-2b6c",
    "DATABASE_PASSWORD": "db-pass-9a0d",
    "SMTP_PASSWORD": "smtp-pass-3e7f",
    "GATEWAY_KEY": "gw-key-6c2b",
    "OLLAMA_PASSWORD": "ollama-pass-1d4e",
    "LITELLM_KEY": "sk-litellm-8f2a",
    "EMBEDDINGS_PASSWORD": "embed-pass-7b3c",
    "ALERT_PASSWORD": "alert-pass-0e5d",
    "HEALTH_PASSWORD": "health-pass-4a9f",
    "SENTRY_KEY": "sentrykey0c7e",
    "SENTRY_SECRET": "sentrysecret5d1b",
}


def _secret_values() -> list[str]:
    out: list[str] = []
    for value in EVERY.values():
        out += list(value) if isinstance(value, tuple) else [value]
    return out


def _postgres_database(name: str) -> str | None:
    """A fresh PostgreSQL database on this machine (trust auth) as a URL with a password, or None."""
    try:
        import psycopg

        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
        ) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
    except Exception:
        return None
    return f"postgresql+psycopg://postgres:{EVERY['DATABASE_PASSWORD']}@127.0.0.1:5432/{name}"


def _drop_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect(
        "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_every_configured_secret_stays_out_of_logs_listings_pages_and_errors(
    start: Starter,
    tmp_path: Path,
    http_peer: Callable[..., HttpPeer],
    smtp_peer: Callable[..., SmtpPeer],
    certificates: Certificates,
) -> None:
    """gunicorn, worker.py and scheduler.py at DEBUG with every secret of app/foundation/config.py set
    (API tokens, dashboard password, metrics token, webhook secret, the passwords in REDIS_URL,
    DATABASE_URL, SMTP_URL, the gateway, Ollama, LiteLLM, embeddings, alert and health-check
    URLs, the Sentry DSN's key and secret), running jobs that use them and failing some: no
    secret's value appears in any line the processes wrote, any API or dashboard answer, any
    error body, or any value stored in Redis."""
    import requests

    redis_server = RedisServer(tmp_path / "redis-auth").start()
    redis_server.client().config_set("requirepass", EVERY["REDIS_PASSWORD"])
    database = f"tasklane_secrets_{os.getpid()}"
    database_url = _postgres_database(database)
    try:
        gateway = http_peer().script("/v1/charges", Answer(201, {"id": "ch_1", "status": "succeeded"}))
        health = http_peer().script("/health", Answer(503, {"status": "down"}))
        ollama = http_peer().script("/api/tags", Answer(200, {"models": [{"name": "llama3"}]}))
        litellm = http_peer().script("/v1/models", Answer(500, {"error": "boom"}))
        alerts = http_peer().script("/alert", Answer(200, {}))
        ingest = http_peer().script("/api/1/envelope/", Answer(200, {"id": "0" * 32}))
        smtp = smtp_peer(credentials=("mailer", EVERY["SMTP_PASSWORD"]))

        def with_password(url: str, user: str, password: str) -> str:
            return url.replace("http://", f"http://{user}:{password}@", 1)

        extra = {
            "LOG_LEVEL": "DEBUG",
            "SSL_CERT_FILE": str(certificates.ca),
            "REDIS_URL": f"redis://:{EVERY['REDIS_PASSWORD']}@127.0.0.1:{redis_server.port}/0",
            "API_TOKENS": ",".join(EVERY["API_TOKENS"]),
            "DASHBOARD_PASSWORD": str(EVERY["DASHBOARD_PASSWORD"]),
            "WEBHOOK_SECRET": str(EVERY["WEBHOOK_SECRET"]),
            "METRICS_TOKEN": str(EVERY["METRICS_TOKEN"]),
            "SMTP_URL": smtp.url,
            "PAYMENT_GATEWAY_URL": with_password(gateway.url("/v1/"), "shop", str(EVERY["GATEWAY_KEY"])),
            "OLLAMA_URL": with_password(ollama.url(""), "o", str(EVERY["OLLAMA_PASSWORD"])),
            "LITELLM_URL": with_password(litellm.url(""), "", str(EVERY["LITELLM_KEY"])),
            "EMBEDDINGS_URL": with_password(
                http_peer().url("/embed"), "e", str(EVERY["EMBEDDINGS_PASSWORD"])
            ),
            "ALERT_WEBHOOK_URL": with_password(alerts.url("/alert"), "a", str(EVERY["ALERT_PASSWORD"])),
            "HEALTH_CHECK_URLS": with_password(health.url("/health"), "h", str(EVERY["HEALTH_PASSWORD"])),
            "SENTRY_DSN": f"http://{EVERY['SENTRY_KEY']}:{EVERY['SENTRY_SECRET']}@127.0.0.1:{ingest.port}/1",
            "OUTBOUND_URL_ALLOWLIST": "127.0.0.1",
        }
        if database_url:
            extra["DATABASE_URL"] = database_url
        migrate_proc = start("-m", "alembic", "upgrade", "head", **extra)
        assert start.wait(migrate_proc, 90) == 0, start.output(migrate_proc)
        base = start_web(start, **extra)
        auth = {"Authorization": f"Bearer {EVERY['API_TOKENS'][1]}"}
        bodies: list[str] = []

        def call(method: str, path: str, **kwargs: Any) -> requests.Response:
            kwargs.setdefault("headers", auth)
            response = requests.request(method, f"{base}{path}", timeout=15, **kwargs)
            bodies.append(f"{method} {path} -> {response.status_code}\n{response.headers}\n{response.text}")
            return response

        jobs = {}
        for task, args in {
            "add": {"x": 1, "y": 2},
            "always_fail": {"message": "boom"},
            "critical_fail": {"message": "critical boom"},
            "use_secret": {"path": str(tmp_path / "used"), "api_key": SECRET, "fail": True},
            "process_payment": {"payment_id": "order-1", "amount": 9.5, "currency": "EUR"},
            "health_check": {},
            "model_cache_refresh": {},
            "send_welcome_email": {"email": "new@example.com", "name": "New"},
        }.items():
            response = call("POST", f"/api/v1/tasks/{task}", json={"args": args})
            assert response.status_code == 202, (task, response.text)
            jobs[task] = response.json()["job_id"]
        # Errors: wrong credentials, bad input, unknown things, a body too large, a bad method.
        for header in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Bearer {EVERY['METRICS_TOKEN']}"},
        ):
            assert call("GET", "/api/v1/jobs", headers=header).status_code == 401
        call("POST", "/api/v1/tasks/add", json={"args": {"x": "two"}})
        call("POST", "/api/v1/tasks/nope", json={})
        call("POST", "/api/v1/tasks/add", data="{", headers={**auth, "Content-Type": "application/json"})
        call("POST", "/api/v1/tasks/add", json={"args": {"pad": "a" * (2 * 1024 * 1024)}})
        call("DELETE", "/api/v1/tasks")
        call("GET", "/api/v1/jobs/does-not-exist")

        worker = start("worker.py", "--burst", "--mode", "fork", **extra)
        assert start.wait(worker, 60) == 0, start.output(worker)[-3000:]
        scheduler = start("scheduler.py", "--burst", **extra)
        assert start.wait(scheduler, 30) == 0, start.output(scheduler)[-3000:]
        wait_for(lambda: ingest.requests("/api/1/envelope/"), 10, message="a Sentry envelope")

        views = {task: call("GET", f"/api/v1/jobs/{job_id}").json() for task, job_id in jobs.items()}
        states = {task: view["state"] for task, view in views.items()}
        assert states["add"] == "SUCCESS" and states["always_fail"] == "FAILURE", states
        assert states["process_payment"] == "SUCCESS", views["process_payment"]["error"]
        assert states["send_welcome_email"] == "SUCCESS", views["send_welcome_email"]["error"]
        assert smtp.received and gateway.requests("/v1/charges") and alerts.requests("/alert")
        for query in ("", "?state=FAILURE", "?state=SUCCESS", "?task=use_secret"):
            call("GET", f"/api/v1/jobs{query}")
        for path in ("/api/v1/tasks", "/api/v1/queues", "/api/v1/workers", "/api/v1/schedules", "/readyz",
                     "/healthz", "/api/v1/openapi.json", "/docs"):  # fmt: skip
            call("GET", path)
        assert call("GET", "/metrics", headers={"Authorization": f"Bearer {EVERY['METRICS_TOKEN']}"}).ok
        assert call("GET", "/metrics", headers={}).status_code == 401
        dashboard = {"auth": (DASHBOARD[0], str(EVERY["DASHBOARD_PASSWORD"]))}
        pages = ["/rq/", "/rq/0/data/queues.json", "/rq/0/data/workers.json", "/rq/0/view/workers"]
        for queue in ("high", "default", "low"):
            for registry in ("queued", "failed", "finished"):
                pages.append(f"/rq/0/data/jobs/{queue}/{registry}/50/asc/1.json")
        for job_id in jobs.values():
            pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
        for page in pages:
            assert call("GET", page, headers={}, **dashboard).status_code == 200, page
        call("GET", "/rq/", headers={}, auth=(DASHBOARD[0], "wrong"))

        logs = {f"{p.args[1]} {p.args[2:4]}": start.output(p) for p in start.procs}
        stored = []
        conn = redis.Redis(port=redis_server.port, password=str(EVERY["REDIS_PASSWORD"]), socket_timeout=5)
        for key in conn.scan_iter(count=1000):
            kind = conn.type(key)
            if kind == b"string":
                stored.append(repr(conn.get(key)))
            elif kind == b"hash":
                stored.append(repr(conn.hgetall(key)))
            elif kind == b"list":
                stored.append(repr(conn.lrange(key, 0, -1)))
            elif kind == b"stream":
                stored.append(repr(conn.xrange(key)))
        leaks = []
        for secret in _secret_values():
            leaks += [(secret, name) for name, text in logs.items() if secret in text]
            leaks += [(secret, body[:200]) for body in bodies if secret in body]
            leaks += [(secret, "redis") for value in stored if secret in value]
        assert leaks == [], leaks[:5]
        assert len(bodies) > 40
        assert all(logs[name] for name in logs if not name.startswith("-m")), list(
            logs
        )  # web, worker, scheduler
        assert database_url or "DATABASE_URL" not in extra  # SQLite when PostgreSQL is absent
    finally:
        redis_server.stop()
        if database_url:
            _drop_postgres_database(database)
