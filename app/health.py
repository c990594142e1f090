"""Health of the service's dependencies: Redis, the database, workers, HTTP peers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from app import defaults, keys
from app.config import mask_url
from app.db import ping
from app.runtime import Runtime
from app.services.http import HttpClient
from app.timeutil import iso, utcnow


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


def workers_seen(redis: Redis) -> dict[str, Any]:
    """Count workers whose heartbeat is recent."""

    def check() -> dict[str, Any]:
        now = datetime.now(UTC)
        fresh = 0
        workers = Worker.all(connection=redis, serializer=JSONSerializer)
        for worker in workers:
            beat = worker.last_heartbeat
            if beat is not None:
                beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
                if (now - beat).total_seconds() <= defaults.WORKER_STALE_AFTER:
                    fresh += 1
        if fresh == 0:
            raise RuntimeError(f"no worker has sent a heartbeat in {defaults.WORKER_STALE_AFTER} s")
        return {"workers": fresh, "registered": len(workers)}

    return _timed(check)


def scheduler_seen(redis: Redis) -> dict[str, Any]:
    """Whether a scheduler completed a pass recently: its heartbeat key lives only as long as it beats."""

    def check() -> None:
        if not redis.exists(keys.scheduler_heartbeat()):
            raise RuntimeError("no scheduler has completed a pass recently")

    return _timed(check)


def check_http(
    url: str, http: HttpClient | None = None, timeout: float = defaults.HEALTH_CHECK_TIMEOUT
) -> dict[str, Any]:
    """GET ``url``; any 2xx or 3xx answer is healthy."""
    client = http or HttpClient()

    def check() -> dict[str, Any]:
        response = client.get(url, timeout=timeout)
        if response.status_code >= 400:
            raise RuntimeError(f"HTTP {response.status_code}")
        return {"http_status": response.status_code}

    return _timed(check)


def run_checks(rt: Runtime, http: HttpClient | None = None) -> dict[str, Any]:
    """Check every dependency; ``ok`` only when all are fine, else ``degraded``."""
    checks: dict[str, Any] = {
        "redis": check_redis(rt.redis),
        "database": check_database(rt),
        "workers": workers_seen(rt.redis),
    }
    for url in rt.settings.health_check_urls:
        # Keyed by the URL without its credentials: the report is stored and shown.
        checks[mask_url(url)] = check_http(url, http)
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
