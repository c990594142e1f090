"""The app factory: builds, and does nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.foundation.config import ConfigError, Settings
from tests.servers import free_port


def test_factory_opens_no_connection(tmp_path: Path) -> None:
    """It builds an app against a Redis that is not there, without connecting."""
    app = create_app({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "VAR_DIR": str(tmp_path)})
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert "tasklane" in app.extensions
    assert not (tmp_path / "tasklane.db").exists()


def test_factory_accepts_settings_and_rejects_bad_ones() -> None:
    """It takes Settings or a mapping, and raises ConfigError for a bad mapping."""
    settings = Settings.from_env({"MAX_REQUEST_BYTES": "4096"})
    assert create_app(settings).config["MAX_CONTENT_LENGTH"] == 4096
    with pytest.raises(ConfigError):
        create_app({"MAX_REQUEST_BYTES": "lots"})


def test_routes_of_the_contract_exist(tmp_path: Path) -> None:
    """It serves the probes, the API and the dashboard."""
    app = create_app({"VAR_DIR": str(tmp_path)})
    rules = {r.rule for r in app.url_map.iter_rules()}
    for rule in [
        "/healthz",
        "/readyz",
        "/api/v1/tasks",
        "/api/v1/tasks/<name>",
        "/api/v1/jobs/<job_id>",
        "/rq/",
    ]:
        assert rule in rules


@pytest.mark.timeout(60)
def test_two_apps_with_different_settings_work_side_by_side(tmp_path: Path, redis_server: object) -> None:
    """Two apps in one process, each with its own Redis, tokens and dashboard credentials,
    enqueue into their own Redis and answer only their own callers: create_app changes
    nothing process-wide."""
    from tests.conftest import make_env
    from tests.servers import RedisServer

    second = RedisServer(tmp_path / "second").start()
    try:
        first_url = redis_server.url  # type: ignore[attr-defined]
        env_a = make_env(tmp_path / "a", first_url, API_TOKENS="first-token-0123456789")
        env_b = make_env(tmp_path / "b", second.url, API_TOKENS="second-token-0123456789")
        env_a.update(DASHBOARD_USERNAME="alice", DASHBOARD_PASSWORD="alice-password-1")
        env_b.update(DASHBOARD_USERNAME="bob", DASHBOARD_PASSWORD="bob-password-12")
        first, other = create_app(env_a), create_app(env_b)
        redis_server.client().flushall()  # type: ignore[attr-defined]
        a, b = first.test_client(), other.test_client()
        ha = {"Authorization": "Bearer first-token-0123456789"}
        hb = {"Authorization": "Bearer second-token-0123456789"}
        made_a = a.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=ha)
        made_b = b.post("/api/v1/tasks/add", json={"args": {"x": 3, "y": 4}}, headers=hb)
        assert (made_a.status_code, made_b.status_code) == (202, 202)
        assert a.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=hb).status_code == 401
        job_a, job_b = made_a.get_json()["job_id"], made_b.get_json()["job_id"]
        assert a.get(f"/api/v1/jobs/{job_a}", headers=ha).status_code == 200
        assert a.get(f"/api/v1/jobs/{job_b}", headers=ha).status_code == 404
        assert b.get(f"/api/v1/jobs/{job_b}", headers=hb).status_code == 200
        assert second.client().llen("rq:queue:default") == 1
        assert redis_server.client().llen("rq:queue:default") == 1  # type: ignore[attr-defined]
        assert a.get("/rq/", auth=("alice", "alice-password-1")).status_code == 200
        assert a.get("/rq/", auth=("bob", "bob-password-12")).status_code == 401
        assert b.get("/rq/", auth=("bob", "bob-password-12")).status_code == 200
    finally:
        second.stop()
