"""The worker process: ``python worker.py [QUEUE ...] [--burst] [--concurrency N] [--mode M]``.

One process runs one worker (``pooled``, ``fork`` or ``inline`` mode) or a pool of worker
threads (``threads`` mode). The default, ``pooled``, runs one long-lived worker process per
CPU that each run many jobs, and replaces a process after WORKER_MAX_JOBS_PER_CHILD jobs,
past WORKER_MAX_MEMORY_PER_CHILD_MB, or when it dies (putting back the job it held at once;
see app/processes/workers/pooled.py). ``--concurrency N`` forks N such processes under a supervisor that
restarts any that die, forwards SIGTERM/SIGINT (each worker then finishes the job in
hand and exits: RQ's warm shutdown), and kills a process whose inline or threaded job is
stuck past its hard time limit where no signal or exception can reach it. Workers never
run RQ's scheduler loop: the scheduler process alone moves due jobs (see scheduler.py).

Every worker, supervised or not, rides out a Redis outage (app/processes/workers/redis_outages.py) and the
supervisor's own Redis writes wait for Redis too; a worker that leaves its loop without
being asked to (or burst mode running dry) exits non-zero, so that whatever runs it
(this supervisor, or a process manager) restarts it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from types import FrameType
from typing import TypeVar

from flask import Flask
from redis import Redis

from app.catalogue.registry import QueueName
from app.core import outcomes
from app.core.queues import JsonQueue
from app.foundation import defaults, outages, proc
from app.foundation.runtime import runtime, runtime_of
from app.processes.workers import DeadlineBoard, JsonInlineWorker, JsonWorker, ThreadPool
from app.processes.workers.pooled import EX_RECYCLED, JsonPooledWorker, forget_worker

log = logging.getLogger("tasklane.worker")

_T = TypeVar("_T")


class Mode(StrEnum):
    """How a worker process runs jobs."""

    POOLED = "pooled"
    FORK = "fork"
    INLINE = "inline"
    THREADS = "threads"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the worker's command line; unknown queues are an error naming them."""
    parser = argparse.ArgumentParser(prog="worker.py", description="Run Tasklane workers.")
    parser.add_argument("queues", nargs="*", help="queues in priority order (default: high default low)")
    parser.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: one per CPU in pooled mode, else 1)",
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.POOLED.value,
        help="pooled: long-lived worker processes, each running many jobs, recycled (fast, "
        "isolated from the supervisor); fork: a process per job (a fresh process for every job); "
        "inline: jobs in the worker process; threads: --threads jobs at once per process "
        "(I/O-bound jobs). Default: pooled",
    )
    parser.add_argument(
        "--threads", type=int, default=8, metavar="T", help="threads per process (threads mode)"
    )
    parser.add_argument("--name", default=None, help="worker name prefix (default: RQ's random name)")
    args = parser.parse_args(argv)
    args.mode = Mode(args.mode)
    if args.concurrency is None:
        args.concurrency = min(os.cpu_count() or 1, 64) if args.mode is Mode.POOLED else 1
    known = {q.value for q in QueueName}
    unknown = [q for q in args.queues if q not in known]
    if unknown:
        parser.exit(
            2, f"worker.py: unknown queue(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})\n"
        )
    if not 1 <= args.concurrency <= 64:
        parser.exit(2, "worker.py: --concurrency must be between 1 and 64\n")
    if not 1 <= args.threads <= 256:
        parser.exit(2, "worker.py: --threads must be between 1 and 256\n")
    args.queues = args.queues or list(defaults.WORKER_QUEUES)
    return args


def _queues(redis: Redis, names: Sequence[str]) -> list[JsonQueue]:
    return [JsonQueue(q, connection=redis) for q in names]


def build_worker(redis: Redis, queue_names: Sequence[str], name: str | None = None) -> JsonWorker:
    """An RQ forking worker on ``queue_names`` with the JSON job class."""
    return JsonWorker(_queues(redis, queue_names), connection=redis, name=name, **_worker_options())


