"""The operator console at ``/console/``: overview charts, job search and bulk actions, a job's
timeline, queues and a workflow's graph (server-rendered Jinja, a little JavaScript, no CDN).

Importing :mod:`views` attaches the routes to the blueprint; nothing imports this package back.
"""

from __future__ import annotations

from flask import Flask

from app.surfaces.console import views  # noqa: F401
from app.surfaces.console.blueprint import console


def init_app(app: Flask) -> None:
    """Mount the console at /console/ (behind the dashboard credentials, see access)."""
    app.register_blueprint(console)


__all__ = ["console", "init_app"]
