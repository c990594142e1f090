"""A warm shutdown's grace (WORKER_SHUTDOWN_GRACE): the job in hand may finish until it ends.

Fork mode's worker watches the end itself (fork.py) and kills its horse; an in-process job
is interrupted by a timer that raises :class:`ShutdownGraceOver` in the thread running it.
Either way the job is put back on its queue, one attempt recorded, no retry spent.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rq.job import Job
from rq.queue import Queue

from app.core import leases, outcomes
from app.core.outcomes import ShutdownGraceOver
from app.foundation.runtime import runtime
from app.processes.workers.redis_outages import OutageMixin

log = logging.getLogger("tasklane.worker")


class GraceMixin(OutageMixin):
    """A warm shutdown's grace for the job in hand."""

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm shutdown, remembered (an exit after it is a requested one); its grace starts."""
        self.asked_to_stop = True
        self.start_shutdown_grace()
        super().request_stop(signum, frame)

    #: When the grace of a warm shutdown ends (time.monotonic()), once one was asked for.
    _grace_end: float | None = None

    def _settings(self) -> Any:
        return runtime().settings

    def start_shutdown_grace(self) -> None:
        """A warm shutdown began: the job in hand has WORKER_SHUTDOWN_GRACE seconds to finish.

        Fork mode's worker watches the end itself (fork.py); an in-process job is interrupted
        by a timer that raises :class:`ShutdownGraceOver` in the thread running it.
        """
        if self._grace_end is not None:
            return
        grace = float(self._settings().worker_shutdown_grace)
        self._grace_end = time.monotonic() + grace
        if not self.is_horse and self.uses_grace_timer:
            timer = threading.Timer(grace, self._grace_over)
            timer.daemon = True
            timer.start()

    #: In-process modes stop the job in hand with a timer; fork mode kills its horse (fork.py).
    uses_grace_timer = False

    def shutdown_grace_end(self) -> float | None:
        """When the warm shutdown's grace ends (time.monotonic()), or None before any stop request."""
        return self._grace_end

    def note_shutdown_stop(self, job_id: str | None) -> None:
        """The job in hand is being stopped because the grace ran out (requeued, not failed)."""
        self.run_of(job_id).shutdown_stopped = True

    def running_job(self) -> Job | None:
        """The job whose body runs in this process now (in-process modes: inline.py); None here."""
        return None

    def interrupt_job(self, exc_type: type[BaseException]) -> None:
        """Raise ``exc_type`` in the thread running the job in hand (in-process modes: inline.py)."""

    def _grace_over(self) -> None:
        """In-process modes: the grace ran out with a job still running; stop it in its thread."""
        job = self.running_job()
        if job is None or self.run_of(job.id).body_done:
            return  # no job, or its body returned: its outcome is being written, let it land
        log.warning("Worker %s: warm shutdown grace over; stopping job %s (it is put back on its queue)",
                    self.name, job.id)  # fmt: skip
        self.note_shutdown_stop(job.id)
        self.interrupt_job(ShutdownGraceOver)

    def _requeue_after_grace(self, job: Job, queue: Queue, execution: Any) -> None:
        """Put a job stopped by the end of the grace back on its queue: no retry spent, no failure."""
        self.run_of(job.id).shutdown_stopped = False

        def cleanup(pipe: Any) -> None:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)

        lease = leases.of_run(job, execution)
        outcomes.orphaned(job, queue, cleanup=cleanup, lease=lease, cause=outcomes.SHUTDOWN_STOPPED)
