"""Eager mode, for users' unit tests: calls run inline; results and errors behave as through a worker."""

from __future__ import annotations

import pytest

import tests.jobs  # noqa: F401 - registers the test tasks
from app import tasks
from app.calling.canvas import chain, chord, group
from app.calling.eager import eager
from app.calling.result import TaskError
from app.tasks import add, xsum


def test_a_failing_task_in_eager_mode() -> None:
    """The result is FAILURE; get() raises the error under its own type name; propagate=False returns it."""
    with eager():
        result = tasks.always_fail.delay("boom")
    assert result.state == "FAILURE" and result.ready() and result.failed()
    with pytest.raises(TaskError) as caught:
        result.get()
    assert type(caught.value).__name__ == "RuntimeError" and caught.value.message == "boom"
    assert "Traceback" in (result.traceback or "")
    assert isinstance(result.get(propagate=False), TaskError)


def test_a_raised_failure_carries_the_message_once() -> None:
    """The exception a caller gets reads as the worker raised it: its type is not repeated in its
    message (issue 21: ``UnknownUser('UnknownUser: no user with id 99999')``)."""
    with eager():
        result = tasks.always_fail.delay("no user with id 99999")
    with pytest.raises(TaskError) as caught:
        result.get()
    assert str(caught.value) == "no user with id 99999"
    assert repr(caught.value) == "RuntimeError('no user with id 99999')"
    assert f"{type(caught.value).__name__}: {caught.value}" == "RuntimeError: no user with id 99999"


def test_eager_calls_need_no_redis_and_still_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKS_ALWAYS_EAGER=1 runs calls and workflows inline with no Redis; bad arguments still raise."""
    monkeypatch.setenv("TASKS_ALWAYS_EAGER", "1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert add.delay(2, 3).get() == 5
    assert chain(add.s(2, 2), add.s(3)).apply_async().get() == 7
    assert group(add.s(i, i) for i in range(3)).apply_async().get() == [0, 2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async().get() == 6
    with pytest.raises(ValueError, match=r"args\.y"):
        add.delay(1, "2")
