"""Time helpers: ISO 8601 with Z, and RQ's whole seconds, never early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from app.foundation.timeutil import iso, whole_second_after


def test_iso_is_utc_with_a_z() -> None:
    """Aware times are converted to UTC; naive ones are taken as UTC; None stays None."""
    assert iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert iso(datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-02T03:04:05Z"
    assert iso(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    assert iso(None) is None


def test_whole_second_after_rounds_up_only_fractions() -> None:
    """A fractional second rounds up (a delay is never shortened); a whole one stays."""
    whole = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert whole_second_after(whole) == whole
    assert whole_second_after(whole + timedelta(microseconds=1)) == whole + timedelta(seconds=1)
