"""Logging: JSON or console lines carrying the job context."""

from __future__ import annotations

import json
import logging

from app.logs import ConsoleFormatter, JsonFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("tasklane.test", logging.INFO, __file__, 1, "task %s", ("ran",), None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_json_lines_carry_the_job_context() -> None:
    """A JSON line has the time, level, logger, message and the job fields that are set."""
    line = json.loads(JsonFormatter().format(_record(job_id="j1", task="add", duration_ms=1.5)))
    assert line["message"] == "task ran"
    assert (line["level"], line["logger"]) == ("INFO", "tasklane.test")
    assert (line["job_id"], line["task"], line["duration_ms"]) == ("j1", "add", 1.5)
    assert line["ts"].endswith("Z")
    assert "queue" not in line


def test_console_lines_append_the_job_context() -> None:
    """A console line ends with the job fields in brackets, and has none without them."""
    assert (
        ConsoleFormatter().format(_record(job_id="j1", task="add")).endswith("task ran [job_id=j1 task=add]")
    )
    assert ConsoleFormatter().format(_record()).endswith("task ran")
