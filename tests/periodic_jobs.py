"""A periodic task for tests/test_periodic.py only (TASK_MODULES=tests.jobs,tests.periodic_jobs).

Kept apart from tests/jobs.py so that other tests' scheduler processes never register it.
"""

from __future__ import annotations

import time

from app.catalogue.registry import Schedule, task


@task(schedule=Schedule(interval=1, overlap="allow"))
def every_second() -> float:
    """Return the time: a periodic entry that comes due every second."""
    return time.time()
