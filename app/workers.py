"""The worker process: RQ workers that run jobs through the registry, one or N at a time.

``--concurrency N`` forks N worker processes under a small supervisor that restarts any
that die and forwards SIGTERM/SIGINT, so that each worker does RQ's warm shutdown:
it finishes the job in hand, then exits. Workers never run RQ's scheduler loop; the
scheduler process alone moves due jobs (see scheduler.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from app import create_app, defaults
from app.config import load_or_exit
from app.logs import configure_logging
from app.queues import JsonQueue, JsonWorker, QueueName
from app.runtime import runtime

log = logging.getLogger("tasklane.worker")


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
