"""Policy overrides by the operator (TASK_OVERRIDES): checked at start, in force wherever specs go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from flask import Flask

from app import create_app
from app.catalogue.registry import REGISTRY, CatalogueError, QueueName
from app.core.queues import fetch_job
from app.foundation.config import ConfigError, Settings, load_or_exit
from tests.conftest import make_env
from tests.servers import drain, enqueue, get_job

OVERRIDES = {
    "add": {"queue": "low", "max_retries": 4, "time_limit": 20, "rate_limit": "10/m"},
    "flaky": {"max_retries": 1, "backoff_base": 0.2, "backoff_cap": 0.2},
}


@pytest.fixture
def overridden_app(tmp_path: Path, redis_url: str) -> Flask:
    return create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps(OVERRIDES)))


def test_parsed_from_json_or_a_file(tmp_path: Path) -> None:
    """It reads the overrides from JSON text, or from the file the variable names."""
    file = tmp_path / "overrides.json"
    file.write_text(json.dumps(OVERRIDES))
    for value in (json.dumps(OVERRIDES), str(file)):
        overrides = Settings.from_env({"TASK_OVERRIDES": value}).task_overrides
        assert {o.task: o.as_dict() for o in overrides}["add"] == {
            "queue": "low",
            "max_retries": 4,
            "time_limit": 20,
            "rate_limit": "10/m",
        }


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("{not json", ["TASK_OVERRIDES", "not valid JSON"]),
        ("/nonexistent/overrides.json", ["TASK_OVERRIDES", "readable file"]),
        ('["add"]', ["TASK_OVERRIDES", "JSON object"]),
        ('{"add": 3}', ["TASK_OVERRIDES", "'add'"]),
        ('{"add": {"colour": "red"}}', ["TASK_OVERRIDES", "'add'", "'colour'"]),
        ('{"add": {"queue": "urgent"}}', ["TASK_OVERRIDES", "'add'", "queue", "high, default, low"]),
        ('{"add": {"max_retries": -1}}', ["TASK_OVERRIDES", "'add'", "max_retries"]),
        ('{"add": {"max_retries": "3"}}', ["TASK_OVERRIDES", "'add'", "max_retries", "whole number"]),
        ('{"add": {"time_limit": 0}}', ["TASK_OVERRIDES", "'add'", "time_limit"]),
        ('{"add": {"rate_limit": "ten a minute"}}', ["TASK_OVERRIDES", "'add'", "rate_limit", "10/m"]),
        ('{"add": {"backoff_base": 0}}', ["TASK_OVERRIDES", "'add'", "backoff_base"]),
    ],
)
def test_bad_overrides_name_variable_task_and_field(value: str, words: list[str]) -> None:
    """A malformed override stops the process with one line naming the variable, task and field."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"TASK_OVERRIDES": value})
    assert caught.value.variable == "TASK_OVERRIDES"
    for word in words:
        assert word in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_or_exit_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """It exits with one line, not a traceback."""
    with pytest.raises(SystemExit):
        load_or_exit({"TASK_OVERRIDES": '{"add": {"queue": "urgent"}}'}, process="worker")
    err = capsys.readouterr().err.strip()
    assert err.startswith("worker: configuration error: TASK_OVERRIDES: task 'add': queue")
    assert len(err.splitlines()) == 1


def test_unknown_task_or_clash_with_declaration_stops_the_app(tmp_path: Path) -> None:
    """An override naming no task, or a soft limit at or above the hard one, is refused at start."""
    base = make_env(tmp_path, "redis://127.0.0.1:1/0")
    with pytest.raises(CatalogueError, match=r"TASK_OVERRIDES: no task named 'nope'"):
        create_app({**base, "TASK_OVERRIDES": '{"nope": {"max_retries": 1}}'})
    # partial_work declares time_limit=4, soft_time_limit=1.
    with pytest.raises(CatalogueError, match=r"task 'partial_work': soft_time_limit \(1\) must be below"):
        create_app({**base, "TASK_OVERRIDES": '{"partial_work": {"time_limit": 1}}'})
    # Settings that can never take effect together are refused too (they were taken silently).
    with pytest.raises(CatalogueError, match=r"task 'add': burst \(5\) needs a rate_limit"):
        create_app({**base, "TASK_OVERRIDES": '{"add": {"burst": 5}}'})
    both = '{"add": {"unique": {"period": 60}, "debounce": {"delay": 5}}}'
    with pytest.raises(CatalogueError, match=r"task 'add': unique and debounce cannot both be set"):
        create_app({**base, "TASK_OVERRIDES": both})
    create_app({**base, "TASK_OVERRIDES": '{"add": {"burst": 5, "rate_limit": "10/s"}}'})  # together: fine


