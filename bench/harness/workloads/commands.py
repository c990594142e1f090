"""g. Redis commands per job (a's drain with INFO commandstats); scaling of the pooled (default) mode."""

from __future__ import annotations

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
    write_ids,
)
from bench.harness.context import Context
from bench.harness.workloads.drain import drain


def queue_length(ctx: Context, length: int, measure: int) -> dict[str, Any]:
    """Pooled mode, 2 processes, on a queue of ``length`` waiting jobs: rate and Redis CPU of the first
    ``measure``."""
    ctx.require_mode("pooled")
    ctx.flush()
    measure = min(measure, length)
    pre = ctx.probe(
        "tl",
        "enqueue",
        "--task",
        "add",
        "--n",
        length,
        "--method",
        "many-or-bulk",
        "--batch",
        5000,
        timeout=1800,
    )
    redis_mib = ctx.client.info("memory")["used_memory"] / 2**20
    cpu0 = ctx.redis_cpu()
    proc = ctx.tasklane_worker(TL_POOLED, 2, burst=length == measure)
    try:
        if length == measure:
            if proc.wait(120 + measure / 20) != 0:
                raise BenchError(f"{proc.name} failed: {proc.tail()}")
        else:
            ctx.wait_tasklane_count(proc, measure, timeout=120 + measure / 20)
        cpu1 = ctx.redis_cpu()
    finally:
        ctx.stop(proc)
    ids = [i.decode() for i in ctx.client.zrange("rq:finished:default", 0, -1)]
    write_ids(str(ctx.ids_file()), ids)
    stats = ctx.probe("tl", "stats", "--ids-file", ctx.ids_file())
    rate = len(ids) / (stats["last_end"] - stats["first_start"])
    return {
        "length": length,
        "measured_jobs": len(ids),
        "rate_exec": rate,
        "preload_method": pre["method"],
        "preload_rate": pre["rate"],
        "redis_used_memory_mib": redis_mib,
        "redis_cpu_s_per_1000": (cpu1 - cpu0) / len(ids) * 1000,
    }


def run(ctx: Context) -> None:
    """g. Commands per job for each system, then inline-mode scaling (queue length, processes)."""
    n, fork_n = ctx.p["cmd_n"], ctx.p["fork_cmd_n"]

    def commands(system: System) -> dict[str, Any]:
        count = fork_n if system.mode == "fork" and system.is_tasklane else n
        return drain(ctx, system, "add", count, 2, "loop", timeout=120 + count / 20, commands=True)

    systems = [TL_POOLED, TL_FORK, TL_INLINE, TL_THREADS, CEL_PREFORK, DRAMATIQ]
    ctx.run_repeats("g", "commands", systems, commands)

    lengths = {f"q{length}": length for length in ctx.p["queue_lengths"]}
    qsystems = [System(k, f"pooled, {v:,} waiting", "tasklane", "pooled") for k, v in lengths.items()]
    measure = ctx.p["queue_measure"]
    ctx.run_repeats(
        "g",
        "queue_length",
        qsystems,
        lambda s: queue_length(ctx, lengths[s.key], measure),
        repeats=ctx.scaling_repeats,
    )

    procs = {f"p{p}": p for p in ctx.p["procs"]}
    psystems = [System(k, f"pooled, {v} process(es)", "tasklane", "pooled") for k, v in procs.items()]
    procs_n = ctx.p["procs_n"]
    ctx.run_repeats(
        "g",
        "processes",
        psystems,
        lambda s: drain(ctx, TL_POOLED, "add", procs_n, procs[s.key], "many-or-bulk", 120 + procs_n / 20),
        repeats=ctx.scaling_repeats,
    )