def _worker_options() -> dict[str, int]:
    return {"worker_ttl": runtime().settings.worker_ttl}


def _level() -> str:
    return logging.getLevelName(log.getEffectiveLevel())


def run_process(
    app: Flask,
    args: argparse.Namespace,
    name: str | None,
    board: DeadlineBoard | None = None,
    first_slot: int = 0,
) -> int:
    """Run this process's worker (or worker threads) until stopped; returns its exit status."""
    with app.app_context():
        redis = runtime().redis
        worker: JsonWorker | JsonInlineWorker
        if args.mode is Mode.POOLED:
            settings = runtime().settings
            worker = _when_reachable(redis, lambda: JsonPooledWorker(
                _queues(redis, args.queues), connection=redis, name=name, board=board, slot=first_slot,
                max_jobs=settings.worker_max_jobs_per_child,
                max_memory_mb=settings.worker_max_memory_per_child_mb, **_worker_options()))  # fmt: skip
        elif args.mode is Mode.FORK:
            worker = _when_reachable(redis, lambda: build_worker(redis, args.queues, name))
        elif args.mode is Mode.INLINE:
            worker = _when_reachable(redis, lambda: JsonInlineWorker(
                _queues(redis, args.queues), connection=redis, name=name, board=board, slot=first_slot,
                **_worker_options()))  # fmt: skip
        else:
            pool = _when_reachable(redis, lambda: ThreadPool(
                app, args.queues, args.threads, burst=args.burst, name=name, board=board,
                first_slot=first_slot, logging_level=_level(), **_worker_options()))  # fmt: skip
            return pool.run()
        worker.work(burst=args.burst, with_scheduler=False, logging_level=_level())
    if isinstance(worker, JsonPooledWorker) and worker.recycled:
        return EX_RECYCLED
    if args.burst or worker.asked_to_stop:
        return 0
    log.error("worker %s left its loop unasked (see the error above); exiting 1", worker.name)
    return 1


def _when_reachable(redis: Redis, build: Callable[[], _T]) -> _T:
    """``build()``, waiting for Redis first if it is unreachable (RQ's workers name their
    connection on Redis as they are built): a worker started in an outage waits instead of failing."""
    while True:
        try:
            return build()
        except outages.REDIS_DOWN as exc:
            outages.wait_until_reachable(redis, error=exc)