def test_catalogue_shows_the_policy_in_force(overridden_app: Flask) -> None:
    """GET /api/v1/tasks shows the overridden values and which ones were overridden."""
    from tests.conftest import TOKEN

    response = overridden_app.test_client().get("/api/v1/tasks", headers={"Authorization": f"Bearer {TOKEN}"})
    tasks = {t["name"]: t for t in response.get_json()["tasks"]}
    add = tasks["add"]
    assert add["queue"] == "low"
    assert add["retry"]["max_retries"] == 4
    assert add["time_limit"] == 20
    assert add["rate_limit"] == "10/m"
    assert add["overridden"] == {
        "queue": {"declared": "default", "in_force": "low"},
        "max_retries": {"declared": 0, "in_force": 4},
        "time_limit": {"declared": 30, "in_force": 20},
        "rate_limit": {"declared": None, "in_force": "10/m"},
    }
    assert tasks["xsum"]["overridden"] == {}


def test_two_apps_side_by_side_and_no_app(overridden_app: Flask, tmp_path: Path, redis_url: str) -> None:
    """Overrides are the app's: another app in the same process, and code without one, see the declaration."""
    plain = create_app(make_env(tmp_path, redis_url))
    with overridden_app.app_context():
        spec = REGISTRY.get("add")
        assert spec is not None and spec.queue is QueueName.LOW and spec.time_limit == 20
        assert REGISTRY.by_path("app.tasks.platform.add") is spec
    with plain.app_context():
        spec = REGISTRY.get("add")
        assert spec is not None and spec.queue is QueueName.DEFAULT and spec.overridden == {}
    declared = REGISTRY.declared("add")
    assert declared is not None and declared.queue is QueueName.DEFAULT


def test_api_and_worker_use_the_overridden_spec(overridden_app: Flask, rconn: redis.Redis) -> None:
    """A job enqueued by the API goes to the overridden queue with the overridden limits and retries,
    and a worker runs it with the overridden retry policy."""
    from tests.conftest import TOKEN

    client = overridden_app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    job_id = enqueue(client, auth, "add", {"x": 2, "y": 3})
    job = fetch_job(job_id, rconn)
    assert job.origin == "low" and job.timeout == 20 and job.retries_left == 4
    assert rconn.llen("rq:queue:low") == 1 and rconn.llen("rq:queue:default") == 0
    drain(overridden_app, "low")
    assert get_job(client, auth, job_id)["result"] == 5

    # flaky fails twice here; the declaration retries 3 times, the override only once.
    flag = Path(overridden_app.extensions["tasklane"].settings.var_dir) / "flaky"
    flag.parent.mkdir(parents=True, exist_ok=True)
    job_id = enqueue(client, auth, "flaky", {"path": str(flag), "failures": 2})
    assert fetch_job(job_id, rconn).retries_left == 1
    drain(overridden_app, "default")
    view = get_job(client, auth, job_id)
    assert view["state"] == "RETRY" and view["retries"] == 1


def test_scheduler_registers_and_lists_the_overridden_policy(tmp_path: Path, redis_url: str) -> None:
    """The scheduler process (in its app's context) registers a periodic task with the
    overridden queue and time limit, and /api/v1/schedules shows that queue."""
    from app.core.queues import JsonJob
    from app.processes.scheduling import make_scheduler, register_periodic, schedules

    overrides = {"health_check": {"queue": "low", "time_limit": 90}}
    app = create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps(overrides)))
    rconn = app.extensions["tasklane"].redis
    with app.app_context():
        register_periodic(make_scheduler(rconn))
        entry = JsonJob.fetch("periodic-health_check", connection=rconn)
        assert entry.origin == "low" and entry.timeout == 90
        assert [s["queue"] for s in schedules(rconn) if s["task"] == "health_check"] == ["low"]
