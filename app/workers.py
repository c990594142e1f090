"""The worker classes: RQ workers that run jobs through the registry, in three modes.

- ``fork`` (:class:`JsonWorker`): RQ's forking worker, one work horse per job. The most
  isolated: a crash or leak dies with the horse, and a horse stuck past its hard time
  limit, even in C code, is killed by the worker that forked it.
- ``inline`` (:class:`JsonInlineWorker`): jobs run in the worker process itself, with far
  less per-job work (no fork, throttled heartbeats). Soft and hard limits are SIGALRM;
  a job stuck where no signal reaches it is killed with its process by the supervisor.
- ``threads`` (:class:`JsonThreadWorker`): N inline workers on threads of one process,
  for jobs that wait on I/O. Limits and revokes are raised in the job's thread; a job
  stuck past its hard limit takes its process down (the supervisor restarts it and the
  other jobs in it are run again, at least once).

Every mode keeps RQ's data model (job hashes, registries, results), so rq-dashboard and
the ``rq`` CLI read their jobs. Process management lives in app/supervisor.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import now
from rq.worker import WorkerStatus

from app import defaults, hooks
from app.limits import RateLimiter, SoftTimeLimitExceeded, TaskTimeLimits, TimeLimitExceeded
from app.queues import JsonJob, JsonQueue, task_spec

log = logging.getLogger("tasklane.worker")

#: Seconds between a worker's checks on the job in hand (heartbeat, hard limit).
MONITOR_INTERVAL = 5
#: Seconds a work horse stuck past its hard limit (in C code, say) has before it is killed.
HARD_KILL_GRACE = 1.0
#: A worker's and its job's heartbeat outlive the monitor interval by this much.
HEARTBEAT_SLACK = 15


class TasklaneWorkerMixin:
    """What every Tasklane worker adds to RQ's: JSON only, the registry's limits and hooks."""

    connection: Redis
    queues: list[Queue]
    log: logging.Logger
    job_monitoring_interval: int
    _stopped_job_id: str | None
    #: How a job's soft and hard limits are enforced in the process or thread that runs it.
    time_limits_class: type[BaseDeathPenalty] = TaskTimeLimits

    def _init_tasklane(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = kwargs.get("job_class") or JsonJob
        kwargs["queue_class"] = kwargs.get("queue_class") or JsonQueue
        kwargs.setdefault("job_monitoring_interval", MONITOR_INTERVAL)
        return kwargs

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Short heartbeats, so that a dead worker's job is noticed (and re-run) within a minute."""
        return int(self.job_monitoring_interval + HEARTBEAT_SLACK)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Defer a job that is over its task's rate limit; run any other."""
        spec = task_spec(job)
        if spec is not None and spec.rate_limit is not None:
            limiter = RateLimiter(self.connection)
            wait = limiter.acquire(spec.name, spec.rate_limit)
            # A short wait is spent here, holding the job (it stays in the intermediate list,
            # so nothing is lost); a longer one goes through the scheduled registry.
            while 0 < wait <= defaults.RATE_LIMIT_HOLD:
                time.sleep(wait)
                wait = limiter.acquire(spec.name, spec.rate_limit)
            if wait > 0:
                hooks.defer_rate_limited(job, queue, wait)
                return
        super().execute_job(job, queue)  # type: ignore[misc]

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Every dequeue went through an intermediate list (see JsonQueue.dequeue_any): clear it."""
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)  # type: ignore[misc]

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        """Run the job under its task's soft and hard time limits."""
        spec = task_spec(job)
        soft = spec.soft_time_limit if spec is not None else None
        self.death_penalty_class = functools.partial(self.time_limits_class, soft_timeout=soft)
        try:
            return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]
        finally:
            del self.death_penalty_class

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        """RQ's failure handling, then the platform's: alerts, workflows, unique locks."""
        stopped = self._stopped_job_id == job.id
        final = not job.should_retry or stopped
        if getattr(self, "_hard_killed", None) == job.id:
            message = f"hard time limit of {job.timeout} s exceeded; the work horse was killed"
            exc_string = f"{exc_string}\n{TimeLimitExceeded.__module__}.TimeLimitExceeded: {message}"
            hooks.record_error(job, "TimeLimitExceeded", message)
        super().handle_job_failure(  # type: ignore[misc]
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )
        if final:
            hooks.after_final_failure(job, exc_string, stopped=stopped)

    def clean_registries(self) -> None:
        """RQ's maintenance, except that a job stuck between dequeue and start is requeued, not failed."""
        from rq.utils import now

        from app.maintenance import sweep_queue

        for queue in self.queues:
            sweep_queue(queue)  # type: ignore[arg-type]
        self.last_cleaned_at = now()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        """RQ's success handling, then the platform's (unique locks)."""
        super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]
        hooks.after_success(job)


