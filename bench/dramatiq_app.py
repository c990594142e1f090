"""The Dramatiq side of the benchmark: the same two jobs, on the bench's own Redis, results kept.

Started as users start Dramatiq: ``dramatiq bench.dramatiq_app --processes 2 --threads 8``.
Broker and result backend are the Redis named by ``BENCH_REDIS_URL`` (never a default: the
bench must not touch the Redis on 6379); every actor stores its result (the Results
middleware with the Redis backend), Dramatiq's other defaults unchanged.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

_URL = os.environ.get("BENCH_REDIS_URL")
if not _URL:
    raise RuntimeError("BENCH_REDIS_URL is not set: the benchmark's own Redis, e.g. redis://127.0.0.1:PORT/0")


class _Ready(Middleware):
    """Write the wall-clock time a worker process booted (the bench measures from the last one)."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        path = os.environ.get("BENCH_READY_FILE")
        if path:
            with open(f"{path}.{os.getpid()}", "w") as f:
                f.write(repr(time.time()))


broker = RedisBroker(url=_URL)
broker.add_middleware(Results(backend=RedisBackend(url=_URL), store_results=True))
broker.add_middleware(_Ready())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="add", queue_name="default", store_results=True)
def add(x: float, y: float) -> float:
    """The no-op job: x + y."""
    return x + y


@dramatiq.actor(actor_name="sleep50", queue_name="default", store_results=True)
def sleep50() -> None:
    """The I/O job: 50 ms of waiting."""
    time.sleep(0.05)
