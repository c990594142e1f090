"""Celery "at its best" for bench/window.py: prefetch tuned for throughput, results kept.

Started by bench/window.py as ``celery -A bench.celery_tuned_app worker --concurrency 2
--loglevel WARNING --without-mingle --without-gossip --without-heartbeat`` (prefork, 2
processes). It is bench/celery_app.py's app (the bench's own Redis from ``BENCH_REDIS_URL``, JSON,
results kept) with ``worker_prefetch_multiplier`` from ``BENCH_PREFETCH`` (bench/window.py passes
the value it was tuned to; default 4) and the window's task; bench/run's workers import
bench.celery_app alone and keep Celery's defaults.
"""

from __future__ import annotations

import os
import time

from bench.celery_app import app

app.conf.worker_prefetch_multiplier = int(os.environ.get("BENCH_PREFETCH", "4"))


@app.task(name="bench.stamp")
def stamp() -> float:
    """The no-op job; returns the wall-clock time it started (bench/window.py's window start)."""
    return time.time()
