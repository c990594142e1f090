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

from app.foundation import defaults, keys
from app.ops import series

#: Upper bounds of the duration histograms, in seconds (the last bucket is +Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: Outcomes counted per task.
OUTCOMES = ("success", "failure", "retry", "revoked", "orphaned", "deferred", "expired", "snoozed")


def bucket_of(seconds: float) -> int:
    """The index of the histogram bucket ``seconds`` falls in (len(BUCKETS) is +Inf)."""
    return bisect.bisect_left(BUCKETS, seconds)


def hour_of(when: float) -> str:
    """The UTC hour a Unix time falls in, as the hourly keys spell it (``YYYYMMDDHH``)."""
    return time.strftime("%Y%m%d%H", time.gmtime(when))


def record_job(
    pipe: Any, task: str, outcome: str, seconds: float | None = None, queue: str | None = None
) -> None:
    """Queue the writes that count one outcome (and its run time) on ``pipe`` (a pipeline).

    Besides the cumulative counters of ``/metrics``, the outcome goes into the current
    hour's hash (one key per hour, expiring after HOURLY_METRICS_TTL) that
    analytics_aggregation rolls up: four more commands in the same round trip; and into the
    console's per-minute and per-hour series (:mod:`app.ops.series`) of its task, its queue
    (``queue``, else the task's own) and all jobs.
    """
    timed = {bucket_of(seconds): 1} if seconds is not None and seconds >= 0 else {}
    series.record(pipe, task, outcome, timed, 1, queue)
    pipe.hincrby(keys.job_counts(), f"{task}|{outcome}", 1)
    hourly = keys.hourly_jobs(hour_of(time.time()))
    pipe.hincrby(hourly, f"{task}|{outcome}", 1)
    if seconds is not None and seconds >= 0:
        durations = keys.job_durations(task)
        bucket = bucket_of(seconds)
        pipe.hincrby(durations, str(bucket), 1)
        pipe.hincrbyfloat(durations, "sum", round(seconds, 6))
        pipe.hincrby(hourly, f"{task}|d{bucket}", 1)
        pipe.hincrbyfloat(hourly, f"{task}|dsum", round(seconds, 6))
    pipe.expire(hourly, defaults.HOURLY_METRICS_TTL)


def quantile(q: float, counts: list[int]) -> float:
    """The ``q`` quantile (0..1) of a histogram given per-bucket counts (not cumulative).

    Interpolated linearly inside the bucket it falls in, as Prometheus's
    ``histogram_quantile`` does; an observation in the +Inf bucket counts as the largest
    finite bound. 0.0 for an empty histogram.
    """
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(BUCKETS):
                return BUCKETS[-1]
            lower = BUCKETS[index - 1] if index else 0.0
            return lower + (BUCKETS[index] - lower) * (rank - seen) / count
        seen += count
    return BUCKETS[-1]


def read_hourly(redis: Redis, key: str) -> dict[str, dict[str, Any]]:
    """One hourly hash grouped by its first part (task or route): counts by outcome or
    ``method|status``, the histogram's per-bucket counts (``buckets``) and ``sum``."""
    out: dict[str, dict[str, Any]] = {}
    for raw_field, raw_value in redis.hgetall(key).items():
        field = text(raw_field)
        value = text(raw_value)
        if field.endswith("|dsum"):
            name = field[: -len("|dsum")]
            out.setdefault(name, {"counts": {}, "buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0})
            out[name]["sum"] = float(value)
            continue
        name, _, rest = field.rpartition("|")
        if rest.startswith("d") and rest[1:].isdigit():
            entry = out.setdefault(name, {"counts": {}, "buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0})
            entry["buckets"][int(rest[1:])] += int(value)
            continue
        # A count: <task>|<outcome>, or <method>|<route>|<status> (grouped under the route).
        if field.count("|") >= 2:
            method, _, remainder = field.partition("|")
            route, _, status = remainder.rpartition("|")
            entry = out.setdefault(route, {"counts": {}, "buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0})
            entry["counts"][f"{method}|{status}"] = int(value)
        else:
            entry = out.setdefault(name, {"counts": {}, "buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0})
            entry["counts"][rest] = int(value)
    return out


def record_jobs(pipe: Any, task: str, outcome: str, seconds: list[float], queue: str | None = None) -> None:
    """Queue the writes that count ``len(seconds)`` outcomes of one task (on ``queue``, else the task's
    own) at once (a worker's batch): the same counters as :func:`record_job` for each (the hourly hash
    too), one increment per counter."""
    if not seconds:
        return
    series.record(pipe, task, outcome, dict(Counter(bucket_of(s) for s in seconds)), len(seconds), queue)
    pipe.hincrby(keys.job_counts(), f"{task}|{outcome}", len(seconds))
    hourly = keys.hourly_jobs(hour_of(time.time()))
    pipe.hincrby(hourly, f"{task}|{outcome}", len(seconds))
    durations = keys.job_durations(task)
    for bucket, count in Counter(bucket_of(s) for s in seconds).items():
        pipe.hincrby(durations, str(bucket), count)
        pipe.hincrby(hourly, f"{task}|d{bucket}", count)
    pipe.hincrbyfloat(durations, "sum", round(sum(seconds), 6))
    pipe.hincrbyfloat(hourly, f"{task}|dsum", round(sum(seconds), 6))
    pipe.expire(hourly, defaults.HOURLY_METRICS_TTL)


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
        # The hour of the flush (at most ``interval`` after the requests) names the hourly hash.
        hourly = keys.hourly_http(hour_of(time.time()))
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    pipe.hincrby(keys.http_counts(), field, n)
                    pipe.hincrby(hourly, field, n)
                for (route, bucket), n in buckets.items():
                    pipe.hincrby(keys.http_durations(route), str(bucket), n)
                    pipe.hincrby(hourly, f"{route}|d{bucket}", n)
                for route, total in sums.items():
                    pipe.hincrbyfloat(keys.http_durations(route), "sum", round(total, 6))
                    pipe.hincrbyfloat(hourly, f"{route}|dsum", round(total, 6))
                pipe.expire(hourly, defaults.HOURLY_METRICS_TTL)
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
