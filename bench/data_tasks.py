"""Figures for the data tasks on each reachable engine: export rows/s and peak RSS, backup size
and time, invoices per second.

    .venv/bin/python -m bench.data_tasks [--users 20000] [--engines sqlite,postgresql,mariadb]

Needs a redis-server binary (a throwaway one is started on a free port). For each engine it
creates a uniquely named database (dropped afterwards), migrates it, seeds ``--users`` users
with `app.seed` (sessions, tokens, subscriptions, invoices, payments, 30 days of analytics),
then calls the tasks in this process against a local aiosmtpd server (plain SMTP, no TLS)
and prints one JSON object per engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from app.factory import create_app
from app.surfaces.seed import seed
from tests.databases import client_tool, database
from tests.servers import RedisServer, free_port


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def measure(engine: str, users: int, directory: Path, redis_url: str, smtp_url: str) -> dict[str, Any] | None:
    """The figures for one engine (None when it is unreachable)."""
    from app.tasks.backup import backup_database
    from app.tasks.data import generate_monthly_invoices
    from app.tasks.reports import generate_report, process_batch_export

    if engine != "sqlite" and client_tool(engine) is None:
        print(f"{engine}: no dump tool; skipped", file=sys.stderr)
        return None
    with database(engine, directory) as url:
        if url is None:
            print(f"{engine}: not reachable; skipped", file=sys.stderr)
            return None
        env = {
            "APP_ENV": "test",
            "VAR_DIR": str(directory / engine),
            "REDIS_URL": redis_url,
            "DATABASE_URL": url,
            "SMTP_URL": smtp_url,
            "LOG_LEVEL": "WARNING",
        }
        app = create_app(env)
        with app.app_context():
            rt = app.extensions["tasklane"]
            started = time.monotonic()
            seeded = seed(rt.engine, users=users, hours=24 * 30)
            seed_seconds = time.monotonic() - started
            print(f"{engine}: seeded in {seed_seconds:.1f} s", file=sys.stderr)
            export = process_batch_export("users", "ops@example.com")
            print(f"{engine}: export done at {time.monotonic() - started:.1f} s", file=sys.stderr)
            backup = backup_database(retention_days=30)
            print(f"{engine}: backup done at {time.monotonic() - started:.1f} s", file=sys.stderr)
            invoices = generate_monthly_invoices("2031-01")
            print(f"{engine}: invoices done at {time.monotonic() - started:.1f} s", file=sys.stderr)
            report = generate_report("usage", "month")
            print(f"{engine}: report done at {time.monotonic() - started:.1f} s", file=sys.stderr)
        rt.close()
    return {
        "engine": engine,
        "seeded_rows": sum(seeded.as_dict().values()),
        "seed_seconds": round(seed_seconds, 2),
        "export": {
            "rows": export["rows"],
            "rows_per_second": export["rows_per_second"],
            "rss_peak_growth_mib": round(
                (export["memory"]["rss_peak_bytes"] - export["memory"]["rss_start_bytes"]) / 2**20, 1
            ),
        },
        "backup": {"tool": backup["tool"], "bytes": backup["bytes"], "seconds": backup["seconds"]},
        "invoices": {
            "created": invoices["created"],
            "seconds": invoices["seconds"],
            "per_second": round(invoices["created"] / invoices["seconds"], 1)
            if invoices["seconds"]
            else None,
        },
        "report": {"rows": report["rows"], "seconds": report["seconds"]},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--engines", default="sqlite,postgresql,mariadb")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        redis_server = RedisServer(directory / "redis").start()
        sink = _Sink()
        smtp = Controller(sink, hostname="127.0.0.1", port=free_port(), server_hostname="localhost")
        smtp.start()
        try:
            for engine in args.engines.split(","):
                figures = measure(
                    engine, args.users, directory, redis_server.url, f"smtp://127.0.0.1:{smtp.port}"
                )
                if figures is not None:
                    print(json.dumps(figures), flush=True)
        finally:
            smtp.stop()
            redis_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
