"""The worker command line."""

from __future__ import annotations

import threading
import time

import pytest

from app.limits import SoftTimeLimitExceeded, ThreadTimeLimits, TimeLimitExceeded
from app.supervisor import Mode, parse_args
from app.workers import DeadlineBoard


def test_default_queues_in_priority_order() -> None:
    """It listens on high, default, low when no queue is named."""
    args = parse_args([])
    assert args.queues == ["high", "default", "low"]
    assert (args.burst, args.concurrency) == (False, 1)


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


def test_mode_defaults_to_fork_and_threads_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """It runs the forking worker unless told otherwise, and refuses a silly thread count."""
    assert parse_args([]).mode is Mode.FORK
    assert parse_args(["--mode", "threads", "--threads", "16"]).threads == 16
    with pytest.raises(SystemExit):
        parse_args(["--mode", "threads", "--threads", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--mode", "green"])


def test_thread_time_limits_raise_in_the_job_thread() -> None:
    """It raises SoftTimeLimitExceeded, then TimeLimitExceeded, inside a worker thread."""
    seen: list[tuple[str, float]] = []

    def job() -> None:
        started = time.monotonic()
        try:
            with ThreadTimeLimits(0.6, soft_timeout=0.2):
                try:
                    while True:
                        time.sleep(0.01)
                except SoftTimeLimitExceeded:
                    seen.append(("soft", time.monotonic() - started))
                    while True:
                        time.sleep(0.01)
        except TimeLimitExceeded:
            seen.append(("hard", time.monotonic() - started))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(3)
    assert [name for name, _ in seen] == ["soft", "hard"]
    assert 0.15 <= seen[0][1] <= 0.45
    assert 0.55 <= seen[1][1] <= 0.9


def test_thread_time_limits_do_nothing_after_the_job() -> None:
    """It never raises into a thread whose job ended in time."""
    outcome: list[str] = []

    def job() -> None:
        with ThreadTimeLimits(0.2, soft_timeout=0.1):
            pass
        time.sleep(0.4)
        outcome.append("survived")

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(2)
    assert outcome == ["survived"]


def test_deadline_board_reports_overdue_jobs_per_slot() -> None:
    """It reports the jobs of the given slots whose deadline has passed, and forgets cleared ones."""
    board = DeadlineBoard(4)
    now = time.time()
    board.set(0, "job-a", now - 1)
    board.set(1, "job-b", now + 60)
    board.set(3, "job-c", now - 1)
    assert board.overdue(range(0, 2), now) == ["job-a"]
    assert board.overdue(range(2, 4), now) == ["job-c"]
    board.clear(0)
    assert board.overdue(range(0, 4), now) == ["job-c"]
