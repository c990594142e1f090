"""Logging: JSON or console lines carrying the job context."""

from __future__ import annotations

import json
import logging

from app.ops.logs import ConsoleFormatter, JsonFormatter


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


def test_lines_written_while_a_job_runs_carry_its_context(app: object, tmp_path: object) -> None:
    """A line logged by a task (not by the platform) carries job id, task, queue and attempt."""
    import io

    from flask import Flask

    from app.catalogue.registry import REGISTRY
    from app.core.dispatch import enqueue
    from app.foundation.config import Settings
    from app.ops.logs import configure_logging
    from tests.servers import drain

    assert isinstance(app, Flask)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(Settings.from_env({"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}))
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    spec = REGISTRY.get("logs_a_line")
    assert spec is not None
    job = enqueue(
        spec, spec.validate({}), app.extensions["tasklane"].redis, default_result_ttl=60, failure_ttl=60
    )
    try:
        drain(app)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    lines = [json.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{")]
    mine = [x for x in lines if x["message"] == "hello from the task"]
    assert mine and mine[0]["job_id"] == job.id
    assert (mine[0]["task"], mine[0]["queue"], mine[0]["attempt"]) == ("logs_a_line", "default", 1)
