"""What ``priority`` and ``group`` cost a dequeue: 10^5 waiting jobs in 1,000 groups vs 10^5 plain.

A standalone script (``.venv/bin/python bench/lanes.py``): it starts a throw-away redis-server
on a free loopback port (never the one on 6379), fills one queue per layout with ``--jobs`` real
jobs through ``app.core.dispatch.enqueue_many`` (the API's batch path), then takes jobs with the
workers' own dequeue call (one ``_MOVE_FIRST`` script per job, as a worker makes it), in chunks of
``--chunk`` takes, the layouts in turn chunk after chunk (so a busy machine slows them alike), and
reports the median over the chunks, per layout, of:

- ``server_us``: Redis's own time per dequeue script (``INFO commandstats``, ``usec_per_call``
  of ``evalsha``), the part the layout changes;
- ``cpu_us``: the Redis server's CPU time per dequeue (``INFO cpu``, main thread user + system),
  parsing and replies included, which other processes on the machine do not inflate;
- ``client_us``: the wall time of one dequeue seen from Python (one round trip);
- ``commands``: Redis commands run per dequeue inside the script (every ``cmdstat`` but
  ``evalsha``), and per enqueued job (``enqueue_commands``).

Layouts: ``plain`` (queue ``default``, no option), ``groups`` (queue ``low``: ``--groups`` groups,
the same number of jobs each, enqueued group after group, the worst order for a FIFO),
``priorities`` (queue ``high``: priorities 0..9 in turn, 1,000 jobs at a time). The ratios to
``plain`` are the figures docs/FLOW_CONTROL.md quotes (target: within 1.5x).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.catalogue.registry import REGISTRY, QueueName  # noqa: E402
from app.core import queues  # noqa: E402
from app.core.dispatch import enqueue_many  # noqa: E402
from app.core.queues import JsonQueue  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

QUEUES = {"plain": "default", "groups": "low", "priorities": "high"}


def _commandstats(r: Any) -> dict[str, dict[str, float]]:
    return {k.removeprefix("cmdstat_"): v for k, v in r.info("commandstats").items()}


def _cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def _fill(r: Any, layout: str, jobs: int, groups: int) -> dict[str, float]:
    """Enqueue ``jobs`` jobs of ``add`` in ``layout``; the Redis commands per enqueued job."""
    spec = REGISTRY.get("add")
    assert spec is not None
    ttls = {"default_result_ttl": 3600, "failure_ttl": 3600}
    batches: list[tuple[int, int | None, str | None]] = []  # (count, priority, group)
    if layout == "plain":
        batches = [(1000, None, None)] * (jobs // 1000)
    elif layout == "groups":
        batches = [(jobs // groups, None, f"g{n}") for n in range(groups)]
    elif layout == "priorities":
        batches = [(1000, n % 10, None) for n in range(jobs // 1000)]
    r.config_resetstat()
    made = 0
    for count, priority, group in batches:
        args = [{"x": made + n, "y": 1} for n in range(count)]
        queue = QueueName(QUEUES[layout])
        enqueue_many(spec, args, r, queue=queue, priority=priority, group=group, **ttls)
        made += count
    stats = _commandstats(r)
    total = sum(v["calls"] for k, v in stats.items() if k not in ("config", "info", "multi", "exec"))
    return {"enqueued": made, "enqueue_commands": round(total / made, 2)}


def _chunk(r: Any, layout: str, takes: int) -> dict[str, float]:
    key = JsonQueue.redis_queue_namespace_prefix + QUEUES[layout]
    r.config_resetstat()
    cpu = _cpu(r)
    started = time.perf_counter()
    for _ in range(takes):
        if queues._move_first_with_data(r, [key]) is None:
            raise SystemExit(f"{layout}: the queue ran dry; give more --jobs or fewer --takes")
    elapsed = time.perf_counter() - started
    cpu = _cpu(r) - cpu
    stats = _commandstats(r)
    inside = sum(v["calls"] for k, v in stats.items() if k not in ("evalsha", "eval", "config", "info"))
    return {
        "server_us": stats["evalsha"]["usec_per_call"],
        "cpu_us": cpu / takes * 1e6,
        "client_us": elapsed / takes * 1e6,
        "commands": inside / takes,
    }


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that the finally below stops the server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--takes", type=int, default=30_000, help="takes per layout in all")
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--layouts", default="plain,groups,priorities")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    layouts = args.layouts.split(",")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        server = RedisServer(Path(scratch) / "redis").start()
        try:
            r = server.client()
            for layout in layouts:
                rows[layout] = {"layout": layout, **_fill(r, layout, args.jobs, args.groups)}
                rows[layout]["waiting"] = queues.waiting(r, QUEUES[layout])["total"]
            chunks: dict[str, list[dict[str, float]]] = {layout: [] for layout in layouts}
            for _ in range(args.takes // args.chunk):
                for layout in layouts:
                    chunks[layout].append(_chunk(r, layout, args.chunk))
            for layout in layouts:
                for name in ("server_us", "cpu_us", "client_us", "commands"):
                    rows[layout][name] = round(statistics.median(c[name] for c in chunks[layout]), 2)
                print(json.dumps(rows[layout]), flush=True)
        finally:
            server.stop()
    plain = rows.get("plain")
    if plain is not None:
        print(f"{args.jobs} waiting jobs per layout, {args.takes} takes each, chunks of {args.chunk}:")
        for row in rows.values():
            ratios = ", ".join(
                f"{name} {row[name]} ({row[name] / plain[name]:.2f}x)"
                for name in ("server_us", "cpu_us", "client_us")
            )
            print(
                f"{row['layout']:<11} {ratios}; {row['commands']} commands/dequeue, "
                f"{row['enqueue_commands']} commands/enqueue"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
