"""Run Tasklane workers: ``python worker.py [QUEUE ...] [--burst] [--concurrency N] [--mode M]``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from app.factory import start_process
from app.processes.supervisor import parse_args, serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, build the app, run the workers."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return serve(start_process("worker"), args)


if __name__ == "__main__":
    raise SystemExit(main())
