"""Riding out a Redis outage: wait, reconnect with capped backoff, resume.

Every process (web, workers, supervisor, scheduler) goes on through a Redis restart or
failover instead of exiting: where a Redis call fails with a connection error or a
timeout, the caller waits here until Redis answers a PING again, then resumes. The
delays double from ``RECONNECT_FIRST_DELAY`` up to ``RECONNECT_MAX_DELAY``; each outage
is logged once when a process first notices it and once when Redis is back, never per
attempt (however many threads or steps of the process notice it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.foundation import clock, defaults

log = logging.getLogger("tasklane.redis")

#: The errors of an unreachable Redis (refused, reset, timed out, still loading its data).
REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
#: Connection errors that waiting does not cure: the credentials are wrong.
MISCONFIGURED: tuple[type[Exception], ...] = (AuthenticationError, AuthorizationError)


class RedisUnavailable(Exception):
    """Redis could not be reached; raised instead of redis-py's error where that one would be
    caught by a library's own retry loop (RQ's logs every attempt), so that the caller rides
    the outage out here."""


class Backoff:
    """Delays doubling from ``first`` to at most ``cap`` seconds."""

    def __init__(
        self, first: float = defaults.RECONNECT_FIRST_DELAY, cap: float = defaults.RECONNECT_MAX_DELAY
    ) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        """The next delay."""
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        """Start again from the first delay."""
        self._next = self.first


class Outage:
    """Whether this process currently sees Redis as unreachable; logs each change, once.

    Whoever reports a failure without waiting for Redis (see :func:`wait_until_reachable`,
    which reports both) reports its next success too, so that the next outage is logged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        #: When (``clock.monotonic()``) this process last saw Redis again after an outage.
        self.recovered_at: float | None = None
        #: The latest failure seen (kept after recovery, for a final message).
        self.last_error: BaseException | None = None

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self._down_since is not None

    def failed(self, exc: BaseException) -> None:
        """A Redis call failed: log the start of the outage, unless it is already known."""
        self.last_error = exc
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning(
            "Redis unreachable (%s: %s); waiting for it, retrying with backoff up to %g s",
            type(exc).__name__,
            exc,
            defaults.RECONNECT_MAX_DELAY,
        )

    def recovered(self) -> None:
        """A Redis call succeeded: log the end of the outage, if there was one."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            self.recovered_at = clock.monotonic()
        if since is not None:
            log.warning("Redis reachable again after %.1f s; resuming", time.monotonic() - since)


#: The process's view of Redis, shared by every thread and step that talks to it.
OUTAGE = Outage()


def wait_until_reachable(
    redis: Redis,
    *,
    error: BaseException | None = None,
    limit: float | None = None,
    stop: Callable[[], bool] | None = None,
    outage: Outage = OUTAGE,
    backoff: Backoff | None = None,
    fail_fast: tuple[type[Exception], ...] = (),
) -> bool:
    """PING ``redis`` with backoff until it answers (True), ``limit`` s pass or ``stop()`` (False).

    ``error`` is the failure that sent the caller here, if any: it is logged (once per
    outage) before the first wait; without one, the first PING is sent at once. ``stop``
    is checked before and during each wait, at least four times a second. An error of a
    ``fail_fast`` type is raised at once instead of waited out.
    """
    delays = backoff or Backoff()
    deadline = None if limit is None else time.monotonic() + limit
    if error is not None:
        outage.failed(error)
    wait_first = error is not None  # after a failure, give Redis a moment before the first PING
    while True:
        if wait_first:
            if stop is not None and stop():
                return False
            delay = delays.next()
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
            if delay > 0 and not _sleep(delay, stop):
                return False
        wait_first = True
        try:
            redis.ping()
        except REDIS_DOWN as exc:
            if isinstance(exc, fail_fast):
                raise
            outage.failed(exc)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            continue
        outage.recovered()
        return True


def _sleep(seconds: float, stop: Callable[[], bool] | None) -> bool:
    """Sleep ``seconds`` in short steps; False as soon as ``stop()`` is true."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.25))
        if stop is not None and stop():
            return False
