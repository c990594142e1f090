"""The soak: a stream of mixed jobs for a long time, with a worker killed every minute.

    .venv/bin/python -m bench.soak --minutes 30          # the documented run (or --jobs 200000)
    .venv/bin/python -m bench.soak --minutes 3 --rate 40  # a short one

It starts everything itself on loopback, in a scratch directory: a redis-server with its
append-only file (appendfsync everysec), a loopback HTTP peer for ``call_external_api``,
the workers (``inline`` x2 processes, ``fork`` x1, ``threads`` 1 process x 4 threads, each
worker.py under its supervisor) and the scheduler. It enqueues through the API (the real
Flask app, in this process) at ``--rate`` jobs/s, mixing catalogue tasks that need no
outside peer (``add``, ``xsum``, ``send_welcome_email`` written to files, and
``call_external_api`` against the loopback peer) with ``record_once`` from tests/jobs.py,
whose side effect (a SQLite row keyed by job id, every run counted) makes duplicates exact.
Every ``--kill-every`` seconds it SIGKILLs one worker process, in turn a worker.py (which
it restarts, as a process manager would) or a process running jobs (its supervisor
restarts it). Then it stops enqueueing, waits for the queues to drain, and prints:
jobs in (acknowledged by the API), out (succeeded), failed, lost, re-runs, duplicated
effects, and Redis's memory. RESULT_TTL is short (120 s), so retention keeps memory flat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from app import create_app
from app.ops import metrics
from tests.servers import RedisServer, python_process

TOKEN = "soak-token-0123456789abcdef"
TASKS = ("add", "xsum", "send_welcome_email", "call_external_api", "record_once")
#: worker.py command lines the soak runs; each gets its own queue share through "default".
WORKERS = (
    ("--mode", "inline", "--concurrency", "2"),
    ("--mode", "fork", "--concurrency", "1"),
    ("--mode", "threads", "--concurrency", "1", "--threads", "4"),
)


class _Peer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = json.dumps({"echo": json.loads(body or b"null")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _job_processes(pid: int) -> list[int]:
    """Processes under worker.py ``pid`` that run jobs (work horses, or in-process workers)."""
    kids = _children(pid)
    horses = [h for k in kids for h in _children(k)]
    return horses or kids


class Soak:
    """One soak run: its processes, its counts."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.rng = random.Random(args.seed)
        self.redis = RedisServer(scratch / "redis", appendonly=True, appendfsync="everysec").start()
        self.peer = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
        threading.Thread(target=self.peer.serve_forever, daemon=True).start()
        self.db = str(scratch / "effects.db")
        with sqlite3.connect(self.db, isolation_level=None) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE effects (job_id TEXT PRIMARY KEY)")
            conn.execute("CREATE TABLE runs (job_id TEXT NOT NULL)")
        self.env = {
            "APP_ENV": "test",
            "VAR_DIR": str(scratch / "var"),
            "REDIS_URL": self.redis.url,
            "API_TOKENS": TOKEN,
            "LOG_LEVEL": "WARNING",
            "TASK_MODULES": "tests.jobs",
            "OUTBOUND_URL_ALLOWLIST": "127.0.0.1",
            "RESULT_TTL": "120",
            "FAILED_JOB_TTL": "3600",
        }
        self.app = create_app(self.env)
        self.client = self.app.test_client()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self.acknowledged = 0
        self.refused = 0
        self.kills: list[str] = []

    def _start(self, *argv: str) -> subprocess.Popen[bytes]:
        log = self.scratch / f"{len(self.workers) + len(self.others)}-{Path(argv[0]).stem}.log"
        return python_process(list(argv), self.env, log)

    def start(self) -> None:
        self.others.append(self._start("scheduler.py"))
        for argv in WORKERS:
            self.workers.append(self._start("worker.py", "default", *argv))

    def job(self) -> tuple[str, dict[str, Any]]:
        task = self.rng.choice(TASKS)
        n = self.rng.randrange(1000)
        if task == "add":
            return task, {"x": n, "y": 1}
        if task == "xsum":
            return task, {"numbers": list(range(n % 50))}
        if task == "send_welcome_email":
            return task, {"email": f"user{n}@example.com", "name": f"User {n}"}
        if task == "call_external_api":
            return task, {"url": f"http://127.0.0.1:{self.peer.server_address[1]}/hook", "data": {"n": n}}
        return task, {"db": self.db, "seconds": 0.02}

    def enqueue(self) -> None:
        task, args = self.job()
        response = self.client.post(
            f"/api/v1/tasks/{task}", json={"args": args}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        if response.status_code == 202:
            self.acknowledged += 1
        else:
            self.refused += 1

    def kill_one(self) -> None:
        """SIGKILL a worker.py (restarted here) or one of its job-running processes, in turn."""
        slot = self.rng.randrange(len(self.workers))
        proc = self.workers[slot]
        if len(self.kills) % 2 == 0:
            proc.kill()
            proc.wait(10)
            self.workers[slot] = self._start("worker.py", "default", *WORKERS[slot])
            self.kills.append(f"worker.py {' '.join(WORKERS[slot][:2])}")
            return
        victims = _job_processes(proc.pid)
        if victims:
            try:
                os.kill(self.rng.choice(victims), signal.SIGKILL)
            except ProcessLookupError:  # it ended since it was listed
                return
            self.kills.append(f"job process of {' '.join(WORKERS[slot][:2])}")

    def run(self) -> dict[str, Any]:
        self.start()
        began = time.monotonic()
        until = began + self.args.minutes * 60
        next_kill = began + self.args.kill_every
        interval = 1.0 / self.args.rate
        next_job = began
        last_report = began
        while time.monotonic() < until and self.acknowledged < self.args.jobs:
            now = time.monotonic()
            if now >= next_job:
                self.enqueue()
                next_job += interval
            if now >= next_kill:
                self.kill_one()
                next_kill += self.args.kill_every
            if now - last_report >= 30:
                last_report = now
                print(f"[{now - began:6.0f} s] in={self.acknowledged} kills={len(self.kills)} "
                      f"waiting={self._waiting()}", flush=True)  # fmt: skip
            time.sleep(max(0.0, min(next_job, next_kill) - time.monotonic()))
        enqueue_seconds = time.monotonic() - began
        drained = self._drain(self.args.drain_timeout)
        return self._figures(enqueue_seconds, drained)

    def _waiting(self) -> int:
        conn = self.redis.client()
        return int(conn.llen("rq:queue:default") + conn.zcard("rq:wip:default"))

    def _outcomes(self) -> dict[str, int]:
        counts = metrics.job_counts(self.redis.client())
        totals: dict[str, int] = {}
        for (task, outcome), n in counts.items():
            if task in TASKS:
                totals[outcome] = totals.get(outcome, 0) + n
        return totals

    def _drain(self, timeout: float) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            done = self._outcomes()
            if done.get("success", 0) + done.get("failure", 0) >= self.acknowledged:
                break
            time.sleep(1)
        return time.monotonic() - began

    def _figures(self, enqueue_seconds: float, drain_seconds: float) -> dict[str, Any]:
        outcomes = self._outcomes()
        with sqlite3.connect(self.db) as conn:
            runs = dict(conn.execute("SELECT job_id, COUNT(*) FROM runs GROUP BY job_id").fetchall())
            effects = int(conn.execute("SELECT COUNT(*) FROM effects").fetchone()[0])
        memory = self.redis.client().info("memory")
        out = outcomes.get("success", 0)
        failed = outcomes.get("failure", 0)
        return {
            "minutes": round(enqueue_seconds / 60, 2),
            "jobs_in": self.acknowledged,
            "refused": self.refused,
            "jobs_out": out,
            "failed": failed,
            "lost": self.acknowledged - out - failed,
            "requeued_orphans": outcomes.get("orphaned", 0),
            "record_once_jobs": len(runs),
            "record_once_rerun": sum(1 for n in runs.values() if n > 1),
            "duplicated_effects": effects - len(runs),
            "kills": len(self.kills),
            "drain_seconds": round(drain_seconds, 1),
            "redis_used_memory": memory["used_memory_human"],
            "redis_peak_memory": memory["used_memory_peak_human"],
            "outcomes": outcomes,
        }

    def stop(self) -> None:
        for proc in [*self.workers, *self.others]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, *self.others]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.peer.shutdown()
        self.redis.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; exit 1 when a job was lost or an effect duplicated."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="how long to enqueue (default 30)")
    parser.add_argument("--jobs", type=int, default=200_000, help="stop enqueueing after this many (200,000)")
    parser.add_argument("--rate", type=float, default=100, help="jobs enqueued a second (default 100)")
    parser.add_argument("--kill-every", type=float, default=60, help="seconds between kills (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=300, help="longest wait for the rest (300 s)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="tasklane-soak-"))
    print(f"soak: scratch {scratch}", flush=True)
    soak = Soak(args, scratch)
    try:
        figures = soak.run()
    finally:
        soak.stop()
    print(json.dumps(figures, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if figures["lost"] or figures["duplicated_effects"] else 0


if __name__ == "__main__":
    sys.exit(main())
