"""The ``flask`` commands, through Flask's CliRunner against the test session's real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskCliRunner

from app.core.queues import fetch_job
from app.surfaces.cli import parse_arguments
from tests.servers import ROOT, Starter, drain, start_worker


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def _enqueue(runner: FlaskCliRunner, *words: str) -> str:
    result = runner.invoke(args=["tasks", "enqueue", *words])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


def test_arguments_are_name_value_pairs_or_one_json_object() -> None:
    """x=2 is the integer 2, name=Ada the text "Ada"; one JSON object is taken as it is."""
    assert parse_arguments(("x=2", "y=3.5", "name=Ada", "tags=[1,2]")) == {
        "x": 2,
        "y": 3.5,
        "name": "Ada",
        "tags": [1, 2],
    }
    assert parse_arguments(('{"x": 2, "y": 3}',)) == {"x": 2, "y": 3}


def test_enqueue_validates_as_the_api_and_runs(
    app: Flask, runner: FlaskCliRunner, rconn: redis.Redis
) -> None:
    """`flask tasks enqueue add x=2 y=3` enqueues on the task's queue; `jobs show` shows the result."""
    job_id = _enqueue(runner, "add", "x=2", "y=3")
    assert fetch_job(job_id, rconn).kwargs == {"x": 2, "y": 3}
    json_id = _enqueue(runner, "add", '{"x": 5, "y": 6}')
    drain(app, "default")
    shown = runner.invoke(args=["jobs", "show", job_id])
    assert shown.exit_code == 0
    view = json.loads(shown.stdout)
    assert view["state"] == "SUCCESS" and view["result"] == 5 and view["task"] == "add"
    assert json.loads(runner.invoke(args=["jobs", "show", json_id]).stdout)["result"] == 11

    bad = runner.invoke(args=["tasks", "enqueue", "add", "x=two", "y=3"])
    assert bad.exit_code == 1 and "invalid input for task 'add'" in bad.output and "x:" in bad.output
    unknown = runner.invoke(args=["tasks", "enqueue", "nope"])
    assert unknown.exit_code == 1 and "no task named 'nope'" in unknown.output
    assert runner.invoke(args=["jobs", "show", "no-such-job"]).exit_code == 1
    queued = _enqueue(runner, "add", "x=1", "y=1", "--queue", "high", "--job-id", "my-job")
    assert queued == "my-job" and fetch_job("my-job", rconn).origin == "high"


def test_tasks_list_shows_policy_in_force(runner: FlaskCliRunner) -> None:
    """`flask tasks list` lists every task with its queue and limits."""
    out = runner.invoke(args=["tasks", "list"]).stdout
    assert any(line.startswith("add ") and "queue default" in line for line in out.splitlines())
    assert "health_check" in out


