"""Time limits and rate limits.

Time limits: a task's soft limit raises :class:`SoftTimeLimitExceeded` inside it (it may
catch it and return a partial result); its hard limit raises :class:`TimeLimitExceeded`,
and if the task is stuck where Python cannot interrupt it (C code, a blocking call that
retries on EINTR) the worker that forked it kills the process a moment later.

Rate limits: ``"10/m"`` allows ten starts a minute for a task across every worker on
every host, enforced in Redis with the generic cell rate algorithm (one Lua call, no
clock skew: Redis's own clock is used). A job over its limit is put back to run later.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from redis import Redis
from rq.timeouts import BaseDeathPenalty

from app.catalogue.registry import RateLimit, SoftTimeLimitExceeded, TimeLimitExceeded, set_soft_deadline
from app.core import compat
from app.foundation import keys
from app.foundation.lua import LuaScript

__all__ = [
    "JobStopped",
    "RateLimiter",
    "SoftTimeLimitExceeded",
    "TaskTimeLimits",
    "ThreadTimeLimits",
    "TimeLimitExceeded",
    "raise_in_thread",
]


class TaskTimeLimits(BaseDeathPenalty):
    """SIGALRM-based soft then hard limit around one job in the process that runs it.

    With a soft limit, the first alarm raises SoftTimeLimitExceeded and re-arms the
    alarm for the rest of the hard limit; the second raises TimeLimitExceeded.
    """

    def __init__(
        self, timeout: float, exception: type[BaseException] = TimeLimitExceeded, **kwargs: Any
    ) -> None:
        super().__init__(timeout, exception, **kwargs)
        soft = kwargs.get("soft_timeout")
        self._soft = float(soft) if soft and 0 < float(soft) < float(timeout) else None
        self._phase = "soft" if self._soft else "hard"

    #: Times the soft limit is raised again after Python swallowed it (see :func:`_soft_limit_lost`).
    redeliveries = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._phase == "soft":
            self._phase = "hard"
            set_soft_deadline(None)
            assert self._soft is not None
            signal.setitimer(signal.ITIMER_REAL, max(0.001, self._hard_end - time.monotonic()))
            _SOFT_RAISED[threading.get_ident()] = self
            raise SoftTimeLimitExceeded(f"soft time limit of {self._soft:g} s exceeded")
        raise TimeLimitExceeded(f"hard time limit of {compat.death_penalty_timeout(self):g} s exceeded")

    def _raise_soft_again(self) -> None:
        """The soft limit was raised where Python ignores exceptions: raise it again in a moment."""
        self._phase = "soft"
        signal.setitimer(signal.ITIMER_REAL, _REDELIVER_AFTER)

    def setup_death_penalty(self) -> None:
        _watch_for_lost_soft_limits()
        self._hard_end = time.monotonic() + compat.death_penalty_timeout(self)
        signal.signal(signal.SIGALRM, self._handle)
        signal.setitimer(signal.ITIMER_REAL, self._soft or compat.death_penalty_timeout(self))
        set_soft_deadline(None if self._soft is None else time.monotonic() + self._soft)

    def cancel_death_penalty(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        set_soft_deadline(None)
        _SOFT_RAISED.pop(threading.get_ident(), None)


#: The time limits whose soft limit was raised, by the thread it was raised in, until they end.
_SOFT_RAISED: dict[int, TaskTimeLimits] = {}
_REDELIVER_AFTER = 0.001
_MAX_REDELIVERIES = 20


def _soft_limit_lost(unraisable: Any) -> None:
    """``sys.unraisablehook``: an exception raised where Python can only print it (a ``__del__``,
    a weakref callback run by the garbage collector) is lost to the code that should see it.
    The soft limit's is raised again a moment later, so the task still gets it (once): without
    this, a task that happened to be collecting garbage at its soft limit ran on to the hard one."""
    limits = _SOFT_RAISED.get(threading.get_ident())
    lost = (
        limits is not None
        and isinstance(unraisable.exc_value, SoftTimeLimitExceeded)
        and limits.redeliveries < _MAX_REDELIVERIES
    )
    try:
        _previous_hook(unraisable)  # printed (or recorded) as before; then raised again, outside it
    finally:
        if lost and limits is not None:
            limits.redeliveries += 1
            limits._raise_soft_again()


_previous_hook: Callable[[Any], Any] = sys.unraisablehook


_hook_installed = False


def _watch_for_lost_soft_limits() -> None:
    """Chain :func:`_soft_limit_lost` in front of the hook in place, once per process."""
    global _previous_hook, _hook_installed
    if not _hook_installed:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _soft_limit_lost
        _hook_installed = True


# GCRA: KEYS[1] holds the theoretical arrival time in ms. ARGV: emission interval (ms),
# burst tolerance (ms), "now" in ms or '' (tests with a manual clock; else Redis's TIME, so
# workers on hosts with skewed clocks agree), and '1' to reserve. Returns 0 when a start is
# allowed, else the milliseconds to wait; with '1' a later slot is taken (the bucket advanced)
# and the answer is the milliseconds until it.
_GCRA = LuaScript(
    """
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = 0
if tat - now > tolerance then
  wait = math.ceil(tat - now - tolerance)
  if ARGV[4] ~= '1' then return wait end
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
return wait
"""
)


class RateLimiter:
    """Global start-rate limits per task (or per task and ``rate_key``), kept in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def acquire(
        self,
        task: str,
        limit: RateLimit,
        *,
        rate_key: str | None = None,
        burst: int | None = None,
        reserve: bool = False,
        now: float | None = None,
        key: str | None = None,
    ) -> float:
        """Take a start slot for ``task`` (in ``rate_key``'s own bucket when given): 0 when granted,
        else seconds until one frees up; with ``reserve`` the next free slot is taken and the answer
        is the seconds until it. ``key`` names another Redis key for the bucket (the waiting line,
        :func:`keys.rate_line`). ``now`` (Unix seconds) replaces Redis's clock: tests only."""
        # Starts are spaced evenly (as Celery spaces them): "10/m" is one every 6 s; a burst of N
        # lets N through at once (an idle bucket), then the spacing applies.
        interval_ms = limit.period * 1000 / limit.count
        tolerance_ms = interval_ms * (max(1, burst or 1) - 1)
        args: list[Any] = [interval_ms, tolerance_ms]
        if reserve or now is not None:
            args += ["" if now is None else int(now * 1000), "1" if reserve else "0"]
        bucket = key or keys.rate_limit(task, rate_key)
        wait_ms = int(_GCRA(self.redis, keys=[bucket], args=args))
        return wait_ms / 1000.0


