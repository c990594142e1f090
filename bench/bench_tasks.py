"""Tasks that only the benchmark uses; workers load them with TASK_MODULES=bench.bench_tasks."""

from __future__ import annotations

import time

from app.catalogue.registry import QueueName, task


@task(queue=QueueName.DEFAULT, time_limit=30)
def sleep50() -> None:
    """The I/O-bound job: wait 50 ms (a stand-in for a network call)."""
    time.sleep(0.05)
