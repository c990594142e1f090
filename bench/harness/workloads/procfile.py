"""a'. The Procfile as shipped: its web line (gunicorn via web.py) takes the jobs, its worker line runs them.

Two variants per round, both with ``python worker.py high default`` exactly as the Procfile
starts it (no flags: the pooled mode, one process per CPU, never --burst):

- ``tl_procfile_direct``: N jobs preloaded with ``dispatch.enqueue_many``, then the worker starts;
- ``tl_procfile_api``: N jobs posted to ``POST /api/v1/tasks/add`` on ``python web.py`` with
  WEB_CONCURRENCY=2 (by a small Python load generator: 16 keep-alive connections on threads of
  the harness), then the worker starts. The POSTs' rate and p50/p99 are kept too.

While the worker drains, the run checks what users read: ``rq info`` lists the worker's
processes, ``GET /api/v1/workers`` too, and ``GET /api/v1/jobs/<id>`` shows finished jobs
with their result. A failed check fails the round.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from typing import Any

from bench.harness.common import ROOT, TOKEN, BenchError, System, percentile, read_ids, write_ids
from bench.harness.context import Context
from bench.harness.processes import free_port, wait_listening
from bench.harness.workloads.api import _wait_http

TL_PROCFILE_DIRECT = System("tl_procfile_direct", "Tasklane, Procfile worker line, jobs enqueued directly",
                            "tasklane", "pooled")  # fmt: skip
TL_PROCFILE_API = System("tl_procfile_api", "Tasklane, Procfile worker line, jobs via POST /api/v1/tasks/add",
                         "tasklane", "pooled")  # fmt: skip
PROCFILE_WORKER = ["worker.py", "high", "default"]


def post_jobs(port: int, n: int, connections: int = 16) -> tuple[list[str], dict[str, Any]]:
    """POST ``n`` add jobs over ``connections`` keep-alive connections; the job ids and the rate/latencies."""
    body = json.dumps({"args": {"x": 1, "y": 2}})
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    ids: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, times = [], []
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                t0 = time.perf_counter()
                conn.request("POST", "/api/v1/tasks/add", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                times.append(time.perf_counter() - t0)
                if resp.status != 202:
                    errors.append(f"{resp.status} {data[:200]!r}")
                    return
                mine.append(json.loads(data)["job_id"])
        finally:
            conn.close()
            with lock:
                ids.extend(mine)
                latencies.extend(times)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise BenchError(f"POST /api/v1/tasks/add failed: {errors[0]}")
    latencies.sort()
    return ids, {
        "api_rps": len(ids) / seconds,
        "api_p50_ms": percentile(latencies, 50) * 1000,
        "api_p99_ms": percentile(latencies, 99) * 1000,
    }


def _rq_info(ctx: Context) -> str:
    assert ctx.redis is not None
    done = subprocess.run([ctx.tl_python, "-m", "rq.cli", "info", "-u", ctx.redis.url, "--only-workers"],
                          cwd=ROOT, env=ctx.tl_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.stdout


def _get(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        return {"status": resp.status, **json.loads(resp.read() or b"{}")}
    finally:
        conn.close()


def procfile_drain(ctx: Context, system: System, n: int, timeout: float) -> dict[str, Any]:
    ctx.require_mode("pooled")
    ctx.flush()
    port = free_port()
    web = ctx.spawn("web", [ctx.tl_python, "web.py", "--bind", f"127.0.0.1:{port}"],
                    ctx.tl_env(WEB_CONCURRENCY="2"))  # fmt: skip
    worker = None
    out: dict[str, Any] = {"n": n, "procs": "Procfile (one per CPU)"}
    try:
        _wait_http(web, f"http://127.0.0.1:{port}/healthz")
        wait_listening(port, 2)  # both workers' own sockets (reuse_port), before the load connects
        ids_file = ctx.ids_file()
        if system is TL_PROCFILE_API:
            ids, api = post_jobs(port, n)
            out.update(api)
            write_ids(str(ids_file), ids)
        else:
            ctx.probe(
                "tl", "enqueue", "--task", "add", "--n", n, "--method", "many-or-loop", "--ids-file", ids_file
            )
            ids = read_ids(str(ids_file))
        cpu0 = ctx.redis_cpu()
        t_launch = time.time()
        worker = ctx.spawn("worker-procfile", [ctx.tl_python, *PROCFILE_WORKER], ctx.tl_env())
        checked = False
        deadline = time.monotonic() + timeout
        while True:
            done = ctx.client.zcard("rq:finished:default") + ctx.client.zcard("rq:failed:default")
            if not checked and done >= n // 3:
                out.update(_check_visibility(ctx, port, ids[0]))
                checked = True
            if done >= n:
                break
            if worker.poll() is not None:
                raise BenchError(f"worker exited {worker.poll()}: {worker.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{done}/{n} jobs done after {timeout:.0f} s")
            time.sleep(0.02)
        cpu1 = ctx.redis_cpu()
        if not checked:
            out.update(_check_visibility(ctx, port, ids[0]))
    finally:
        if worker is not None:
            ctx.stop(worker)
        ctx.stop(web, grace=10)
    stats = ctx.probe("tl", "stats", "--ids-file", ids_file)
    if stats["statuses"].get("finished", 0) != n:
        raise BenchError(f"not all jobs finished: {stats['statuses']}")
    first, last = stats["first_start"], stats["last_end"]
    out["statuses"] = stats["statuses"]
    out["startup_s"] = first - t_launch
    out["rate_exec"] = n / (last - first)
    out["rate_wall"] = n / (last - t_launch)
    out["redis_cpu_s_per_1000"] = (cpu1 - cpu0) / n * 1000
    return out


def _check_visibility(ctx: Context, port: int, job_id: str) -> dict[str, Any]:
    """Mid-drain: rq info and the workers API list the worker's processes; the job API reads a job."""
    import os

    procs = os.cpu_count() or 1
    info = _rq_info(ctx)
    workers = _get(port, "/api/v1/workers")
    job = _get(port, f"/api/v1/jobs/{job_id}")
    listed = len(workers.get("workers", []))
    ok = (
        f"{procs} workers" in info
        and listed == procs
        and job.get("state") == "SUCCESS"
        and isinstance(job.get("result"), int)
    )
    if not ok:
        raise BenchError(f"visibility check failed mid-drain: rq info {info.strip()[-200:]!r}, "
                         f"workers API {listed}, job API {job}")  # fmt: skip
    return {
        "visible_rq_info_workers": procs,
        "visible_api_workers": listed,
        "visible_job_state": job["state"],
    }
