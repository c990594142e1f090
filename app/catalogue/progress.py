"""Progress reporting from inside a task: one call, visible in the job API and the dashboard."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from app.foundation import outages
from app.foundation.meta import Meta


def report_progress(
    current: int, total: int, stage: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """Record how far the running job is; outside a job it only returns the report.

    Progress is informational: while Redis is unreachable the report is skipped (the next
    one catches up) rather than failing the task.
    """
    if total < 0 or current < 0:
        raise ValueError("progress counts must not be negative")
    percent = round(100.0 * current / total, 1) if total else 0.0
    report: dict[str, Any] = {"current": current, "total": total, "percent": min(percent, 100.0)}
    if stage is not None:
        report["stage"] = stage
    if message is not None:
        report["message"] = message
    job = get_current_job()
    if job is not None:
        job.meta[Meta.PROGRESS] = report
        try:
            job.save_meta()
        except outages.REDIS_DOWN as exc:
            outages.OUTAGE.failed(exc)
            return report
        outages.OUTAGE.recovered()
    return report
