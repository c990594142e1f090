"""CPU per no-op job of a pooled child, and where it goes (cProfile).

Runs in the project's venv: ``.venv/bin/python bench/profile_worker.py [--jobs 5000] [--top 30]``.
It starts its own redis-server, enqueues N ``add`` jobs (one pipeline), and drains them with one
pooled worker (the child the supervisor forks, built the same way) in burst mode in this process:
first without a profiler (CPU ms per job of this process, and Redis commands and round trips
per job), then again under cProfile, whose busiest functions it prints (own time and cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch import scratch_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="unprofiled drains (the median is printed)")
    opts = parser.parse_args()
    with scratch_app("tasklane-profile-") as (app, redis_):
        from app.catalogue.registry import REGISTRY
        from app.core.dispatch import enqueue_many
        from app.core.queues import JsonQueue
        from app.processes.workers.pooled import JsonPooledWorker

        spec = REGISTRY.get("add")
        assert spec is not None

        def drain(profiler: cProfile.Profile | None = None) -> tuple[float, float, float]:
            redis_.flushdb()
            args_ = [spec.validate({"x": i, "y": 1}) for i in range(opts.jobs)]
            enqueue_many(spec, args_, redis_, default_result_ttl=600, failure_ttl=600)
            redis_.config_resetstat()
            with app.app_context():
                worker = JsonPooledWorker([JsonQueue("default", connection=redis_)], connection=redis_)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                worker.work(burst=True, logging_level="WARNING")
                if profiler is not None:
                    profiler.disable()
                cpu1, wall1 = time.process_time(), time.perf_counter()
            stats = redis_.info("commandstats")
            calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
            left = redis_.llen("rq:queue:default")
            assert left == 0, f"{left} jobs left"
            return (cpu1 - cpu0) * 1000 / opts.jobs, (wall1 - wall0), calls / opts.jobs

        rounds = [drain() for _ in range(opts.rounds)]
        rounds.sort()
        cpu, wall, calls = rounds[len(rounds) // 2]
        print(f"jobs {opts.jobs}: worker CPU {cpu:.3f} ms/job (rounds: "
              + ", ".join(f"{r[0]:.3f}" for r in rounds)
              + f"); {opts.jobs / wall:.0f} jobs/s; Redis commands {calls:.1f}/job")  # fmt: skip
        profiler = cProfile.Profile(time.process_time)  # CPU time: the waits for Redis are not counted
        drain(profiler)
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(opts.top)
            print(f"--- by {order} ---")
            print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
