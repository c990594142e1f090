"""f. Memory (RSS, PSS) of a worker's process tree before and after a drain."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.harness.common import CEL_PREFORK, TL_INLINE, BenchError, System, read_ids
from bench.harness.context import Context
from bench.harness.processes import tree_memory


def memory(ctx: Context, system: System, n: int) -> dict[str, Any]:
    """RSS and PSS of the worker's process tree 1 s after start and after ``n`` jobs."""
    ctx.flush()
    ids_file = ctx.ids_file()
    if system.is_tasklane:
        proc = ctx.tasklane_worker(system, 1, burst=False)
    else:
        ready_file = ctx.ready_file()
        proc = ctx.celery_worker(system, 2, ready_file)
    try:
        if system.is_tasklane:
            ctx.wait_tasklane_ready(proc, 1)
        else:
            ctx.wait_celery_ready(proc, ready_file)
        time.sleep(1.0)
        start = tree_memory(proc.pid)
        t0 = time.monotonic()
        if system.is_tasklane:
            pre = ctx.probe("tl", "enqueue", "--task", "add", "--n", n, "--method", "many-or-bulk")
            ctx.wait_tasklane_count(proc, n, timeout=60 + n / 50)
        else:
            pre = ctx.probe("cel", "enqueue", "--task", "add", "--n", n, "--ids-file", ids_file)
            res = ctx.wait_celery_results(proc, read_ids(str(ids_file)), 60 + n / 50, Counter())
            if res["statuses"].get("SUCCESS", 0) != n:
                raise BenchError(f"not all tasks succeeded: {res['statuses']}")
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        after = tree_memory(proc.pid)
    finally:
        ctx.stop(proc)
    return {
        "n": n,
        "preload_method": pre.get("method"),
        "rss_start_mib": start["rss_mib"],
        "rss_after_mib": after["rss_mib"],
        "rss_growth_mib": after["rss_mib"] - start["rss_mib"],
        "pss_start_mib": start["pss_mib"],
        "pss_after_mib": after["pss_mib"],
        "hwm_after_mib": after["hwm_mib"],
        "largest_process_after_mib": after["largest_rss_mib"],
        "process_count": len(after["processes"]),
        "processes_start": start["processes"],
        "processes_after": after["processes"],
        "enqueue_and_drain_s": elapsed,
    }


def run(ctx: Context) -> None:
    """f. One Tasklane inline worker vs Celery prefork."""
    n = ctx.p["memory_n"]
    ctx.run_repeats(
        "f", "memory", [TL_INLINE, CEL_PREFORK], lambda s: memory(ctx, s, n), repeats=ctx.memory_repeats
    )
