"""The process's clock: every Python-side decision about time asks it, so tests can move it.

The scheduler (due ticks, due delayed jobs, the sweep's cadence), the sweeps (expired leases,
jobs stuck in an intermediate list), lease renewals and :mod:`app.foundation.timeutil` read
the time through this module's functions, never ``time.time()`` or ``datetime.now()``
directly. In production the clock is :class:`SystemClock`; a test installs a
:class:`ManualClock` (the ``manual_clock`` fixture of ``tests/conftest.py``) and moves it with
``advance()`` or ``set()`` instead of sleeping.

What it does not drive, on purpose:
- times Redis keeps itself: key TTLs (locks, heartbeats) and the rate limiter's GCRA script,
  which reads Redis's ``TIME`` so that every host shares one clock;
- time limits: the kernel's timers (``setitimer``) and ``threading.Timer`` raise them in real
  time, so their deadlines stay on ``time.monotonic()``;
- RQ's own heartbeats and timestamps, written by RQ's code inside workers (the sweep compares
  them with this clock, which is the system's in production).
"""

from __future__ import annotations

import threading
import time as _time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the app asks of a clock."""

    def time(self) -> float:
        """Seconds since the epoch (wall clock, as ``time.time()``)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (as ``time.monotonic()``), for intervals."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        _time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told: ``advance(seconds)``, ``set(when)``, or ``sleep`` (which
    advances it at once instead of waiting). Starts at the real time unless given ``start``."""

    def __init__(self, start: datetime | float | None = None) -> None:
        self._lock = threading.Lock()
        self._wall = _time.time() if start is None else _seconds(start)
        self._mono = 1_000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Move both the wall clock and the monotonic clock ``seconds`` on (not back)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def set(self, when: datetime | float) -> None:
        """Set the wall clock to ``when`` (an aware datetime or epoch seconds); it may go back, as
        a system clock may; the monotonic clock moves on by the same amount, or not at all."""
        target = _seconds(when)
        with self._lock:
            self._mono += max(0.0, target - self._wall)
            self._wall = target


def _seconds(when: datetime | float) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"a naive datetime is ambiguous: {when!r} (give a timezone)")
        return when.timestamp()
    return float(when)


_current: Clock = SystemClock()


def current() -> Clock:
    """The clock in use."""
    return _current


def install(clock: Clock) -> Clock:
    """Use ``clock`` from now on (process-wide); returns the one it replaces, to put back."""
    global _current
    previous, _current = _current, clock
    return previous


def time() -> float:
    """Seconds since the epoch, by the clock in use."""
    return _current.time()


def monotonic() -> float:
    """Seconds on the clock in use's monotonic clock."""
    return _current.monotonic()


def now() -> datetime:
    """The current time as an aware UTC datetime, by the clock in use."""
    return datetime.fromtimestamp(_current.time(), UTC)


def sleep(seconds: float) -> None:
    """Wait ``seconds`` by the clock in use (a manual clock advances instead of waiting)."""
    _current.sleep(seconds)
