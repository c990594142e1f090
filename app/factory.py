"""Building the app, and starting a worker or scheduler process around it.

``create_app()`` only builds: it reads and validates settings, creates lazy clients,
loads the task catalogue and registers the blueprints. It opens no connection, starts
nothing and changes nothing process-wide, so two apps with different settings work side
by side in one process.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

from flask import Flask
from redis.exceptions import RedisError

from app import services
from app.catalogue.registry import REGISTRY, CatalogueError
from app.foundation import outages, runtime
from app.foundation.config import Settings, load_or_exit
from app.ops import observability, series
from app.ops.logs import configure_logging
from app.surfaces import cli, console, dashboard
from app.surfaces.api import api, probes
from app.surfaces.api import metrics as metrics_api
from app.surfaces.api.bodies import LingeringClose
from app.surfaces.api.docs import docs
from app.surfaces.api.errors import register_error_handlers


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
    app.json.sort_keys = False  # type: ignore[attr-defined]
    REGISTRY.load_modules(settings.task_modules)
    REGISTRY.check_overrides(settings.task_overrides)
    series.set_queue_resolver(_catalogue_queue)
    runtime.init_app(app, settings)
    services.init_app(app, settings)
    register_error_handlers(app)
    observability.init_app(app)
    app.register_blueprint(probes)
    app.register_blueprint(api)
    metrics_api.init_app(app)
    app.register_blueprint(docs)
    dashboard.init_app(app, settings)
    console.init_app(app)
    cli.init_app(app)
    app.wsgi_app = LingeringClose(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _catalogue_queue(task: str) -> str | None:
    """A task's queue in the catalogue (overrides in force), for the console's per-queue series."""
    spec = REGISTRY.get(task)
    return spec.queue.value if spec is not None else None


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

    Redis may still be starting (or restarting): the process waits for it with backoff, up
    to REDIS_WAIT_SECONDS. It exits with one line naming the problem when a setting is bad,
    the catalogue is inconsistent, or Redis did not answer in that time.
    """
    settings = load_or_exit(process=process)
    configure_logging(settings)
    observability.init_process(settings, process)  # Sentry and tracing, when configured
    log = logging.getLogger(f"tasklane.{process}")
    log.debug("settings: %s", settings.public())
    if not os.environ.get("REDIS_URL"):
        # Said out loud: a stray process would otherwise attach to whatever Redis runs on 6379.
        log.warning("REDIS_URL is not set: using %s (scripts/run starts an embedded Redis instead)",
                    settings.redis_url)  # fmt: skip
    try:
        app = create_app(settings)
    except CatalogueError as exc:
        print(f"{process}: task catalogue error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    redis = runtime.runtime_of(app).redis
    wait = settings.redis_wait_seconds
    try:
        reached = outages.wait_until_reachable(redis, limit=wait, fail_fast=outages.MISCONFIGURED)
    except RedisError as exc:
        _exit_unreachable(process, str(exc))
    if not reached:
        last = outages.OUTAGE.last_error
        _exit_unreachable(process, f"no answer within REDIS_WAIT_SECONDS={wait} s ({last})")
    return app


def _exit_unreachable(process: str, why: str) -> NoReturn:
    print(f"{process}: cannot reach Redis (REDIS_URL): {why}", file=sys.stderr, flush=True)
    raise SystemExit(2)
