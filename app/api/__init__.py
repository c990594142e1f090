"""The HTTP API: ``/api/v1`` (bearer token) and the unauthenticated probes."""

from __future__ import annotations

from flask import Blueprint

from app.api.auth import require_token

api = Blueprint("api", __name__, url_prefix="/api/v1")
api.before_request(require_token)

# The view modules attach their routes to ``api``; import them for that effect.
from app.api import jobs, operations, search, tasks, workflows  # noqa: E402,F401
from app.api.probes import probes  # noqa: E402

__all__ = ["api", "probes"]
