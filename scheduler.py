"""Run the Tasklane scheduler: ``python scheduler.py [--burst]``."""

from __future__ import annotations

import argparse
import sys

from redis.exceptions import RedisError

from app import create_app
from app.config import load_or_exit
from app.logs import configure_logging
from app.scheduling import main_loop


def main() -> int:
    """Register the catalogue's periodic jobs and run the scheduler loop."""
    parser = argparse.ArgumentParser(prog="scheduler.py", description="Run the Tasklane scheduler.")
    parser.add_argument("--burst", action="store_true", help="one pass, then exit")
    args = parser.parse_args()
    settings = load_or_exit(process="scheduler")
    configure_logging(settings)
    app = create_app(settings)
    redis = app.extensions["tasklane"].redis
    try:
        redis.ping()
    except RedisError as exc:
        print(f"scheduler: cannot reach Redis (REDIS_URL): {exc}", file=sys.stderr)
        return 2
    with app.app_context():
        return main_loop(redis, settings, burst=args.burst)


if __name__ == "__main__":
    raise SystemExit(main())
