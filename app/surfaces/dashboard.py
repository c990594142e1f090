"""rq-dashboard mounted at ``/rq/``, JSON-only, behind basic auth.

rq-dashboard 0.9 fetches jobs through module-level names (``Job``, ``Queue``,
``Worker``, ``requeue_job``) with its pickle default in several views; those names are
pointed at the JSON classes here so that no view can unpickle what is in Redis. Its job
data view fails on jobs that have ``depends_on`` (it calls ``.decode`` on ids that RQ
now returns as text; the upstream fix is unreleased), so that one view is replaced.
Jobs that are not stored as JSON (pickled ones written by something else) are neither
read nor requeued: their job data answers 422 instead of an internal error.

0.9 trusts its URL parts: a job id RQ cannot hold (a dot, non-ASCII letters) raises
``ValueError``, an unknown registry name leaves a local unset, a page size of 0 divides
by zero, a non-number or a 30-digit page overflows, an instance number past the
configured Redis URLs raises ``LookupError``, and compacting a queue that has no key
fails on ``RENAME``. The guard below answers those with 404 or 400 in the API's error
shape before any dashboard view runs, and compacting an absent queue is a no-op.
"""

from __future__ import annotations

import hmac
import json
from html import escape
from typing import Any
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, Response, current_app, jsonify, request
from redis.exceptions import ResponseError
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import JOB_ID_PATTERN, parse_job_id
from rq.serializers import JSONSerializer
from rq_dashboard import web as rqd_web

from app.catalogue.registry import MASK
from app.core import compat, sealing
from app.core.outcomes import JobNotFailed, retry_failed
from app.core.queues import JsonJob, JsonQueue, all_queues, task_spec
from app.core.states import task_name
from app.core.steps import job_ids, resolve
from app.foundation.config import RedisTlsVerify, Settings
from app.foundation.meta import Meta
from app.processes.workers import JsonWorker
from app.surfaces.api.errors import error_response

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
#: rq-dashboard 0.9 routes that change state although they also answer GET; only POST is allowed.
_STATE_CHANGING_GET = frozenset({f"{BLUEPRINT}.requeue_all"})
#: The registry names of the dashboard's job lists (``queued`` is the queue itself).
REGISTRY_NAMES = frozenset({"queued", "started", "finished", "failed", "deferred", "scheduled", "canceled"})
#: The dashboard's own page-size field allows 1 to 200 jobs a page.
MAX_PER_PAGE = 200
#: Highest page number: far past any real registry, and (page x size) stays a Redis integer.
MAX_PAGE = 10**9
#: Longest text of one argument in a job's description; longer ones end in an ellipsis.
MAX_ARGUMENT_CHARS = 200


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
    """Requeue as ``POST /api/v1/jobs/<id>/retry`` does (the job's retry flags are cleared too)."""
    job = _fetch_json_job(job_id, connection)
    retry_failed(job)
    return job


