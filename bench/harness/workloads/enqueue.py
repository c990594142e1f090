"""b. Enqueue throughput, one Python producer."""

from __future__ import annotations

from typing import Any

from bench.harness.common import NotAvailable, System
from bench.harness.context import Context


def run(ctx: Context) -> None:
    """b. Enqueue throughput of one Python producer, no worker running."""
    n, batch = ctx.p["enqueue_n"], ctx.p["batch_size"]

    def one(system: System) -> dict[str, Any]:
        ctx.flush()
        if system.key == "tl_loop":
            return ctx.probe("tl", "enqueue", "--task", "add", "--n", n, "--method", "loop", "--warmup", 200)
        if system.key == "tl_many":
            res = ctx.probe(
                "tl",
                "enqueue",
                "--task",
                "add",
                "--n",
                n,
                "--method",
                "many",
                "--batch",
                batch,
                "--warmup",
                200,
            )
            if not res.get("available"):
                raise NotAvailable(res.get("reason", "not available"))
            return res
        return ctx.probe("cel", "enqueue", "--task", "add", "--n", n, "--warmup", 200)

    systems = [
        System("tl_loop", "Tasklane dispatch.enqueue loop", "tasklane"),
        System("tl_many", f"Tasklane dispatch.enqueue_many (batches of {batch})", "tasklane"),
        System("cel_apply", "Celery add.apply_async loop", "celery"),
    ]
    ctx.run_repeats("b", "enqueue", systems, one)
