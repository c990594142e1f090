"""Riding out a Redis outage: the backoff, the waiting, and one log line each way per outage."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.foundation import outages
from app.foundation.outages import Backoff, Outage, wait_until_reachable


class FlakyRedis:
    """Answers PING only after ``failures`` failed attempts (alternating refusals and timeouts)."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if self.pings <= self.failures:
            if self.error is not None:
                raise self.error
            raise RedisConnectionError("refused") if self.pings % 2 else RedisTimeoutError("timed out")
        return True


def test_backoff_doubles_from_half_a_second_up_to_ten() -> None:
    """It waits 0.5 s first, doubles each time, never more than 10 s, and starts over after a reset."""
    backoff = Backoff()
    assert [backoff.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_waits_until_redis_answers_and_logs_the_outage_once(caplog: pytest.LogCaptureFixture) -> None:
    """It retries until PING answers, logging one line when the outage starts and one when it ends,
    however many attempts fail (connection errors and timeouts alike)."""
    redis = FlakyRedis(failures=6)
    outage = Outage()
    with caplog.at_level(logging.INFO, logger="tasklane.redis"):
        reached = wait_until_reachable(
            redis,  # type: ignore[arg-type]
            error=RedisConnectionError("lost"),
            outage=outage,
            backoff=Backoff(0.001, 0.002),
        )
    assert reached and redis.pings == 7
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("Redis unreachable (ConnectionError: lost)")
    assert messages[1].startswith("Redis reachable again after")
    assert not outage.down


def test_several_waiters_log_one_outage() -> None:
    """It logs a single start and end of an outage noticed by several callers of one process."""
    outage = Outage()
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("tasklane.redis")
    logger.addHandler(handler)
    try:
        for _ in range(3):
            outage.failed(RedisConnectionError("down"))
        assert outage.down
        outage.recovered()
        outage.recovered()
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2, records


def test_gives_up_after_its_limit() -> None:
    """It returns False once ``limit`` seconds have passed without an answer, keeping the last error."""
    redis = FlakyRedis(failures=10**6)
    outage = Outage()
    started = time.monotonic()
    assert not wait_until_reachable(redis, limit=0.3, outage=outage, backoff=Backoff(0.05, 0.05))  # type: ignore[arg-type]
    assert 0.25 <= time.monotonic() - started < 2
    assert isinstance(outage.last_error, RedisConnectionError | RedisTimeoutError)


def test_a_zero_limit_pings_once() -> None:
    """It tries once and gives up at once with limit 0 (REDIS_WAIT_SECONDS=0)."""
    redis = FlakyRedis(failures=1)
    assert not wait_until_reachable(redis, limit=0, outage=Outage())  # type: ignore[arg-type]
    assert redis.pings == 1


def test_stops_waiting_when_asked() -> None:
    """It returns False within a fraction of a second of ``stop()`` turning true, even mid-delay."""
    redis = FlakyRedis(failures=10**6)
    asked = time.monotonic() + 0.3
    started = time.monotonic()
    assert not wait_until_reachable(
        redis,  # type: ignore[arg-type]
        stop=lambda: time.monotonic() > asked,
        outage=Outage(),
        backoff=Backoff(10, 10),
    )
    assert time.monotonic() - started < 1.0


def test_wrong_credentials_fail_fast_when_asked() -> None:
    """It raises an authentication error at once instead of waiting it out, when told to."""
    redis = FlakyRedis(failures=1, error=AuthenticationError("invalid password"))
    with pytest.raises(AuthenticationError):
        wait_until_reachable(redis, limit=30, outage=Outage(), fail_fast=outages.MISCONFIGURED)  # type: ignore[arg-type]


def test_a_stop_request_does_not_skip_a_first_ping_without_a_failure() -> None:
    """It still asks Redis once before giving up for a stop request, when no failure sent the
    caller here (a worker asked to stop still settles its job if Redis answers)."""
    redis = FlakyRedis(failures=0)
    assert wait_until_reachable(redis, stop=lambda: True, outage=Outage())  # type: ignore[arg-type]
    assert redis.pings == 1
    down = FlakyRedis(failures=10**6)
    assert not wait_until_reachable(down, stop=lambda: True, outage=Outage())  # type: ignore[arg-type]
    assert down.pings == 1
