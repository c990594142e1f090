"""Probes without authentication: ``/healthz`` (liveness) and ``/readyz`` (readiness)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from app.foundation.runtime import runtime
from app.ops import health

probes = Blueprint("probes", __name__)


@probes.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@probes.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Redis, the database, workers and the scheduler answer; shows the latest health report. No secrets."""
    rt = runtime()
    checks: dict[str, Any] = {
        "redis": health.check_redis(rt.redis),
        "database": health.check_database(rt),
    }
    if checks["redis"]["status"] == "ok":
        checks["workers"] = health.workers_seen(rt.redis, rt.settings.worker_ttl + 60)
        checks["scheduler"] = health.scheduler_seen(rt.redis)
        try:
            report = health.latest_report(rt.redis)
        except Exception as exc:  # an unreadable report must not take readiness down with it
            report = {"status": "error", "error": type(exc).__name__}
    else:
        checks["workers"] = {"status": "unknown", "error": "Redis unreachable"}
        checks["scheduler"] = {"status": "unknown", "error": "Redis unreachable"}
        report = None
    ready = all(c["status"] == "ok" for c in checks.values())
    # Only statuses and timings: never URLs with credentials or error texts with hosts.
    public_checks = {name: _public(c) for name, c in checks.items()}
    last = None
    if report:
        last = {"status": report.get("status"), "checked_at": report.get("checked_at")}
    return jsonify(
        {"status": "ok" if ready else "unavailable", "checks": public_checks, "last_health_report": last}
    ), (200 if ready else 503)


def _public(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if k in ("status", "latency_ms", "workers", "registered")}
