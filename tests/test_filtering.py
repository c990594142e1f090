"""Job filters: the console's text, GET /api/v1/jobs's query and POST /api/v1/jobs/bulk, one model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.serializers import JSONSerializer

from app.core import bulk, filtering
from app.core.execution import ExecutingJob
from app.core.queues import JsonQueue
from app.core.states import State
from app.processes.workers import JsonInlineWorker
from tests.servers import wait_for


def test_text_is_parsed_into_terms_and_back() -> None:
    f = filtering.parse('state:FAILURE task:add args.user.id:42 args.name:"Ada L" queue:low since:1h')
    assert f.state is State.FAILURE and f.task == "add" and f.queue == "low" and f.since == 3600
    assert f.args == (("user.id", "42"), ("name", "Ada L"))
    assert filtering.parse(f.text()) == f
    assert filtering.from_query(f.as_query()) == f
    assert filtering.from_body(f.as_body()) == f
    assert filtering.parse("") == filtering.JobFilter()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("state:nope", "state"),
        ("queue:nope", "queue"),
        ("since:yesterday", "since"),
        ("since:8224141w", "since"),
        ("colour:red", "colour"),
        ("add", "add"),
        ("task:a task:b", "task"),
        ('args.x:"unclosed', "filter"),
        ("args..x:1", "args..x"),
    ],
)
def test_a_bad_term_is_named(text: str, field: str) -> None:
    with pytest.raises(filtering.FilterError) as caught:
        filtering.parse(text)
    assert caught.value.field == field


def _enqueue(
    client: FlaskClient, auth: dict[str, str], task: str, args: dict[str, Any], **options: Any
) -> str:
    response = client.post(f"/api/v1/tasks/{task}", json={"args": args, "options": options}, headers=auth)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["job_id"])


def _run(app: Flask, queue: str = "default") -> None:
    redis = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker(
            [JsonQueue(queue, connection=redis)], connection=redis, job_class=ExecutingJob,
            serializer=JSONSerializer,
        ).work(burst=True)  # fmt: skip


def _ids(client: FlaskClient, auth: dict[str, str], query: str) -> set[str]:
    response = client.get(f"/api/v1/jobs?{query}", headers=auth)
    assert response.status_code == 200, response.get_json()
    return {j["job_id"] for j in response.get_json()["jobs"]}


def test_list_by_argument_and_age(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """args.<path>= finds jobs by an argument's value (a number matches its text too); since= by age."""
    redis = app.extensions["tasklane"].redis
    two = _enqueue(client, auth, "add", {"x": 2, "y": 3})
    other = _enqueue(client, auth, "add", {"x": 7, "y": 3})
    message = _enqueue(client, auth, "fail_for_good", {"message": "42"})
    assert _ids(client, auth, "args.x=2") == {two}
    assert _ids(client, auth, "args.y=3&task=add") == {two, other}
    assert _ids(client, auth, "args.message=42") == {message}  # the string "42"
    assert _ids(client, auth, 'args.message="42"') == {message}
    assert _ids(client, auth, "args.x=2&args.y=4") == set()
    assert _ids(client, auth, "args.nothing.here=1") == set()
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    redis.hset(f"rq:job:{other}", mapping={"created_at": old, "enqueued_at": old})
    assert _ids(client, auth, "since=1h") == {two, message}
    assert _ids(client, auth, "since=3h") == {two, other, message}
    bad = client.get("/api/v1/jobs?since=soon", headers=auth)
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "bad_filter"
    assert bad.get_json()["error"]["details"][0]["field"] == "since"


