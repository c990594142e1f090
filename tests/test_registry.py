"""The task registry: one declaration per task, validated when it is made."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.catalogue.registry import (
    REGISTRY,
    QueueName,
    RateLimit,
    RetryPolicy,
    Schedule,
    TaskInput,
    TaskRegistry,
    task,
)
from tests.servers import Starter


class XInput(TaskInput):
    x: int


def test_catalogue_has_platform_tasks() -> None:
    """It loads add and health_check from the catalogue with their declared policy."""
    add = REGISTRY.get("add")
    health = REGISTRY.get("health_check")
    assert add is not None and add.path == "app.tasks.platform.add"
    assert health is not None and health.queue is QueueName.HIGH
    assert health.schedule == Schedule(interval=300)
    assert health.retry.max_retries == 1 and health.retry.countdowns() == [60]
    assert REGISTRY.by_path("app.tasks.platform.add") is add
    assert "health_check" in [s.name for s in REGISTRY.periodic()]


def test_declaration_registers_and_returns_function_unchanged() -> None:
    """It leaves the function callable as a plain function."""
    registry = TaskRegistry(catalogue_module=None)

    @task(input=XInput, queue=QueueName.LOW, rate_limit="10/m", registry=registry)
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    spec = registry.get("double")
    assert double(4) == 8
    assert spec is not None
    assert spec.description == "Twice x."
    assert spec.rate_limit == RateLimit(count=10, period=60, text="10/m")
    described = spec.describe()
    assert described["queue"] == "low"
    assert described["input_schema"]["properties"]["x"]["type"] == "integer"


def test_input_models_forbid_unknown_fields() -> None:
    """It rejects arguments the task does not take."""
    registry = TaskRegistry(catalogue_module=None)

    @task(input=XInput, registry=registry)
    def f(x: int) -> int:
        return x

    spec = registry.get("f")
    assert spec is not None
    with pytest.raises(ValidationError):
        spec.validate({"x": 1, "y": 2})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_limit": "ten per minute"},
        {"rate_limit": "0/s"},
        {"time_limit": 0},
        {"time_limit": 10, "soft_time_limit": 10},
        {"name": "Bad-Name"},
    ],
)
def test_bad_declarations_fail_at_import(kwargs: dict[str, object]) -> None:
    """It refuses a malformed declaration when the module is imported, not when a job runs."""
    registry = TaskRegistry(catalogue_module=None)
    with pytest.raises(ValueError):
        task(registry=registry, **kwargs)(lambda: None)  # type: ignore[arg-type]


def test_a_name_declared_twice_is_an_error() -> None:
    """It refuses two different functions under one name."""
    registry = TaskRegistry(catalogue_module=None)

    def one() -> None: ...
    def two() -> None: ...

    task("same", registry=registry)(one)
    with pytest.raises(ValueError, match="declared twice"):
        task("same", registry=registry)(two)


@pytest.mark.parametrize(
    "kwargs", [{}, {"cron": "0 2 * * *", "interval": 60}, {"interval": 0}, {"cron": "61 * * * *"}]
)
def test_schedule_needs_one_valid_timing(kwargs: dict[str, object]) -> None:
    """It takes exactly one of a valid cron expression or a positive interval."""
    with pytest.raises(ValueError):
        Schedule(**kwargs)  # type: ignore[arg-type]


def test_retry_backoff_is_exponential_and_capped() -> None:
    """It doubles the delay each attempt up to the cap."""
    policy = RetryPolicy(max_retries=6, backoff_base=2, backoff_cap=20)
    assert policy.countdowns() == [2, 4, 8, 16, 20, 20]


def test_retry_policy_selects_exceptions() -> None:
    """It retries what retry_for names, except what dont_retry_for names."""
    policy = RetryPolicy(max_retries=3, retry_for=(OSError,), dont_retry_for=(FileNotFoundError,))
    assert policy.should_retry(ConnectionError())
    assert not policy.should_retry(FileNotFoundError())
    assert not policy.should_retry(ValueError())


@pytest.mark.parametrize(("text", "count", "period"), [("5/s", 5, 1), ("10/m", 10, 60), ("100/h", 100, 3600)])
def test_rate_limit_parses_periods(text: str, count: int, period: int) -> None:
    """It reads per-second, per-minute and per-hour limits."""
    limit = RateLimit.parse(text)
    assert (limit.count, limit.period) == (count, period)


def test_validation_follows_json_rules_for_strict_models() -> None:
    """A strict input model takes ISO 8601 strings for datetimes (as JSON carries them), and still
    refuses a string where a number is declared."""
    from datetime import datetime

    from pydantic import ValidationError

    from app.catalogue.registry import TaskInput, TaskRegistry, task

    class When(TaskInput):
        at: datetime
        count: int

    registry = TaskRegistry(catalogue_module=None)

    @task(input=When, registry=registry)
    def when(at: datetime, count: int) -> None:
        """A task with a datetime."""

    spec = registry.get("when")
    assert spec is not None
    assert spec.validate({"at": "2026-01-02T03:04:05Z", "count": 2}).at.year == 2026  # type: ignore[attr-defined]
    assert spec.validate({"at": datetime(2026, 1, 2), "count": 2}).count == 2  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        spec.validate({"at": "2026-01-02T03:04:05Z", "count": "2"})


@pytest.mark.integration
@pytest.mark.parametrize("process", [["worker.py", "--burst"], ["scheduler.py", "--burst"]])
def test_two_tasks_with_one_name_stop_the_process_with_one_line(process: list[str], start: Starter) -> None:
    """Two tasks called ``add`` stop worker and scheduler at start, with one line naming both."""
    proc = start(*process, TASK_MODULES="tests.jobs,tests.duplicate_jobs")
    assert start.wait(proc, 60) == 2
    lines = [line for line in start.output(proc).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "task 'add' is declared twice" in lines[0]
    assert "app.tasks.platform.add" in lines[0] and "tests.duplicate_jobs.another_add" in lines[0]
