"""The worker process: RQ workers that run jobs through the registry, one or N at a time.

``--concurrency N`` forks N worker processes under a small supervisor that restarts any
that die and forwards SIGTERM/SIGINT, so that each worker does RQ's warm shutdown:
it finishes the job in hand, then exits. Workers never run RQ's scheduler loop; the
scheduler process alone moves due jobs (see scheduler.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from app import create_app, defaults, hooks
from app.config import load_or_exit
from app.limits import RateLimiter, TaskTimeLimits, TimeLimitExceeded
from app.logs import configure_logging
from app.queues import JsonJob, JsonQueue, QueueName, task_spec
from app.runtime import runtime

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
        self.death_penalty_class = functools.partial(TaskTimeLimits, soft_timeout=soft)
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


class JsonSimpleWorker(TasklaneWorkerMixin, SimpleWorker):  # type: ignore[misc]
    """RQ's in-process worker (tests, debugging): soft and hard limits are signals; no kill."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **self._init_tasklane(kwargs))


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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the worker's command line; unknown queues are an error naming them."""
    parser = argparse.ArgumentParser(prog="worker.py", description="Run Tasklane workers.")
    parser.add_argument("queues", nargs="*", help="queues in priority order (default: high default low)")
    parser.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    parser.add_argument("--name", default=None, help="worker name prefix (default: RQ's random name)")
    args = parser.parse_args(argv)
    known = {q.value for q in QueueName}
    unknown = [q for q in args.queues if q not in known]
    if unknown:
        parser.exit(
            2, f"worker.py: unknown queue(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})\n"
        )
    if not 1 <= args.concurrency <= 64:
        parser.exit(2, "worker.py: --concurrency must be between 1 and 64\n")
    args.queues = args.queues or list(defaults.WORKER_QUEUES)
    return args


def build_worker(redis: Redis, queue_names: Sequence[str], name: str | None = None) -> JsonWorker:
    """An RQ forking worker on ``queue_names`` with the JSON job class."""
    queues = [JsonQueue(q, connection=redis) for q in queue_names]
    return JsonWorker(queues, connection=redis, name=name)


def run_one(app: Flask, queue_names: Sequence[str], burst: bool, name: str | None) -> int:
    """Run one worker in this process until it stops; returns its exit status."""
    with app.app_context():
        worker = build_worker(runtime().redis, queue_names, name)
        worker.work(
            burst=burst, with_scheduler=False, logging_level=logging.getLevelName(log.getEffectiveLevel())
        )
    return 0


class Supervisor:
    """Keeps N worker processes running; forwards stop signals to them."""

    def __init__(
        self, app: Flask, queue_names: Sequence[str], count: int, burst: bool, name: str | None
    ) -> None:
        self.app = app
        self.queue_names = list(queue_names)
        self.count = count
        self.burst = burst
        self.name = name
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.failures = 0

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            # Child: default signal handling until RQ installs its own warm-shutdown handlers.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            name = f"{self.name}-{slot}" if self.name else None
            code = 1
            try:
                code = run_one(self.app, self.queue_names, self.burst, name)
            finally:
                os._exit(code)
        self.children[pid] = slot
        log.info("worker process %d started (slot %d)", pid, slot)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            # A second signal: ask the workers for a cold shutdown too.
            for pid in self.children:
                _kill(pid, signum)
            return
        self.stopping = True
        log.info("received %s: warm shutdown of %d workers", signal.Signals(signum).name, len(self.children))
        for pid in self.children:
            _kill(pid, signal.SIGTERM)

    def run(self) -> int:
        """Start the workers, restart those that die, return when all have stopped."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in range(1, self.count + 1):
            self._spawn(slot)
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid not in self.children:
                continue
            slot = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                self.failures += 1
            if not self.stopping and not self.burst:
                log.warning("worker process %d exited with %d; restarting slot %d", pid, code, slot)
                time.sleep(0.5)
                self._spawn(slot)
        return 1 if self.failures and not self.stopping else 0


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python worker.py``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = load_or_exit(process="worker")
    configure_logging(settings)
    app = create_app(settings)
    redis = app.extensions["tasklane"].redis
    try:
        redis.ping()
    except RedisError as exc:
        print(f"worker: cannot reach Redis (REDIS_URL): {exc}", file=sys.stderr)
        return 2
    if args.concurrency == 1:
        return run_one(app, args.queues, args.burst, args.name)
    redis.close()  # each child opens its own connections
    return Supervisor(app, args.queues, args.concurrency, args.burst, args.name).run()
