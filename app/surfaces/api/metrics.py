"""``GET /metrics``: Prometheus text format, for every host's jobs (counted in Redis) and this API.

Jobs by task and outcome, job duration histograms per task, queue depths and the age of
the oldest waiting job per queue, workers by state, API requests by route and status with
their latency. Open by default, as scrape targets usually are; with ``METRICS_TOKEN`` set it
needs ``Authorization: Bearer <METRICS_TOKEN>``.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from app.catalogue.registry import REGISTRY
from app.core import queues as queue_store
from app.core.queues import JsonJob, all_queues
from app.foundation import keys
from app.foundation.runtime import runtime, runtime_of
from app.ops import metrics
from app.surfaces.api.errors import APIError

blueprint = Blueprint("metrics", __name__)
EXTENSION = "tasklane.request_stats"


def _le(index: int) -> str:
    return str(metrics.BUCKETS[index]) if index < len(metrics.BUCKETS) else "+Inf"


def _histogram(family: HistogramMetricFamily, labels: list[str], redis: Redis, key: str) -> None:
    cumulative, total, count = metrics.histogram(redis, key)
    if count:
        family.add_metric(labels, [(_le(i), float(c)) for i, c in enumerate(cumulative)], total)


class RedisCollector:
    """Reads the shared counters, queues and workers from Redis at each scrape."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        redis = self.redis
        jobs = CounterMetricFamily(
            "tasklane_jobs", "Jobs by task and outcome, on every worker.", labels=["task", "outcome"]
        )
        counts = metrics.job_counts(redis)
        for (task, outcome), value in sorted(counts.items()):
            jobs.add_metric([task, outcome], value)
        yield jobs

        durations = HistogramMetricFamily(
            "tasklane_job_duration_seconds", "Run time of successful jobs.", labels=["task"]
        )
        for task in sorted({t for t, _ in counts} | {spec.name for spec in REGISTRY}):
            _histogram(durations, [task], redis, keys.job_durations(task))
        yield durations

        yield from self._queues()
        yield self._workers()

        http = CounterMetricFamily("tasklane_http_requests", "API requests by method, route and status.",
                                   labels=["method", "route", "status"])  # fmt: skip
        routes = set()
        for raw_field, raw_value in sorted(redis.hgetall(keys.http_counts()).items()):
            method, route, status = metrics.text(raw_field).split("|", 2)
            routes.add(route)
            http.add_metric([method, route, status], int(raw_value))
        yield http
        latency = HistogramMetricFamily("tasklane_http_request_duration_seconds", "API latency by route.",
                                        labels=["route"])  # fmt: skip
        for route in sorted(routes):
            _histogram(latency, [route], redis, keys.http_durations(route))
        yield latency

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "tasklane_queue_jobs", "Jobs per queue and registry.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily("tasklane_queue_oldest_waiting_seconds", "Age of the oldest waiting job.",
                                   labels=["queue"])  # fmt: skip
        paused = GaugeMetricFamily(
            "tasklane_queue_paused", "1 while a queue is paused (no worker takes its jobs).", labels=["queue"]
        )
        paused_names = queue_store.paused_queues(self.redis)
        now = datetime.now(UTC)
        for queue in all_queues(self.redis):
            paused.add_metric([queue.name], 1.0 if queue.name in paused_names else 0.0)
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.llen(queue.key)
                for registry in (queue.started_job_registry, queue.scheduled_job_registry,
                                 queue.deferred_job_registry, queue.failed_job_registry,
                                 queue.finished_job_registry):  # fmt: skip
                    pipe.zcard(registry.key)
                pipe.lindex(queue.key, 0)
                waiting, started, scheduled, deferred, failed, finished, head = pipe.execute()
            waiting = queue_store.waiting(self.redis, queue.name)["total"]  # its priorities' and groups' too
            sizes = {"waiting": waiting, "started": started, "scheduled": scheduled, "deferred": deferred,
                     "failed": failed, "finished": finished}  # fmt: skip
            for state, value in sizes.items():
                depth.add_metric([queue.name, state], value)
            age = 0.0
            if head:
                stamp = self.redis.hget(JsonJob.key_for(metrics.text(head)), "enqueued_at")
                if stamp:
                    when = datetime.fromisoformat(metrics.text(stamp).replace("Z", "+00:00"))
                    when = when if when.tzinfo else when.replace(tzinfo=UTC)
                    age = max(0.0, (now - when).total_seconds())
            oldest.add_metric([queue.name], age)
        yield depth
        yield oldest
        yield paused

    def _workers(self) -> Metric:
        family = GaugeMetricFamily("tasklane_workers", "Registered workers by state.", labels=["state"])
        states: Counter[str] = Counter()
        for worker in Worker.all(connection=self.redis, serializer=JSONSerializer):
            state = worker.get_state()
            states[str(getattr(state, "value", state))] += 1
        for state in ("idle", "busy", "suspended", "started"):
            states.setdefault(state, 0)
        for state, value in sorted(states.items()):
            family.add_metric([state], value)
        return family


@blueprint.get("/metrics")
def exposition() -> Response:
    """Every metric, in Prometheus text format."""
    rt = runtime()
    token = rt.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise APIError(401, "unauthorized", "the metrics need a bearer token (METRICS_TOKEN)",
                           headers={"WWW-Authenticate": 'Bearer realm="tasklane metrics"'})  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(rt.redis))
    # content_type, not mimetype: Werkzeug would add a second charset to Prometheus's own.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Serve /metrics and time every request of ``app``."""
    stats = metrics.RequestStats(runtime_of(app).redis)
    app.extensions[EXTENSION] = stats

    @app.before_request
    def _start_timer() -> None:
        g.tasklane_started = time.perf_counter()

    @app.after_request
    def _observe(response: Any) -> Any:
        started = g.pop("tasklane_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            stats.observe(request.method, route, response.status_code, time.perf_counter() - started)
        return response

    app.register_blueprint(blueprint)
