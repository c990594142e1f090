"""Run the Tasklane scheduler: ``python scheduler.py [--burst]``."""

from __future__ import annotations

import argparse

from app.factory import start_process
from app.foundation.runtime import runtime
from app.processes.scheduling import main_loop


def main() -> int:
    """Register the catalogue's periodic jobs and run the scheduler loop."""
    parser = argparse.ArgumentParser(prog="scheduler.py", description="Run the Tasklane scheduler.")
    parser.add_argument("--burst", action="store_true", help="one pass, then exit")
    args = parser.parse_args()
    app = start_process("scheduler")
    with app.app_context():
        rt = runtime()
        return main_loop(rt.redis, rt.settings, burst=args.burst)


if __name__ == "__main__":
    raise SystemExit(main())
