"""e. I/O-bound jobs (sleep 50 ms), measured as a's drain."""

from __future__ import annotations

from typing import Any

from bench.harness.common import CEL_PREFORK, CEL_THREADS, TL_THREADS, System
from bench.harness.context import Context
from bench.harness.workloads.drain import drain


def run(ctx: Context) -> None:
    """e. sleep50 jobs: Tasklane threads vs Celery prefork, Celery threads as a reference."""
    n = ctx.p["io_n"]

    def one(system: System) -> dict[str, Any]:
        return drain(ctx, system, "sleep50", n, 2, "many-or-loop", timeout=120 + n * 0.1)

    ctx.run_repeats("e", "io", [TL_THREADS, CEL_PREFORK, CEL_THREADS], one)
