"""Large workflows: how long ``POST /api/v1/workflows`` takes to accept N steps, and
``GET /api/v1/workflows/<id>`` to answer, for a group and a chain.

Runs in the project's venv: ``.venv/bin/python bench/workflows.py [--steps 10000] [--rounds 3]
[--profile]``. It starts its own redis-server on a free loopback port and calls the Flask app's
WSGI callable in this process (no HTTP server: the figure is the app's and Redis's own time, JSON
parsing and checks included). It prints the median and the range of the rounds, in milliseconds,
and with ``--profile`` the top of a cProfile of one accept.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_app  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def body(kind: str, steps: int) -> dict[str, Any]:
    if kind == "group":
        return {"type": "group", "steps": [{"task": "add", "args": {"x": i, "y": 1}} for i in range(steps)]}
    return {"type": "chain", "steps": [{"task": "add", "args": {"x": 1, "y": 1}}]
            + [{"task": "add", "args": {"y": 1}}] * (steps - 1)}  # fmt: skip


def redis_cpu(redis_: Any) -> float:
    info = redis_.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def count_commands(app: Any, client: Any, auth: dict[str, str]) -> None:
    """What a workflow step's end adds to a worker's writes: a MONITOR of an inline worker running a
    one-step workflow (scripts' own commands included), the commands that touch its summary."""
    from app.core.queues import JsonQueue
    from app.processes.workers import JsonInlineWorker

    logging.disable(logging.INFO)  # the worker's own lines
    redis_ = app.extensions["tasklane"].redis
    body = {"type": "group", "steps": [{"task": "add", "args": {"x": 1, "y": 2}}]}
    for _ in range(2):  # the first run loads the scripts
        redis_.flushdb()
        assert client.post("/api/v1/workflows", json=body, headers=auth).status_code == 202
        seen: list[str] = []
        ready = threading.Event()

        def watch(seen: list[str], ready: threading.Event) -> None:
            with redis_.monitor() as monitor:
                ready.set()
                for command in monitor.listen():
                    seen.append(str(command["command"]))
                    if "tasklane-bench-end" in seen[-1]:
                        return

        watcher = threading.Thread(target=watch, args=(seen, ready), daemon=True)
        watcher.start()
        ready.wait(5)
        time.sleep(0.2)
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(burst=True)
        redis_.echo("tasklane-bench-end")
        watcher.join(10)
    summary = [c for c in seen if ":summary" in c and not c.startswith("EVALSHA")]
    print(f"a one-step workflow run by an inline worker: {len(seen) - 1} commands; on its summary:")
    for command in summary:
        print(f"  {command[:100]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--commands", action="store_true", help="also count the Redis commands a workflow step costs a worker"
    )
    opts = parser.parse_args()
    with scratch_app("tasklane-wf-", API_TOKENS=TOKEN) as (app, redis_):
        client = app.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        print(f"{opts.steps} steps, {opts.rounds} rounds (median [min-max] ms; CPU: this process's)")
        for kind in ("group", "chain"):
            accepts, statuses, cpus, redis_cpus = [], [], [], []
            payload = body(kind, opts.steps)
            for _ in range(opts.rounds):
                redis_.flushdb()
                r0, c0, t0 = redis_cpu(redis_), time.process_time(), time.perf_counter()
                r = client.post("/api/v1/workflows", json=payload, headers=auth)
                accepts.append((time.perf_counter() - t0) * 1000)
                cpus.append((time.process_time() - c0) * 1000)
                redis_cpus.append((redis_cpu(redis_) - r0) * 1000)
                assert r.status_code == 202, r.get_json()
                wf = r.get_json()["workflow_id"]
                t0 = time.perf_counter()
                s = client.get(f"/api/v1/workflows/{wf}", headers=auth)
                statuses.append((time.perf_counter() - t0) * 1000)
                assert s.status_code == 200 and s.get_json()["counts"]["unfinished"] == opts.steps
            rows = (("accept", accepts), ("  CPU", cpus), ("  Redis CPU", redis_cpus), ("status", statuses))
            for name, values in rows:
                print(f"  {kind:5} {name:12} {statistics.median(values):8.1f} "
                      f"[{min(values):.1f}-{max(values):.1f}]")  # fmt: skip
            if opts.profile:
                redis_.flushdb()
                profile = cProfile.Profile()
                profile.enable()
                client.post("/api/v1/workflows", json=payload, headers=auth)
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        if opts.commands:
            count_commands(app, client, auth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
