"""The console's per-minute and per-hour outcome series: written where outcomes are counted,
per task, per queue and in all, bounded by TTLs, readable as chart points and window totals."""

from __future__ import annotations

import itertools
import time

from flask import Flask
from flask.testing import FlaskClient
from rq.serializers import JSONSerializer

from app.core.execution import ExecutingJob
from app.core.queues import JsonQueue
from app.foundation import keys
from app.ops import metrics, series
from app.processes.workers import JsonInlineWorker

N = len(metrics.BUCKETS) + 1
#: 2026-12-07 12:34:30 UTC
NOW = 1796646870.0


def _record(
    redis: object, task: str, outcome: str, seconds: float | None, when: float, queue: str | None = None
) -> None:
    with redis.pipeline() as pipe:  # type: ignore[attr-defined]
        timed = {metrics.bucket_of(seconds): 1} if seconds is not None else {}
        series.record(pipe, task, outcome, timed, 1, queue, now=when)
        pipe.execute()


def test_an_outcome_counted_for_metrics_lands_in_the_minute_and_hour_series(fake_app: Flask) -> None:
    """record_job (the path every worker's outcome takes) also counts the task, its catalogue queue
    and all jobs in the current minute's and hour's hashes, each with a TTL."""
    redis = fake_app.extensions["tasklane"].redis
    with redis.pipeline() as pipe:
        metrics.record_job(pipe, "add", "success", 0.003)
        metrics.record_job(pipe, "add", "failure", queue="low")
        pipe.execute()
    minute = keys.series_minute(series.minute_of(time.time()))
    hour = keys.series_hour(series.hour_of(time.time()))
    for key, ttl in ((minute, series.MINUTE_TTL), (hour, series.HOUR_TTL)):
        fields = {k.decode(): int(v) for k, v in redis.hgetall(key).items()}
        bucket = metrics.bucket_of(0.003)
        assert fields["t:add|success"] == 1 and fields[f"t:add|d{bucket}"] == 1
        assert fields["q:default|success"] == 1  # add's queue in the catalogue
        assert fields["q:low|failure"] == 1  # the queue the call named
        assert fields["a:*|success"] == 1 and fields["a:*|failure"] == 1
        assert 0 < redis.ttl(key) <= ttl


def test_the_series_outlive_the_jobs(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """Jobs run by the service's worker are counted, failures too; deleting every job leaves the counts."""
    redis = app.extensions["tasklane"].redis
    for n in range(3):
        assert (
            client.post("/api/v1/tasks/add", json={"args": {"x": n, "y": 1}}, headers=auth).status_code == 202
        )
    body = {"args": {"message": "boom"}, "options": {"queue": "default"}}
    assert client.post("/api/v1/tasks/fail_for_good", json=body, headers=auth).status_code == 202
    with app.app_context():
        JsonInlineWorker(
            [JsonQueue("default", connection=redis)], connection=redis, job_class=ExecutingJob,
            serializer=JSONSerializer,
        ).work(burst=True)  # fmt: skip
    for key in redis.keys("rq:*"):
        redis.delete(key)
    tally = series.totals(redis, "1h", N)
    assert tally["t:add"].counts["success"] == 3
    assert tally["t:fail_for_good"].counts["failure"] == 1
    assert tally["q:default"].counts == {"success": 3, "failure": 1}
    assert sum(tally["t:add"].buckets) == 3


def test_a_job_is_counted_under_the_queue_it_ran_on_not_its_tasks_own(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """``add`` is a default-queue task; run on ``low`` (a call's queue option), its success (batched by
    the inline worker) and a failure on ``low`` count for ``low`` (the console once filed them under
    the task's declared queue, so its Queues chart disagreed with RQ's registries)."""
    redis = app.extensions["tasklane"].redis
    for n in range(2):
        body = {"args": {"x": n, "y": 1}, "options": {"queue": "low"}}
        assert client.post("/api/v1/tasks/add", json=body, headers=auth).status_code == 202
    body = {"args": {"message": "boom"}, "options": {"queue": "low"}}
    assert client.post("/api/v1/tasks/fail_for_good", json=body, headers=auth).status_code == 202
    with app.app_context():
        JsonInlineWorker(
            [JsonQueue("low", connection=redis)], connection=redis, job_class=ExecutingJob,
            serializer=JSONSerializer,
        ).work(burst=True)  # fmt: skip
    tally = series.totals(redis, "1h", N)
    assert tally["q:low"].counts == {"success": 2, "failure": 1}
    assert "q:default" not in tally or not sum(tally["q:default"].counts.values())


def test_points_cover_each_window_with_its_resolution(fake_app: Flask) -> None:
    """The last hour has a point a minute, the day a point per 10 minutes, the week a point an hour;
    counts and run-time quantiles land in the point of their time, nothing outside the window."""
    redis = fake_app.extensions["tasklane"].redis
    _record(redis, "add", "success", 0.2, NOW)
    _record(redis, "add", "success", 0.2, NOW - 30)  # the same minute
    _record(redis, "add", "failure", None, NOW - 120)
    _record(redis, "add", "success", 4.0, NOW - 5 * 3600)
    _record(redis, "add", "success", 1.0, NOW - 9 * 24 * 3600)  # past every window

    hour = series.points(redis, "1h", "t:add", ("success", "failure"), N, now=NOW)
    assert len(hour) == 60 and hour[-1][0] == NOW - NOW % 60
    assert hour[-1][1].counts == {"success": 2, "failure": 0}
    assert hour[-3][1].counts == {"success": 0, "failure": 1}
    assert 0.1 < metrics.quantile(0.5, hour[-1][1].buckets) <= 0.25
    assert sum(p[1].counts["success"] for p in hour) == 2

    day = series.points(redis, "24h", "t:add", ("success",), N, now=NOW)
    assert len(day) in (144, 145) and all(b[0] - a[0] == 600 for a, b in itertools.pairwise(day))
    assert sum(p[1].counts["success"] for p in day) == 3
    merged = [sum(c) for c in zip(*(p[1].buckets for p in day), strict=True)]
    assert 2.5 < metrics.quantile(0.95, merged) <= 5.0

    week = series.points(redis, "7d", "a:*", ("success",), N, now=NOW)
    assert len(week) == 168
    assert sum(p[1].counts["success"] for p in week) == 3


def test_totals_per_task_and_queue(fake_app: Flask) -> None:
    redis = fake_app.extensions["tasklane"].redis
    _record(redis, "add", "success", 0.01, NOW, queue="high")
    _record(redis, "touch", "failure", None, NOW - 600, queue="low")
    _record(redis, "touch", "success", None, NOW - 2 * 3600, queue="low")
    hour = series.totals(redis, "1h", N, now=NOW)
    assert hour["t:add"].counts == {"success": 1} and hour["q:high"].counts == {"success": 1}
    assert hour["t:touch"].counts == {"failure": 1}
    day = series.totals(redis, "24h", N, now=NOW)
    assert day["t:touch"].counts == {"failure": 1, "success": 1}
    assert day["a:*"].counts == {"success": 2, "failure": 1}
