"""Metrics that cross machines: job outcomes and durations, API requests, kept in Redis.

Workers run on many hosts, so every outcome is counted in Redis (a few HINCRBYs, sent in
the same round trip as the outcome's own writes where the worker has one), and the web
process's ``/metrics`` reads them back with the queue depths and worker counts. A
histogram keeps one counter per bucket (not cumulative: one increment per observation),
made cumulative when it is exposed.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import Counter
from typing import Any

from redis import Redis

from app import keys

#: Upper bounds of the duration histograms, in seconds (the last bucket is +Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: Outcomes counted per task.
OUTCOMES = ("success", "failure", "retry", "revoked", "orphaned", "deferred")


def bucket_of(seconds: float) -> int:
    """The index of the histogram bucket ``seconds`` falls in (len(BUCKETS) is +Inf)."""
    return bisect.bisect_left(BUCKETS, seconds)


def record_job(pipe: Any, task: str, outcome: str, seconds: float | None = None) -> None:
    """Queue the writes that count one outcome (and its run time) on ``pipe`` (a pipeline)."""
    pipe.hincrby(keys.job_counts(), f"{task}|{outcome}", 1)
    if seconds is not None and seconds >= 0:
        durations = keys.job_durations(task)
        pipe.hincrby(durations, str(bucket_of(seconds)), 1)
        pipe.hincrbyfloat(durations, "sum", round(seconds, 6))


def record_jobs(pipe: Any, task: str, outcome: str, seconds: list[float]) -> None:
    """Queue the writes that count ``len(seconds)`` outcomes of one task at once (a worker's batch):
    the same counters as :func:`record_job` for each, in one increment per counter."""
    if not seconds:
        return
    pipe.hincrby(keys.job_counts(), f"{task}|{outcome}", len(seconds))
    durations = keys.job_durations(task)
    for bucket, count in Counter(bucket_of(s) for s in seconds).items():
        pipe.hincrby(durations, str(bucket), count)
    pipe.hincrbyfloat(durations, "sum", round(sum(seconds), 6))


def job_counts(redis: Redis) -> dict[tuple[str, str], int]:
    """Jobs by (task, outcome)."""
    out = {}
    for field, value in redis.hgetall(keys.job_counts()).items():
        task, _, outcome = text(field).rpartition("|")
        out[(task, outcome)] = int(value)
    return out


def histogram(redis: Redis, key: str) -> tuple[list[int], float, int]:
    """A stored histogram: cumulative counts per bucket (the last is +Inf), the sum, the count."""
    raw = {text(k): v for k, v in redis.hgetall(key).items()}
    counts = [int(raw.get(str(i), 0)) for i in range(len(BUCKETS) + 1)]
    cumulative, total = [], 0
    for count in counts:
        total += count
        cumulative.append(total)
    return cumulative, float(raw.get("sum", 0) or 0), total


def text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


class RequestStats:
    """API request counts and latencies, gathered in the web process and written once a second.

    A request costs a dictionary update; a thread of the process flushes the totals to
    Redis in one pipeline, so that every web process (and host) adds into the same hashes.
    """

    def __init__(self, redis: Redis, interval: float = 1.0) -> None:
        self.redis = redis
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._buckets: Counter[tuple[str, int]] = Counter()
        self._sums: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request."""
        with self._lock:
            self._counts[f"{method}|{route}|{status}"] += 1
            self._buckets[(route, bucket_of(seconds))] += 1
            self._sums[route] = self._sums.get(route, 0.0) + seconds
        self._ensure_flusher()

    def flush(self) -> None:
        """Write what was gathered since the last flush (kept for the next one if Redis fails)."""
        with self._lock:
            counts, buckets, sums = self._counts, self._buckets, self._sums
            self._counts, self._buckets, self._sums = Counter(), Counter(), {}
        if not counts:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    pipe.hincrby(keys.http_counts(), field, n)
                for (route, bucket), n in buckets.items():
                    pipe.hincrby(keys.http_durations(route), str(bucket), n)
                for route, total in sums.items():
                    pipe.hincrbyfloat(keys.http_durations(route), "sum", round(total, 6))
                pipe.execute()
        except Exception:  # Redis away: keep the numbers for the next flush
            with self._lock:
                self._counts.update(counts)
                self._buckets.update(buckets)
                for route, total in sums.items():
                    self._sums[route] = self._sums.get(route, 0.0) + total

    def _ensure_flusher(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked gunicorn worker starts its own flusher
            self._thread = threading.Thread(target=self._run, name="request-metrics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()
