"""One module per workload, each with ``run(ctx)``; RUNNERS maps the letters of common.WORKLOADS."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness.context import Context
from bench.harness.workloads import api, commands, drain, enqueue, io_bound, latency, memory

RUNNERS: dict[str, Callable[[Context], None]] = {
    "a": drain.run,
    "b": enqueue.run,
    "c": latency.run,
    "d": api.run,
    "e": io_bound.run,
    "f": memory.run,
    "g": commands.run,
}