def _argument(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_ARGUMENT_CHARS else text[: MAX_ARGUMENT_CHARS - 1] + "…"


def _step_input(job: JsonJob) -> tuple[str, str] | None:
    """A workflow step's input from earlier steps: (field, the value it received, or where it comes from)."""
    spec = (job.meta.get(Meta.WORKFLOW) or {}).get("input")
    if not spec:
        return None
    ids = job_ids(spec["from"])
    upstream = JsonJob.fetch_many(ids, connection=job.connection)
    if all(u is not None and u.get_status(refresh=False) == "finished" for u in upstream):
        results = {u.id: u.return_value() for u in upstream if u is not None}
        return spec["field"], _argument(resolve(spec["from"], results))
    sources = ", ".join(ids[:3]) + (", …" if len(ids) > 3 else "")
    return spec["field"], f"(the result of {sources})"


def describe_job(job: JsonJob) -> str:
    """The job as the dashboard lists it: ``add(x=2, y=3)``, the task's name and its arguments as
    JSON (an integer stays an integer, text is quoted); a workflow step also shows the value it
    received from the steps before it, or where that value will come from while they run."""
    try:
        kwargs = dict(job.kwargs)
        name = task_name(job) or "?"
        received = _step_input(job)
        spec = task_spec(job)
    except (DeserializationError, ValueError, TypeError):
        return "(not stored as JSON; not shown)"
    if sealing.is_encrypted(job):
        return f"{name}({MASK})"  # stored encrypted: not one argument is shown
    sensitive = spec.sensitive if spec is not None else frozenset()
    if received is not None and received[0] in sensitive:
        received = (received[0], MASK)
    parts = [f"{key}={MASK if key in sensitive else _argument(value)}" for key, value in kwargs.items()]
    if received is not None:
        parts.insert(0, f"{received[0]}={received[1]}")
    return f"{name}({', '.join(parts)})"


def _text(value: Any) -> Any:
    """``value`` with every string HTML-escaped (keys too), for a template that inserts it raw."""
    if isinstance(value, str):
        return escape(value, quote=False)
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {_text(k) if isinstance(k, str) else k: _text(v) for k, v in value.items()}
    return value


def _current_job(job: JsonJob | None) -> Any:
    """A worker's current job for the workers list; 0.9's template inserts its call string raw."""
    if job is None:
        return "idle"
    serialize_date, _ = compat.dashboard_helpers()
    description = describe_job(job)
    return {
        "job_id": job.id,
        "description": description,  # the template escapes this one itself
        "created_at": serialize_date(job.created_at),
        "call_string": escape(description, quote=False),
    }


def _has_sensitive(job: JsonJob) -> bool:
    spec = task_spec(job)
    return sealing.is_encrypted(job) or (spec is not None and bool(spec.sensitive))


def _job_info(instance_number: int, job_id: str) -> Response:
    """The dashboard's job data (replacing 0.9's view, which fails on dependencies).

    0.9's job page inserts the description, result, metadata and error of this answer into
    the page as HTML without escaping them; they carry the job's arguments and output, which
    API callers choose, so every text in them is escaped here (a stored cross-site script
    would otherwise run in the operator's browser, with the dashboard's own origin).
    """
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
        "result": _text(job.return_value()),
        "exc_info": _text(latest.exc_string) if latest else None,
        "description": _text(describe_job(job) if _has_sensitive(job) else format_job_description(job)),
        "metadata": _text(json.dumps(job.get_meta(), cls=encoder, ensure_ascii=False)),
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


def _whole_number(value: object, low: int, high: int) -> bool:
    """True when ``value`` (an int, or the text of a URL part) is a whole number in low..high."""
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 12:
            return False
        value = int(value)
    return isinstance(value, int) and low <= value <= high


def _bad_url_part() -> Response | None:
    """The 404 or 400 answer for a dashboard URL part that 0.9 would turn into a 500; else None."""
    args = request.view_args or {}
    instance = args.get("instance_number")
    if instance is not None and instance >= len(current_app.config.get("RQ_DASHBOARD_REDIS_URL") or ()):
        return error_response(404, "not_found", f"no Redis instance number {instance} is configured")
    job_id = args.get("job_id")
    if job_id is not None and not JOB_ID_PATTERN.fullmatch(parse_job_id(job_id)):
        return error_response(404, "job_not_found", f"no job with id {job_id!r}")
    registry = args.get("registry_name")
    if registry is not None and registry not in REGISTRY_NAMES:
        known = ", ".join(sorted(REGISTRY_NAMES))
        return error_response(404, "not_found", f"no job registry named {registry!r}; there are {known}")
    if "per_page" in args and not _whole_number(args["per_page"], 1, MAX_PER_PAGE):
        return error_response(
            400, "bad_request", f"jobs per page must be a whole number from 1 to {MAX_PER_PAGE}"
        )
    if "page" in args and not _whole_number(args["page"], 1, MAX_PAGE):
        return error_response(400, "bad_request", f"page must be a whole number from 1 to {MAX_PAGE}")
    if "order" in args and args["order"] not in ("asc", "dsc"):
        return error_response(400, "bad_request", "order must be asc or dsc")
    return None


def _compact_absent_queue_is_noop(view: Any) -> Any:
    """Wrap 0.9's compact view: a queue with no key (empty) has nothing to compact."""

    def compact_queue(queue_name: str) -> Any:
        try:
            return view(queue_name)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return jsonify({"status": "OK"}), {"Cache-Control": "no-store"}

    return compact_queue


def _same_origin() -> bool:
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.host


def dashboard_redis_url(settings: Settings) -> str:
    """REDIS_URL as rq-dashboard connects with it (it builds its own clients from the URL, one
    per request): with REDIS_TLS_VERIFY=none, a ``rediss://`` URL carries redis-py's options
    for an unverified certificate."""
    url = settings.redis_url
    if settings.redis_tls_verify is RedisTlsVerify.NONE and url.startswith("rediss://"):
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, "ssl_cert_reqs=none&ssl_check_hostname=false") if q)
        url = parts._replace(query=query).geturl()
    return url


def init_app(app: Flask, settings: Settings) -> None:
    """Mount the dashboard at /rq/ with basic auth and JSON-only job access."""
    compat.make_dashboard_json_only(
        JsonJob, JsonQueue, JsonWorker, _requeue_json_job, describe_job, _current_job
    )
    app.config["RQ_DASHBOARD_REDIS_URL"] = dashboard_redis_url(settings)
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rqd_web.setup_rq_connection(app)
    app.view_functions[f"{BLUEPRINT}.job_info"] = _job_info
    compact = f"{BLUEPRINT}.compact_queue"
    app.view_functions[compact] = _compact_absent_queue_is_noop(app.view_functions[compact])
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
        # rq-dashboard lists the queues of RQ's set, where RQ adds one only at its first job:
        # every declared queue is added, so that an unused one (low) shows from the start.
        compat.register_queues(current_app.redis_conn, all_queues(current_app.redis_conn))  # type: ignore[attr-defined]
        if request.endpoint in _STATE_CHANGING_GET and request.method != "POST":
            return error_response(
                405, "method_not_allowed", "this dashboard action needs POST", headers={"Allow": "POST"}
            )
        # Browsers resend basic credentials on cross-site requests: refuse cross-site writes.
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin():
            return error_response(403, "forbidden", "dashboard actions must come from the dashboard itself")
        return _bad_url_part()

    @app.errorhandler(NoSuchJobError)
    def _no_such_job(exc: NoSuchJobError) -> Response:
        return error_response(404, "job_not_found", str(exc) or "no such job")

    @app.errorhandler(JobNotFailed)
    def _not_failed(exc: JobNotFailed) -> Response:
        return error_response(409, "job_not_failed", str(exc))

    @app.errorhandler(NotJsonJobError)
    def _not_json_job(exc: NotJsonJobError) -> Response:
        return error_response(422, "job_not_json", str(exc))
