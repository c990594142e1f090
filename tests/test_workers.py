"""Worker-mode building blocks: the deadline board and thread time limits."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest
from flask import Flask

from app.core.limits import SoftTimeLimitExceeded, ThreadTimeLimits, TimeLimitExceeded
from app.processes.supervisor import parse_args, run_process
from app.processes.workers import DeadlineBoard, JsonInlineWorker, JsonThreadWorker, JsonWorker, ThreadPool


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


# --- exit status: a worker that leaves its loop unasked exits non-zero ------------------------------


@pytest.mark.parametrize(
    ("argv", "asked", "expected"),
    [
        (["--mode", "fork"], False, 1),
        (["--mode", "fork"], True, 0),
        (["--mode", "inline"], False, 1),
        (["--mode", "inline"], True, 0),
        (["--mode", "fork", "--burst"], False, 0),
    ],
)
def test_run_process_exits_non_zero_when_the_loop_ends_unasked(
    fake_app: Flask, monkeypatch: pytest.MonkeyPatch, argv: list[str], asked: bool, expected: int
) -> None:
    """It returns 1 when RQ's loop ended without a stop request (RQ quits its loop on an error it
    does not handle), 0 after a stop request or in burst mode, so a process manager restarts it."""

    def work(self: Any, **kwargs: Any) -> bool:
        self.asked_to_stop = asked
        return True

    monkeypatch.setattr(JsonWorker, "work", work)
    monkeypatch.setattr(JsonInlineWorker, "work", work)
    assert run_process(fake_app, parse_args(argv), None) == expected


def test_thread_pool_exits_non_zero_when_a_thread_ends_unasked(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It stops the other threads and returns 1 when one worker thread leaves its loop unasked."""
    ended: list[str] = []

    def work(self: Any, **kwargs: Any) -> bool:
        if self.name.endswith("-t0"):
            return True  # gone at once, unasked
        while not self.asked_to_stop:
            time.sleep(0.05)
        ended.append(self.name)
        return True

    monkeypatch.setattr(JsonThreadWorker, "work", work)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        pool = ThreadPool(app, ["default"], 3, name="pool")
        assert pool.run() == 1
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert sorted(ended) == ["pool-t1", "pool-t2"]
