"""What the harness and both probes share: paths, sizes, the systems, small helpers.

Imported by the probes in the project's .venv as well as by the harness in
bench/.venv-celery, so it uses the standard library only.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
RESULTS = BENCH / "results"
TOKEN = "bench-api-token-" + "0123456789abcdef"
DASH = "\u2013"  # en dash, for "min-max" spreads in the report
TIMES = "\u00d7"  # multiplication sign, for ratios

#: Sizes per profile. ``fork_*`` caps the job count of the fork mode, whose throughput is an
#: order of magnitude lower (one fork per job): its jobs/s is still a rate, comparable as such.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        "drain_n": 20_000,
        "fork_drain_n": 2_000,
        "enqueue_n": 10_000,
        "batch_size": 1_000,
        "latency_n": 500,
        "wrk_duration": 10,
        "api_direct_n": 3_000,
        "io_n": 2_000,
        "memory_n": 100_000,
        "cmd_n": 5_000,
        "fork_cmd_n": 1_000,
        "queue_lengths": [1_000, 100_000],
        "queue_measure": 5_000,
        "procs": [1, 2, 4, 8],
        "procs_n": 5_000,
        "scaling_repeats": None,  # None: --repeats
    },
    "quick": {
        "drain_n": 3_000,
        "fork_drain_n": 500,
        "enqueue_n": 2_000,
        "batch_size": 1_000,
        "latency_n": 100,
        "wrk_duration": 5,
        "api_direct_n": 1_000,
        "io_n": 400,
        "memory_n": 20_000,
        "cmd_n": 2_000,
        "fork_cmd_n": 300,
        "queue_lengths": [1_000, 100_000],
        "queue_measure": 2_000,
        "procs": [1, 2, 4, 8],
        "procs_n": 2_000,
        "scaling_repeats": 1,
    },
}

WORKLOADS = {
    "a": "Drain, results kept",
    "b": "Enqueue throughput, one Python producer",
    "c": "Latency enqueue \u2192 result, idle worker",
    "d": "HTTP API (gunicorn + wrk)",
    "e": "I/O-bound jobs (sleep 50 ms)",
    "f": "Memory (RSS)",
    "g": "Redis commands per job; scaling",
}


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """One run failed; the harness records it and goes on."""


class NotAvailable(RuntimeError):
    """A system or mode this machine or this checkout does not offer."""


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def epoch(value: Any) -> float | None:
    """A datetime (naive means UTC) or ISO string as seconds since the epoch."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def write_ids(path: str | None, ids: list[str]) -> None:
    if path:
        Path(path).write_text("\n".join(ids))


def read_ids(path: str) -> list[str]:
    return [line for line in Path(path).read_text().splitlines() if line]


@dataclass(frozen=True)
class System:
    key: str
    label: str
    kind: str  # "tasklane", "celery" or "dramatiq"
    mode: str = ""  # Tasklane: pooled | fork | inline | threads; Celery: prefork | threads
    threads: int = 16

    @property
    def is_tasklane(self) -> bool:
        return self.kind == "tasklane"


TL_POOLED = System("tl_pooled", "Tasklane pooled (default)", "tasklane", "pooled")
TL_FORK = System("tl_fork", "Tasklane fork", "tasklane", "fork")
TL_INLINE = System("tl_inline", "Tasklane inline", "tasklane", "inline")
TL_THREADS = System("tl_threads", "Tasklane threads (16/process)", "tasklane", "threads")
CEL_PREFORK = System("cel_prefork", "Celery prefork", "celery", "prefork")
CEL_THREADS = System("cel_threads", "Celery threads (16, 1 process)", "celery", "threads")
DRAMATIQ = System("dramatiq", "Dramatiq (2 processes \u00d7 8 threads)", "dramatiq", "threads", 8)
SYSTEMS = {s.key: s for s in (TL_POOLED, TL_FORK, TL_INLINE, TL_THREADS, CEL_PREFORK, CEL_THREADS, DRAMATIQ)}


def dramatiq_result_key(message_id: str, actor: str = "add", queue: str = "default") -> str:
    """The key Dramatiq's Redis result backend stores a message's result under (its default namespace)."""
    import hashlib

    return hashlib.md5(f"dramatiq-results:{queue}:{actor}:{message_id}".encode()).hexdigest()