class Supervisor:
    """Keeps N worker processes running; forwards stop signals; kills processes with stuck jobs."""

    def __init__(self, app: Flask, args: argparse.Namespace) -> None:
        self.app = app
        self.args = args
        self.per_process = args.threads if args.mode is Mode.THREADS else 1
        self.board = (
            DeadlineBoard(args.concurrency * self.per_process) if args.mode is not Mode.FORK else None
        )
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.failures = 0
        self.stuck_jobs: list[str] = []  # killed for their hard limit, to be failed in Redis
        self.failed_causes: dict[str, tuple[str, str]] = {}  # killed for another cause (memory)
        self.memory_at_start: dict[int, int] = {}  # pid -> resident bytes when first seen

        #: Held by a pooled child that died, to be put back, with the cause of its death.
        self.orphans: list[tuple[str, tuple[str, str]]] = []
        self.dead: list[int] = []  # pooled children that died, whose registrations are to be removed
        self.retry_at = 0.0
        self.backoff = outages.Backoff()

    def _spawn(self, slot: int) -> None:
        """Fork the worker process of ``slot``.

        SIGTERM and SIGINT are held back from fork until the child is recorded: one that arrives
        meanwhile is handled once the child is in ``children``, so the warm shutdown reaches it
        (it would otherwise run on, unsignalled, and the supervisor wait for it for ever), and
        the child never runs the supervisor's handler. A child forked after a stop began (a
        recycled child's replacement, say) is told to stop at once.
        """
        supervisor = os.getpid()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                # Child: default signal handling until the worker installs its warm-shutdown
                # handlers, and a warm shutdown when the supervisor dies (killed with SIGKILL,
                # say): no worker process goes on unsupervised, out of its process manager's sight.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                proc.die_with_parent(signal.SIGTERM, supervisor)
                name = f"{self.args.name}-{slot}" if self.args.name else None
                code = 1
                try:
                    code = run_process(self.app, self.args, name, self.board, (slot - 1) * self.per_process)
                finally:
                    os._exit(code)
            self.children[pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        log.info("worker process %d started (slot %d, %s mode)", pid, slot, self.args.mode.value)
        if self.stopping:
            _kill(pid, signal.SIGTERM)

    def _restart(self, slot: int) -> None:
        """Replace the dead process of ``slot`` after a pause, unless a stop began meanwhile."""
        time.sleep(defaults.RESTART_DELAY)
        if not self.stopping:
            self._spawn(slot)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            for pid in list(self.children):  # a second signal: the workers' cold shutdown
                _kill(pid, signum)
            return
        self.stopping = True
        log.info(
            "received %s: warm shutdown of %d worker processes",
            signal.Signals(signum).name,
            len(self.children),
        )
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)

    def _kill_stuck(self) -> None:
        if self.board is None:
            return
        now = time.time()
        for pid, slot in list(self.children.items()):
            first = (slot - 1) * self.per_process
            stuck = self.board.overdue(range(first, first + self.per_process), now)
            if not stuck:
                continue
            log.error(
                "worker process %d: job(s) %s stuck past the hard time limit; killing it",
                pid,
                ", ".join(stuck),
            )
            _kill(pid, signal.SIGKILL)
            self.stuck_jobs.extend(stuck)
            for s in range(first, first + self.per_process):
                self.board.clear(s)
            self.board.holding(range(first, first + self.per_process))  # failed below, not requeued
        self._fail_stuck_jobs()

    def _kill_over_memory(self) -> None:
        """JOB_MEMORY_LIMIT_MB in the in-process modes: a worker process whose resident memory grew
        more than the cap past its size when first seen is killed, and the jobs it ran are failed
        with "exceeded memory limit" (fork mode caps each work horse instead: app/foundation/proc.py)."""
        cap = runtime().settings.job_memory_limit_mb
        if self.board is None or not cap:
            return
        for pid, slot in list(self.children.items()):
            try:
                size = proc.resident(pid)
            except (OSError, ValueError):
                continue
            start = self.memory_at_start.setdefault(pid, size)
            if size - start <= cap * 1024 * 1024:
                continue
            first = (slot - 1) * self.per_process
            slots = range(first, first + self.per_process)
            jobs = self.board.running(slots)
            log.error("worker process %d: %d MB over its start, past JOB_MEMORY_LIMIT_MB=%d; killing it "
                      "(jobs %s)", pid, (size - start) >> 20, cap, ", ".join(jobs) or "none")  # fmt: skip
            _kill(pid, signal.SIGKILL)
            message = (
                f"exceeded memory limit of {cap} MB (JOB_MEMORY_LIMIT_MB); its worker process was killed"
            )
            for job_id in jobs:
                self.failed_causes[job_id] = ("MemoryLimitExceeded", message)
            self.stuck_jobs.extend(jobs)
            for s in slots:
                self.board.clear(s)

    def _child_died(self, pid: int, slot: int, status: int) -> None:
        """A pooled child died (not recycled, not asked to stop): settle the job it held, drop its record."""
        if self.board is None or self.args.mode is not Mode.POOLED:
            return
        first = (slot - 1) * self.per_process
        held = self.board.holding_runs(range(first, first + self.per_process))
        for s in range(first, first + self.per_process):
            self.board.clear(s)
        if held:
            named = ", ".join(
                job_id + (" (claimed ahead, not run)" if ahead else "") for job_id, ahead in held
            )
            log.error("worker process %d died holding job(s) %s; putting them back", pid, named)
        cause = outcomes.horse_lost(proc.describe_exit(status), who="worker process")
        # A job claimed ahead never ran: not an orphan (no attempt, no death). The child's TAKEN field
        # names it (the move that claimed it wrote it), so the rescue below puts it back.
        self.orphans.extend((job_id, cause) for job_id, ahead in held if not ahead)
        self.dead.append(pid)

    def _fail_stuck_jobs(self) -> None:
        """Fail the jobs of killed processes and put back those of dead pooled children; through a
        Redis outage, again later (with backoff)."""
        if not (self.stuck_jobs or self.orphans or self.dead) or time.monotonic() < self.retry_at:
            return
        redis = runtime().redis
        try:
            while self.stuck_jobs:
                outcomes.fail_stuck(redis, self.stuck_jobs[0], self.failed_causes.get(self.stuck_jobs[0]))
                self.failed_causes.pop(self.stuck_jobs.pop(0), None)
            while self.orphans:
                job_id, cause = self.orphans[0]
                done = outcomes.rescue(redis, job_id, cause)
                log.info("job %s of a dead worker process: %s", job_id, done)
                self.orphans.pop(0)
            while self.dead:
                _, taken = forget_worker(redis, self.dead[0], socket.gethostname())
                # Taken (and maybe claimed) ahead, maybe in the round trip it died in: put back as a job
                # that never started. (Its worker's record gone already: the sweep, once the lease expires.)
                for job_id, worker in taken:
                    if outcomes.rescue(redis, job_id, waiting_only=True, ahead_of=worker) == "requeued":
                        log.info("job %s, taken ahead by dead worker process %d: put back", job_id,
                                 self.dead[0])  # fmt: skip
                self.dead.pop(0)
        except outages.REDIS_DOWN as exc:
            outages.OUTAGE.failed(exc)
            self.retry_at = time.monotonic() + self.backoff.next()
            return
        outages.OUTAGE.recovered()
        self.backoff.reset()

    def _rescue_jobs_of(self, slot: int, status: int) -> None:
        """A worker process died (reaped: it writes nothing more) with in-process jobs on the board:
        put them back on their queues now, without waiting for their heartbeats to expire."""
        if self.board is None:
            return
        first = (slot - 1) * self.per_process
        slots = range(first, first + self.per_process)
        cause = outcomes.horse_lost(proc.describe_exit(status), who="worker process")
        for job_id in self.board.running(slots):
            try:
                outcomes.rescue(runtime().redis, job_id, cause)
            except outages.REDIS_DOWN as exc:  # the scheduler's sweep rescues it later
                outages.OUTAGE.failed(exc)
        for s in slots:
            self.board.clear(s)

    def run(self) -> int:
        """Start the workers, restart those that die, return when all have stopped."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in range(1, self.args.concurrency + 1):
            self._spawn(slot)
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                self._kill_over_memory()
                self._kill_stuck()
                time.sleep(defaults.SUPERVISOR_POLL)
                continue
            if pid not in self.children:
                continue
            slot = self.children.pop(pid)
            self.memory_at_start.pop(pid, None)
            if self.args.mode is not Mode.POOLED:  # a pooled child's jobs: _child_died, below
                self._rescue_jobs_of(slot, status)
            code = os.waitstatus_to_exitcode(status)
            if code == EX_RECYCLED:
                if not self.stopping:
                    self._spawn(slot)  # replaced at once, burst or not: its queue may not be drained
                continue
            if code != 0:
                self.failures += 1
                self._child_died(pid, slot, status)
                self._fail_stuck_jobs()
            if not self.stopping and not self.args.burst:
                log.warning("worker process %d exited with %d; restarting slot %d", pid, code, slot)
                self._restart(slot)
        return 1 if self.failures and not self.stopping else 0


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def serve(app: Flask, args: argparse.Namespace) -> int:
    """Run the workers ``args`` asks for (a supervisor unless one fork worker); returns the exit status."""
    if args.concurrency == 1 and args.mode is Mode.FORK:
        return run_process(app, args, args.name)
    runtime_of(app).close()  # each child opens its own connections
    with app.app_context():
        return Supervisor(app, args).run()