def test_a_sensitive_argument_never_matches(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    _enqueue(client, auth, "use_secret", {"path": "/tmp/x", "api_key": "s3cret-key-1", "fail": False})
    assert _ids(client, auth, "args.api_key=s3cret-key-1") == set()
    assert len(_ids(client, auth, "args.path=/tmp/x")) == 1


def _bulk(client: FlaskClient, auth: dict[str, str], body: dict[str, Any], status: int) -> dict[str, Any]:
    response = client.post("/api/v1/jobs/bulk", json=body, headers=auth)
    assert response.status_code == status, response.get_json()
    return dict(response.get_json())


def _finished(client: FlaskClient, auth: dict[str, str], started: dict[str, Any]) -> dict[str, Any]:
    def done() -> Any:
        progress = client.get(started["links"]["self"], headers=auth).get_json()
        return progress if progress.get("finished_at") else None

    return dict(wait_for(done, 10, message="the bulk action to finish"))


def test_bulk_retry_acts_on_every_match_only(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """A dry run counts; the action requeues every failed job of the filter and no other job, in the
    background, with its progress readable."""
    redis = app.extensions["tasklane"].redis
    failed = [_enqueue(client, auth, "fail_for_good", {"message": f"m{n}"}) for n in range(3)]
    kept = _enqueue(client, auth, "fail_for_good", {"message": "keep"})
    fine = _enqueue(client, auth, "add", {"x": 1, "y": 1})
    _run(app)
    body = {"action": "retry", "filter": {"state": "failure", "task": "fail_for_good"}, "dry_run": True}
    assert _bulk(client, auth, body, 200) == {"matched": 4, "dry_run": True}
    body = {"action": "retry", "filter": {"state": "FAILURE", "args": {"message": "m1"}}}
    first = _bulk(client, auth, body, 202)
    assert first["matched"] == 1
    assert _finished(client, auth, first)["done"] == 1
    started = _bulk(client, auth, {"action": "retry", "filter": {"state": "FAILURE"}}, 202)
    assert started["matched"] == 3
    progress = _finished(client, auth, started)
    assert progress["done"] == 3 and progress["by"].startswith("api:")
    assert progress["filter"] == {"state": "FAILURE"}
    states = {
        j: client.get(f"/api/v1/jobs/{j}", headers=auth).get_json()["state"] for j in [*failed, kept, fine]
    }
    assert states == {**{j: "PENDING" for j in [*failed, kept]}, fine: "SUCCESS"}
    assert redis.llen("rq:queue:default") == 4


def test_bulk_revoke_and_delete(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    waiting = [_enqueue(client, auth, "add", {"x": n, "y": 0}, queue="low") for n in range(3)]
    other = _enqueue(client, auth, "add", {"x": 9, "y": 0})
    started = _bulk(client, auth, {"action": "revoke", "filter": {"queue": "low", "state": "pending"}}, 202)
    assert started["matched"] == 3
    wait_for(
        lambda: all(
            client.get(f"/api/v1/jobs/{j}", headers=auth).get_json()["state"] == "REVOKED" for j in waiting
        ),
        10,
        message="the revokes",
    )
    assert client.get(f"/api/v1/jobs/{other}", headers=auth).get_json()["state"] == "PENDING"
    assert _bulk(client, auth, {"action": "delete", "filter": {"state": "revoked"}}, 202)["matched"] == 3
    wait_for(
        lambda: all(client.get(f"/api/v1/jobs/{j}", headers=auth).status_code == 404 for j in waiting),
        10,
        message="the deletes",
    )
    assert client.get(f"/api/v1/jobs/{other}", headers=auth).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "explode", "filter": {}}, "action"),
        ({"action": "retry", "filter": {"state": "nope"}}, "filter.state"),
        ({"action": "retry", "filter": {"colour": "red"}}, "filter.colour"),
        ({"action": "retry", "filter": {"args": [1]}}, "filter.args"),
    ],
)
def test_bulk_refuses_a_bad_body_naming_the_field(
    fake_app: Flask, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = fake_app.test_client().post("/api/v1/jobs/bulk", json=body, headers=auth)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_bulk" and error["details"][0]["field"] == field


def test_the_openapi_document_describes_bulk_and_the_new_filters(fake_app: Flask) -> None:
    doc = fake_app.test_client().get("/api/v1/openapi.json").get_json()
    assert set(doc["paths"]["/api/v1/jobs/bulk"]["post"]["responses"]) >= {"200", "202", "422"}
    assert "/api/v1/jobs/bulk/{bulk_id}" in doc["paths"]
    listing = doc["paths"]["/api/v1/jobs"]["get"]
    assert "since" in {p["name"] for p in listing["parameters"]} and "args.<path>" in listing["description"]


def test_matching_past_the_cap_or_the_time_budget_is_refused(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk action matches at most MAX_MATCHED jobs, within MATCH_SECONDS (it runs in the request):
    past either, it is refused (422 too_many_jobs) rather than cut short or timed out."""
    redis = app.extensions["tasklane"].redis
    monkeypatch.setattr(bulk, "PAGE", 2)  # several listing pages for 5 jobs
    for n in range(5):
        _enqueue(client, auth, "add", {"x": n, "y": 0})
    assert len(bulk.matching_ids(redis, filtering.JobFilter())) == 5
    with pytest.raises(bulk.TooMany, match="more than 3 jobs"):
        bulk.matching_ids(redis, filtering.JobFilter(), cap=3)
    with pytest.raises(bulk.TooMany, match="took more than 0 s"):
        bulk.matching_ids(redis, filtering.JobFilter(), budget=0)
    monkeypatch.setattr(bulk, "MAX_MATCHED", 3)
    monkeypatch.setattr(bulk.matching_ids, "__defaults__", (3, None, bulk.MATCH_SECONDS))
    response = client.post("/api/v1/jobs/bulk", json={"action": "delete", "filter": {}}, headers=auth)
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "too_many_jobs"
    assert redis.llen("rq:queue:default") == 5
