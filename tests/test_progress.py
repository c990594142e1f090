"""Progress reporting: one call, stored with the running job."""

from __future__ import annotations

import pytest
from flask import Flask

from app.catalogue.progress import report_progress
from app.catalogue.registry import REGISTRY
from app.core.dispatch import enqueue
from app.core.queues import JsonJob
from app.foundation.meta import Meta
from tests.servers import drain


def test_outside_a_job_it_only_returns_the_report() -> None:
    """It computes the percentage (capped at 100) and passes stage and message through."""
    assert report_progress(1, 3) == {"current": 1, "total": 3, "percent": 33.3}
    assert report_progress(5, 4, stage="uploading", message="almost")["percent"] == 100.0
    assert report_progress(0, 0)["percent"] == 0.0
    with pytest.raises(ValueError):
        report_progress(-1, 3)


def test_inside_a_job_it_is_saved_in_the_jobs_meta(app: Flask, tmp_path: object) -> None:
    """A task's last report is in the job's meta, where the API and the dashboard read it."""
    spec = REGISTRY.get("slow_touch")
    assert spec is not None
    redis = app.extensions["tasklane"].redis
    marker = f"{tmp_path}/done"
    job = enqueue(spec, spec.validate({"path": marker, "seconds": 0.2, "steps": 4}), redis,
                  default_result_ttl=60, failure_ttl=60)  # fmt: skip
    drain(app)
    progress = JsonJob.fetch(job.id, connection=redis).meta[Meta.PROGRESS]
    assert progress["current"] == progress["total"] == 4
    assert progress["percent"] == 100.0
