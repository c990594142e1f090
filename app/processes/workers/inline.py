"""The ``inline`` mode: jobs run in the worker process itself, with far less per-job work.

No fork, one round trip to start a job and one to finish it (see base.py and recording.py).
Soft and hard limits are SIGALRM; a job stuck where no signal reaches it is killed with its process by the
supervisor, which reads each worker's deadline from a :class:`DeadlineBoard`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import signal
import threading
import time
from collections import defaultdict
from typing import Any

from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from app.core import compat
from app.core.limits import JobStopped, raise_in_thread
from app.core.queues import task_spec
from app.foundation import defaults, outages
from app.ops import metrics
from app.processes.workers.base import TasklaneWorkerMixin

log = logging.getLogger("tasklane.worker")

#: Most seconds (and successes) an inline, threads or pooled worker's counters wait before they are written.
COUNTS_EVERY = 1.0
COUNTS_MAX = 500


class DeadlineBoard:
    """Per worker thread: the job it runs and when that job must be over, in shared memory.

    The supervisor process reads it: a process whose job is past its hard limit plus a
    grace period (stuck where nothing in the process can reach it) is killed and
    restarted, and that job is failed with TimeLimitExceeded.
    """

    ID_BYTES = 128

    def __init__(self, slots: int) -> None:
        self.slots = slots
        # Shared ctypes arrays (typeshed types them as plain sequences, without .raw or byte slices).
        self.deadlines: Any = multiprocessing.Array(ctypes.c_double, slots, lock=False)
        self.job_ids: Any = multiprocessing.Array(ctypes.c_char, slots * self.ID_BYTES, lock=False)
        #: Per slot, the job a pooled worker holds from its dequeue until its outcome is written
        #: (the supervisor settles it if the process dies meanwhile); empty when none.
        self.held: Any = multiprocessing.Array(ctypes.c_char, slots * self.ID_BYTES, lock=False)
        #: Per slot: the held job was claimed ahead (started with the last success) and has not run.
        self.ahead: Any = multiprocessing.Array(ctypes.c_bool, slots, lock=False)

    def set(self, slot: int, job_id: str, deadline: float) -> None:
        """Record that ``slot`` runs ``job_id`` until ``deadline`` (time.time())."""
        raw = job_id.encode()[: self.ID_BYTES].ljust(self.ID_BYTES, b"\0")
        start = slot * self.ID_BYTES
        self.job_ids[start : start + self.ID_BYTES] = raw
        self.deadlines[slot] = deadline

    def hold(self, slot: int, job_id: str, ahead: bool = False) -> None:
        """``slot`` holds ``job_id`` (dequeued, maybe started) until :meth:`release`; ``ahead``: it
        was claimed with the last success and has not run yet."""
        start = slot * self.ID_BYTES
        raw = job_id.encode()[: self.ID_BYTES].ljust(self.ID_BYTES, b"\0")
        self.ahead[slot] = ahead
        self.held[start : start + self.ID_BYTES] = raw

    def release(self, slot: int) -> None:
        """``slot``'s job has its outcome written (or was handed back): nothing to settle."""
        self.held[slot * self.ID_BYTES] = b"\0"
        self.ahead[slot] = False

    def holding(self, slots: range) -> list[str]:
        """The job ids the given slots hold, and release them (the caller settles them)."""
        return [job_id for job_id, _ in self.holding_runs(slots)]

    def holding_runs(self, slots: range) -> list[tuple[str, bool]]:
        """:meth:`holding`, each id with whether it was claimed ahead and never ran."""
        found = []
        for slot in slots:
            start = slot * self.ID_BYTES
            raw: bytes = self.held.raw[start : start + self.ID_BYTES]
            if raw[:1] != b"\0":
                found.append((raw.rstrip(b"\0").decode(), bool(self.ahead[slot])))
                self.release(slot)
        return found

    def clear(self, slot: int) -> None:
        """``slot`` is idle."""
        self.deadlines[slot] = 0.0

    def running(self, slots: range) -> list[str]:
        """Job ids the given slots are running (their body has not returned)."""
        return self.overdue(slots, None)

    def overdue(self, slots: range, now: float | None) -> list[str]:
        """Job ids of the given slots that are past their deadline (``now`` None: every busy slot)."""
        found = []
        for slot in slots:
            deadline = self.deadlines[slot]
            if deadline and (now is None or now > deadline):
                start = slot * self.ID_BYTES
                raw: bytes = self.job_ids.raw[start : start + self.ID_BYTES]
                found.append(raw.rstrip(b"\0").decode())
        return found


