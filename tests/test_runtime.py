"""The runtime: each app's own clients, built lazily from its settings."""

from __future__ import annotations

from pathlib import Path

from app.foundation.config import Settings
from app.foundation.runtime import Runtime, connect


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
