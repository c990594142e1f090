"""Schedules as data: ``/api/v1/schedules`` lists, creates, edits, pauses, deletes and runs them."""

from __future__ import annotations

from flask import Response, jsonify, url_for

from app.core import schedules
from app.foundation.runtime import runtime
from app.surfaces.api.blueprint import api
from app.surfaces.api.bodies import json_object
from app.surfaces.api.errors import APIError

_CREATE = '{"name", "task", "args", "cron" (or "interval"), "timezone", "overlap", "catchup_window"}'
_PATCH = '{"cron" or "interval", "timezone", "args", "paused", "overlap", "catchup_window"}'


def _not_found(exc: schedules.ScheduleNotFound) -> APIError:
    return APIError(404, "unknown_schedule", str(exc).strip("'\""))


def _invalid(exc: schedules.InvalidSchedule) -> APIError:
    return APIError(422, "invalid_schedule", "invalid schedule", exc.errors)


def _ttls() -> schedules.Ttls:
    settings = runtime().settings
    return schedules.Ttls(result_ttl=settings.result_ttl, failed_job_ttl=settings.failed_job_ttl)


@api.get("/schedules")
def list_schedules() -> Response:
    """Every schedule: cron or interval, time zone, paused, next and last run, whose fields are whose."""
    return jsonify({"schedules": schedules.list_views(runtime().redis)})


@api.post("/schedules")
def create_schedule() -> tuple[Response, int, dict[str, str]]:
    """Create a schedule of any catalogue task, kept in Redis."""
    body = json_object(shape=_CREATE)
    redis = runtime().redis
    try:
        record = schedules.create(redis, body)
    except schedules.InvalidSchedule as exc:
        raise _invalid(exc) from None
    except schedules.ScheduleExists as exc:
        raise APIError(409, "schedule_exists", str(exc)) from None
    location = url_for("api.get_schedule", schedule=record.name)
    return jsonify(schedules.get_view(redis, record.name)), 201, {"Location": location}


@api.get("/schedules/<schedule>")
def get_schedule(schedule: str) -> Response:
    """One schedule, as the list shows it."""
    try:
        return jsonify(schedules.get_view(runtime().redis, schedule))
    except schedules.ScheduleNotFound as exc:
        raise _not_found(exc) from None


@api.patch("/schedules/<schedule>")
def edit_schedule(schedule: str) -> Response:
    """Change a schedule's fields; on a catalogue schedule they become the operator's."""
    body = json_object(shape=_PATCH)
    redis = runtime().redis
    try:
        schedules.update(redis, schedule, body)
    except schedules.ScheduleNotFound as exc:
        raise _not_found(exc) from None
    except schedules.InvalidSchedule as exc:
        raise _invalid(exc) from None
    return jsonify(schedules.get_view(redis, schedule))


@api.delete("/schedules/<schedule>")
def delete_schedule(schedule: str) -> tuple[str, int]:
    """Remove a created schedule; pause a catalogue one."""
    try:
        schedules.delete(runtime().redis, schedule)
    except schedules.ScheduleNotFound as exc:
        raise _not_found(exc) from None
    return "", 204


@api.post("/schedules/<schedule>/run")
def run_schedule(schedule: str) -> tuple[Response, int, dict[str, str]]:
    """Enqueue the schedule's task with its args now."""
    try:
        job_id = schedules.run_now(runtime().redis, schedule, ttls=_ttls())
    except schedules.ScheduleNotFound as exc:
        raise _not_found(exc) from None
    except schedules.InvalidSchedule as exc:
        raise _invalid(exc) from None
    location = url_for("api.get_job", job_id=job_id)
    return jsonify({"job_id": job_id, "links": {"job": location}}), 202, {"Location": location}


@api.get("/schedules/<schedule>/history")
def schedule_history(schedule: str) -> Response:
    """The last 50 ticks: enqueued (with the job's state and run time), skipped, missed."""
    try:
        return jsonify({"name": schedule, "history": schedules.history(runtime().redis, schedule)})
    except schedules.ScheduleNotFound as exc:
        raise _not_found(exc) from None
