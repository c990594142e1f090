"""Building the app, and starting a worker or scheduler process around it.

``create_app()`` only builds: it reads and validates settings, creates lazy clients,
loads the task catalogue and registers the blueprints. It opens no connection, starts
nothing and changes nothing process-wide, so two apps with different settings work side
by side in one process.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from flask import Flask
from redis.exceptions import RedisError

from app import cli, dashboard, runtime, services
from app.api import api, probes
from app.api.bodies import LingeringClose
from app.api.docs import docs
from app.api.errors import register_error_handlers
from app.config import Settings, load_or_exit
from app.logs import configure_logging
from app.registry import REGISTRY, CatalogueError


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the web app from ``config`` (Settings, an environment mapping, or os.environ)."""
    if config is None:
        # The process's own environment (the flask command, gunicorn's app:create_app()): a bad
        # setting or TASK_OVERRIDES stops it with one line naming it, as every process does.
        settings = load_or_exit(process="tasklane")
        check_catalogue(settings, process="tasklane")
    else:
        settings = config if isinstance(config, Settings) else Settings.from_env(config)
    app = Flask("app")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["TASKLANE_SETTINGS"] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]
    REGISTRY.load_modules(settings.task_modules)
    REGISTRY.check_overrides(settings.task_overrides)
    runtime.init_app(app, settings)
    services.init_app(app, settings)
    register_error_handlers(app)
    app.register_blueprint(probes)
    app.register_blueprint(api)
    app.register_blueprint(docs)
    dashboard.init_app(app, settings)
    cli.init_app(app)
    app.wsgi_app = LingeringClose(app.wsgi_app)  # type: ignore[method-assign]
    return app


def check_catalogue(settings: Settings, process: str) -> None:
    """Load the catalogue and check TASK_OVERRIDES against it, or stop with one line naming the problem."""
    try:
        REGISTRY.load_modules(settings.task_modules)
        REGISTRY.check_overrides(settings.task_overrides)
    except CatalogueError as exc:
        print(f"{process}: task catalogue error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def start_process(process: str) -> Flask:
    """The app of a worker or scheduler process: settings checked, logging set, Redis reached.

    Exits with one line naming the problem when a setting is bad, the catalogue is
    inconsistent, or Redis does not answer.
    """
    settings = load_or_exit(process=process)
    configure_logging(settings)
    logging.getLogger(f"tasklane.{process}").debug("settings: %s", settings.public())
    try:
        app = create_app(settings)
    except CatalogueError as exc:
        print(f"{process}: task catalogue error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        app.extensions[runtime.EXTENSION].redis.ping()
    except RedisError as exc:
        print(f"{process}: cannot reach Redis (REDIS_URL): {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return app
