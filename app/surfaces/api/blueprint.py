"""The ``/api/v1`` blueprint, behind the bearer token: every view module attaches its routes to it."""

from __future__ import annotations

from flask import Blueprint

from app.surfaces.api.auth import require_token

api = Blueprint("api", __name__, url_prefix="/api/v1")
api.before_request(require_token)
