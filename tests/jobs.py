"""Tasks that exist only for the tests; processes load them with TASK_MODULES=tests.jobs."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from app.progress import report_progress
from app.registry import TaskInput, task


class TouchInput(TaskInput):
    path: str


@task(input=TouchInput)
def touch(path: str) -> str:
    """Create a file, so that a test can see the job ran."""
    Path(path).write_text("ran")
    return path


class SlowInput(TaskInput):
    path: str
    seconds: float = Field(ge=0, le=30)
    steps: int = Field(default=4, ge=1, le=100)


@task(input=SlowInput, time_limit=60)
def slow_touch(path: str, seconds: float, steps: int) -> str:
    """Report progress while waiting ``seconds``, then create the file."""
    for step in range(steps):
        report_progress(step, steps, stage="waiting")
        time.sleep(seconds / steps)
    report_progress(steps, steps, stage="done")
    Path(path).write_text("ran")
    return path


class FailInput(TaskInput):
    message: str


@task(input=FailInput)
def always_fail(message: str) -> None:
    """Raise, so that a test can see a failure."""
    raise RuntimeError(message)
