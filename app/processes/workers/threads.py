"""The ``threads`` mode: N inline workers on threads of one process, for I/O-bound jobs.

Limits and revokes are raised in the job's thread; a job stuck past its hard limit takes
its process down (the supervisor restarts it and the other jobs in it are run again, at
least once).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from flask import Flask
from rq.exceptions import StopRequested

from app.core import compat
from app.core.limits import JobStopped, ThreadTimeLimits
from app.core.queues import JsonQueue
from app.foundation.runtime import connect_settings, runtime_of
from app.processes.workers.base import ShutdownGraceOver
from app.processes.workers.inline import DeadlineBoard, JsonInlineWorker

log = logging.getLogger("tasklane.worker")


class JsonThreadWorker(JsonInlineWorker):
    """An inline worker on a thread of its own, one of several in a process."""

    time_limits_class = ThreadTimeLimits

    def _install_signal_handlers(self) -> None:
        """Signals belong to the main thread, which stops every worker thread (ThreadedPool)."""

    def request_stop_soon(self) -> None:
        """Warm shutdown: finish the job in hand, then leave the work loop."""
        self.asked_to_stop = True
        self.start_shutdown_grace()
        compat.request_stop(self)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Wait for a job in short steps, so that a stop request is seen within a second."""
        while True:
            if compat.stop_requested(self):
                raise StopRequested()
            if timeout is None:
                return super().dequeue_job_and_maintain_ttl(None, max_idle_time)
            result = super().dequeue_job_and_maintain_ttl(1, 1)
            if result is not None:
                return result


class ThreadPool:
    """``--threads`` inline workers on threads of this process, each with its own connection."""

    def __init__(
        self,
        app: Flask,
        queue_names: list[str],
        threads: int,
        *,
        burst: bool = False,
        name: str | None = None,
        board: DeadlineBoard | None = None,
        first_slot: int = 0,
        logging_level: str = "INFO",
        **worker_options: Any,
    ) -> None:
        settings = runtime_of(app).settings
        self.app = app
        self.burst = burst
        self.logging_level = logging_level
        self.workers = []
        for n in range(threads):
            redis = connect_settings(settings)
            self.workers.append(
                JsonThreadWorker(
                    [JsonQueue(q, connection=redis) for q in queue_names],
                    connection=redis,
                    name=f"{name}-t{n}" if name else None,
                    board=board,
                    slot=first_slot + n,
                    **worker_options,
                )
            )
        self.stopping = False
        self._first_signal: float | None = None

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self._duplicate_signal():
            return
        if self.stopping:
            log.info("second %s: stopping the jobs in hand", signal.Signals(signum).name)
            for worker in self.workers:
                worker.kill_horse()
            return
        self.stopping = True
        log.info(
            "received %s: warm shutdown of %d worker threads", signal.Signals(signum).name, len(self.workers)
        )
        for worker in self.workers:
            worker.request_stop_soon()

    def _duplicate_signal(self) -> bool:
        """A second stop signal within a second of the first is the same request sent twice (a
        platform signals every process, and the supervisor forwards its own): not a cold shutdown."""
        now = time.monotonic()
        if self._first_signal is None:
            self._first_signal = now
            return False
        return now - self._first_signal < 1.0

    def _run(self, worker: JsonThreadWorker) -> None:
        with self.app.app_context(), contextlib.suppress(JobStopped, ShutdownGraceOver):
            worker.work(burst=self.burst, with_scheduler=False, logging_level=self.logging_level)

    def run(self) -> int:
        """Run every worker thread; return when all have stopped: 0, or 1 when one ended unasked.

        A thread whose worker ended without a stop request (an error it could not ride out)
        takes the process down with it, warmly: the others finish their jobs, the process
        exits 1 and its supervisor starts a fresh one.
        """
        with self.app.app_context():  # a stop request reads the settings (WORKER_SHUTDOWN_GRACE)
            return self._run_all()

    def _run_all(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        threads = [
            threading.Thread(target=self._run, args=(w,), name=f"worker-{n}")
            for n, w in enumerate(self.workers)
        ]
        for thread in threads:
            thread.start()
        unexpected = False
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(0.2)
            ended = [t.name for t in threads if not t.is_alive()]
            if ended and not self.stopping and not self.burst:
                log.error("worker thread(s) %s ended unexpectedly; stopping the others", ", ".join(ended))
                unexpected = self.stopping = True
                for worker in self.workers:
                    worker.request_stop_soon()
        return 1 if unexpected else 0
