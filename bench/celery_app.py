"""The Celery side of the benchmark: the same two jobs as Tasklane's, on the bench's own Redis.

Started as users start Celery: ``celery -A bench.celery_app worker --concurrency 2``
(prefork) or ``--pool threads --concurrency 16``. Broker and result backend are the
Redis named by ``BENCH_REDIS_URL`` (never a default: the bench must not touch the
Redis on 6379). JSON serializer, results kept, Celery's other defaults unchanged.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.signals import worker_ready

_URL = os.environ.get("BENCH_REDIS_URL")
if not _URL:
    raise RuntimeError("BENCH_REDIS_URL is not set: the benchmark's own Redis, e.g. redis://127.0.0.1:PORT/0")

app = Celery("bench", broker=_URL, backend=_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.add")
def add(x: float, y: float) -> float:
    """The no-op job: x + y."""
    return x + y


@app.task(name="bench.sleep50")
def sleep50() -> None:
    """The I/O job: 50 ms of waiting."""
    time.sleep(0.05)


@worker_ready.connect
def _note_ready(**_: object) -> None:
    """Write the wall-clock time the worker became ready (the bench measures from it)."""
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        with open(path, "w") as f:
            f.write(repr(time.time()))
