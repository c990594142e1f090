"""Tasklane: a Flask API that enqueues jobs into RQ queues on Redis.

``create_app()`` only builds the app: it reads and validates settings, creates lazy
clients and registers the blueprints. It opens no connection and starts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from app.config import Settings

__all__ = ["create_app"]


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the web app from ``config`` (Settings, an environment mapping, or os.environ)."""
    from app import dashboard, runtime
    from app.api import api, probes
    from app.api.bodies import LingeringClose
    from app.api.errors import register_error_handlers
    from app.registry import REGISTRY

    settings = config if isinstance(config, Settings) else Settings.from_env(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["TASKLANE_SETTINGS"] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]
    REGISTRY.load_modules(settings.task_modules)
    runtime.init_app(app, settings)
    register_error_handlers(app)
    app.register_blueprint(probes)
    app.register_blueprint(api)
    dashboard.init_app(app, settings)
    app.wsgi_app = LingeringClose(app.wsgi_app)  # type: ignore[method-assign]
    return app
