"""Platform tasks: the smoke test and the health check."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.catalogue.registry import QueueName, RetryPolicy, Schedule, TaskInput, task
from app.foundation.runtime import runtime
from app.ops import health
from app.services import services

#: Largest magnitude of a number add and xsum take. Sums of up to 100,000 of them (xsum's
#: longest list) stay far below the largest float (1.8e308), so no sum is ever infinite.
NUMBER_LIMIT = 1e300


def _number(value: object) -> int | float:
    """A JSON number as it came: an integer stays an exact int, a fraction stays a float.

    Nothing is coerced: a string ("2") or a boolean (true) is refused, as the schema's
    ``"type": "number"`` says; so are NaN, the infinities and magnitudes over NUMBER_LIMIT
    (bounding the inputs is what keeps every result finite: 1e308 + 1e308 would be inf). No
    float becomes an int: an integer is exact only if it was sent as one (2**53 + 1 is,
    9007199254740993.0 is not), and 1e300 must not turn into a 301-digit integer.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number_type", "Input should be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    if abs(value) > NUMBER_LIMIT:
        raise PydanticCustomError(
            "number_range", "Input should be between -{limit} and {limit}", {"limit": NUMBER_LIMIT}
        )
    return value


#: A number for add and xsum: what its JSON Schema publishes is exactly what is accepted.
Number = Annotated[
    int | float,
    PlainValidator(_number),
    WithJsonSchema({"type": "number", "minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT}),
]


class AddInput(TaskInput):
    """Two numbers."""

    x: Number = Field(description="first addend")
    y: Number = Field(description="second addend")


@task(input=AddInput, queue=QueueName.DEFAULT, time_limit=30)
def add(x: int | float, y: int | float) -> int | float:
    """Return x + y: the smoke-test task and the building block of workflow examples."""
    return x + y


class XsumInput(TaskInput):
    """A list of numbers."""

    numbers: list[Number] = Field(max_length=100_000, description="the numbers to add up")


@task(input=XsumInput, queue=QueueName.DEFAULT, time_limit=30)
def xsum(numbers: list[int | float]) -> int | float:
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
