"""``AsyncResult.get()`` latency on an idle worker, against a polling loop.

Runs in the project's venv: ``.venv/bin/python bench/get_latency.py [--jobs 300]``. It starts
its own redis-server on a free loopback port and one inline worker process, then times
``add.delay(i, i).get()`` from the call to the result, N times one after another, for:
- ``get()``: blocking reads on RQ's results stream (what app.result does);
- a polling loop: re-read the job's status every 10 ms until it has finished (what a
  hand-written wait or a Celery result backend without pub/sub does).
It prints p50/p90/p99 in milliseconds for each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--poll", type=float, default=0.01, help="polling interval, seconds")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tasklane-get-"))
    port = free_port()
    redis_bin = shutil.which("redis-server") or "redis-server"
    args = [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*args, "--dir", str(work)], stdout=subprocess.DEVNULL)
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "APP_ENV": "test",
           "VAR_DIR": str(work / "var"), "LOG_LEVEL": "WARNING"}  # fmt: skip
    os.environ.update(env)
    worker = None
    try:
        time.sleep(0.3)
        worker = subprocess.Popen(
            [sys.executable, "worker.py", "default", "--mode", "inline"], cwd=ROOT, env=env
        )
        from app.calling.result import AsyncResult
        from app.core.queues import JsonJob
        from app.foundation.runtime import client_runtime
        from app.tasks import add

        redis = client_runtime().redis
        add.delay(0, 0).get(timeout=30)  # the worker is up
        blocking, polling = [], []
        for i in range(opts.jobs):
            started = time.perf_counter()
            assert add.delay(i, i).get(timeout=10) == 2 * i
            blocking.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            result = add.delay(i, i)
            while redis.hget(JsonJob.key_for(result.id), "status") not in (b"finished", b"failed"):
                time.sleep(opts.poll)
            assert AsyncResult(result.id).get(timeout=1) == 2 * i
            polling.append((time.perf_counter() - started) * 1000)
        for name, values in (
            ("get() (results stream)", blocking),
            (f"poll every {opts.poll * 1000:g} ms", polling),
        ):
            p50, p90, p99 = (percentile(values, q) for q in (0.5, 0.9, 0.99))
            mean = statistics.mean(values)
            print(f"{name:28} p50 {p50:6.2f} ms  p90 {p90:6.2f} ms  p99 {p99:6.2f} ms  mean {mean:6.2f} ms")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
