"""/console/ through the Flask test client on a real Redis: who gets in and who may act, the
pages' content, the filter, actions with their checks and audit, the workflow graph's folding."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import JobStatus

from app import create_app
from app.core.queues import JsonJob
from app.foundation.config import ConfigError, Settings
from app.foundation.meta import Meta
from app.ops import metrics
from app.surfaces.console import graph
from tests.conftest import DASHBOARD, make_env
from tests.servers import wait_for

READER = ("auditor", "read-only-password-1")


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


OPERATOR = _basic(*DASHBOARD)


@pytest.fixture
def console_app(tmp_path: Path, redis_url: str) -> Flask:
    return create_app(make_env(tmp_path, redis_url, CONSOLE_READONLY_USERS=f"{READER[0]}:{READER[1]}"))


@pytest.fixture
def web(console_app: Flask) -> FlaskClient:
    return console_app.test_client()


def _enqueue(web: FlaskClient, auth: dict[str, str], task: str, args: dict[str, Any], **options: Any) -> str:
    response = web.post(f"/api/v1/tasks/{task}", json={"args": args, "options": options}, headers=auth)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["job_id"])


def _token(html: str) -> str:
    found = re.search(r'name="console-token" content="([^"]*)"', html)
    assert found
    return found.group(1)


def test_only_configured_credentials_get_in(web: FlaskClient) -> None:
    for headers in ({}, _basic(DASHBOARD[0], "wrong"), _basic("nobody", READER[1])):
        response = web.get("/console/", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert web.get("/console/static/console.css").status_code == 401
    page = web.get("/console/", headers=OPERATOR)
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers


def test_no_dashboard_credentials_means_no_console(tmp_path: Path, redis_url: str) -> None:
    env = make_env(tmp_path, redis_url, DASHBOARD_USERNAME="", DASHBOARD_PASSWORD="")
    assert create_app(env).test_client().get("/console/", headers=_basic("", "")).status_code == 401


def test_a_bad_readonly_setting_is_named(tmp_path: Path, redis_url: str) -> None:
    for value in ("auditor", "auditor:short", f"{DASHBOARD[0]}:a-long-enough-password"):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(make_env(tmp_path, redis_url, CONSOLE_READONLY_USERS=value))
        assert caught.value.variable == "CONSOLE_READONLY_USERS"
    settings = Settings.from_env(
        make_env(tmp_path, redis_url, CONSOLE_READONLY_USERS=f"{READER[0]}:{READER[1]}")
    )
    assert READER[1] in settings.secret_values() and READER[1] not in str(settings.public())


def test_a_readonly_user_sees_but_cannot_act(web: FlaskClient, auth: dict[str, str]) -> None:
    job_id = _enqueue(web, auth, "add", {"x": 1, "y": 2})
    reader = _basic(*READER)
    for url in ("/console/", "/console/jobs", f"/console/jobs/{job_id}", "/console/queues"):
        page = web.get(url, headers=reader)
        assert page.status_code == 200, url
        html = page.get_data(as_text=True)
        assert "read-only" in html and "data-bulk-action" not in html and "data-job-action" not in html
    origin = {"Origin": "http://localhost"}
    response = web.post(f"/console/actions/jobs/{job_id}/revoke", json={}, headers={**reader, **origin})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "read_only"
    assert web.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json()["state"] == "PENDING"


def test_an_action_needs_the_same_origin_and_the_page_token_and_is_audited(
    web: FlaskClient, auth: dict[str, str]
) -> None:
    job_id = _enqueue(web, auth, "add", {"x": 1, "y": 2})
    html = web.get(f"/console/jobs/{job_id}", headers=OPERATOR).get_data(as_text=True)
    token = _token(html)
    url = f"/console/actions/jobs/{job_id}/revoke"
    assert web.post(url, json={}, headers={**OPERATOR, "X-Console-Token": token}).status_code == 403
    evil = {"Origin": "http://evil.test", "X-Console-Token": token}
    assert web.post(url, json={}, headers={**OPERATOR, **evil}).status_code == 403
    no_token = {"Origin": "http://localhost"}
    assert web.post(url, json={}, headers={**OPERATOR, **no_token}).status_code == 403
    assert web.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json()["state"] == "PENDING"
    good = {"Origin": "http://localhost", "X-Console-Token": token}
    assert web.post(url, json={}, headers={**OPERATOR, **good}).status_code == 202
    assert web.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json()["state"] == "REVOKED"
    overview = web.get("/console/", headers=OPERATOR).get_data(as_text=True)
    assert f"<b>{DASHBOARD[0]}</b> revoke" in overview and job_id[:8] in overview


def test_the_filter_finds_jobs_and_explains_a_bad_one(web: FlaskClient, auth: dict[str, str]) -> None:
    wanted = _enqueue(web, auth, "add", {"x": 42, "y": 1}, queue="low")
    _enqueue(web, auth, "add", {"x": 7, "y": 1}, queue="low")
    html = web.get("/console/jobs?q=queue:low args.x:42 since:1h", headers=OPERATOR).get_data(as_text=True)
    assert re.findall(r'data-job-id="([^"]+)"', html) == [wanted]
    html = web.get("/console/jobs?q=colour:red", headers=OPERATOR).get_data(as_text=True)
    assert 'id="filter-error"' in html and "unknown term" in html


def test_the_jobs_list_pages_by_cursor(web: FlaskClient, auth: dict[str, str]) -> None:
    made = {_enqueue(web, auth, "add", {"x": n, "y": 0}) for n in range(60)}
    first = web.get("/console/jobs?q=task:add", headers=OPERATOR).get_data(as_text=True)
    seen = re.findall(r'<tr data-job-id="([^"]+)"', first)
    nxt = re.search(r'href="([^"]+)" id="next-page"', first)
    assert len(seen) == 50 and nxt
    second = web.get(nxt.group(1).replace("&amp;", "&"), headers=OPERATOR).get_data(as_text=True)
    seen += re.findall(r'<tr data-job-id="([^"]+)"', second)
    assert set(seen) == made and len(seen) == 60 and 'id="next-page"' not in second


def test_bulk_from_the_console_is_the_api_action(web: FlaskClient, auth: dict[str, str]) -> None:
    ids = [_enqueue(web, auth, "add", {"x": n, "y": 0}, queue="low") for n in range(3)]
    token = _token(web.get("/console/jobs", headers=OPERATOR).get_data(as_text=True))
    headers = {**OPERATOR, "Origin": "http://localhost", "X-Console-Token": token}
    body = {"action": "revoke", "q": "queue:low", "dry_run": True}
    counted = web.post("/console/actions/bulk", json=body, headers=headers)
    assert counted.status_code == 200 and counted.get_json()["matched"] == 3
    started = web.post("/console/actions/bulk", json={**body, "dry_run": False}, headers=headers)
    assert started.status_code == 202 and started.get_json()["matched"] == 3
    wait_for(
        lambda: {web.get(f"/api/v1/jobs/{j}", headers=auth).get_json()["state"] for j in ids} == {"REVOKED"},
        10,
        message="the console's bulk revoke",
    )
    bad = web.post("/console/actions/bulk", json={"action": "retry", "q": "state:nope"}, headers=headers)
    assert bad.status_code == 422


def test_text_from_jobs_is_escaped(web: FlaskClient, auth: dict[str, str]) -> None:
    evil = "<script>window.__x=1</script>"
    job_id = _enqueue(web, auth, "always_fail", {"message": evil})
    for url in ("/console/jobs", f"/console/jobs/{job_id}"):
        html = web.get(url, headers=OPERATOR).get_data(as_text=True)
        assert "<script>window" not in html and "&lt;script&gt;window" in html


def test_sensitive_arguments_are_masked(web: FlaskClient, auth: dict[str, str]) -> None:
    job_id = _enqueue(web, auth, "use_secret", {"path": "/tmp/x", "api_key": "s3cret-key-1", "fail": False})
    for url in ("/console/jobs", f"/console/jobs/{job_id}"):
        html = web.get(url, headers=OPERATOR).get_data(as_text=True)
        assert "s3cret-key-1" not in html and "***" in html


def test_the_overview_charts_what_was_counted(console_app: Flask, web: FlaskClient) -> None:
    redis = console_app.extensions["tasklane"].redis
    with redis.pipeline() as pipe:
        for seconds in (0.02, 0.03, 0.5):
            metrics.record_job(pipe, "add", "success", seconds)
        metrics.record_job(pipe, "add", "failure", 1.0)
        pipe.execute()
    html = web.get("/console/?span=1h", headers=OPERATOR).get_data(as_text=True)
    throughput = html[html.index('id="chart-throughput"') : html.index('id="chart-runtime"')]
    assert re.findall(r'data-label="succeeded".*?data-value="([\d.]+)"', throughput) == ["3"]
    assert re.findall(r'data-label="failed".*?data-value="([\d.]+)"', throughput) == ["1"]
    row = re.search(r'<tr data-task="add">(.*?)</tr>', html, re.S)
    assert row and re.findall(r'<td class="n[^"]*">([^<]*)</td>', row.group(1))[:2] == ["3", "1"]
    panel = web.get("/console/overview/panel?span=7d&series=q:default", headers=OPERATOR)
    assert panel.status_code == 200 and "queue default" in panel.get_data(as_text=True)


def test_a_workflow_page_draws_its_steps(web: FlaskClient, auth: dict[str, str]) -> None:
    spec = {
        "type": "chain",
        "steps": [{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"y": 2}}],
    }
    made = web.post("/api/v1/workflows", json=spec, headers=auth).get_json()
    html = web.get(f"/console/workflows/{made['workflow_id']}", headers=OPERATOR).get_data(as_text=True)
    assert len(re.findall(r'class="node st-PENDING"', html)) == 2
    assert all(f'data-job-id="{j}"' in html for j in made["job_ids"])
    assert "data-refresh-url" in html  # still running: the graph updates itself
    job = web.get(f"/console/jobs/{made['job_ids'][1]}", headers=OPERATOR).get_data(as_text=True)
    assert f"/console/workflows/{made['workflow_id']}" in job and made["job_ids"][0] in job  # its parent
    assert web.get("/console/workflows/nope", headers=OPERATOR).status_code == 404


def test_a_graph_of_ten_thousand_steps_stays_small() -> None:
    """A 10,000-member group becomes one node counting states; a 10,000-step chain shows its ends."""
    group = {"type": "group", "steps": [{"task": "add"} for _ in range(10_000)]}
    ids = [f"j{n}" for n in range(10_000)]
    states = {i: ("FAILURE" if n == 5 else "SUCCESS") for n, i in enumerate(ids)}
    drawn = graph.svg(graph.tree(group, ids), states, "/console/jobs/{id}")
    assert drawn.count('class="node ') == 1 and "st-FAILURE" in drawn and "9,999 success" in drawn
    chain = {"type": "chain", "steps": [{"task": "add"} for _ in range(10_000)]}
    drawn = graph.svg(graph.tree(chain, ids), states, "/console/jobs/{id}")
    assert drawn.count('class="node ') == 2 * graph.CHAIN_ENDS + 1 and len(drawn) < 20_000
    assert 'href="/console/jobs/j0"' in drawn and 'href="/console/jobs/j9999"' in drawn
    chord = {"type": "chord", "steps": [{"task": "add"}, {"task": "add"}], "callback": {"task": "tsum"}}
    drawn = graph.svg(graph.tree(chord, ["a", "b", "c"]), {"a": "SUCCESS", "b": "STARTED"}, "/j/{id}")
    assert drawn.count('class="edge"') == 2 and 'data-state="EXPIRED"' in drawn


def test_a_running_job_shows_its_progress(console_app: Flask, web: FlaskClient, auth: dict[str, str]) -> None:
    job_id = _enqueue(web, auth, "add", {"x": 1, "y": 2})
    job = JsonJob.fetch(job_id, connection=console_app.extensions["tasklane"].redis)
    job.meta[Meta.PROGRESS] = {"current": 3, "total": 4, "percent": 75.0, "stage": "copying"}
    job.save_meta()
    job.set_status(JobStatus.STARTED)
    html = web.get(f"/console/jobs/{job_id}", headers=OPERATOR).get_data(as_text=True)
    assert '<progress id="progress" max="100" value="75.0">' in html and "copying" in html
    assert 'class="state st-PROGRESS"' in html


def test_the_schedules_page_lists_periodic_jobs_with_their_week(console_app: Flask, web: FlaskClient) -> None:
    redis = console_app.extensions["tasklane"].redis
    with redis.pipeline() as pipe:
        for _ in range(3):
            metrics.record_job(pipe, "health_check", "success", 0.2)
        metrics.record_job(pipe, "health_check", "failure")
        pipe.execute()
    html = web.get("/console/schedules", headers=OPERATOR).get_data(as_text=True)
    row = re.search(r'<tr data-schedule="health_check"[^>]*>(.*?)</tr>', html, re.S)
    assert row and "every 300 s" in row.group(1)
    assert re.findall(r'polyline class="(ok|bad)"[^>]*data-total="(\d+)"', row.group(1)) == [
        ("ok", "3"),
        ("bad", "1"),
    ]
    assert '<tr data-schedule="' in html and "analytics_aggregation" in html and "5 * * * *" in html
    # A schedule with no run in the week: a grey baseline, never a red (failures) line at zero.
    idle = re.search(r'<tr data-schedule="analytics_aggregation"[^>]*>(.*?)</tr>', html, re.S)
    assert idle and re.findall(r'polyline class="(\w+)"', idle.group(1)) == ["none"]


def test_a_schedule_is_paused_resumed_and_run_from_the_console(
    web: FlaskClient, auth: dict[str, str]
) -> None:
    """The same core calls as the schedules API: the list shows the pause, times in the zone and UTC;
    each action is audited; a read-only user has no button."""
    token = _token(web.get("/console/schedules", headers=OPERATOR).get_data(as_text=True))
    headers = {**OPERATOR, "Origin": "http://localhost", "X-Console-Token": token}
    paused = web.post("/console/actions/schedules/health_check/pause", json={}, headers=headers)
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    api = web.get("/api/v1/schedules/health_check", headers=auth).get_json()
    assert api["paused"] is True
    html = web.get("/console/schedules", headers=OPERATOR).get_data(as_text=True)
    assert '<tr data-schedule="health_check" data-paused="true">' in html
    ran = web.post("/console/actions/schedules/health_check/run", json={}, headers=headers)
    assert ran.status_code == 202
    assert (
        web.get(f"/api/v1/jobs/{ran.get_json()['job_id']}", headers=auth).get_json()["task"] == "health_check"
    )
    assert (
        web.post("/console/actions/schedules/health_check/resume", json={}, headers=headers).status_code
        == 200
    )
    assert web.get("/api/v1/schedules/health_check", headers=auth).get_json()["paused"] is False
    assert web.post("/console/actions/schedules/nope/pause", json={}, headers=headers).status_code == 404
    overview = web.get("/console/", headers=OPERATOR).get_data(as_text=True)
    assert "schedule pause" in overview and "schedule run" in overview and "schedule resume" in overview
    reader = web.get("/console/schedules", headers=_basic(*READER)).get_data(as_text=True)
    assert "data-schedule-action" not in reader and '<tr data-schedule="health_check"' in reader


def test_a_schedule_is_edited_from_the_console(web: FlaskClient, auth: dict[str, str]) -> None:
    """Edit is the API's PATCH: a cron schedule's cron and zone, an interval schedule's interval,
    kept as the operator's fields; a bad cron or zone is a 422 that changes nothing; an empty edit
    is refused; a read-only user has no form; the edit is audited with its fields."""
    token = _token(web.get("/console/schedules", headers=OPERATOR).get_data(as_text=True))
    headers = {**OPERATOR, "Origin": "http://localhost", "X-Console-Token": token}
    edit = "/console/actions/schedules/{}/edit"
    fields = {"cron": "*/10 * * * *", "timezone": "Europe/Paris"}
    done = web.post(edit.format("analytics_aggregation"), json=fields, headers=headers)
    assert done.status_code == 200, done.get_json()
    api = web.get("/api/v1/schedules/analytics_aggregation", headers=auth).get_json()
    assert api["cron"] == "*/10 * * * *" and api["timezone"] == "Europe/Paris"
    assert {"cron", "timezone"} <= set(api["operator_fields"])
    assert web.post(edit.format("health_check"), json={"interval": 600}, headers=headers).status_code == 200
    assert web.get("/api/v1/schedules/health_check", headers=auth).get_json()["interval"] == 600

    for bad in ({"cron": "not a cron"}, {"timezone": "Mars/Olympus"}, {}, {"args": {"x": 1}}):
        refused = web.post(edit.format("analytics_aggregation"), json=bad, headers=headers)
        assert refused.status_code == 422, (bad, refused.get_json())
        assert refused.get_json()["error"]["code"] == "invalid_schedule"
    api = web.get("/api/v1/schedules/analytics_aggregation", headers=auth).get_json()
    assert api["cron"] == "*/10 * * * *" and api["timezone"] == "Europe/Paris"
    assert web.post(edit.format("nope"), json={"cron": "* * * * *"}, headers=headers).status_code == 404

    html = web.get("/console/schedules", headers=OPERATOR).get_data(as_text=True)
    assert 'data-schedule-edit="/console/actions/schedules/analytics_aggregation/edit"' in html
    assert 'value="*/10 * * * *"' in html and 'value="Europe/Paris"' in html
    reader = web.get("/console/schedules", headers=_basic(*READER)).get_data(as_text=True)
    assert "data-schedule-edit" not in reader
    assert "schedule edit" in web.get("/console/", headers=OPERATOR).get_data(as_text=True)


def test_schedule_times_show_in_the_schedules_zone() -> None:
    from app.surfaces.console.views import _in_zone

    assert _in_zone("2026-07-01T12:00:00Z", "Europe/Paris") == "2026-07-01 14:00:00 CEST"
    assert _in_zone(None, "UTC") is None and _in_zone("not a time", "UTC") is None
