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
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from redis import Redis
from rq.timeouts import BaseDeathPenalty

from app import compat, keys
from app.lua import LuaScript
from app.registry import RateLimit, SoftTimeLimitExceeded, TimeLimitExceeded, set_soft_deadline

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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._phase == "soft":
            self._phase = "hard"
            set_soft_deadline(None)
            assert self._soft is not None
            signal.setitimer(signal.ITIMER_REAL, compat.death_penalty_timeout(self) - self._soft)
            raise SoftTimeLimitExceeded(f"soft time limit of {self._soft:g} s exceeded")
        raise TimeLimitExceeded(f"hard time limit of {compat.death_penalty_timeout(self):g} s exceeded")

    def setup_death_penalty(self) -> None:
        signal.signal(signal.SIGALRM, self._handle)
        signal.setitimer(signal.ITIMER_REAL, self._soft or compat.death_penalty_timeout(self))
        set_soft_deadline(None if self._soft is None else time.monotonic() + self._soft)

    def cancel_death_penalty(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        set_soft_deadline(None)


# GCRA: KEYS[1] holds the theoretical arrival time in ms. ARGV: emission interval (ms),
# burst tolerance (ms). Returns 0 when a start is allowed, else the milliseconds to wait.
_GCRA = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return math.ceil(tat - now - tolerance)
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
return 0
"""
)


class RateLimiter:
    """Global start-rate limits per task, kept in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def acquire(self, task: str, limit: RateLimit) -> float:
        """Take a start slot for ``task``: 0 when granted, else seconds until one frees up."""
        # Starts are spaced evenly (as Celery spaces them): "10/m" is one every 6 s, no burst.
        interval_ms = limit.period * 1000 / limit.count
        wait_ms = int(_GCRA(self.redis, keys=[keys.rate_limit(task)], args=[interval_ms, 0]))
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
    supervisor's to kill (see the deadline board in app/workers/inline.py).
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
                raise_in_thread(self._thread_id, exc_type)

        self._timer = threading.Timer(delay, fire)
        self._timer.daemon = True
        self._timer.start()

    def setup_death_penalty(self) -> None:
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
