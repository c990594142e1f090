"""Health of the service's dependencies: Redis, the database, workers, HTTP peers.

Each check reports its status and latency. The health_check task runs them side by
side, each within ``HEALTH_CHECK_TIMEOUT``: a dependency that hangs is reported as timed
out, and the report comes in time all the same.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from app.foundation import defaults, keys
from app.foundation.config import mask_url
from app.foundation.db import ping
from app.foundation.runtime import Runtime
from app.foundation.timeutil import iso, utcnow
from app.services.http import HttpClient


def _timed(check: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check() or {}
        outcome: dict[str, Any] = {"status": "ok", **detail}
    except Exception as exc:  # a failing dependency is a finding, not a crash of the checker
        outcome = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return outcome


def check_redis(redis: Redis) -> dict[str, Any]:
    """PING Redis."""
    return _timed(lambda: {"ping": bool(redis.ping())})


def check_database(rt: Runtime) -> dict[str, Any]:
    """Run SELECT 1 on the database."""
    return _timed(lambda: ping(rt.engine))


def redis_started_at(redis: Redis) -> datetime:
    """When Redis last started (its clock less ``INFO server`` uptime), a second early for the uptime's
    rounding down: a beat written before that was written before an outage, not by a process connected now."""
    seconds, micros = redis.time()
    uptime = int(redis.info("server").get("uptime_in_seconds", 0))
    return datetime.fromtimestamp(seconds + micros / 1e6 - uptime - 1, UTC)


def workers_seen(redis: Redis, stale_after: float = defaults.WORKER_TTL + 60) -> dict[str, Any]:
    """Count workers whose heartbeat is recent: within ``stale_after`` seconds, the life of an idle
    worker's registration (WORKER_TTL + 60), so an idle worker that renews it on time counts; and
    newer than Redis's last start, so that beats kept from before a Redis restart (its append-only
    file) do not count a worker that has not reconnected yet."""

    def check() -> dict[str, Any]:
        now = datetime.now(UTC)
        since = redis_started_at(redis)
        fresh = 0
        workers = Worker.all(connection=redis, serializer=JSONSerializer)
        for worker in workers:
            beat = worker.last_heartbeat
            if beat is not None:
                beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
                if (now - beat).total_seconds() <= stale_after and beat >= since:
                    fresh += 1
        if fresh == 0:
            raise RuntimeError(f"no worker has sent a heartbeat in {stale_after:g} s since Redis started")
        return {"workers": fresh, "registered": len(workers)}

    return _timed(check)


def scheduler_seen(redis: Redis) -> dict[str, Any]:
    """Whether a scheduler completed a pass recently (its heartbeat key lives only as long as it beats)
    and since Redis last started (a key kept from before a restart is no sign of a connected scheduler)."""

    def check() -> None:
        raw = redis.get(keys.scheduler_heartbeat())
        if raw is None:
            raise RuntimeError("no scheduler has completed a pass recently")
        try:
            at = datetime.fromisoformat(str(json.loads(raw)["at"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            return  # a beat of another shape: its key's life says enough
        if at < redis_started_at(redis):
            raise RuntimeError("no scheduler has completed a pass since Redis started")

    return _timed(check)


def check_http(
    url: str, http: HttpClient | None = None, timeout: float = defaults.HEALTH_CHECK_TIMEOUT
) -> dict[str, Any]:
    """GET ``url`` (redirects not followed); any 2xx or 3xx answer is healthy."""
    client = http or HttpClient()

    def check() -> dict[str, Any]:
        reply = client.get(url, timeout=timeout)
        if reply.status_code >= 400:
            raise RuntimeError(f"HTTP {reply.status_code}")
        return {"http_status": reply.status_code}

    return _timed(check)


def within(checks: dict[str, Callable[[], dict[str, Any]]], timeout: float) -> dict[str, dict[str, Any]]:
    """Run the checks side by side; one still running after ``timeout`` s is reported as timed out.

    A check that hangs is left to finish on its own (a daemon thread): the report does
    not wait for it.
    """
    outcomes: dict[str, dict[str, Any]] = {}

    def run(name: str, check: Callable[[], dict[str, Any]]) -> None:
        outcomes[name] = check()

    started = time.perf_counter()
    threads = [
        threading.Thread(target=run, args=(name, check), name=f"health-{name}", daemon=True)
        for name, check in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = started + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    report: dict[str, dict[str, Any]] = {}
    for name in checks:
        outcome = outcomes.get(name)
        if outcome is None:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            outcome = {"status": "error", "error": f"timed out after {timeout:g} s", "latency_ms": elapsed}
        report[name] = outcome
    return report


def run_checks(
    rt: Runtime, http: HttpClient | None = None, timeout: float = defaults.HEALTH_CHECK_TIMEOUT
) -> dict[str, Any]:
    """Check every dependency, each within ``timeout``; ``ok`` only when all are fine, else ``degraded``."""
    planned: dict[str, Callable[[], dict[str, Any]]] = {
        "redis": lambda: check_redis(rt.redis),
        "database": lambda: check_database(rt),
        "workers": lambda: workers_seen(rt.redis, rt.settings.worker_ttl + 60),
    }
    for url in rt.settings.health_check_urls:
        # Keyed by the URL without its credentials: the report is stored and shown.
        planned[mask_url(url)] = functools.partial(check_http, url, http, timeout)
    # The HTTP checks time out by themselves; the deadline catches what has no timeout of
    # its own (a database that accepts the connection and never answers).
    checks = within(planned, timeout + 1.0)
    healthy = all(c["status"] == "ok" for c in checks.values())
    return {
        "status": "ok" if healthy else "degraded",
        "checked_at": iso(utcnow()),
        "checks": checks,
    }


def store_report(redis: Redis, report: dict[str, Any], ttl: int = defaults.HEALTH_REPORT_TTL) -> None:
    """Keep the latest report for /readyz."""
    redis.set(keys.health_report(), json.dumps(report), ex=ttl)


def latest_report(redis: Redis) -> dict[str, Any] | None:
    """The latest stored report, or None."""
    raw = redis.get(keys.health_report())
    return json.loads(raw) if raw else None
