"""The console's pages and actions (see docs/console.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, abort, jsonify, render_template, request, url_for
from rq.exceptions import DeserializationError, NoSuchJobError

from app.catalogue.registry import REGISTRY, QueueName
from app.core import bulk, filtering
from app.core import schedules as schedule_store
from app.core.listing import decode_cursor, list_jobs
from app.core.outcomes import JobFinished, JobNotFailed, retry_failed, revoke
from app.core.queues import JsonJob, fetch_job
from app.core.states import State
from app.foundation import defaults
from app.foundation.runtime import runtime
from app.ops import series
from app.surfaces.api.bodies import json_object
from app.surfaces.api.errors import APIError, error_response
from app.surfaces.api.jobs import run_bulk
from app.surfaces.api.operations import set_paused
from app.surfaces.console import data
from app.surfaces.console.access import audit, current_user, recent_actions
from app.surfaces.console.blueprint import console
from app.surfaces.console.charts import line_chart, sparkline
from app.surfaces.console.graph import svg, tree

#: Seconds between the overview's refreshes.
REFRESH_SECONDS = 5
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@console.context_processor
def _user() -> dict[str, Any]:
    return {"user": current_user()}


def _span() -> str:
    span = request.args.get("span", "1h")
    return span if span in series.SPANS else "1h"


def _series_name() -> str:
    """The chart's series: ``a:*`` (all), ``t:<task>`` or ``q:<queue>``."""
    name = request.args.get("series", series.ALL)
    kind, _, rest = name.partition(":")
    return name if kind in ("a", "t", "q") and rest and len(name) <= 200 else series.ALL


def _overview_context() -> dict[str, Any]:
    redis = runtime().redis
    span, name = _span(), _series_name()
    points = data.chart_points(redis, span, name)
    label = "all jobs" if name == series.ALL else name.replace("t:", "task ").replace("q:", "queue ")
    charts = [
        (
            f"Jobs ended, {label}",
            line_chart(
                f"Jobs ended per point, {label}, last {span}",
                points["xs"],
                [("succeeded", "ok", points["success"]), ("failed", "bad", points["failure"])],
                chart_id="chart-throughput",
            ),
        ),
        (
            f"Run time, {label}",
            line_chart(
                f"Run time, {label}, last {span}",
                points["xs"],
                [("p50", "p50", points["p50"]), ("p95", "p95", points["p95"])],
                unit="ms",
                chart_id="chart-runtime",
            ),
        ),
    ]
    return {
        "span": span,
        "spans": list(series.SPANS),
        "series": name,
        "charts": charts,
        "totals": data.totals(redis, span),
        "queues": data.queues(redis),
        "workers": data.workers(redis),
        "scheduler": data.scheduler(redis),
        "memory": data.redis_memory(redis),
        "actions": recent_actions(),
        "tasks": [spec.name for spec in REGISTRY.all_declared()],
        "refresh_seconds": REFRESH_SECONDS,
    }


@console.get("/")
def overview() -> str:
    return render_template("console/overview.html", page="overview", **_overview_context())


@console.get("/overview/panel")
def overview_panel() -> str:
    """The overview's data part alone, which the page fetches every few seconds."""
    return render_template("console/_overview_panel.html", **_overview_context())


def _filter_from_request() -> tuple[filtering.JobFilter, str | None]:
    text = request.args.get("q", "")
    try:
        return filtering.parse(text), None
    except filtering.FilterError as exc:
        return filtering.JobFilter(), str(exc)


