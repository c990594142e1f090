"""Dramatiq for bench/window.py: one no-op actor that reports its own start and end, results kept.

Started by bench/window.py as ``dramatiq bench.dramatiq_window_app --processes 2 --threads 8``.
Broker and result backend are the Redis named by ``BENCH_REDIS_URL`` (never a default: the
bench must not touch the Redis on 6379); the actor stores its result (the Results middleware
with the Redis backend), Dramatiq's other defaults unchanged. Dramatiq keeps no start or
completion time with a result, so the actor returns both: ``[start, end]`` (time.time()).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

_URL = os.environ.get("BENCH_REDIS_URL")
if not _URL:
    raise RuntimeError("BENCH_REDIS_URL is not set: the benchmark's own Redis, e.g. redis://127.0.0.1:PORT/0")

broker = RedisBroker(url=_URL)
broker.add_middleware(Results(backend=RedisBackend(url=_URL), store_results=True))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="stamp", queue_name="default", store_results=True)
def stamp() -> list[float]:
    """The no-op job: returns [its start, its end], both time.time()."""
    start = time.time()
    return [start, time.time()]
