"""The ``/console/`` blueprint, with its Jinja templates and static assets (no CDN: all in the repo)."""

from __future__ import annotations

from flask import Blueprint

from app.surfaces.console.access import guard, secure_headers

console = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
console.before_request(guard)
console.after_request(secure_headers)
