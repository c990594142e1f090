"""scripts/run's process runner (app/processes/localrun.py): honcho's way of running a Procfile, except that a
process that dies is started again instead of stopping all the others."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.processes.localrun import _simple, read_procfile
from tests.servers import pid_alive

ROOT = Path(__file__).resolve().parent.parent

_SLEEPER = f"{sys.executable} -c \"import os, time; print('up', os.getpid(), flush=True); time.sleep(600)\""
_STUBBORN = (
    f'{sys.executable} -c "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
    "print('up', os.getpid(), flush=True); time.sleep(600)\""
)


class Run:
    """``python -m app.processes.localrun`` on a Procfile of its own, its output collected line by line."""

    def __init__(self, tmp_path: Path, procfile: str, *names: str, grace: float = 30.0) -> None:
        (tmp_path / "Procfile").write_text(procfile)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.processes.localrun",
                "-f",
                str(tmp_path / "Procfile"),
                "--grace",
                str(grace),
                *names,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [m for line in self.lines if (m := re.search(pattern, line))]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {pattern!r} in {timeout} s; output:\n" + "\n".join(self.lines))

    def pid_of(self, label: str, nth: int = 1) -> int:
        return int(self.wait_for(rf"^\S+ {re.escape(label)}\s+\| up (\d+)$", nth)[nth - 1].group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(10)


def test_a_killed_process_is_started_again_and_the_others_run_on(tmp_path: Path) -> None:
    run = Run(tmp_path, f"web: {_SLEEPER}\nworker: {_SLEEPER}\nrelease: true\n", "web", "worker")
    try:
        web, worker = run.pid_of("web.1"), run.pid_of("worker.1")
        os.kill(worker, signal.SIGKILL)
        run.wait_for(r"system\s+\| worker\.1 exited unasked \(killed by SIGKILL\)")
        again = run.pid_of("worker.1", nth=2)
        assert again != worker and pid_alive(again)
        assert pid_alive(web), "the other process was stopped"
        assert not any("release" in line for line in run.lines), "a process not asked for was started"
        os.killpg(run.proc.pid, signal.SIGTERM)
        assert run.proc.wait(15) == 0
        assert not pid_alive(web) and not pid_alive(again)
        run.wait_for(r"web\.1 stopped \(killed by SIGTERM\)")
    finally:
        run.stop()


def test_a_process_that_keeps_dying_waits_longer_each_time(tmp_path: Path) -> None:
    run = Run(
        tmp_path, f"crash: {sys.executable} -c \"print('up 1', flush=True); raise SystemExit(3)\"\n", "crash"
    )
    try:
        pauses = run.wait_for(
            r"crash\.1 exited unasked \(exit status 3\) after \d+ s; starting it again in (\d+) s", 3
        )
        assert [int(m.group(1)) for m in pauses[:3]] == [1, 2, 4]
    finally:
        run.stop()


def test_a_process_deaf_to_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    run = Run(tmp_path, f"stubborn: {_STUBBORN}\n", "stubborn", grace=1.0)
    try:
        pid = run.pid_of("stubborn.1")
        started = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(15) == 0
        assert 0.9 <= time.monotonic() - started < 10
        run.wait_for(r"stubborn\.1 still running 1 s after SIGTERM; sending SIGKILL")
        assert not pid_alive(pid)
    finally:
        run.stop()


def test_an_unknown_process_name_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: true\n")
    done = subprocess.run(
        [sys.executable, "-m", "app.processes.localrun", "-f", str(tmp_path / "Procfile"), "web", "wrker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == f"localrun: {tmp_path / 'Procfile'} has no process named wrker (it has web)\n"


def test_stopping_waits_for_the_whole_process_group(tmp_path: Path) -> None:
    """A process whose children outlive it (a worker's, finishing their jobs) counts as running
    until they are gone: scripts/run stops the embedded Redis only after that."""
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(2)"
    child = f"{sys.executable} -c '{deaf}'"
    run = Run(tmp_path, f"parent: {child} & echo up $$; wait\n", "parent")
    try:
        run.pid_of("parent.1")
        started = time.monotonic()
        os.killpg(run.proc.pid, signal.SIGTERM)
        assert run.proc.wait(15) == 0
        assert time.monotonic() - started >= 1.0, "it returned while the group's child still ran"
    finally:
        run.stop()


def test_read_procfile(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    path.write_text("# comment\n\nweb: python web.py --bind 0.0.0.0:${PORT:-5000}\nworker:python worker.py\n")
    assert read_procfile(path) == {
        "web": "python web.py --bind 0.0.0.0:${PORT:-5000}",
        "worker": "python worker.py",
    }
    path.write_text("web python web.py\n")
    with pytest.raises(ValueError, match="Procfile:1: not a 'name: command' line"):
        read_procfile(path)


def test_the_projects_procfile_reads() -> None:
    assert set(read_procfile(ROOT / "Procfile")) == {
        "web",
        "worker",
        "worker_isolated",
        "scheduler",
        "release",
    }


@pytest.mark.parametrize(
    ("command", "simple"),
    [
        ("python web.py --bind 0.0.0.0:${PORT:-5000}", True),
        ('python -c "import os; print(1)"', True),
        ("python worker.py low --mode fork", True),
        ("echo a; exit 3", False),
        ("a && b", False),
        ("a | b", False),
        ("sleep 1 & wait", False),
        ("echo 'unclosed", False),
    ],
)
def test_a_simple_command_replaces_the_shell(command: str, simple: bool) -> None:
    """A simple command is exec'd (its exit status and signals are its own); a compound one runs in sh."""
    assert _simple(command) is simple
