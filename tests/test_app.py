"""The app factory: builds, and does nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.config import ConfigError, Settings
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
