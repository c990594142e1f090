"""The worker command line and the supervisor."""

from __future__ import annotations

import os

import pytest

from app.supervisor import Mode, parse_args


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
