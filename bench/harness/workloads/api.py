"""d. HTTP API (gunicorn + wrk); also the direct dispatch.enqueue rate of the same round."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness.common import BENCH, ROOT, TOKEN, BenchError, NotAvailable, System
from bench.harness.context import Context
from bench.harness.processes import Proc, cpu_seconds, descendants, free_port, wait_listening


def run(ctx: Context) -> None:
    """d. gunicorn as in the Procfile (WEB_CONCURRENCY=2), loaded by wrk with bench/post.lua."""
    wrk = shutil.which("wrk")

    def one(system: System) -> dict[str, Any]:
        if wrk is None:
            raise NotAvailable("wrk is not installed (apt-get install wrk)")
        ctx.flush()
        direct = ctx.probe(
            "tl",
            "enqueue",
            "--task",
            "add",
            "--n",
            ctx.p["api_direct_n"],
            "--method",
            "loop",
            "--warmup",
            100,
        )
        ctx.flush()
        port = free_port()
        gunicorn = str(Path(ctx.tl_python).parent / "gunicorn")
        args = [gunicorn, "app:create_app()", "--bind", f"127.0.0.1:{port}"]
        proc = ctx.spawn("gunicorn", args, ctx.tl_env(WEB_CONCURRENCY="2"))
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_http(proc, f"{base}/healthz")
            wait_listening(port, 2)  # both workers' own sockets (reuse_port), before wrk connects
            _check_post(f"{base}/api/v1/tasks/add")
            ctx.flush()
            duration = ctx.p["wrk_duration"]
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
            ctx.stop(proc, grace=10)
        if done.returncode != 0:
            raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
        res = parse_wrk(done.stdout)
        res["jobs_in_queue"] = int(ctx.client.llen("rq:queue:default"))
        res["jobs_per_2xx"] = res["jobs_in_queue"] / max(1, res["requests"] - res["non2xx"])
        res["direct_enqueue_rate"] = direct["rate"]
        res["api_cost_ratio"] = direct["rate"] / res["rps"]
        res["wrk_command"] = " ".join(cmd)
        res["gunicorn_worker_cpu_s"] = cpu
        # Cost as CPU: what gunicorn's workers spent per answered request (HTTP parsing, Flask,
        # the checks, the enqueue) against what the direct loop spent per enqueue; unlike the
        # rates, it leaves out wrk's and Redis's share of the same two CPUs.
        answered = res["requests"] - res["non2xx"]
        if direct.get("cpu_us_per_job") and answered > 0:
            res["api_cpu_us_per_request"] = sum(cpu) / answered * 1e6
            res["direct_cpu_us_per_enqueue"] = direct["cpu_us_per_job"]
            res["api_cpu_cost_ratio"] = res["api_cpu_us_per_request"] / direct["cpu_us_per_job"]
        res["busiest_worker_cpu_share"] = max(cpu) / sum(cpu) if sum(cpu) > 0 else None
        return res

    ctx.run_repeats(
        "d", "http", [System("api", "Tasklane API (gunicorn, WEB_CONCURRENCY=2)", "tasklane")], one
    )


def _wait_http(proc: Proc, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited {proc.poll()}: {proc.tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 in {timeout:.0f} s: {proc.tail()}")


def _check_post(url: str) -> None:
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
