"""Tasks for the high-availability tests (TASK_MODULES=tests.jobs,tests.ha_jobs).

Each run appends one line to a file: a test counts the lines to see how many times a job
ran (a run twice shows as two lines), which a file merely created could not tell.
"""

from __future__ import annotations

import os
import time

from pydantic import Field

from app.catalogue.registry import TaskInput, task


class AppendInput(TaskInput):
    path: str
    line: str
    seconds: float = Field(default=0, ge=0, le=60)


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@task(input=AppendInput, time_limit=120)
def append_line(path: str, line: str, seconds: float) -> str:
    """Append ``line`` and the worker's HA_SIDE to ``path``; in a worker with HA_SIDE=cut (the one a
    test cuts off), sleep ``seconds`` first, touching no Redis meanwhile."""
    side = os.environ.get("HA_SIDE", "host")
    if side == "cut":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # short sleeps: a stop raised in this thread lands at once
            time.sleep(0.05)
    _append(path, f"{line} {side}" if side != "host" else line)
    return f"{line}:{side}"
