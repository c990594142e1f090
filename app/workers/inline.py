"""The ``inline`` mode: jobs run in the worker process itself, with far less per-job work.

No fork, one round trip to start a job and one to finish it. Soft and hard limits are
SIGALRM; a job stuck where no signal reaches it is killed with its process by the
supervisor, which reads each worker's deadline from a :class:`DeadlineBoard`.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import threading
import time
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from app import compat, defaults, lifecycle
from app.limits import JobStopped, raise_in_thread
from app.lua import LuaScript
from app.queues import JsonQueue
from app.workers.base import TasklaneWorkerMixin


class DeadlineBoard:
    """Per worker thread: the job it runs and when that job must be over, in shared memory.

    The supervisor process reads it: a process whose job is past its hard limit plus a
    grace period (stuck where nothing in the process can reach it) is killed and
    restarted, and that job is failed with TimeLimitExceeded.
    """

    ID_BYTES = 128

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.deadlines = multiprocessing.Array(ctypes.c_double, slots, lock=False)
        self.job_ids = multiprocessing.Array(ctypes.c_char, slots * self.ID_BYTES, lock=False)

    def set(self, slot: int, job_id: str, deadline: float) -> None:
        """Record that ``slot`` runs ``job_id`` until ``deadline`` (time.time())."""
        raw = job_id.encode()[: self.ID_BYTES].ljust(self.ID_BYTES, b"\0")
        start = slot * self.ID_BYTES
        self.job_ids[start : start + self.ID_BYTES] = raw  # type: ignore[assignment]
        self.deadlines[slot] = deadline

    def clear(self, slot: int) -> None:
        """``slot`` is idle."""
        self.deadlines[slot] = 0.0

    def overdue(self, slots: range, now: float) -> list[str]:
        """Job ids of the given slots that are past their deadline."""
        found = []
        for slot in slots:
            deadline = self.deadlines[slot]
            if deadline and now > deadline:
                start = slot * self.ID_BYTES
                raw: bytes = self.job_ids.raw[start : start + self.ID_BYTES]  # type: ignore[attr-defined]
                found.append(raw.rstrip(b"\0").decode())
        return found


class JsonInlineWorker(TasklaneWorkerMixin, SimpleWorker):  # type: ignore[misc]
    """Jobs run in this process: no fork, and only the Redis round trips a job needs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.board: DeadlineBoard | None = kwargs.pop("board", None)
        self.slot: int = kwargs.pop("slot", 0)
        super().__init__(*args, **self._init_tasklane(kwargs))
        self._thread_id = threading.get_ident()
        self._last_beat = 0.0
        self._last_beat_ttl: int | None = None
        self._last_suspension_check = 0.0
        self._running: tuple[Job, Any] | None = None
        self._keeper: threading.Thread | None = None
        self._done = threading.Event()
        self._idle_pending = False
        self._start_pipe: Any = None

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

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Take a waiting job at once if there is one; only before waiting (or leaving), record "idle"."""
        result = super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        if result is not None:
            return result
        if self._idle_pending:
            self._idle_pending = False
            super().set_state(WorkerStatus.IDLE)
        if timeout is None:
            return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def prepare_execution(self, job: Job) -> Execution:
        """Register the execution, in the same transaction as the start of the job (below)."""
        pipe = self.connection.pipeline()
        execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipe, worker_name=self.name)
        self.executions[execution.id] = execution
        super().set_state(WorkerStatus.BUSY, pipeline=pipe)
        self._start_pipe = pipe
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Mark the job started: one round trip together with its execution's registration.

        The same writes as RQ's (heartbeats, status, started registry via the execution,
        intermediate list), which RQ splits over two transactions because it forks between.
        """
        pipe, self._start_pipe = self._start_pipe, None
        if pipe is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        with pipe:
            ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            pipe.lrem(JsonQueue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            pipe.execute()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        """RQ's success bookkeeping in one atomic round trip instead of three.

        The writes are RQ's own (its methods record them on an unsent pipeline); a Lua
        script applies them only if no job depends on this one, in which case RQ's
        WATCH-guarded path runs instead (it moves the dependents on atomically).
        """
        if job.repeats_left or job.has_rate_limit:
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        recorder = self.connection.pipeline(transaction=False)
        try:
            self.increment_successful_job_count(pipeline=recorder)
            assert job.started_at and job.ended_at
            self.increment_total_working_time(job.ended_at - job.started_at, recorder)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                compat.record_success(job, result_ttl, recorder, self.name, execution)
            job.cleanup(result_ttl, pipeline=recorder, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=recorder, execution=execution)
            commands = compat.pipeline_commands(recorder)
        finally:
            recorder.reset()
        if not _apply_if_no_dependents(self.connection, job.dependents_key, commands):
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        compat.set_job_status(job, JobStatus.FINISHED)
        lifecycle.succeeded(job)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Note the end time; RQ's extra heartbeat only matters before a callback, which jobs here lack."""
        job.ended_at = now()
        if job.success_callback or job.failure_callback:
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


# Apply recorded commands (ARGV: n, command, arg..., n, command, ...) unless KEYS[1], the
# job's dependents set, has members. Returns 1 when applied.
_APPLY_IF_NO_DEPENDENTS = LuaScript(
    """
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""
)


def _apply_if_no_dependents(connection: Redis, dependents_key: str, commands: list[bytes]) -> bool:
    return bool(_APPLY_IF_NO_DEPENDENTS(connection, keys=[dependents_key], args=commands))
