"""Eager mode (Celery's ``task_always_eager``): task calls run inline, for users' unit tests.

On with ``TASKS_ALWAYS_EAGER=1`` in the environment, or inside ``with eager():``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["eager", "is_eager"]

_state = threading.local()


def is_eager() -> bool:
    """True when calls run inline: inside ``with eager():`` or with TASKS_ALWAYS_EAGER set."""
    if getattr(_state, "depth", 0) > 0:
        return True
    return os.environ.get("TASKS_ALWAYS_EAGER", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run every task call made by this thread inline while the block runs."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
