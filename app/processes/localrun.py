"""``python -m app.processes.localrun [-f Procfile] NAME ...``: the Procfile's processes on this machine.

What ``scripts/run`` starts. It runs like ``honcho start`` (each process in its own process
group, its output prefixed with the time and its name, SIGINT or SIGTERM stops them all) with
one difference: honcho stops every process as soon as one exits, so a worker killed by the OOM
killer or ``kill -9`` took the web process, the scheduler and the other workers down with it,
and nothing came back. Heroku, Dokku and systemd restart what dies; so does this. A process
that exits without a stop request is started again after 1 s, the pause doubling up to 30 s
while it keeps dying within a minute of its start, with one line each time.

Stopping: SIGTERM to each process group (a worker finishes the job in hand; a second SIGINT or
SIGTERM is passed on, which stops the jobs in hand), then SIGKILL to any group still running
after ``--grace`` seconds (30, as Heroku gives). Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

_ENTRY = re.compile(r"^([A-Za-z0-9_-]+):\s*(\S.*)$")

#: Seconds before a dead process is started again: the first pause, the longest, and how long a
#: process must have run for its next death to count as a new one (the pause starts over).
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0
STEADY_AFTER = 60.0
TICK = 0.1


def read_procfile(path: Path) -> dict[str, str]:
    """The Procfile's process types, in order: ``{name: command}``."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = _ENTRY.match(line)
        if found is None:
            raise ValueError(f"{path}:{number}: not a 'name: command' line: {line!r}")
        entries[found.group(1)] = found.group(2)
    return entries


@dataclass
class Process:
    """One process type of the Procfile, and the process that runs it now (if any)."""

    name: str
    command: str
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    pause: float = FIRST_PAUSE
    restart_at: float | None = None
    stop_sent: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}.1"


class Runner:
    """Starts the processes, restarts those that die, stops them all on request."""

    def __init__(self, processes: list[Process], out: IO[str], grace: float) -> None:
        self.processes = processes
        self.out = out
        self.grace = grace
        self.width = max(len(p.label) for p in [*processes, Process("system", "")])
        self.lock = threading.Lock()
        self.stopping_since: float | None = None
        self.signals = 0

    def say(self, label: str, text: str) -> None:
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {label:<{self.width}} | {text}\n")
            self.out.flush()

    def start(self, process: Process) -> None:
        # A simple command replaces the shell (exec), so that its exit status is the process's own.
        command = f"exec {process.command}" if _simple(process.command) else process.command
        popen = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        process.popen, process.started_at = popen, time.monotonic()
        process.restart_at, process.stop_sent = None, False
        self.say("system", f"{process.label} started (pid {popen.pid}): {process.command}")
        threading.Thread(target=self._relay, args=(process.label, popen), daemon=True).start()

    def _relay(self, label: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in iter(popen.stdout.readline, b""):
            self.say(label, raw.decode(errors="replace").rstrip("\n"))

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """SIGINT/SIGTERM: stop every process; a second one is passed on to them."""
        self.signals += 1
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            return
        for process in self.processes:
            self._signal(process, signal.SIGTERM)

    def _signal(self, process: Process, signum: int) -> None:
        if process.popen is not None and (process.popen.poll() is None or _group_alive(process.popen.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signum)

    def _died(self, process: Process, code: int) -> None:
        """A process exited unasked: start it again after a pause (longer while it keeps dying)."""
        ran = time.monotonic() - process.started_at
        if ran >= STEADY_AFTER:
            process.pause = FIRST_PAUSE
        self.say("system", f"{process.label} exited unasked ({_describe(code)}) after {ran:.0f} s; "
                           f"starting it again in {process.pause:.0f} s")  # fmt: skip
        process.restart_at = time.monotonic() + process.pause
        process.pause = min(process.pause * 2, LONGEST_PAUSE)
        process.popen = None

    def run(self) -> int:
        for process in self.processes:
            self.start(process)
        while True:
            now = time.monotonic()
            if self.stopping_since is not None:
                for process in self.processes:
                    if not process.stop_sent:
                        process.stop_sent = True
                        self._signal(process, signal.SIGTERM)
                # Stopped once its whole process group is gone: a worker's children finish their jobs.
                running = [
                    p
                    for p in self.processes
                    if p.popen is not None and (p.popen.poll() is None or _group_alive(p.popen.pid))
                ]
                if not running:
                    for process in self.processes:
                        if process.popen is not None:
                            self.say(
                                "system", f"{process.label} stopped ({_describe(process.popen.returncode)})"
                            )
                    return 0
                if now - self.stopping_since > self.grace:
                    for process in running:
                        self.say("system", f"{process.label} still running {self.grace:.0f} s after SIGTERM; "
                                           "sending SIGKILL")  # fmt: skip
                        self._signal(process, signal.SIGKILL)
                    self.grace = float("inf")
            else:
                for process in self.processes:
                    if process.popen is not None and (code := process.popen.poll()) is not None:
                        self._died(process, code)
                    elif (
                        process.popen is None and process.restart_at is not None and now >= process.restart_at
                    ):
                        self.start(process)
            time.sleep(TICK)


def _simple(command: str) -> bool:
    """True for one command with its arguments (no ``;``, ``&``, ``|`` or brackets outside quotes)."""
    try:
        tokens = list(shlex.shlex(command, posix=True, punctuation_chars=True))
    except ValueError:
        return False
    return "\n" not in command and not any(token and set(token) <= set(";&|()") for token in tokens)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # PermissionError: alive, owned by someone else
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _describe(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.processes.localrun",
        description="Run Procfile processes; restart any that exits unasked; stop all on SIGINT/SIGTERM.",
    )
    parser.add_argument("names", nargs="+", help="process types of the Procfile to run")
    parser.add_argument("-f", "--procfile", default="Procfile", type=Path)
    parser.add_argument("--grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)
    try:
        entries = read_procfile(args.procfile)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"localrun: {exc}\n")
    unknown = [name for name in args.names if name not in entries]
    if unknown:
        parser.exit(2, f"localrun: {args.procfile} has no process named {', '.join(unknown)} "
                       f"(it has {', '.join(entries)})\n")  # fmt: skip
    runner = Runner(
        [Process(name, entries[name]) for name in dict.fromkeys(args.names)], sys.stdout, args.grace
    )
    signal.signal(signal.SIGINT, runner.request_stop)
    signal.signal(signal.SIGTERM, runner.request_stop)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
