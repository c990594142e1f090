"""How long each /console/ page takes with 10^5 jobs kept (``python bench/console_pages.py``).

A standalone script: it starts its own redis-server on a free loopback port, fills it with
``--jobs`` jobs in RQ's own format through pipelines (half finished, three tenths failed, a
fifth waiting, over the three queues), a week of per-minute and per-hour outcome series for
a dozen tasks (as the workers write them), and a workflow as large as allowed; then it times every
console page through Flask's test client (the whole view: auth, Redis reads, rendering;
not gunicorn or the network) and prints p50/p90 per page after a few untimed requests; then how
long a bulk action takes to find its jobs (a dry run) for three filters.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.listing import quantile, start_redis  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
USER, PASSWORD = "operator", "bench-dashboard-password"
TTL = 7 * 24 * 3600
TASKS = ["add", "send_email", "resize_image", "call_external_api", "generate_report", "process_large_file",
         "sync_crm", "charge_card", "refund", "embed_text", "backup_db", "health_check"]  # fmt: skip


def fill_jobs(conn: Any, count: int, batch: int = 5_000) -> float:
    """``count`` jobs: 50 % finished, 30 % failed, 20 % waiting, over high/default/low; seconds taken."""
    from uuid import uuid4

    from rq.job import JobStatus
    from rq.serializers import JSONSerializer
    from rq.utils import utcformat

    from app.core.queues import JsonJob, JsonQueue

    queues = {name: JsonQueue(name, connection=conn) for name in ("high", "default", "low")}
    template = queues["default"].create_job("app.tasks.platform.add", kwargs={"x": 1, "y": 1})
    base = template.to_dict()
    now = datetime.now(UTC)
    started = time.monotonic()
    for first in range(0, count, batch):
        with conn.pipeline(transaction=False) as pipe:
            registries: dict[str, dict[str, float]] = {}
            waiting: dict[str, list[str]] = {}
            for n in range(first, min(first + batch, count)):
                job_id = str(uuid4())
                queue = ("high", "default", "low", "default")[n % 4]
                kind = n % 10
                ended = now - timedelta(seconds=(TTL - 3600) * (count - n) / count)
                status = (
                    JobStatus.FINISHED if kind < 5 else JobStatus.FAILED if kind < 8 else JobStatus.QUEUED
                )
                fields = {
                    **base,
                    "origin": queue,
                    "status": status.value,
                    "created_at": utcformat(ended - timedelta(milliseconds=6)),
                    "enqueued_at": utcformat(ended - timedelta(milliseconds=5)),
                    "description": f"app.tasks.platform.add(x={n}, y=1)",
                    "data": zlib.compress(
                        JSONSerializer.dumps((template.func_name, None, [], {"x": n % 1000, "y": 1}))
                    ),
                }
                if status != JobStatus.QUEUED:
                    fields["started_at"] = utcformat(ended - timedelta(milliseconds=2))
                    fields["ended_at"] = utcformat(ended)
                pipe.hset(JsonJob.key_for(job_id), mapping=fields)
                pipe.expire(JsonJob.key_for(job_id), TTL)
                if status == JobStatus.QUEUED:
                    waiting.setdefault(queue, []).append(job_id)
                else:
                    registry = (
                        queues[queue].finished_job_registry if kind < 5 else queues[queue].failed_job_registry
                    )
                    registries.setdefault(registry.key, {})[job_id] = int(ended.timestamp()) + TTL
            for key, scores in registries.items():
                pipe.zadd(key, scores)
            for queue, ids in waiting.items():
                pipe.rpush(queues[queue].key, *ids)
            pipe.execute()
    return time.monotonic() - started


def fill_series(conn: Any) -> float:
    """A week of outcome series: every minute of the last 25 h and every hour of 8 days, each task."""
    from app.ops import metrics, series

    started = time.monotonic()
    now = time.time()
    with conn.pipeline(transaction=False) as pipe:
        for minute in range(0, 25 * 60):
            when = now - 60 * minute
            for i, task in enumerate(TASKS):
                buckets = {metrics.bucket_of(0.01 * (i + 1)): 10 + i, metrics.bucket_of(0.5): 1}
                series.record(pipe, task, "success", buckets, 10 + i + 1, "default", now=when)
                series.record(pipe, task, "failure", {}, i % 3, "default", now=when)
            if minute % 50 == 0:
                pipe.execute()
        for hour in range(25, 8 * 24):
            when = now - 3600 * hour
            for task in TASKS:
                series.record(pipe, task, "success", {metrics.bucket_of(0.02): 600}, 600, "low", now=when)
        pipe.execute()
    return time.monotonic() - started


def time_page(client: Any, url: str, headers: dict[str, str], samples: int) -> list[float]:
    for _ in range(3):
        client.get(url, headers=headers)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=21)
    options = parser.parse_args()

    import base64

    import redis

    from app import create_app

    scratch = Path(tempfile.mkdtemp(prefix="tasklane-bench-console-"))
    proc, port = start_redis(scratch)
    try:
        conn = redis.Redis(port=port)
        env = {
            "APP_ENV": "test",
            "VAR_DIR": str(scratch / "var"),
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "API_TOKENS": TOKEN,
            "DASHBOARD_USERNAME": USER,
            "DASHBOARD_PASSWORD": PASSWORD,
            "LOG_LEVEL": "WARNING",
        }
        client = create_app(env).test_client()
        print(
            f"redis-server on port {port}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True
        )
        took = fill_jobs(conn, options.jobs)
        series_took = fill_series(conn)
        from app.foundation.defaults import MAX_WORKFLOW_STEPS

        steps = [{"task": "add", "args": {"x": n, "y": 1}} for n in range(MAX_WORKFLOW_STEPS)]
        group = {"type": "group", "steps": steps}
        made = client.post("/api/v1/workflows", json=group, headers={"Authorization": f"Bearer {TOKEN}"})
        if made.status_code != 202:
            raise SystemExit(f"the workflow was refused: {made.get_json()}")
        workflow_id = made.get_json()["workflow_id"]
        gc.collect()
        memory = int(conn.info("memory")["used_memory"]) / 2**20
        print(f"{options.jobs:,} jobs filled in {took:.1f} s, series in {series_took:.1f} s; "
              f"Redis uses {memory:.0f} MiB", flush=True)  # fmt: skip
        check = client.get("/api/v1/jobs?args.x=77&limit=5", headers={"Authorization": f"Bearer {TOKEN}"})
        print(
            f"check: GET /api/v1/jobs?args.x=77 lists {len(check.get_json()['jobs'])} jobs on its first page"
        )
        some_job = conn.lindex("rq:queue:default", 0).decode()
        headers = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        pages = [
            "/console/",
            "/console/?span=24h",
            "/console/?span=7d&series=t:add",
            "/console/overview/panel?span=1h",
            "/console/jobs",
            "/console/jobs?q=state:failure",
            "/console/jobs?q=state:failure queue:low args.x:77",
            "/console/jobs?q=since:1h",
            f"/console/jobs/{some_job}",
            "/console/queues",
            "/console/schedules",
            f"/console/workflows/{workflow_id}",
        ]
        print(f"\n{'page':<58} {'p50 ms':>8} {'p90 ms':>8}")
        for url in pages:
            times = time_page(client, url, headers, options.samples)
            p50, p90 = quantile(times, 0.5) * 1000, quantile(times, 0.9) * 1000
            print(f"{url[:58]:<58} {p50:>8.1f} {p90:>8.1f}", flush=True)
        print(f"\n{'bulk dry run (matching only), body filter':<58} {'matched':>8} {'seconds':>8}")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for body_filter in ({"state": "FAILURE"}, {"args": {"x": 77}}, {}):
            t0 = time.perf_counter()
            answer = client.post(
                "/api/v1/jobs/bulk",
                json={"action": "retry", "filter": body_filter, "dry_run": True},
                headers=bearer,
            ).get_json()
            took = time.perf_counter() - t0
            print(
                f"{body_filter!s:<58} {answer.get('matched') or answer['error']['code']!s:>8} {took:>8.1f}",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
