"""Task inputs take what their published JSON Schema says, no more: strict types, exact integers,
finite results (add and xsum, and the strict TaskInput base)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError

from app.catalogue.registry import REGISTRY, TaskInput
from app.tasks.platform import NUMBER_LIMIT
from tests.servers import catalogue, drain
from tests.test_api import assert_error


def run_add(app: Flask, client: FlaskClient, auth: dict[str, str], x: Any, y: Any) -> Any:
    """Enqueue add(x, y) over the API, run it, and return its result as a client reads it."""
    response = client.post("/api/v1/tasks/add", json={"args": {"x": x, "y": y}}, headers=auth)
    assert response.status_code == 202, response.json
    drain(app)
    job = client.get(response.headers["Location"], headers=auth).json
    assert job["state"] == "SUCCESS", job
    return job["result"]


@pytest.mark.parametrize("bad", ["2", "two", True, False, None, [1], {"n": 1}])
def test_add_refuses_what_is_not_a_json_number(client: FlaskClient, auth: dict[str, str], bad: Any) -> None:
    """It answers 422 for a string or a boolean where the schema says number (no coercion)."""
    response = client.post("/api/v1/tasks/add", json={"args": {"x": bad, "y": 1}}, headers=auth)
    assert response.status_code == 422
    details = assert_error(response.json, "invalid_arguments")["details"]
    assert [d["field"] for d in details] == ["args.x"]


def test_xsum_refuses_a_string_among_the_numbers(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/tasks/xsum", json={"args": {"numbers": [1, "2", True]}}, headers=auth)
    assert response.status_code == 422
    fields = [d["field"] for d in assert_error(response.json, "invalid_arguments")["details"]]
    assert fields == ["args.numbers.1", "args.numbers.2"]


def test_integers_stay_exact(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """It keeps integers beyond 2**53 exact, and an int an int."""
    big = 2**53 + 1
    assert run_add(app, client, auth, big, 2) == big + 2
    result = run_add(app, client, auth, 10**200 + 1, 10**200)
    assert result == 2 * 10**200 + 1 and isinstance(result, int)
    assert run_add(app, client, auth, 2, 3) == 5


def test_floats_stay_floats_and_results_stay_finite(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It never turns a float into an int (1e300 is no 301-digit integer) and refuses what would overflow."""
    result = run_add(app, client, auth, 1e300, 1e300)
    assert result == 2e300 and isinstance(result, float)
    assert run_add(app, client, auth, 1.5, 2) == 3.5
    for x in (1e308, -1e301, 10**301):
        response = client.post("/api/v1/tasks/add", json={"args": {"x": x, "y": x}}, headers=auth)
        assert response.status_code == 422
        assert {d["field"] for d in response.json["error"]["details"]} == {"args.x", "args.y"}


def schema_allows(schema: dict[str, Any], value: Any) -> bool:
    """What a client reads from a ``{"type": "number", "minimum", "maximum"}`` schema."""
    assert set(schema) <= {"type", "minimum", "maximum", "description", "title"}, schema
    assert schema["type"] == "number"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and schema["minimum"] <= value <= schema["maximum"]


@pytest.mark.parametrize(
    "value", [0, -7, 2**60, 1.5, NUMBER_LIMIT, -NUMBER_LIMIT, 1e301, 10**301, "3", True, None, [2]]
)
def test_the_published_schema_is_what_is_accepted(
    client: FlaskClient, auth: dict[str, str], value: Any
) -> None:
    """It accepts a value for add and xsum exactly when the catalogue's input_schema allows it."""
    tasks = {name: t["input_schema"] for name, t in catalogue(client, auth).items()}
    x_schema = tasks["add"]["properties"]["x"]
    item_schema = tasks["xsum"]["properties"]["numbers"]["items"]
    assert item_schema == {k: v for k, v in x_schema.items() if k not in ("description", "title")}
    expected = 202 if schema_allows(x_schema, value) else 422
    added = client.post("/api/v1/tasks/add", json={"args": {"x": value, "y": 0}}, headers=auth)
    summed = client.post("/api/v1/tasks/xsum", json={"args": {"numbers": [value]}}, headers=auth)
    assert (added.status_code, summed.status_code) == (expected, expected)


def test_task_inputs_are_strict_by_default() -> None:
    """A TaskInput coerces nothing: no "5" for an int, no 1.0 for an int, no 1 for a str or a bool."""

    class Sample(TaskInput):
        count: int
        name: str
        flag: bool = False

    assert Sample.model_validate({"count": 5, "name": "n"}).count == 5
    for bad in ({"count": "5", "name": "n"}, {"count": 1.0, "name": "n"}, {"count": 1, "name": 1}):
        with pytest.raises(ValidationError):
            Sample.model_validate(bad)
    with pytest.raises(ValidationError):
        Sample.model_validate({"count": 1, "name": "n", "flag": 1})


def test_the_python_call_validates_as_strictly() -> None:
    """It validates add's arguments the same way through the registry (the Python interface)."""
    spec = REGISTRY.get("add")
    assert spec is not None
    assert spec.validate({"x": 2**60, "y": 1.5}).model_dump() == {"x": 2**60, "y": 1.5}
    with pytest.raises(ValidationError):
        spec.validate({"x": "2", "y": 1})
