"""The task catalogue: one module per domain; every module in this package is imported.

Importing this package imports each of its modules (found on disk, not listed here), so
a task declared in a new module is registered without touching any other file. Two tasks
with one name stop the process at start with one line naming both.

Every catalogue task is also importable from here by its name, as a Celery-style handle
(``from app.tasks import add; add.delay(2, 3)``): see app/calling/calls.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from app.catalogue.registry import Snooze

__all__ = ["Snooze"]

for _module in sorted(pkgutil.iter_modules(__path__, prefix=f"{__name__}."), key=lambda m: m.name):
    importlib.import_module(_module.name)


def __getattr__(name: str) -> Any:
    """``from app.tasks import add``: the handle of the catalogue task ``add``."""
    if name.startswith("__"):
        raise AttributeError(name)
    # The calling interface sits above the catalogue; this package only re-exports it (the
    # one import the layers contract allows upward: app.tasks -> app.calls).
    from app.calling.calls import task_handle

    return task_handle(name)
