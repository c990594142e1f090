"""Logging: one line per event, JSON or console, carrying the job id and task name."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job

from app.foundation.config import LogFormat, Settings
from app.foundation.meta import Meta

#: What a secret is replaced with in a log line.
MASK = "***"
#: Shorter values are not redacted (a 1-character "secret" would mask every such letter).
MIN_SECRET_LENGTH = 4

_held: Counter[str] = Counter()
_held_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first; replaced whole, so readers need no lock


def hold_secrets(values: Iterable[str]) -> None:
    """Keep ``values`` out of every log line (the settings' secrets, a running job's sensitive
    arguments) until :func:`release_secrets` releases them as often."""
    global _secrets
    with _held_lock:
        _held.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)
        _secrets = tuple(sorted(_held, key=len, reverse=True))


def release_secrets(values: Iterable[str]) -> None:
    """Undo one :func:`hold_secrets` of ``values``."""
    global _secrets
    with _held_lock:
        for value in values:
            if _held.get(value):
                _held[value] -= 1
                if not _held[value]:
                    del _held[value]
        _secrets = tuple(sorted(_held, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every held secret replaced by ``MASK``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


_CONTEXT_FIELDS = ("job_id", "task", "queue", "worker", "duration_ms", "attempt")


class _JobContext(logging.Filter):
    """Adds the running job's id, task, queue and attempt to every line written while it runs
    (by the task itself, a library it calls, or the platform), unless the line carries them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            try:
                job = get_current_job()
            except Exception:
                job = None
            if job is not None:
                meta = job.meta or {}
                record.job_id = job.id
                record.task = meta.get(Meta.TASK)
                record.queue = job.origin
                record.attempt = _attempt(meta, job.retries_left)
        return True


def _attempt(meta: dict[str, Any], retries_left: int | None) -> int:
    """The running attempt's number, 1 for the first (retries used + 1)."""
    max_retries = int(meta.get(Meta.MAX_RETRIES) or 0)
    left = max_retries if retries_left is None else retries_left
    return max(0, max_retries - left) + 1


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines with the job context appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{n}={getattr(record, n)}" for n in _CONTEXT_FIELDS if getattr(record, n, None) is not None
        )
        return redact(f"{line} [{context}]" if context else line)


def configure_logging(settings: Settings) -> None:
    """Send every log record to stderr in the configured format and level."""
    hold_secrets(settings.secret_values())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format is LogFormat.JSON else ConsoleFormatter())
    handler.addFilter(_JobContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # RQ installs its own handlers on its loggers; route them through ours instead.
    for name in ("rq", "rq.worker", "rq.scheduler", "rq_scheduler", "rq_scheduler.scheduler"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
