"""a. Drain, results kept; also the drain that e and g measure with."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.harness.common import (
    CEL_PREFORK,
    DRAMATIQ,
    TL_FORK,
    TL_INLINE,
    TL_POOLED,
    TL_THREADS,
    BenchError,
    System,
    read_ids,
)
from bench.harness.context import Context


def drain(
    ctx: Context,
    system: System,
    task: str,
    n: int,
    procs: int,
    preload: str,
    timeout: float,
    commands: bool = False,
) -> dict[str, Any]:
    """Preload ``n`` jobs, start the workers, measure until all are done."""
    if system.is_tasklane:
        ctx.require_mode(system.mode)
    ctx.flush()
    ids_file = ctx.ids_file()
    s0 = ctx.cmdstats() if commands else Counter()
    if system.is_tasklane:
        pre = ctx.probe(
            "tl", "enqueue", "--task", task, "--n", n, "--method", preload, "--ids-file", ids_file
        )
    else:
        side = "dq" if system.kind == "dramatiq" else "cel"
        pre = ctx.probe(side, "enqueue", "--task", task, "--n", n, "--ids-file", ids_file)
    s1 = ctx.cmdstats() if commands else Counter()
    cpu0 = ctx.redis_cpu()
    used: Counter[str] = Counter()
    out: dict[str, Any] = {"n": n, "procs": procs, "preload_method": pre.get("method")}
    t_launch = time.time()
    if system.is_tasklane:
        proc = ctx.tasklane_worker(system, procs, burst=True)
        try:
            code = proc.wait(timeout)
            if code is None:
                raise BenchError(f"{proc.name}: burst not finished after {timeout:.0f} s")
            if code != 0:
                raise BenchError(f"{proc.name} exited {code}: {proc.tail()}")
        finally:
            ctx.stop(proc)
        s2 = ctx.cmdstats() if commands else Counter()
        cpu1 = ctx.redis_cpu()
        stats = ctx.probe("tl", "stats", "--ids-file", ids_file)
        first, last = stats["first_start"], stats["last_end"]
        out["statuses"] = stats["statuses"]
        if stats["statuses"].get("finished", 0) != n:
            raise BenchError(f"not all jobs finished: {stats['statuses']}")
    elif system.kind == "dramatiq":
        ready_file = ctx.ready_file()
        proc = ctx.dramatiq_worker(system, procs, ready_file)
        try:
            ids = read_ids(str(ids_file))
            res = ctx.wait_dramatiq_results(proc, ids, timeout, used)
            s2 = ctx.cmdstats() if commands else Counter()
            cpu1 = ctx.redis_cpu()
            first = ctx.wait_dramatiq_ready(proc, ready_file, procs, timeout=5)
        finally:
            ctx.stop(proc)
        last = res["last_done"]
        out["statuses"] = res["statuses"]
        out["all_ready_after_s"] = res["all_ready"] - t_launch
    else:
        ready_file = ctx.ready_file()
        proc = ctx.celery_worker(system, procs, ready_file)
        try:
            ids = read_ids(str(ids_file))
            res = ctx.wait_celery_results(proc, ids, timeout, used)
            s2 = ctx.cmdstats() if commands else Counter()
            cpu1 = ctx.redis_cpu()
            first = ctx.wait_celery_ready(proc, ready_file, timeout=5)
        finally:
            ctx.stop(proc)
        last = res["last_done"]
        out["statuses"] = res["statuses"]
        out["all_ready_after_s"] = res["all_ready"] - t_launch
        if res["statuses"].get("SUCCESS", 0) != n:
            raise BenchError(f"not all tasks succeeded: {res['statuses']}")
    # Redis's CPU per 1,000 jobs while the workers drained (the harness's own polling included),
    # and the rate one Redis core would sustain at that cost: the ceiling of a whole cluster.
    out["redis_cpu_s_per_1000"] = (cpu1 - cpu0) / n * 1000
    out["redis_core_ceiling"] = 1000 / out["redis_cpu_s_per_1000"] if cpu1 > cpu0 else None
    out["startup_s"] = first - t_launch
    out["exec_s"] = last - first
    out["rate_exec"] = n / (last - first)
    out["rate_wall"] = n / (last - t_launch)
    if commands:
        enq = s1 - s0
        drain = (s2 - s1) - used
        for c in (enq, drain):
            c.pop("info", None)
        out["enqueue_cmds_per_job"] = sum(enq.values()) / n
        out["drain_cmds_per_job"] = sum(drain.values()) / n
        out["drain_cmds_top"] = {k: v / n for k, v in drain.most_common(10)}
        out["enqueue_cmds_top"] = {k: v / n for k, v in enq.most_common(6)}
    return out


def run(ctx: Context) -> None:
    """a. Drain, results kept: no-op jobs, preloaded, then 2 burst worker processes."""
    n, fork_n = ctx.p["drain_n"], ctx.p["fork_drain_n"]

    from bench.harness.workloads.procfile import TL_PROCFILE_API, TL_PROCFILE_DIRECT, procfile_drain

    def one(system: System) -> dict[str, Any]:
        count = fork_n if system.mode == "fork" and system.is_tasklane else n
        if system in (TL_PROCFILE_DIRECT, TL_PROCFILE_API):
            return procfile_drain(ctx, system, count, timeout=120 + count / 20)
        return drain(ctx, system, "add", count, 2, "many-or-loop", timeout=120 + count / 20)

    systems = [
        TL_POOLED,
        TL_FORK,
        TL_INLINE,
        TL_THREADS,
        CEL_PREFORK,
        DRAMATIQ,
        TL_PROCFILE_DIRECT,
        TL_PROCFILE_API,
    ]
    ctx.run_repeats("a", "drain", systems, one)
