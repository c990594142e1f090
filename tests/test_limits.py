"""Rate limits in Redis and time limits in the process that runs a job."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import redis

from app.catalogue.registry import RateLimit
from app.core.limits import (
    RateLimiter,
    SoftTimeLimitExceeded,
    TaskTimeLimits,
    ThreadTimeLimits,
    TimeLimitExceeded,
)


@pytest.fixture
def real_redis(redis_url: str) -> Any:
    return redis.Redis.from_url(redis_url)


def test_rate_limiter_spaces_starts_evenly(real_redis: Any) -> None:
    """It grants one start per interval and tells how long to wait for the next."""
    limiter = RateLimiter(real_redis)
    limit = RateLimit.parse("4/s")
    assert limiter.acquire("t", limit) == 0
    wait = limiter.acquire("t", limit)
    assert 0.2 <= wait <= 0.25
    time.sleep(wait)
    assert limiter.acquire("t", limit) == 0


def test_rate_limits_are_per_task_and_shared_by_clients(real_redis: Any, redis_url: str) -> None:
    """It counts starts of one task across clients (workers), and tasks separately."""
    limit = RateLimit.parse("1/m")
    assert RateLimiter(real_redis).acquire("a", limit) == 0
    other_worker = RateLimiter(redis.Redis.from_url(redis_url))
    assert 59 <= other_worker.acquire("a", limit) <= 60
    assert other_worker.acquire("b", limit) == 0


def test_rate_limit_key_expires(real_redis: Any) -> None:
    """It leaves nothing behind in Redis once the window has passed."""
    RateLimiter(real_redis).acquire("short", RateLimit.parse("10/s"))
    ttl = real_redis.pttl("tasklane:ratelimit:short")
    assert 0 < ttl <= 1100


def test_soft_limit_raises_then_hard_limit() -> None:
    """It raises SoftTimeLimitExceeded at the soft limit, then TimeLimitExceeded at the hard one."""
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded), TaskTimeLimits(1, soft_timeout=0.3):
        try:
            time.sleep(5)
        except SoftTimeLimitExceeded:
            soft_at = time.monotonic() - started
            time.sleep(5)
    assert 0.25 <= soft_at <= 0.6
    assert 0.9 <= time.monotonic() - started <= 1.5


def test_no_soft_limit_means_hard_only() -> None:
    """It raises only TimeLimitExceeded when the task has no soft limit."""
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded), TaskTimeLimits(0.3):
        time.sleep(5)
    assert time.monotonic() - started < 1


def test_limits_are_cancelled_on_exit() -> None:
    """It disarms the alarm and restores the default SIGALRM handler when the job ends in time."""
    with TaskTimeLimits(0.2, soft_timeout=0.1):
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left armed to go off later
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


class _SlowFinalizer:
    """An object whose ``__del__`` runs long enough for a soft limit to fire inside it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __del__(self) -> None:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("limits", [TaskTimeLimits, ThreadTimeLimits])
def test_a_soft_limit_that_fires_inside_a_finalizer_still_reaches_the_task(limits: Any) -> None:
    """Python only prints an exception raised in a ``__del__`` or a garbage collector's callback:
    a soft limit that fired there was lost, and the task ran on to its hard limit (a report that
    should have returned "partial" returned "complete"). It is raised again in the task's code."""
    seen: list[float] = []
    started = time.monotonic()
    with limits(5, soft_timeout=0.1):
        try:
            finalizer = _SlowFinalizer(0.3)
            del finalizer  # the soft limit fires while __del__ runs
            end = time.monotonic() + 2
            while time.monotonic() < end:
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            seen.append(time.monotonic() - started)
    assert seen, "the soft limit never reached the task"
    assert 0.09 <= seen[0] < 1.0  # the exception ended __del__; raised again 1 ms later
