"""rq-dashboard mounted at ``/rq/``, JSON-only, behind basic auth.

rq-dashboard 0.9 fetches jobs through module-level names (``Job``, ``Queue``,
``Worker``, ``requeue_job``) with its pickle default in several views; those names are
pointed at the JSON classes here so that no view can unpickle what is in Redis. Its job
data view fails on jobs that have ``depends_on`` (it calls ``.decode`` on ids that RQ
now returns as text; the upstream fix is unreleased), so that one view is replaced.
Jobs that are not stored as JSON (pickled ones written by something else) are neither
read nor requeued: their job data answers 422 instead of an internal error.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, Response, current_app, jsonify, request
from rq.exceptions import NoSuchJobError
from rq.serializers import JSONSerializer
from rq_dashboard import web as rqd_web

from app import compat
from app.api.errors import error_response
from app.config import Settings
from app.queues import JsonJob, JsonQueue
from app.workers import JsonWorker

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
#: rq-dashboard 0.9 routes that change state although they also answer GET; only POST is allowed.
_STATE_CHANGING_GET = frozenset({f"{BLUEPRINT}.requeue_all"})


class NotJsonJobError(Exception):
    """A job in Redis is not stored as JSON; the dashboard neither reads nor requeues it."""


def _stored_as_json(job: JsonJob) -> bool:
    """True when the job's payload and meta are JSON (checked without ever unpickling)."""
    raw_meta = job.connection.hget(job.key, "meta")
    try:
        JSONSerializer.loads(job.data)
        if raw_meta:
            JSONSerializer.loads(raw_meta)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return False
    return True


def _fetch_json_job(job_id: str, connection: Any) -> JsonJob:
    job = JsonJob.fetch(job_id, connection=connection)
    if not _stored_as_json(job):  # type: ignore[arg-type]
        raise NotJsonJobError(f"job {job_id} is not stored as JSON; the dashboard does not read it")
    return job  # type: ignore[return-value]


def _requeue_json_job(job_id: str, connection: Any, serializer: Any = None) -> JsonJob:
    job = _fetch_json_job(job_id, connection)
    job.requeue()
    return job


def _job_info(instance_number: int, job_id: str) -> Response:
    """The dashboard's job data (replacing 0.9's view, which fails on dependencies)."""
    connection = current_app.redis_conn  # type: ignore[attr-defined]
    job = _fetch_json_job(job_id, connection)
    serialize_date, format_job_description = compat.dashboard_helpers()
    latest = job.latest_result()
    encoder = current_app.config.get("RQ_DASHBOARD_JSON_ENCODER", json.JSONEncoder)
    out: dict[str, Any] = {
        "id": job.id,
        "created_at": serialize_date(job.created_at),
        "enqueued_at": serialize_date(job.enqueued_at),
        "started_at": serialize_date(job.started_at),
        "ended_at": serialize_date(job.ended_at),
        "origin": job.origin,
        "status": job.get_status(),
        "result": job.return_value(),
        "exc_info": latest.exc_string if latest else None,
        "description": format_job_description(job),
        "metadata": json.dumps(job.get_meta(), cls=encoder),
    }
    dependency_ids = [d.decode() if isinstance(d, bytes) else d for d in job.dependency_ids]
    dependency_ids = [d.split(":")[-1].strip() for d in dependency_ids]
    if dependency_ids:
        out["depends_on"] = dependency_ids
        out["depends_on_status"] = [
            "active" if connection.exists(JsonJob.key_for(dep)) else "expired" for dep in dependency_ids
        ]
    response = jsonify(out)
    response.headers["Cache-Control"] = "no-store"
    return response


def _same_origin() -> bool:
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.host


def init_app(app: Flask, settings: Settings) -> None:
    """Mount the dashboard at /rq/ with basic auth and JSON-only job access."""
    compat.make_dashboard_json_only(JsonJob, JsonQueue, JsonWorker, _requeue_json_job)
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rqd_web.setup_rq_connection(app)
    app.view_functions[f"{BLUEPRINT}.job_info"] = _job_info
    username = settings.dashboard_username.encode()
    password = settings.dashboard_password.encode()

    @app.before_request
    def _dashboard_guard() -> Response | None:
        if request.blueprint != BLUEPRINT:
            return None
        auth = request.authorization
        given_user = (auth.username or "").encode() if auth and auth.type == "basic" else b""
        given_pass = (auth.password or "").encode() if auth and auth.type == "basic" else b""
        # Both comparisons always run, in constant time; no credentials configured means no entry.
        user_ok = hmac.compare_digest(given_user, username)
        pass_ok = hmac.compare_digest(given_pass, password)
        if not (username and password and user_ok and pass_ok):
            return error_response(
                401,
                "unauthorized",
                "the dashboard needs DASHBOARD_USERNAME / DASHBOARD_PASSWORD (HTTP basic auth)",
                headers={"WWW-Authenticate": 'Basic realm="tasklane dashboard", charset="UTF-8"'},
            )
        if request.endpoint in _STATE_CHANGING_GET and request.method != "POST":
            return error_response(
                405, "method_not_allowed", "this dashboard action needs POST", headers={"Allow": "POST"}
            )
        # Browsers resend basic credentials on cross-site requests: refuse cross-site writes.
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin():
            return error_response(403, "forbidden", "dashboard actions must come from the dashboard itself")
        return None

    @app.errorhandler(NoSuchJobError)
    def _no_such_job(exc: NoSuchJobError) -> Response:
        return error_response(404, "job_not_found", str(exc) or "no such job")

    @app.errorhandler(NotJsonJobError)
    def _not_json_job(exc: NotJsonJobError) -> Response:
        return error_response(422, "job_not_json", str(exc))
