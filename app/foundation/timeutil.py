"""Time helpers shared by every layer: UTC, ISO 8601 with ``Z``, RQ's whole seconds.

The current time comes from :mod:`app.foundation.clock` (a test may move it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.foundation import clock


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC (by the clock in use)."""
    return clock.now()


def iso(value: datetime | None) -> str | None:
    """``value`` as ISO 8601 with a ``Z`` (naive values are taken as UTC), or None."""
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def whole_second_after(when: datetime) -> datetime:
    """``when`` rounded up to a whole second: RQ's scheduled registry truncates to seconds."""
    return when if when.microsecond == 0 else (when + timedelta(seconds=1)).replace(microsecond=0)


def seconds_from_now(seconds: float) -> datetime:
    """The whole second at or after ``seconds`` from now (never early)."""
    return whole_second_after(utcnow() + timedelta(seconds=seconds))


def stamp(moment: datetime) -> str:
    """A file name's timestamp: ``20261127T180000Z``."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
