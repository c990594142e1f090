"""Worker-mode building blocks: the deadline board and thread time limits."""

from __future__ import annotations

import threading
import time

from app.limits import SoftTimeLimitExceeded, ThreadTimeLimits, TimeLimitExceeded
from app.workers import DeadlineBoard


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