class JobStopped(BaseException):
    """Raised in an in-process job that was revoked while it ran.

    A BaseException, so that a task's ``except Exception`` cannot swallow the revoke.
    """


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in another thread at its next Python instruction; True if delivered."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    if done > 1:  # more than one thread state matched: undo, never leave it half-raised
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return done == 1


class ThreadTimeLimits(TaskTimeLimits):
    """A job's soft then hard limit in a worker thread: a timer raises them in that thread.

    Signals only reach the main thread, so this cannot interrupt a blocking call: the
    exception arrives when the call returns; a job that never returns is the
    supervisor's to kill (see the deadline board in app/processes/workers/inline.py).
    """

    def __init__(
        self, timeout: float, exception: type[BaseException] = TimeLimitExceeded, **kwargs: Any
    ) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._active = False
        self._timer: threading.Timer | None = None

    def _arm(self, delay: float, exc_type: type[BaseException], then: Callable[[], None] | None) -> None:
        def fire() -> None:
            with self._lock:
                if not self._active:
                    return
                if then is not None:
                    then()
                if exc_type is SoftTimeLimitExceeded:
                    _SOFT_RAISED[self._thread_id] = self
                raise_in_thread(self._thread_id, exc_type)

        self._timer = threading.Timer(delay, fire)
        self._timer.daemon = True
        self._timer.start()

    def _raise_soft_again(self) -> None:
        self._arm(_REDELIVER_AFTER, SoftTimeLimitExceeded, None)

    def setup_death_penalty(self) -> None:
        _watch_for_lost_soft_limits()
        self._active = True
        hard = compat.death_penalty_timeout(self)
        set_soft_deadline(None if self._soft is None else time.monotonic() + self._soft)
        if self._soft is not None:
            soft = self._soft
            self._arm(soft, SoftTimeLimitExceeded, lambda: self._arm(hard - soft, TimeLimitExceeded, None))
        else:
            self._arm(hard, TimeLimitExceeded, None)

    def cancel_death_penalty(self) -> None:
        set_soft_deadline(None)
        with self._lock:
            self._active = False
            if self._timer is not None:
                self._timer.cancel()
        _SOFT_RAISED.pop(self._thread_id, None)