@console.get("/jobs")
def jobs() -> str:
    job_filter, error = _filter_from_request()
    cursor = None
    raw_cursor = request.args.get("cursor")
    if raw_cursor and not error:
        try:
            cursor = decode_cursor(raw_cursor)
        except ValueError:
            error = "that page link is not one this console made; start again from the first page"
    rows: list[Any] = []
    next_cursor = None
    if not error:
        rows, next_cursor = list_jobs(
            runtime().redis, job_filter.state, job_filter.task, job_filter.queue, cursor, defaults.PAGE_SIZE,
            job_filter=job_filter, view=data.row,
        )  # fmt: skip
    return render_template(
        "console/jobs.html",
        page="jobs",
        q=request.args.get("q", ""),
        syntax=filtering.SYNTAX,
        error=error,
        rows=rows,
        next_url=url_for("console.jobs", q=request.args.get("q", ""), cursor=next_cursor)
        if next_cursor
        else None,
        first_page=raw_cursor is None,
        suggestions={
            "state": [st.value.lower() for st in State],
            "task": [spec.name for spec in REGISTRY.all_declared()],
            "queue": [q.value for q in QueueName],
            "since": ["15m", "1h", "24h", "7d"],
        },
    )


def _job(job_id: str) -> JsonJob:
    try:
        return fetch_job(job_id, runtime().redis)
    except (NoSuchJobError, DeserializationError, ValueError):
        abort(404)


@console.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    found = data.job_page(_job(job_id))
    return render_template("console/job.html", page="jobs", **found)


@console.get("/queues")
def queues() -> str:
    redis = runtime().redis
    found = data.queues(redis)
    charts = []
    for queue in found:
        points = data.chart_points(redis, "1h", f"q:{queue['name']}")
        lines = [("succeeded", "ok", points["success"]), ("failed", "bad", points["failure"])]
        charts.append((queue["name"], line_chart(f"queue {queue['name']}", points["xs"], lines,
                                                 chart_id=f"chart-queue-{queue['name']}")))  # fmt: skip
    return render_template("console/queues.html", page="queues", queues=found, charts=charts)


@console.post("/actions/queues/<name>/<action>")
def queue_action(name: str, action: str) -> tuple[Response, int]:
    """Pause or resume a queue: the same call as POST /api/v1/queues/<name>/pause|resume."""
    if action not in ("pause", "resume"):
        abort(404)
    try:
        out = set_paused(name, action == "pause")
    except APIError as exc:
        return _api_error(exc)
    audit(f"queue {action}", queue=name)
    return jsonify(out), 200


def _in_zone(stamp: str | None, zone: str) -> str | None:
    """An ISO 8601 UTC time in the schedule's time zone (None stays None)."""
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    except (ValueError, KeyError):
        return None
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


@console.get("/schedules")
def schedules() -> str:
    """Every schedule (the catalogue's and created ones): cadence, zone, pause, next and last run in
    its zone and UTC, and a week of its task's outcomes."""
    redis = runtime().redis
    rows = []
    for entry in schedule_store.list_views(redis):
        # Only the two counts a point (no run-time buckets): 2 fields of 168 hour hashes.
        week = series.points(redis, "7d", f"t:{entry['task']}", ("success", "failure"), 0)
        ok = [float(t.counts["success"]) for _, t in week]
        bad = [float(t.counts["failure"]) for _, t in week]
        lines = [("succeeded", "ok", ok), ("failed", "bad", bad)]
        zone = str(entry.get("timezone") or "UTC")
        rows.append(
            {
                **entry,
                "history": sparkline(lines),
                "ran": int(sum(ok) + sum(bad)),
                "next_local": _in_zone(entry.get("next_run"), zone),
                "last_local": _in_zone(entry.get("last_run"), zone),
            }
        )
    return render_template("console/schedules.html", page="schedules", schedules=rows)


#: What the schedules page edits (arguments, which may be masked there, only through the API).
CONSOLE_EDITABLE = ("cron", "interval", "timezone")


