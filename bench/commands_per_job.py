"""Redis commands per no-op job for the in-process worker modes (INFO commandstats, scripts' own
commands included), and Redis CPU per 1,000 jobs.

Runs in the project's venv: ``.venv/bin/python bench/commands_per_job.py [--jobs 2000]``. It starts
its own redis-server, enqueues N ``add`` jobs (one pipeline), resets Redis's statistics, drains
them with one worker in burst mode in this process (inline; threads with 2 threads), and prints
the commands Redis ran per job, the busiest ones, and its CPU per 1,000 jobs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    opts = parser.parse_args()
    with scratch_app("tasklane-cmds-") as (app, redis_):
        from app.catalogue.registry import REGISTRY
        from app.core.dispatch import enqueue_many
        from app.core.queues import JsonQueue
        from app.processes.workers import JsonInlineWorker, ThreadPool

        spec = REGISTRY.get("add")
        assert spec is not None
        for mode in ("inline", "threads"):
            redis_.flushdb()
            args_ = [spec.validate({"x": i, "y": 1}) for i in range(opts.jobs)]
            enqueue_many(spec, args_, redis_, default_result_ttl=600, failure_ttl=600)
            redis_.config_resetstat()
            cpu0 = redis_.info("cpu")
            if mode == "inline":
                with app.app_context():
                    JsonInlineWorker([JsonQueue("default", connection=redis_)], connection=redis_).work(
                        burst=True, logging_level="WARNING"
                    )
            else:
                ThreadPool(app, ["default"], 2, burst=True, logging_level="WARNING").run()
            cpu1 = redis_.info("cpu")
            stats = {k[len("cmdstat_") :]: v["calls"] for k, v in redis_.info("commandstats").items()}
            stats.pop("info", None)
            stats.pop("config|resetstat", None)
            total = sum(stats.values())
            used = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_sys", "used_cpu_user"))
            top = sorted(stats.items(), key=lambda kv: -kv[1])[:8]
            busiest = ", ".join(f"{k} {v / opts.jobs:.1f}" for k, v in top)
            per_job, per_1000 = total / opts.jobs, used / opts.jobs * 1000
            print(f"{mode:7}: {per_job:5.1f} commands/job; Redis CPU {per_1000:.3f} s per 1,000; {busiest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
