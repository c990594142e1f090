"""The worker command line and the supervisor."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from app.processes import supervisor
from app.processes.supervisor import Mode, parse_args


def test_default_queues_in_priority_order() -> None:
    """It listens on high, default, low when no queue is named."""
    args = parse_args([])
    assert args.queues == ["high", "default", "low"]
    assert (args.burst, args.concurrency) == (False, min(os.cpu_count() or 1, 64))


def test_named_queues_keep_their_order() -> None:
    """It keeps the order the operator gave."""
    assert parse_args(["low", "high", "--burst", "--concurrency", "3"]).queues == ["low", "high"]


@pytest.mark.parametrize("argv", [["urgent"], ["--concurrency", "0"], ["--concurrency", "500"]])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """It exits 2 with a line naming what is wrong."""
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("worker.py: ")
    assert err.count("\n") == 1


def test_mode_defaults_to_pooled_and_threads_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """It runs the pooled worker unless told otherwise, and refuses a silly thread count."""
    assert parse_args([]).mode is Mode.POOLED
    assert parse_args(["--mode", "threads", "--threads", "16"]).threads == 16
    with pytest.raises(SystemExit):
        parse_args(["--mode", "threads", "--threads", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--mode", "green"])


def _reap(pid: int, timeout: float = 10.0) -> int | None:
    """The wait status of child ``pid`` once it ended, or None (then it is killed) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _waits_for_a_signal(*_args: Any, **_kwargs: Any) -> int:
    """A worker process that runs until a signal ends it (the stand-in for run_process)."""
    while True:
        signal.pause()


def test_a_child_forked_after_a_stop_began_is_told_to_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop that comes while a child is being replaced (a recycled child's successor, say) reaches
    the new child: without it, the child runs on and the supervisor waits for it for ever."""
    monkeypatch.setattr(supervisor, "run_process", _waits_for_a_signal)
    sup = supervisor.Supervisor(None, parse_args(["default", "--concurrency", "1"]))  # type: ignore[arg-type]
    sup.stopping = True
    sup._spawn(1)
    (pid,) = sup.children
    status = _reap(pid)
    assert status is not None, "the child forked during a stop was never told to stop"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_a_stop_during_the_restart_pause_forks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead child's slot is refilled after a pause; a stop that comes during the pause cancels it."""
    monkeypatch.setattr(supervisor, "run_process", _waits_for_a_signal)
    sup = supervisor.Supervisor(None, parse_args(["default", "--concurrency", "1"]))  # type: ignore[arg-type]

    def stop_comes(_seconds: float) -> None:
        sup.stopping = True

    monkeypatch.setattr(supervisor.time, "sleep", stop_comes)
    sup._restart(1)
    assert sup.children == {}


def test_a_stop_signal_during_a_fork_is_handled_once_the_child_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM arriving between fork and the child's record is held back, then handled: the new
    child gets the warm shutdown like the others."""
    monkeypatch.setattr(supervisor, "run_process", _waits_for_a_signal)
    sup = supervisor.Supervisor(None, parse_args(["default", "--concurrency", "1"]))  # type: ignore[arg-type]
    real_fork = os.fork

    def fork_then_signal() -> int:
        pid = real_fork()
        if pid:
            os.kill(os.getpid(), signal.SIGTERM)  # the stop comes now, before the child is recorded
        return pid

    monkeypatch.setattr(supervisor.os, "fork", fork_then_signal)
    previous = signal.signal(signal.SIGTERM, sup._stop)
    try:
        sup._spawn(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    (pid,) = sup.children
    status = _reap(pid)
    assert sup.stopping
    assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