@console.post("/actions/schedules/<name>/<action>")
def schedule_action(name: str, action: str) -> tuple[Response, int]:
    """Pause, resume, edit (cron or interval, zone) or run a schedule now: the same core calls as
    the schedules API (an edit is its PATCH: the fields become the operator's)."""
    redis = runtime().redis
    settings = runtime().settings
    out: dict[str, Any]
    sent = request.get_json(silent=True)
    body: dict[str, Any] = sent if isinstance(sent, dict) else {}
    try:
        if action == "edit":
            fields = {k: body[k] for k in CONSOLE_EDITABLE if k in body and body[k] not in ("", None)}
            if not fields:
                return error_response(422, "invalid_schedule", "give cron or interval, or timezone"), 422
            schedule_store.update(redis, name, fields)
            out = {"name": name, "changed": sorted(fields)}
        elif action in ("pause", "resume"):
            schedule_store.update(redis, name, {"paused": action == "pause"})
            out = {"name": name, "paused": action == "pause"}
        elif action == "run":
            ttls = schedule_store.Ttls(result_ttl=settings.result_ttl, failed_job_ttl=settings.failed_job_ttl)
            out = {"name": name, "job_id": schedule_store.run_now(redis, name, ttls=ttls)}
        else:
            abort(404)
    except schedule_store.ScheduleNotFound:
        return error_response(404, "unknown_schedule", f"no schedule named {name!r}"), 404
    except schedule_store.InvalidSchedule as exc:
        return error_response(422, "invalid_schedule", str(exc), exc.errors), 422
    detail = {"job_id": out["job_id"]} if "job_id" in out else {}
    if action == "edit":
        detail = {key: body[key] for key in out["changed"]}
    audit(f"schedule {action}", schedule=name, **detail)
    return jsonify(out), 202 if action == "run" else 200


def _workflow(workflow_id: str) -> dict[str, Any]:
    redis = runtime().redis
    record = data.workflow_record(redis, workflow_id)
    if record is None:
        abort(404)
    states = data.workflow_states(redis, record["job_ids"])
    root = tree(record["request"], record["job_ids"])
    href = url_for("console.job", job_id="JOBID").replace("JOBID", "{id}")
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    done = not (set(states.values()) - FINAL_STATES - {"EXPIRED"})
    return {
        "workflow_id": workflow_id,
        "record": record,
        "graph": svg(root, states, href),
        "counts": dict(sorted(counts.items())),
        "total": len(states),
        "finished": done,
    }


@console.get("/workflows/<workflow_id>")
def workflow(workflow_id: str) -> str:
    return render_template("console/workflow.html", page="workflow", **_workflow(workflow_id))


@console.get("/workflows/<workflow_id>/graph")
def workflow_graph(workflow_id: str) -> str:
    return render_template("console/_workflow_graph.html", **_workflow(workflow_id))


# --- actions (POST, JSON; access.guard checks the user, the origin and the token) ----------------


def _api_error(exc: APIError) -> tuple[Response, int]:
    return error_response(exc.status, exc.code, exc.message, exc.details), exc.status


@console.post("/actions/bulk")
def bulk_action() -> tuple[Response, int]:
    """The console's bulk action: the filter as typed; the same code as POST /api/v1/jobs/bulk."""
    try:
        body = json_object(shape='{"action", "q", "dry_run"}')
        try:
            action = bulk.Action(str(body.get("action")))
        except ValueError:
            raise APIError(422, "invalid_bulk", "action must be retry, revoke or delete") from None
        try:
            job_filter = filtering.parse(str(body.get("q") or ""))
        except filtering.FilterError as exc:
            raise APIError(422, "invalid_bulk", str(exc)) from None
        dry_run = bool(body.get("dry_run"))
        response, status = run_bulk(action, job_filter, f"console:{current_user().name}", dry_run)
    except APIError as exc:
        return _api_error(exc)
    if not dry_run:
        audit(f"bulk {action.value}", filter=job_filter.text(), matched=response.get_json()["matched"])
    return response, status


@console.post("/actions/jobs/<job_id>/<action>")
def job_action(job_id: str, action: str) -> tuple[Response, int]:
    found = _job(job_id)
    try:
        if action == "retry":
            retry_failed(found)
        elif action == "revoke":
            revoke(found)
        else:
            abort(404)
    except (JobNotFailed, JobFinished) as exc:
        return error_response(409, "conflict", str(exc)), 409
    audit(action, job_id=job_id)
    return jsonify({"job_id": job_id, "action": action, "done": True}), 202
