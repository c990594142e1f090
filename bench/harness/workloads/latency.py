"""c. Latency enqueue \u2192 result, idle worker."""

from __future__ import annotations

from typing import Any

from bench.harness.common import CEL_PREFORK, TL_FORK, TL_INLINE, BenchError, System
from bench.harness.context import Context


def latency(ctx: Context, system: System, procs: int) -> dict[str, Any]:
    """Sequential jobs on an idle worker of ``procs`` processes: p50/p99 enqueue \u2192 result."""
    ctx.flush()
    n = ctx.p["latency_n"]
    if system.is_tasklane:
        proc = ctx.tasklane_worker(system, procs, burst=False)
        try:
            ctx.wait_tasklane_ready(proc, procs)
            res = ctx.probe("tl", "latency", "--task", "add", "--n", n, "--warmup", 10, timeout=n * 6 + 60)
        finally:
            ctx.stop(proc)
    else:
        ready_file = ctx.ready_file()
        proc = ctx.celery_worker(system, procs, ready_file)
        try:
            ctx.wait_celery_ready(proc, ready_file)
            res = ctx.probe("cel", "latency", "--task", "add", "--n", n, "--warmup", 10, timeout=n * 6 + 60)
        finally:
            ctx.stop(proc)
    if res["errors"]:
        raise BenchError(f"{res['errors']} of {n} jobs got no result within 5 s")
    return {**res, "procs": procs}


def run(ctx: Context) -> None:
    """c. Latency: inline (1 process), fork (2) and Celery prefork (2)."""
    procs = {"tl_inline": 1, "tl_fork": 2, "cel_prefork": 2}
    ctx.run_repeats(
        "c", "latency", [TL_INLINE, TL_FORK, CEL_PREFORK], lambda s: latency(ctx, s, procs[s.key])
    )
