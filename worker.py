"""Run Tasklane workers: ``python worker.py [QUEUE ...] [--burst] [--concurrency N] [--mode M]``."""

from app.supervisor import main

if __name__ == "__main__":
    raise SystemExit(main())
