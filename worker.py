"""Run Tasklane workers: ``python worker.py [QUEUE ...] [--burst] [--concurrency N]``."""

from app.workers import main

if __name__ == "__main__":
    raise SystemExit(main())
