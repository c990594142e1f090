"""How busy the cores are while the Procfile's worker line drains: CPU per job and idle share.

Runs in the project's venv: ``.venv/bin/python bench/drain_cpu.py [--jobs 20000] [--rounds 3]
[--root DIR]``. It starts its own redis-server, enqueues N ``add`` jobs, then runs
``worker.py default --burst`` (the supervisor and its pooled children, one per CPU) from the
checkout at ``--root`` (this one by default; the "before" of a change is a ``git worktree`` of
it with this venv linked in) and prints, per round: the wall time (start-up included), the CPU
of worker.py and its children per job (``RUSAGE_CHILDREN``), Redis's CPU per job (INFO cpu), and
how many of the machine's cores they kept busy together. Fewer busy cores than CPUs means the
drain waits (round trips), not computes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch import scratch_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    opts = parser.parse_args()
    root = opts.root.resolve()
    python = str(root / ".venv" / "bin" / "python")
    with scratch_app("tasklane-drain-cpu-") as (_app, redis_):
        from app.catalogue.registry import REGISTRY
        from app.core.dispatch import enqueue_many

        spec = REGISTRY.get("add")
        assert spec is not None
        busy: list[float] = []
        for n in range(opts.rounds):
            redis_.flushdb()
            enqueue_many(spec, [spec.validate({"x": i, "y": 1}) for i in range(opts.jobs)], redis_,
                         default_result_ttl=600, failure_ttl=600)  # fmt: skip
            cpu0, used0 = redis_.info("cpu"), resource.getrusage(resource.RUSAGE_CHILDREN)
            wall0 = time.perf_counter()
            subprocess.run([python, "worker.py", "default", "--burst"], cwd=root, env=dict(os.environ),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            wall = time.perf_counter() - wall0
            used1, cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN), redis_.info("cpu")
            left = redis_.llen("rq:queue:default")
            assert left == 0, f"{left} jobs left"
            workers = used1.ru_utime + used1.ru_stime - used0.ru_utime - used0.ru_stime
            server = sum(cpu1[k] - cpu0[k] for k in ("used_cpu_sys", "used_cpu_user"))
            busy.append((workers + server) / wall)
            per_job = (workers * 1000 / opts.jobs, server * 1000 / opts.jobs)
            print(f"round {n + 1}: {opts.jobs / wall:,.0f} jobs/s (start-up included); worker.py and its "
                  f"children {per_job[0]:.3f} ms CPU per job, Redis {per_job[1]:.3f} ms; "
                  f"{busy[-1]:.2f} of {os.cpu_count()} cores busy", flush=True)  # fmt: skip
        print(f"median: {statistics.median(busy):.2f} of {os.cpu_count()} cores busy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
