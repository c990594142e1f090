"""A task module that declares ``add`` a second time: loading it must stop the process.

Only tests/test_registry.py's subprocess loads it (TASK_MODULES=tests.duplicate_jobs).
"""

from __future__ import annotations

from app.catalogue.registry import task
from app.tasks.platform import AddInput


@task(name="add", input=AddInput)
def another_add(x: float, y: float) -> float:
    """A second task called add."""
    return x + y
