"""CPU per enqueue through the API against a direct enqueue, in one process, with a profile.

Runs in the project's venv: ``.venv/bin/python bench/api_cpu.py [--requests 3000] [--profile]``.
It starts its own redis-server on a free loopback port, then, in this process:
- direct: ``add.delay(x, y)`` (the Python interface: checks and ``dispatch.enqueue``), N times;
- API: ``POST /api/v1/tasks/add`` through the app's WSGI callable (what gunicorn calls, every
  middleware, hook and check included, gunicorn's own HTTP parsing and access log not), N times;
and prints the CPU time of each per call (``time.process_time``), their ratio, and with
``--profile`` the functions that take the API's CPU (cProfile, by own time and cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_app  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def environ_for(body: bytes) -> dict[str, Any]:
    """A WSGI environ of ``POST /api/v1/tasks/add`` as gunicorn builds it (a fresh input each time)."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/api/v1/tasks/add",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {TOKEN}",
        "HTTP_HOST": "127.0.0.1:5000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args()
    with scratch_app("tasklane-api-", APP_ENV="production", API_TOKENS=TOKEN, LOG_LEVEL="INFO",
                     DASHBOARD_USERNAME="bench",
                     DASHBOARD_PASSWORD="bench-password-0123456789") as (app, redis_):  # fmt: skip
        from app.tasks import add

        body = json.dumps({"args": {"x": 1, "y": 2}}).encode()
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return lambda data: None

        def api_once() -> None:
            for _chunk in app(environ_for(body), start_response):
                pass

        def direct_once() -> None:
            with app.app_context():
                add.delay(1, 2)

        def cpu_per_call(call: Any, n: int) -> float:
            redis_.flushdb()
            for _ in range(50):  # warm up
                call()
            start = time.process_time()
            for _ in range(n):
                call()
            return (time.process_time() - start) / n * 1e6

        print(f"{opts.requests} calls per round, {opts.rounds} rounds: CPU µs per call")
        for r in range(opts.rounds):
            direct = cpu_per_call(direct_once, opts.requests)
            api = cpu_per_call(api_once, opts.requests)
            print(f"  round {r + 1}: direct {direct:7.0f}  API {api:7.0f}  ratio {api / direct:.2f}")
        assert set(statuses) == {"202 ACCEPTED"}, set(statuses)
        if opts.profile:
            redis_.flushdb()
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(opts.requests):
                api_once()
            profile.disable()
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
