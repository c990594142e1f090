"""The runtime: each app's own clients, built lazily from its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import create_app
from app.catalogue.registry import REGISTRY
from app.foundation import runtime
from app.foundation.config import Settings
from app.foundation.runtime import Runtime, connect
from app.services import files, outbound
from tests.conftest import make_env


def test_connect_understands_every_url_form_without_connecting() -> None:
    """redis:// and unix:// URLs give clients, with no connection made."""
    assert connect("redis://127.0.0.1:1/3").connection_pool.connection_kwargs["db"] == 3
    assert (
        connect("unix:///tmp/nowhere.sock").connection_pool.connection_kwargs["path"] == "/tmp/nowhere.sock"
    )


def test_the_engine_is_built_on_first_use_and_released_by_close(tmp_path: Path) -> None:
    """No database file exists until the engine is used; close() disposes of its pool."""
    settings = Settings.from_env({"VAR_DIR": str(tmp_path)})
    rt = Runtime(settings=settings, redis=connect("redis://127.0.0.1:1/0"))
    assert not list(tmp_path.glob("*.db"))
    with rt.engine.connect():
        pass
    assert list(tmp_path.glob("*.db"))
    rt.close()


# --- settings, read one way -------------------------------------------------------------------


def test_inside_an_app_the_settings_in_force_are_the_apps(tmp_path: Path) -> None:
    """settings() is the current app's (the object its runtime holds), and what reads settings
    (the input-file policy, the outbound policy, task overrides) follows it: two apps, two answers."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "ok.txt").write_text("x")
    overrides = json.dumps({"add": {"max_retries": 4}})
    strict = create_app(
        make_env(tmp_path / "a", "redis://127.0.0.1:1/0", INPUT_DIRS=str(inputs), TASK_OVERRIDES=overrides)
    )
    loose = create_app(
        make_env(tmp_path / "b", "redis://127.0.0.1:1/0", OUTBOUND_URL_ALLOWLIST="hooks.internal")
    )
    with strict.app_context():
        assert runtime.settings() is runtime.runtime().settings is runtime.runtime_of(strict).settings
        assert files.check_input("ok.txt") == (inputs / "ok.txt").resolve()
        assert REGISTRY.get("add").retry.max_retries == 4  # type: ignore[union-attr]
        assert not outbound.current_policy().host_admitted("hooks.internal")
    with loose.app_context():
        assert runtime.settings() is runtime.runtime_of(loose).settings
        with pytest.raises(files.PathRefused):
            files.check_input(str(inputs / "ok.txt"))
        assert REGISTRY.get("add").retry.max_retries == 0  # type: ignore[union-attr]
        assert outbound.current_policy().host_admitted("hooks.internal")


def test_outside_an_app_the_settings_are_the_environments_read_once(tmp_path: Path) -> None:
    """Code calling tasks without an app gets the environment's settings, the same object each time
    (the process's standalone runtime, which also holds its Redis client)."""
    from flask import has_app_context

    assert not has_app_context()
    assert runtime.settings() is runtime.settings() is runtime.client_runtime().settings
    assert runtime.settings().redis_url == Settings.from_env().redis_url


def test_nothing_else_in_app_reads_the_settings_another_way() -> None:
    """Only the entry points parse settings (app.factory) and only app.foundation.runtime hands them
    out: no module reaches into an app's extensions or config for them, or parses the environment."""
    root = Path(__file__).resolve().parent.parent
    other_ways = (
        '.extensions["tasklane"]',
        "extensions[EXTENSION].settings",
        "extensions.get(EXTENSION)",
        "TASKLANE_SETTINGS",
        "Settings.from_env(",
        "Settings()",
    )
    allowed = {"app/foundation/runtime.py", "app/foundation/config.py", "app/factory.py"}
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted([*(root / "app").rglob("*.py"), *root.glob("*.py")])
        if str(path.relative_to(root)) not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(way in line for way in other_ways)
    ]
    assert found == []
