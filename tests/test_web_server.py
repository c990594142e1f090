"""The web process's gunicorn settings (issue 23): the access line, and connections spread over the
workers (each listens on its own SO_REUSEPORT socket)."""

from __future__ import annotations

import ast
import datetime
import os
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.web import DEFAULT_ACCESS_FORMAT, AccessLogger
from tests.servers import GUNICORN, Starter, start_web, wait_for

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


def test_gunicorn_conf_uses_the_lean_access_logger() -> None:
    """gunicorn.conf.py, as gunicorn reads it: the access logger."""
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
    assert cfg.logger_class is AccessLogger
    assert cfg.accesslog == "-"


def _listeners(port: int) -> tuple[set[str], dict[int, int]]:
    """The listening TCP sockets on ``port`` (their inodes, from /proc/net), and per process how
    many of them it holds (from its file descriptors)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(fields[9])
    held: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        count = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        if count:
            held[int(proc.name)] = count
    return inodes, held


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("reuse_port", ["1", "0"])
def test_each_worker_listens_on_its_own_socket_unless_turned_off(start: Starter, reuse_port: str) -> None:
    """WEB_REUSE_PORT=1 (the default): each of the two gunicorn workers holds a listening socket of
    its own on the port (SO_REUSEPORT: the kernel spreads new connections over them), the master
    none; 0: one shared socket, bound by the master and inherited by the workers."""
    base = start_web(start, WEB_CONCURRENCY="2", WEB_REUSE_PORT=reuse_port)
    port = int(base.rsplit(":", 1)[1])
    sockets, holders = (2, 2) if reuse_port == "1" else (1, 3)
    wait_for(lambda: len(_listeners(port)[1]) == holders, 10, message=f"port {port}: {_listeners(port)}")
    inodes, held = _listeners(port)
    assert len(inodes) == sockets and set(held.values()) == {1}, (inodes, held)
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_bad_web_reuse_port_stops_the_web_process_with_one_line(start: Starter) -> None:
    proc = start(*GUNICORN, "127.0.0.1:0", WEB_REUSE_PORT="yes")
    assert start.wait(proc, timeout=20) == 2
    assert "web: configuration error: WEB_REUSE_PORT: must be a whole number, got 'yes'" in start.output(proc)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_second_web_process_on_a_taken_port_exits_saying_so(start: Starter) -> None:
    """The Procfile's web line on a port a running one holds: it stops with 'in use', it never shares
    the port (a second service once answered half of the first one's requests)."""
    base = start_web(start)
    port = base.rsplit(":", 1)[1]
    second = start(*GUNICORN, f"127.0.0.1:{port}", WEB_CONCURRENCY="1")
    assert start.wait(second, timeout=30) != 0
    assert f"web: cannot listen at 127.0.0.1:{port}: address in use" in start.output(second)
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
