"""The HTTP API: ``/api/v1`` (bearer token) and the unauthenticated probes.

Each view module attaches its routes to the blueprint of :mod:`app.surfaces.api.blueprint`;
importing them here registers the routes (and nothing imports this package back).
"""

from __future__ import annotations

from app.surfaces.api import jobs, operations, schedules, search, tasks, workflows  # noqa: F401
from app.surfaces.api.blueprint import api
from app.surfaces.api.probes import probes

__all__ = ["api", "probes"]