class JsonInlineWorker(TasklaneWorkerMixin, SimpleWorker):
    """Jobs run in this process: no fork, and only the Redis round trips a job needs."""

    uses_grace_timer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.board: DeadlineBoard | None = kwargs.pop("board", None)
        self.slot: int = kwargs.pop("slot", 0)
        super().__init__(*args, **self._init_tasklane(kwargs))
        self._dequeue_through_outcomes()
        self._thread_id = threading.get_ident()
        self._last_beat = 0.0
        self._last_beat_ttl: int | None = None
        self._last_suspension_check = 0.0
        self._running: tuple[Job, Any] | None = None
        self._keeper: threading.Thread | None = None
        self._done = threading.Event()
        self._idle_pending = False
        self._durations: dict[tuple[str, str | None], list[float]] = defaultdict(list)  # (task, queue)
        self._pending = 0
        self._counted_at = time.monotonic()

    # --- fewer round trips -------------------------------------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """Refresh the worker's key, skipping a refresh within a second of one with the same TTL.

        RQ calls it at every step of its loop; only a repeat is skipped, never a change of
        TTL: the short TTL set while a job runs must give way to the idle one at once, or
        the worker's key expires while it waits for the next job.
        """
        ttl = timeout or self.worker_ttl + 60
        if pipeline is None and ttl == self._last_beat_ttl and time.monotonic() - self._last_beat < 1.0:
            return
        self._last_beat = time.monotonic()
        self._last_beat_ttl = ttl
        super().heartbeat(timeout, pipeline=pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        """Look for `rq suspend` at most once a second."""
        if time.monotonic() - self._last_suspension_check < 1.0:
            return
        self._last_suspension_check = time.monotonic()
        super().check_for_suspension(burst)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """Write the state only when it changes; "idle" waits until no job is waiting (see dequeue)."""
        if pipeline is None and state == WorkerStatus.IDLE:
            self._idle_pending = True
            return
        if pipeline is None and state == compat.worker_state(self):
            return
        self._idle_pending = False
        super().set_state(state, pipeline=pipeline)

    # --- batched success counters (as the pooled mode's children: one write a second, not a job) ----

    def _record_counts(self, job: Job, run_time: float, pipe: Any) -> None:
        """Counters are batched: written at most every COUNTS_EVERY s, before an idle wait, and at exit."""
        spec = task_spec(job)
        self._durations[(spec.name if spec else str(job.func_name), job.origin)].append(run_time)
        self._pending += 1

    def _discard_counts(self, job: Job, run_time: float) -> None:
        """Take back the count :meth:`_record_counts` kept for a success whose writes were not applied
        (a job with dependents goes through RQ's path, which counts it itself)."""
        spec = task_spec(job)
        durations = self._durations.get((spec.name if spec else str(job.func_name), job.origin))
        if durations and run_time in durations:
            durations.remove(run_time)
            self._pending -= 1

    def flush_counts(self) -> None:
        """Write the batched success counters: the worker's (as RQ's) and the tasks' metrics."""
        if not self._pending:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.key, "successful_job_count", self._pending)
            pipe.hincrbyfloat(self.key, "total_working_time", sum(sum(d) for d in self._durations.values()))
            for (task, queue), seconds in self._durations.items():
                metrics.record_jobs(pipe, task, "success", seconds, queue)
            self._ride_out(pipe.execute)
        self._durations.clear()
        self._pending = 0
        self._counted_at = time.monotonic()

    def _counts_due(self) -> bool:
        return self._pending >= COUNTS_MAX or time.monotonic() - self._counted_at >= COUNTS_EVERY

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Take a waiting job at once if there is one; only before waiting (or leaving), write the
        batched counters and record "idle": an idle worker's counts are exact."""
        result = super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        if result is not None:
            return result
        self.flush_counts()
        if self._idle_pending:
            self._idle_pending = False
            super().set_state(WorkerStatus.IDLE)
        if timeout is None:
            return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Note the end time; RQ's extra heartbeat only matters before a callback, which jobs here lack.

        The body has returned: the supervisor no longer watches the deadline (writing the
        outcome may wait for Redis, which is no stuck job).
        """
        self.run_of(job.id).body_done = True  # a warm shutdown's grace no longer interrupts it (grace.py)
        job.ended_at = now()
        if self.board is not None:
            self.board.clear(self.slot)
        if job.success_callback or job.failure_callback:
            with contextlib.suppress(*outages.REDIS_DOWN):  # the outcome's writes meet an outage next
                job.heartbeat(now(), heartbeat_ttl)

    # --- the job in hand ---------------------------------------------------------------------

    def _keep_heartbeats(self) -> None:
        """Keep the worker's and the running job's heartbeats fresh while a job runs."""
        while not self._done.wait(self.job_monitoring_interval):
            running = self._running
            if running is not None:
                with contextlib.suppress(Exception):  # a missed beat is retried; the job goes on
                    self.maintain_heartbeats(*running)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job here, with heartbeats kept by a side thread and a deadline on the board."""
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep_heartbeats, name="heartbeats", daemon=True)
            self._keeper.start()
        super().execute_job(job, queue)
        if self._counts_due():
            self.flush_counts()

    def register_death(self) -> None:
        """Write the last batched counters, then RQ's deregistration."""
        try:
            self.flush_counts()
        except outages.REDIS_DOWN:
            log.warning("Worker %s: Redis unreachable at exit; its last %d successes are not counted",
                        self.name, self._pending)  # fmt: skip
        super().register_death()

    def teardown(self) -> None:
        """Stop the heartbeat thread with the worker."""
        self._done.set()
        super().teardown()

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        """Run the job, visible to the heartbeat thread and the supervisor while it runs."""
        self._thread_id = threading.get_ident()
        self._running = (job, execution)
        if self.board is not None:
            deadline = time.time() + float(job.timeout or defaults.TIME_LIMIT) + defaults.STUCK_JOB_GRACE
            self.board.set(self.slot, job.id, deadline)
        try:
            return super().perform_job(job, queue, execution)
        finally:
            self._running = None
            if self.board is not None:
                self.board.clear(self.slot)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """A revoke of the job in hand: raise JobStopped in the thread that runs it."""
        if self._running is not None:
            raise_in_thread(self._thread_id, JobStopped)

    def running_job(self) -> Job | None:
        """The job whose body runs in this worker's thread now."""
        running = self._running
        return running[0] if running is not None else None

    def interrupt_job(self, exc_type: type[BaseException]) -> None:
        """Raise ``exc_type`` in the thread running the job in hand (a warm shutdown's grace is over)."""
        raise_in_thread(self._thread_id, exc_type)
