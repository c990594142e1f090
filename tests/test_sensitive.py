"""Sensitive task arguments and the service's secrets never reach a log line, the dashboard,
a job view or an error body; the task itself still receives the real value."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.config import Settings
from app.logs import configure_logging, release_secrets
from app.queues import JsonJob, JsonQueue
from app.registry import REGISTRY
from app.workers import JsonInlineWorker
from tests.conftest import DASHBOARD, TOKEN, make_env
from tests.servers import Starter, start_web

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
@pytest.mark.parametrize("mode", ["fork", "inline"])
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
