"""Job outcomes over time for the console's charts: per-minute and per-hour counters in Redis.

Every outcome that :mod:`app.ops.metrics` counts also goes into the hash of the current
minute (kept MINUTE_TTL, about a day) and of the current hour (kept HOUR_TTL, about eight
days), three times: under its task (``t:<task>``), its queue (``q:<queue>``) and all jobs
(``a:*``). A field is ``<series>|<outcome>`` (a count) or ``<series>|d<bucket>`` (a run
time histogram bucket of :data:`app.ops.metrics.BUCKETS`). The keys live apart from the
jobs, so pruning or expiring jobs leaves the history whole; their number is bounded by the
TTLs (at most 1,500 minute hashes and 192 hour hashes) and each hash by the catalogue
(tasks + queues + 1 series, each at most len(OUTCOMES) + len(BUCKETS) + 1 fields).

A job's queue is the one the recording call names; when it names none (the workers count
successes by task), the queue is the task's own in the catalogue, found by the resolver the
app installs with :func:`set_queue_resolver`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.foundation import keys

MINUTE_TTL = 25 * 3600
HOUR_TTL = 8 * 24 * 3600
#: The series of all jobs.
ALL = "a:*"
#: Chart windows: (seconds covered, seconds per point, whether read from minute hashes).
SPANS: dict[str, tuple[int, int, bool]] = {
    "1h": (3600, 60, True),
    "24h": (24 * 3600, 600, True),
    "7d": (7 * 24 * 3600, 3600, False),
}

_queue_of: Callable[[str], str | None] = lambda task: None  # noqa: E731


def set_queue_resolver(resolver: Callable[[str], str | None]) -> None:
    """Install how a task's queue is found when a recording call does not name one."""
    global _queue_of
    _queue_of = resolver


def minute_of(when: float) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(when))


def hour_of(when: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(when))


def _series(task: str, queue: str | None) -> list[str]:
    if queue is None:
        try:
            queue = _queue_of(task)
        except Exception:  # an unknown task (or a catalogue not loaded): no queue series
            queue = None
    names = [f"t:{task}", ALL]
    if queue:
        names.append(f"q:{queue}")
    return names


def record(
    pipe: Any, task: str, outcome: str, buckets: dict[int, int], count: int, queue: str | None = None,
    now: float | None = None,
) -> None:  # fmt: skip
    """Queue the writes of ``count`` outcomes (with run times in ``buckets``: index -> count) on ``pipe``."""
    when = time.time() if now is None else now
    minute = keys.series_minute(minute_of(when))
    hour = keys.series_hour(hour_of(when))
    for name in _series(task, queue):
        for key in (minute, hour):
            pipe.hincrby(key, f"{name}|{outcome}", count)
            for bucket, n in buckets.items():
                pipe.hincrby(key, f"{name}|d{bucket}", n)
    pipe.expire(minute, MINUTE_TTL)
    pipe.expire(hour, HOUR_TTL)


@dataclass
class Tally:
    """Outcome counts and a run time histogram (per-bucket counts) of one series over a stretch."""

    counts: dict[str, int]
    buckets: list[int]

    def add(self, field: str, value: int, nbuckets: int) -> None:
        if field.startswith("d") and field[1:].isdigit():
            index = int(field[1:])
            if index < nbuckets:
                self.buckets[index] += value
        else:
            self.counts[field] = self.counts.get(field, 0) + value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stamps(span: str, now: float) -> tuple[list[str], list[float], int, bool]:
    """The hash stamps a window reads (oldest first), their start times, the point width, minute or hour."""
    seconds, step, by_minute = SPANS[span]
    unit = 60 if by_minute else 3600
    last = int(now // unit) * unit
    starts = [float(last - unit * n) for n in range(seconds // unit - 1, -1, -1)]
    fmt = minute_of if by_minute else hour_of
    return [fmt(s) for s in starts], starts, step, by_minute


def points(
    redis: Any, span: str, series: str, outcomes: Iterable[str], nbuckets: int, now: float | None = None
) -> list[tuple[float, Tally]]:
    """One series over a window, oldest first: (start of the point, its tally), one point per
    SPANS step (several minute hashes summed into one point for the day's chart)."""
    when = time.time() if now is None else now
    stamps, starts, step, by_minute = _stamps(span, when)
    key = keys.series_minute if by_minute else keys.series_hour
    wanted = list(outcomes)
    fields = [f"{series}|{o}" for o in wanted] + [f"{series}|d{i}" for i in range(nbuckets)]
    with redis.pipeline(transaction=False) as pipe:
        for stamp in stamps:
            pipe.hmget(key(stamp), fields)
        rows = pipe.execute()
    out: list[tuple[float, Tally]] = []
    for start, row in zip(starts, rows, strict=True):
        slot = start - start % step
        if not out or out[-1][0] != slot:
            out.append((slot, Tally({o: 0 for o in wanted}, [0] * nbuckets)))
        tally = out[-1][1]
        for name, value in zip(fields, row, strict=True):
            if value is not None:
                tally.add(name.rpartition("|")[2], int(value), nbuckets)
    return out


def totals(redis: Any, span: str, nbuckets: int, now: float | None = None) -> dict[str, Tally]:
    """Every series' tally over a window (the last hour from minute hashes, longer ones from hour
    hashes, so the day is the last 24 whole or current hours), by series name (``t:add``, ``q:low``)."""
    when = time.time() if now is None else now
    if span == "1h":
        stamps, _, _, _ = _stamps("1h", when)
        names = [keys.series_minute(s) for s in stamps]
    else:
        hours = SPANS[span][0] // 3600
        last = int(when // 3600) * 3600
        names = [keys.series_hour(hour_of(last - 3600 * n)) for n in range(hours)]
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        rows = pipe.execute()
    out: dict[str, Tally] = {}
    for row in rows:
        for raw_field, raw_value in row.items():
            series, _, field = _text(raw_field).rpartition("|")
            tally = out.get(series)
            if tally is None:
                tally = out[series] = Tally({}, [0] * nbuckets)
            tally.add(field, int(raw_value), nbuckets)
    return out