@pytest.mark.integration
def test_wait_follows_a_running_job_to_its_end(
    runner: FlaskCliRunner, start: Starter, rconn: redis.Redis, tmp_path: Path
) -> None:
    """`flask jobs wait` follows a job that reports progress until it succeeds (exit 0), and a
    failed one until it fails (exit 1, with the error)."""
    start_worker(start, rconn, "default", "--mode", "inline")
    job_id = _enqueue(runner, "slow_touch", f"path={tmp_path / 'done'}", "seconds=1.5", "steps=5")
    result = runner.invoke(args=["jobs", "wait", job_id, "--timeout", "30", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert "SUCCESS" in result.stdout and str(tmp_path / "done") in result.stdout
    failing = _enqueue(runner, "always_fail", "message=boom")
    failed = runner.invoke(args=["jobs", "wait", failing, "--timeout", "30"])
    assert failed.exit_code == 1 and "FAILURE" in failed.stdout and "boom" in failed.stderr
    stuck = _enqueue(runner, "add", "x=1", "y=1", "--countdown", "3600")
    timed_out = runner.invoke(args=["jobs", "wait", stuck, "--timeout", "0.3"])
    assert timed_out.exit_code == 2 and "timed out" in timed_out.stderr


def test_failed_jobs_listed_and_requeued_one_or_all_of_a_task(
    app: Flask, runner: FlaskCliRunner, rconn: redis.Redis
) -> None:
    """`jobs failed` lists dead letters; `jobs requeue ID` and `jobs requeue --all --task T` put them back."""
    ids = [_enqueue(runner, "always_fail", f"message=m{n}") for n in range(3)]
    other = _enqueue(runner, "fail_for_good", "message=other")
    drain(app, "default")
    listed = runner.invoke(args=["jobs", "failed"])
    assert listed.exit_code == 0 and all(job_id in listed.stdout for job_id in [*ids, other])
    only = runner.invoke(args=["jobs", "failed", "--task", "fail_for_good"]).stdout
    assert other in only and ids[0] not in only

    one = runner.invoke(args=["jobs", "requeue", ids[0]])
    assert one.exit_code == 0 and f"requeued {ids[0]}" in one.stdout
    assert fetch_job(ids[0], rconn).get_status().value == "queued"
    again = runner.invoke(args=["jobs", "requeue", ids[0]])
    assert again.exit_code == 1 and "not failed" in again.output

    every = runner.invoke(args=["jobs", "requeue", "--all", "--task", "always_fail"])
    assert every.exit_code == 0 and "2 job(s) requeued" in every.stderr
    assert {fetch_job(i, rconn).get_status().value for i in ids} == {"queued"}
    assert fetch_job(other, rconn).get_status().value == "failed"
    assert runner.invoke(args=["jobs", "requeue"]).exit_code == 2


def test_queues_show_and_purge(runner: FlaskCliRunner, rconn: redis.Redis) -> None:
    """`queues show` counts each queue; `queues purge` empties one after confirmation."""
    for n in range(3):
        _enqueue(runner, "add", f"x={n}", "y=0")
    _enqueue(runner, "add", "x=1", "y=1", "--queue", "low")
    shown = runner.invoke(args=["queues", "show"]).stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in shown[1:]}
    assert rows["default"][0] == "3" and rows["low"][0] == "1" and rows["high"][0] == "0"
    refused = runner.invoke(args=["queues", "purge", "default"], input="n\n")
    assert refused.exit_code == 1 and rconn.llen("rq:queue:default") == 3
    purged = runner.invoke(args=["queues", "purge", "default", "--yes"])
    assert purged.exit_code == 0 and "purged 3 job(s)" in purged.stdout
    assert rconn.llen("rq:queue:default") == 0 and rconn.llen("rq:queue:low") == 1


@pytest.mark.integration
def test_workers_show(runner: FlaskCliRunner, start: Starter, rconn: redis.Redis) -> None:
    """`workers show` lists each registered worker with its queues."""
    start_worker(start, rconn, "high", "low")
    out = runner.invoke(args=["workers", "show"])
    assert out.exit_code == 0 and "queues high,low" in out.stdout and "1 worker(s)" in out.stderr


@pytest.mark.integration
def test_the_flask_command_finds_the_app(env: dict[str, str]) -> None:
    """`flask --app app.factory:create_app tasks list` works from the project root, as the README says."""
    flask = Path(sys.executable).with_name("flask")
    done = subprocess.run(
        [str(flask), "--app", "app.factory:create_app", "tasks", "list"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "add " in done.stdout


@pytest.mark.integration
def test_a_bad_setting_stops_the_flask_command_with_one_line(env: dict[str, str]) -> None:
    """A malformed variable stops `flask ...` with one line naming it, not a traceback."""
    flask = Path(sys.executable).with_name("flask")
    for variable, value in (("REDIS_URL", "ftp://x"), ("TASK_OVERRIDES", '{"add": {"queue": "urgent"}}')):
        done = subprocess.run(
            [str(flask), "--app", "app.factory:create_app", "tasks", "list"],
            cwd=ROOT,
            env={**os.environ, **env, variable: value},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert done.stderr.strip().startswith(f"tasklane: configuration error: {variable}: "), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_rq_commands_work_on_the_same_redis(app: Flask, runner: FlaskCliRunner, redis_url: str) -> None:
    """`rq info` reads the service's Redis, and `rq requeue --serializer ...JSONSerializer` puts a
    failed JSON job back, as the README shows."""
    rq = str(Path(sys.executable).with_name("rq"))
    failed = _enqueue(runner, "always_fail", "message=boom")
    drain(app, "default")
    info = subprocess.run([rq, "info", "-u", redis_url], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "default" in info.stdout and "1 failed" in info.stdout, info.stdout
    requeue = [rq, "requeue", "--all", "--queue", "default", "-u", redis_url]
    done = subprocess.run(
        [*requeue, "--serializer", "rq.serializers.JSONSerializer"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rconn = app.extensions["tasklane"].redis
    assert fetch_job(failed, rconn).get_status().value == "queued"
