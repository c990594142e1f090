"""The web process's gunicorn settings (issue 23): the access line, and connections spread over the
workers (each listens on its own SO_REUSEPORT socket)."""

from __future__ import annotations

import ast
import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.web import DEFAULT_ACCESS_FORMAT, AccessLogger
from tests.servers import GUNICORN, Starter, start_web

ROOT = Path(__file__).resolve().parents[1]


class _Response:
    status = "202 ACCEPTED"
    sent = 123
    headers = [("Content-Type", "application/json"), ("Location", "/api/v1/jobs/x")]


class _Request:
    headers = [("HOST", "127.0.0.1:5000"), ("USER-AGENT", "wrk")]


def _environ(**extra: str) -> dict[str, Any]:
    return {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/api/v1/tasks/add?x=1",
        "PATH_INFO": "/api/v1/tasks/add",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": "wrk",
        **extra,
    }


def _line(logger: Logger, environ: dict[str, Any]) -> str:
    atoms = logger.atoms(_Response(), _Request(), environ, datetime.timedelta(microseconds=1500))
    atoms["t"] = "[07/Dec/2026:17:00:00 +0000]"  # the same second for both
    return str(logger.cfg.access_log_format % logger.atoms_wrapper_class(atoms))


@pytest.mark.parametrize(
    "environ",
    [_environ(), _environ(HTTP_REFERER="https://example.test/", HTTP_AUTHORIZATION="Basic dXNlcjpwdw==")],
    ids=["plain", "referer and basic auth"],
)
def test_the_access_line_is_gunicorns_own(environ: dict[str, Any]) -> None:
    """The default format's line is the one gunicorn's own logger writes, value for value."""
    cfg = Config()
    assert cfg.access_log_format == DEFAULT_ACCESS_FORMAT
    ours, theirs = AccessLogger(cfg), Logger(cfg)
    assert _line(ours, environ) == _line(theirs, environ)
    assert _line(ours, environ).startswith("10.0.0.7 - ")
    assert '"POST /api/v1/tasks/add?x=1 HTTP/1.1" 202 123' in _line(ours, environ)


def test_another_access_format_gets_every_atom() -> None:
    """A custom format (here: a response header and the pid) is served by gunicorn's full set."""
    cfg = Config()
    cfg.set("access_log_format", "%({location}o)s %(p)s %(D)s")
    line = _line(AccessLogger(cfg), _environ())
    assert line.startswith("/api/v1/jobs/x <")
    assert line.endswith(" 1500")


def test_gunicorn_conf_uses_the_lean_access_logger_on_one_shared_socket() -> None:
    """gunicorn.conf.py, as gunicorn reads it: the logger, and no SO_REUSEPORT (with it, a second
    service started on the same port by mistake bound it too and took half the requests)."""
    # Its constant settings, read without running it (it configures logging when run).
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    namespace = {
        target.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    cfg = Config()
    for name in ("logger_class", "accesslog"):
        cfg.set(name, namespace[name])
    assert namespace.get("reuse_port", False) is False
    assert cfg.logger_class is AccessLogger
    assert cfg.accesslog == "-"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_second_web_process_on_a_taken_port_exits_saying_so(start: Starter) -> None:
    """The Procfile's web line on a port a running one holds: it stops with 'in use', it never shares
    the port (a second service once answered half of the first one's requests)."""
    base = start_web(start)
    port = base.rsplit(":", 1)[1]
    second = start(*GUNICORN, f"127.0.0.1:{port}", WEB_CONCURRENCY="1")
    assert start.wait(second, timeout=30) != 0
    assert "in use" in start.output(second).lower()
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
