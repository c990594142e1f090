"""``bench/run``: the options, then every selected workload, then results.json, results.md, chart.png."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.chart import chart
from bench.harness.common import RESULTS, WORKLOADS, log
from bench.harness.context import Context
from bench.harness.processes import busy_processes, cpu_busy
from bench.harness.report import render_markdown, summarize
from bench.harness.workloads import RUNNERS


def run(opts: argparse.Namespace) -> int:
    """Start Redis, check the worker modes, run the selected workloads, write bench/results/."""
    ctx = Context(opts)
    RESULTS.mkdir(exist_ok=True)
    selected = [w for w in WORKLOADS if w in opts.only]
    started = time.monotonic()
    try:
        binary = ctx.start_redis()
        assert ctx.redis is not None
        log(f"redis-server {binary} on {ctx.redis.url}; scratch {ctx.tmp}")
        idle_busy = cpu_busy()
        log(f"CPU busy before the run (nothing of ours running): {idle_busy:.0f}%")
        ctx.check_modes()
        ctx.results["environment"] = ctx.environment()
        ctx.results["environment"]["redis_binary"] = binary
        ctx.results["environment"]["cpu_busy_before_pct"] = idle_busy
        for wl in selected:
            log(f"workload {wl}: {WORKLOADS[wl]}")
            t0 = time.monotonic()
            others = busy_processes()
            if others:
                log(f"warning: other test/benchmark processes are running: {others[:3]}")
            RUNNERS[wl](ctx)
            store = ctx.results["workloads"].setdefault(wl, {"title": WORKLOADS[wl], "runs": {}})
            store["seconds"] = time.monotonic() - t0
            store["loadavg_1min_after"] = float(Path("/proc/loadavg").read_text().split()[0])
            store["other_processes_at_start"] = others
            (RESULTS / "results.partial.tmp").write_text(json.dumps(ctx.results, indent=1, default=str))
    finally:
        ctx.close()
    results = ctx.results
    results["environment"]["total_seconds"] = time.monotonic() - started
    summary = summarize(results)
    results["summary"] = summary
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (RESULTS / "results.md").write_text(render_markdown(results, summary))
    try:
        chart(summary, RESULTS / "chart.png", results["environment"])
    except Exception as exc:
        log(f"chart not written: {exc}")
    with contextlib.suppress(OSError):
        (RESULTS / "results.partial.tmp").unlink()
    log(f"done in {time.monotonic() - started:.0f} s: {RESULTS / 'results.md'}")
    return 0


def redraw() -> int:
    """--chart-only: results.md and chart.png again from results.json."""
    results = json.loads((RESULTS / "results.json").read_text())
    summary = summarize(results)
    (RESULTS / "results.md").write_text(render_markdown(results, summary))
    chart(summary, RESULTS / "chart.png", results["environment"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="bench/run", description="Tasklane vs Celery benchmark (issue 4).")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 5 minutes)")
    parser.add_argument("--full", action="store_true", help="also 10^6 waiting jobs; memory repeated too")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per workload (default 3)")
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=0,
        help="rounds of the memory workload (default 1; --repeats with --full)",
    )
    parser.add_argument(
        "--scaling-repeats",
        type=int,
        default=0,
        help="rounds of g's queue-length and process-count runs (default: --repeats; 1 with --quick)",
    )
    parser.add_argument(
        "--queue-lengths",
        default="",
        help="g's waiting-queue lengths, e.g. 1000,100000,1000000 (default 1000,100000; --full adds 10^6)",
    )
    parser.add_argument("--only", default="abcdefg", help="workloads to run, e.g. a,c (default all)")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the logs in the scratch directory")
    parser.add_argument(
        "--chart-only", action="store_true", help="redraw results.md/chart.png from results.json"
    )
    opts = parser.parse_args(argv)
    if opts.repeats < 1:
        parser.error("--repeats must be at least 1")
    if opts.queue_lengths:
        try:
            opts.queue_lengths = [int(v) for v in opts.queue_lengths.split(",")]
        except ValueError:
            parser.error(f"--queue-lengths: comma-separated integers, not {opts.queue_lengths!r}")
        if any(v < 1 for v in opts.queue_lengths):
            parser.error("--queue-lengths: every length must be at least 1")
    if opts.chart_only:
        return redraw()

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    return run(opts)
