"""Celery "at its best" for bench/window.py: prefetch tuned for throughput, results kept.

Started by bench/window.py as ``celery -A bench.celery_tuned_app worker --concurrency 2
--loglevel WARNING --without-mingle --without-gossip --without-heartbeat`` (prefork, 2
processes). Broker and result backend are the Redis named by ``BENCH_REDIS_URL`` (never a
default: the bench must not touch the Redis on 6379); JSON serializer, results kept.

``worker_prefetch_multiplier`` comes from ``BENCH_PREFETCH`` (bench/window.py passes the
value it was tuned to, 4 by default; see its docstring), default 4. bench/celery_app.py, the one bench/run
uses, keeps Celery's defaults and is not touched by this module.
"""

from __future__ import annotations

import os
import time

from celery import Celery

_URL = os.environ.get("BENCH_REDIS_URL")
if not _URL:
    raise RuntimeError("BENCH_REDIS_URL is not set: the benchmark's own Redis, e.g. redis://127.0.0.1:PORT/0")

app = Celery("bench_tuned", broker=_URL, backend=_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    result_expires=24 * 3600,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "4")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.stamp")
def stamp() -> float:
    """The no-op job; returns the wall-clock time it started (bench/window.py's window start)."""
    return time.time()
