"""Celery-style calls from Python: the seeds' calling code, with only its imports changed.

Real Redis, real worker and scheduler processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask

import tests.jobs  # noqa: F401 - registers the test tasks, as TASK_MODULES does in the processes
from app import tasks
from app.calling.calls import InvalidTaskArguments
from app.calling.canvas import chain, chord, group
from app.calling.result import AsyncResult, TaskError, TaskRevokedError
from app.tasks import add, xsum
from tests.servers import Starter, start_scheduler, start_worker

pytestmark = pytest.mark.integration

# The test catalogue's tasks, as a user's code imports its own: ``from app.tasks import ...``.
always_fail, context_aware, slow_touch = tasks.always_fail, tasks.context_aware, tasks.slow_touch


@pytest.fixture
def worker(start: Starter, rconn: redis.Redis, app: Flask) -> Iterator[None]:
    """An inline worker and the scheduler, and this test's app context (its Redis) for the calls."""
    start_worker(start, rconn, "high", "default", "low", "--mode", "inline")
    start_scheduler(start, rconn)
    with app.app_context():
        yield


@pytest.mark.timeout(90)
def test_the_seeds_calling_patterns(worker: None, tmp_path: Path) -> None:
    """delay/get, apply_async with countdown, AsyncResult(id) with ready/successful/info, as in the seeds."""
    result = add.delay(4, 5)
    assert result.get(timeout=30) == 9

    later = add.apply_async(args=(2, 3), countdown=1)
    polled = AsyncResult(later.id)
    assert polled.state in ("PENDING", "SUCCESS")
    assert later.get(timeout=30) == 5
    assert polled.ready() and polled.successful() and not polled.failed()
    assert polled.info == 5 and polled.result == 5 and polled.status == "SUCCESS"

    running = slow_touch.delay(str(tmp_path / "m"), 1.0, 4)
    assert running.get(timeout=30) == str(tmp_path / "m")
    assert (tmp_path / "m").read_text() == "ran"
    assert AsyncResult(running.id).info == str(tmp_path / "m")

    assert add(2, 2) == 4  # a direct call runs here and now


@pytest.mark.timeout(60)
def test_a_failure_is_raised_with_its_remote_type_and_traceback(worker: None) -> None:
    """get() raises the task's failure, named after the remote type, with the worker's traceback;
    with propagate=False it returns it; info is the error."""
    result = always_fail.delay("boom")
    with pytest.raises(TaskError) as caught:
        result.get(timeout=30)
    assert type(caught.value).__name__ == "RuntimeError"
    assert caught.value.message == "boom"
    assert "Traceback" in (caught.value.traceback or "")
    assert isinstance(result.get(timeout=5, propagate=False), TaskError)
    assert result.failed() and isinstance(result.info, TaskError)


def test_a_bad_call_raises_a_value_error_naming_each_field_and_enqueues_nothing(app: Flask) -> None:
    """Positional arguments map to fields in order; wrong types, missing and extra fields are named."""
    with app.app_context():
        queued = app.extensions["tasklane"].redis.llen("rq:queue:default")
        with pytest.raises(ValueError, match=r"args\.y"):
            add.delay(1, "2")
        with pytest.raises(InvalidTaskArguments) as caught:
            add.delay()
        assert {e["field"] for e in caught.value.errors} == {"args.x", "args.y"}
        with pytest.raises(InvalidTaskArguments, match="positional"):
            add.delay(1, 2, 3)
        with pytest.raises(InvalidTaskArguments, match="options"):
            add.apply_async((1, 2), countdown=-5)
        assert app.extensions["tasklane"].redis.llen("rq:queue:default") == queued


@pytest.mark.timeout(90)
def test_chains_groups_and_chords_as_celery_builds_them(worker: None) -> None:
    """chain prepends each result; group gives the list; chord passes it on; group-then-task is a chord."""
    assert chain(add.s(2, 2), add.s(3)).apply_async().get(timeout=30) == 7
    assert (add.s(1, 1) | add.s(10)).apply_async().get(timeout=30) == 12
    assert group(add.s(i, i) for i in range(4)).apply_async().get(timeout=30) == [0, 2, 4, 6]
    assert chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async().get(timeout=30) == 6
    assert chord(group(add.s(3, 3), add.s(4, 4)))(xsum.s()).get(timeout=30) == 14
    assert chain(add.s(1, 1), group(add.s(1), add.s(2)), xsum.s()).apply_async().get(timeout=30) == 7
    assert chain(add.s(1, 1), add.si(5, 5)).apply_async().get(timeout=30) == 10


@pytest.mark.timeout(90)
def test_a_failed_step_fails_the_workflow_result(worker: None) -> None:
    """The final result raises the failing step's error, not a bare revoke."""
    flow = chain(add.s(1, 1), always_fail.si("step two broke"), add.s(1)).apply_async()
    with pytest.raises(TaskError) as caught:
        flow.get(timeout=30)
    assert not isinstance(caught.value, TaskRevokedError)
    assert caught.value.message == "step two broke"
    assert flow.failed()


@pytest.mark.timeout(90)
def test_a_task_sees_its_context_and_falls_back_on_its_last_attempt(worker: None, tmp_path: Path) -> None:
    """current_task() gives the job id, attempt and retries left (Celery's self.request.retries)."""
    runs = tmp_path / "runs"
    result = context_aware.delay(str(runs), 5)
    value = result.get(timeout=40)
    assert value == {"job_id": result.id, "attempt": 3, "retries": 2, "left": 0, "last": True}
    assert runs.read_text().split() == ["1", "2", "3"]


@pytest.mark.timeout(60)
def test_revoke_and_forget(worker: None) -> None:
    """revoke() cancels a waiting job (get raises TaskRevokedError); forget() deletes it."""
    waiting = add.apply_async((1, 1), countdown=30)
    waiting.revoke()
    assert waiting.state == "REVOKED"
    with pytest.raises(TaskRevokedError):
        waiting.get(timeout=5)
    waiting.forget()
    assert AsyncResult(waiting.id).state == "PENDING"  # an unknown id, as Celery answers


@pytest.mark.timeout(30)
def test_get_times_out(app: Flask) -> None:
    """With no worker, get(timeout) raises TimeoutError after about that long."""
    import time

    with app.app_context():
        result = add.delay(1, 1)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            result.get(timeout=1.5)
        assert 1.4 <= time.monotonic() - started < 4
