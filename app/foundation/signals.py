"""Signals of a job's life, for users' code: Celery's ``task_prerun`` ... ``task_retry``.

Connect a handler with ``@task_success.connect``; it receives the task name as the sender
and keyword arguments (``job_id``, ``kwargs``, and ``result``, ``error`` or ``retry_at``).
They are sent from the one place that handles each outcome (app/core/execution.py around the
call, app/core/outcomes.py for the outcomes), in whichever worker mode or sweep saw it. A
handler that raises is logged and never fails the job.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import NamedSignal, Namespace

log = logging.getLogger("tasklane.signals")

_signals = Namespace()

#: Before the task function is called (in the process that runs it).
task_prerun = _signals.signal("task_prerun")
#: After the task function returned or raised (in the process that ran it).
task_postrun = _signals.signal("task_postrun")
#: The job succeeded; ``result`` is its return value.
task_success = _signals.signal("task_success")
#: The job failed for good; ``error`` is ``{"type", "message"}``, ``exc_string`` the traceback text.
task_failure = _signals.signal("task_failure")
#: An attempt failed and another is scheduled at ``retry_at``.
task_retry = _signals.signal("task_retry")
#: The job was revoked (before or while it ran).
task_revoked = _signals.signal("task_revoked")


def send(signal: NamedSignal, sender: str, **kwargs: Any) -> None:
    """Call every handler of ``signal``; one that raises is logged, and the others still run."""
    for receiver in list(signal.receivers_for(sender)):
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception("a %s handler failed (the job is not affected)", signal.name)
