"""Tasklane: a Flask API that enqueues jobs into RQ queues on Redis.

``create_app`` lives in :mod:`app.factory`; it is reachable here as ``app.create_app`` (what
gunicorn's ``'app:create_app()'`` names) without importing the whole service whenever a
single module such as ``app.config`` is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        # Lazy on purpose: the factory imports every layer, and app.config must stay cheap.
        from app.factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