class JsonWorker(TasklaneWorkerMixin, Worker):  # type: ignore[misc]
    """RQ's forking worker: one work horse per job, killed if it outlives its hard limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **self._init_tasklane(kwargs))
        self._deadline: float | None = None
        self._hard_killed: str | None = None

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        """Fork, and remember when the horse must be gone."""
        self._hard_killed = None
        self._deadline = time.monotonic() + float(job.timeout or defaults.TIME_LIMIT) + HARD_KILL_GRACE
        super().fork_work_horse(job, queue)

    def setup_work_horse_signals(self) -> None:
        """A work horse dies with its worker, so that a killed worker's job never runs twice at once."""
        super().setup_work_horse_signals()
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        """Wait for the horse; past its hard limit, kill it wherever it is stuck."""
        pid = self.horse_pid
        if pid and self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if (remaining > 0 and not _wait_exit(pid, remaining)) or (remaining <= 0 and not _exited(pid)):
                self._kill_for_time_limit(pid)
        return super().wait_for_horse()

    def _kill_for_time_limit(self, pid: int) -> None:
        self.log.warning("Worker %s: work horse %d is past its hard time limit; killing it", self.name, pid)
        self._hard_killed = self.get_current_job_id()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


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
    supervisor's to kill (see DeadlineBoard).
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
        hard = float(self._timeout)
        if self._soft is not None:
            soft = self._soft
            self._arm(soft, SoftTimeLimitExceeded, lambda: self._arm(hard - soft, TimeLimitExceeded, None))
        else:
            self._arm(hard, TimeLimitExceeded, None)

    def cancel_death_penalty(self) -> None:
        with self._lock:
            self._active = False
            if self._timer is not None:
                self._timer.cancel()


class DeadlineBoard:
    """Per worker thread: the job it runs and when that job must be over, in shared memory.

    The supervisor process reads it: a process whose job is past its hard limit plus a
    grace period (stuck where nothing in the process can reach it) is killed and
    restarted, and that job is failed with TimeLimitExceeded.
    """

    ID_BYTES = 128

    def __init__(self, slots: int) -> None:
        import multiprocessing

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
        self._last_suspension_check = 0.0
        self._running: tuple[Job, Any] | None = None
        self._keeper: threading.Thread | None = None
        self._done = threading.Event()
        self._idle_pending = False
        self._start_pipe: Any = None

    # --- fewer round trips -------------------------------------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """Refresh the worker's key at most once a second outside a pipeline (RQ calls it per step)."""
        if pipeline is None and timeout is None and time.monotonic() - self._last_beat < 1.0:
            return
        self._last_beat = time.monotonic()
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
        if pipeline is None and state == getattr(self, "_state", None):
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
            super().heartbeat(ttl, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            pipe.lrem(JsonQueue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            pipe.execute()
        self._last_beat = time.monotonic()

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
                job._handle_success(
                    result_ttl,
                    pipeline=recorder,
                    worker_name=self.name,
                    execution_id=execution.id,
                    execution_started_at=execution.created_at,
                    execution_ended_at=job.ended_at,
                )
            job.cleanup(result_ttl, pipeline=recorder, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=recorder, execution=execution)
            commands = _flatten(recorder)
        finally:
            recorder.reset()
        if not _apply_if_no_dependents(self.connection, job.dependents_key, commands):
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        job._status = JobStatus.FINISHED
        hooks.after_success(job)

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
_APPLY_IF_NO_DEPENDENTS = """
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""


def _flatten(recorder: Any) -> list[Any]:
    """The recorded commands as the script's ARGV: a count, then the command and its arguments."""
    out: list[Any] = []
    for args, _options in recorder.command_stack:
        out.append(len(args))
        out.extend(args)
    return out


def _apply_if_no_dependents(connection: Redis, dependents_key: str, commands: list[bytes]) -> bool:
    script = getattr(connection, "_tasklane_apply", None)
    if script is None:
        script = connection.register_script(_APPLY_IF_NO_DEPENDENTS)
        connection._tasklane_apply = script  # type: ignore[attr-defined]
    return bool(script(keys=[dependents_key], args=commands))


class JsonThreadWorker(JsonInlineWorker):
    """An inline worker on a thread of its own, one of several in a process."""

    time_limits_class = ThreadTimeLimits

    def _install_signal_handlers(self) -> None:
        """Signals belong to the main thread, which stops every worker thread (ThreadedPool)."""

    def request_stop_soon(self) -> None:
        """Warm shutdown: finish the job in hand, then leave the work loop."""
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Wait for a job in short steps, so that a stop request is seen within a second."""
        while True:
            if self._stop_requested:
                raise StopRequested()
            if timeout is None:
                return super().dequeue_job_and_maintain_ttl(None, max_idle_time)
            result = super().dequeue_job_and_maintain_ttl(1, 1)
            if result is not None:
                return result


#: The in-process worker under its RQ-like name, for tests and debugging.
JsonSimpleWorker = JsonInlineWorker


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
