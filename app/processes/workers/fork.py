"""The ``fork`` mode: RQ's forking worker, one work horse per job.

The most isolated mode: a crash or leak dies with the horse, and a horse stuck past its
hard time limit, even in C code, is killed by the worker that forked it. A horse never
waits for Redis: when it cannot write its job's outcome it exits with EX_OUTCOME_LOST,
and the worker puts the job back on its queue once Redis answers (app/processes/workers/recording.py).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from typing import Any

from rq import Worker
from rq.job import Job
from rq.queue import Queue

from app.core import compat
from app.foundation import defaults, proc
from app.processes.workers.base import TasklaneWorkerMixin


class JsonWorker(TasklaneWorkerMixin, Worker):
    """RQ's forking worker: one work horse per job, killed if it outlives its hard limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **self._init_tasklane(kwargs))
        self._dequeue_through_outcomes()
        self._deadline: float | None = None

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        """Fork, and remember when the horse must be gone."""
        self._deadline = (
            time.monotonic() + float(job.timeout or defaults.TIME_LIMIT) + defaults.HARD_KILL_GRACE
        )
        super().fork_work_horse(job, queue)

    def setup_work_horse_signals(self) -> None:
        """A work horse dies with its worker, so that a killed worker's job never runs twice at once;
        it ignores SIGTERM (a platform sends it to every process): its worker's grace decides."""
        parent = os.getppid()
        super().setup_work_horse_signals()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        proc.die_with_parent(signal.SIGKILL, parent)
        self._limit_horse_memory()

    def _limit_horse_memory(self) -> None:
        """JOB_MEMORY_LIMIT_MB: cap what this work horse's job may allocate (app/foundation/proc.py)."""
        limit = self._settings().job_memory_limit_mb
        if limit:
            proc.limit_memory(limit)

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        """Wait for the horse; past its hard limit, or a warm shutdown's grace, kill it wherever it is."""
        pid = self.horse_pid
        if pid and self._deadline is not None:
            self._wait_within_limits(pid, self._deadline)
        return super().wait_for_horse()

    def _wait_within_limits(self, pid: int, deadline: float) -> None:
        """Wait (in short steps, so a stop request is seen) until the horse exits or a limit passes."""
        while not _exited(pid):
            grace = self.shutdown_grace_end()
            now = time.monotonic()
            if grace is not None and now >= grace and grace < deadline:
                self._stop_for_shutdown(pid)
                return
            if now >= deadline:
                self._kill_for_time_limit(pid)
                return
            _wait_exit(pid, min(deadline if grace is None else min(grace, deadline), now + 0.5) - now)

    def _stop_for_shutdown(self, pid: int) -> None:
        job_id = self.get_current_job_id()
        self.log.warning("Worker %s: warm shutdown grace over; stopping job %s (it is put back on its queue)",
                         self.name, job_id)  # fmt: skip
        self.note_shutdown_stop(job_id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def _stop_horse(self) -> None:
        """Kill and reap a horse still running (before its job is handed to another run)."""
        pid = self.horse_pid
        if pid and not _exited(pid):
            self.kill_horse()
            super().wait_for_horse()
        compat.forget_horse(self)

    def _kill_for_time_limit(self, pid: int) -> None:
        self.log.warning("Worker %s: work horse %d is past its hard time limit; killing it", self.name, pid)
        self.run_of(self.get_current_job_id()).hard_killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit without reaping it; True if it did."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _exited(pid):
                return True
            time.sleep(0.05)
        return _exited(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def _exited(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie counts: it waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
