"""Platform tasks: the smoke test and the health check."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from app import health
from app.registry import QueueName, RetryPolicy, Schedule, TaskInput, task
from app.runtime import runtime
from app.services import services


def _integral(value: float) -> float | int:
    return int(value) if value.is_integer() else value


#: A finite JSON number; whole numbers stay integers (1 + 2 is 3, not 3.0).
Number = Annotated[float, Field(allow_inf_nan=False), AfterValidator(_integral)]


class AddInput(TaskInput):
    """Two numbers."""

    x: Number = Field(description="first addend")
    y: Number = Field(description="second addend")


@task(input=AddInput, queue=QueueName.DEFAULT, time_limit=30)
def add(x: float, y: float) -> float:
    """Return x + y: the smoke-test task and the building block of workflow examples."""
    return x + y


class XsumInput(TaskInput):
    """A list of numbers."""

    numbers: list[Number] = Field(max_length=100_000, description="the numbers to add up")


@task(input=XsumInput, queue=QueueName.DEFAULT, time_limit=30)
def xsum(numbers: list[float]) -> float:
    """Return the sum of a list of numbers: the usual callback of a chord of adds."""
    return sum(numbers)


@task(
    queue=QueueName.HIGH,
    time_limit=120,
    retry=RetryPolicy(max_retries=1, backoff_base=60, backoff_cap=60, jitter=False),
    schedule=Schedule(interval=300),
    result_ttl=3600,
)
def health_check() -> dict[str, Any]:
    """Ping Redis, the database, worker heartbeats and HEALTH_CHECK_URLS; store the report for /readyz."""
    rt = runtime()
    report = health.run_checks(rt, services().http)
    health.store_report(rt.redis, report)
    return report
