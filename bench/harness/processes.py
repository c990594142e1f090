"""Processes: redis-server, workers, gunicorn (every one stopped in a finally), and /proc readings."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.common import ROOT, BenchError, log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_table() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc)."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            table[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (from /proc/net; 0 where there is none)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return len(inodes)


def wait_listening(port: int, count: int, timeout: float = 15) -> int:
    """Wait until ``count`` sockets listen on ``port`` (gunicorn's workers each bind their own with
    reuse_port: a load started while one is still booting sends every keep-alive connection to the
    others); returns how many did (fewer after ``timeout``: one shared socket, say)."""
    deadline = time.monotonic() + timeout
    found = listening_sockets(port)
    while found < count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = listening_sockets(port)
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for child, parent in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in table or current == pid:
            found.append(current)
        todo.extend(children.get(current, []))
    return found


def status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), or None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_kb(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users), from smaps_rollup."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_memory(pid: int) -> dict[str, Any]:
    """VmRSS, PSS and VmHWM of ``pid`` and its descendants, in MiB, summed and per process.

    Summed RSS counts the copy-on-write pages a forked child shares with its parent twice;
    summed PSS does not.
    """
    per: list[dict[str, Any]] = []
    for p in descendants(pid):
        rss, hwm, pss = status_kb(p, "VmRSS"), status_kb(p, "VmHWM"), pss_kb(p)
        if rss is None:
            continue
        name = "?"
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{p}/comm").read_text().strip()
        per.append(
            {
                "pid": p,
                "name": name,
                "rss_mib": rss / 1024,
                "pss_mib": (pss or 0) / 1024,
                "hwm_mib": (hwm or 0) / 1024,
            }
        )
    return {
        "rss_mib": sum(x["rss_mib"] for x in per),
        "pss_mib": sum(x["pss_mib"] for x in per),
        "hwm_mib": sum(x["hwm_mib"] for x in per),
        "largest_rss_mib": max((x["rss_mib"] for x in per), default=0.0),
        "processes": per,
    }


class Proc:
    """A child process in its own session, logging to a file; stop() kills stragglers."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return ""

    def stop(self, grace: float = 15.0, signum: int = signal.SIGTERM) -> None:
        """Ask politely (``signum`` to the main process), then SIGKILL the whole tree."""
        try:
            if self.popen.poll() is None:
                tree = descendants(self.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signum)
                if self.wait(grace) is None:
                    name = signal.Signals(signum).name
                    log(f"{self.name}: still running {grace:.0f} s after {name}; killing")
                    tree = sorted(set(tree) | set(descendants(self.pid)))
                    for pid in tree:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    self.wait(10)
                # Work horses or pool children that outlived their parent.
                for pid in tree:
                    if pid != self.pid and Path(f"/proc/{pid}").exists():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        finally:
            self._log.close()


class RedisServer:
    """The benchmark's own redis-server on a free loopback port: nothing kept on disk."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = Proc("redis-server", args, dict(os.environ), self.directory / "redis.stdout")
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return self
            time.sleep(0.05)
        raise BenchError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=10)


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat), in percent."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def busy_processes() -> list[str]:
    """Other processes that look like test or benchmark runs (they share the CPUs)."""
    mine = set(descendants(os.getpid()))
    found = []
    for pid in process_table():
        if pid in mine:
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if re.search(r"pytest|worker\.py|celery|gunicorn|wrk |scripts/test", cmd):
                found.append(f"{pid}: {cmd.strip()[:120]}")
    return found


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
