"""Errors to Sentry (a real loopback ingest endpoint) and OpenTelemetry traces (the SDK's in-memory
exporter): each only when configured."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.core.queues import JsonJob, JsonQueue
from app.foundation.config import Settings, TracesExporter
from app.foundation.meta import Meta
from app.ops import observability
from app.processes.workers import JsonInlineWorker
from tests.peers import Answer, HttpPeer, Seen
from tests.servers import Starter, enqueue, wait_for

SECRET = "sk-live-5ecret-0f-the-caller"


# --- OpenTelemetry ------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory."""
    exporter = InMemorySpanExporter()
    assert observability.init_tracing(Settings(), "test", exporter=exporter)
    try:
        yield exporter
    finally:
        observability.stop_tracing()


def _run(app: Flask) -> None:
    redis = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=redis)], connection=redis).work(burst=True)


def test_a_request_and_the_job_it_enqueued_are_one_trace(
    spans: InMemorySpanExporter, app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    job_id = enqueue(client, auth, "add", {"x": 2, "y": 3})
    carrier = JsonJob.fetch(job_id, connection=app.extensions["tasklane"].redis).meta[Meta.TRACE]
    assert carrier["traceparent"].startswith("00-")
    _run(app)

    finished = spans.get_finished_spans()
    assert len(finished) == 2, [s.name for s in finished]
    request, run = sorted(finished, key=lambda s: s.kind is SpanKind.CONSUMER)
    assert request.kind is SpanKind.SERVER and request.name == "POST /api/v1/tasks/<name>"
    assert request.attributes["http.response.status_code"] == 202
    assert run.kind is SpanKind.CONSUMER and run.name == "run add"
    assert run.context.trace_id == request.context.trace_id
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    assert run.attributes["tasklane.task"] == "add"
    assert run.attributes["tasklane.job_id"] == job_id
    assert carrier["traceparent"].split("-")[1] == f"{request.context.trace_id:032x}"


def test_a_caller_s_traceparent_is_the_request_span_s_parent(
    spans: InMemorySpanExporter, app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {**auth, "traceparent": f"00-{trace_id}-{parent_id}-01"}
    r = client.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 1}}, headers=headers)
    assert r.status_code == 202
    _run(app)
    request, run = sorted(spans.get_finished_spans(), key=lambda s: s.kind is SpanKind.CONSUMER)
    assert f"{request.context.trace_id:032x}" == trace_id == f"{run.context.trace_id:032x}"
    assert request.parent is not None and f"{request.parent.span_id:016x}" == parent_id


def test_a_failed_run_s_span_records_the_error(
    spans: InMemorySpanExporter, app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    enqueue(client, auth, "always_fail", {"message": "boom"})
    _run(app)
    run = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER)
    assert run.status.is_ok is False
    assert any(e.name == "exception" for e in run.events)


def test_with_tracing_off_no_span_is_made_and_the_meta_carries_nothing(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert observability.TRACER is None

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a tracing hook ran while tracing is off")

    monkeypatch.setattr(observability, "job_span", forbidden)
    monkeypatch.setattr(observability, "trace_carrier", forbidden)
    job_id = enqueue(client, auth, "add", {"x": 2, "y": 3})
    redis = app.extensions["tasklane"].redis
    assert Meta.TRACE not in JsonJob.fetch(job_id, connection=redis).meta
    _run(app)
    assert JsonJob.fetch(job_id, connection=redis).return_value() == 5


def test_tracing_settings_follow_opentelemetry_s_variables() -> None:
    assert Settings.from_env({}).traces_exporter is TracesExporter.NONE
    assert Settings.from_env({"OTEL_TRACES_EXPORTER": "console"}).traces_exporter is TracesExporter.CONSOLE
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert Settings.from_env(endpoint).traces_exporter is TracesExporter.OTLP
    off = {**endpoint, "OTEL_SDK_DISABLED": "true"}
    assert Settings.from_env(off).traces_exporter is TracesExporter.NONE
    assert Settings.from_env({"OTEL_SERVICE_NAME": "billing"}).service_name == "billing"


# --- Sentry ---------------------------------------------------------------------------------------


def _envelope_items(seen: Seen) -> list[dict[str, Any]]:
    body = gzip.decompress(seen.body) if seen.headers.get("content-encoding") == "gzip" else seen.body
    lines = body.split(b"\n")
    items = []
    for header, payload in zip(lines[1::2], lines[2::2], strict=False):
        if json.loads(header).get("type") == "event":
            items.append(json.loads(payload))
    return items


def _raw(seen: Seen) -> bytes:
    return gzip.decompress(seen.body) if seen.headers.get("content-encoding") == "gzip" else seen.body


@pytest.fixture
def ingest(http_peer: Callable[..., HttpPeer]) -> HttpPeer:
    """A loopback HTTP server in the place of Sentry's ingest endpoint (project 1)."""
    return http_peer().script("/api/1/envelope/", Answer(200, {"id": "0" * 32}))


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["inline", "fork"])
def test_a_final_failure_reaches_sentry_tagged_with_task_and_job_id(
    mode: str, ingest: HttpPeer, start: Starter, client: FlaskClient, auth: dict[str, str]
) -> None:
    failing = enqueue(client, auth, "always_fail", {"message": "boom"})
    secret = enqueue(client, auth, "use_secret", {"path": "/dev/null", "api_key": SECRET, "fail": True})
    succeeding = enqueue(client, auth, "add", {"x": 1, "y": 2})
    dsn = f"http://publickey@127.0.0.1:{ingest.port}/1"
    worker = start("worker.py", "--burst", "--mode", mode, SENTRY_DSN=dsn)
    assert start.wait(worker, 30) == 0, start.output(worker)

    wait_for(lambda: len(ingest.requests("/api/1/envelope/")) >= 2, 10, message="two envelopes")
    time.sleep(0.5)  # nothing more is coming: the success sends nothing
    seen = ingest.requests("/api/1/envelope/")
    events = [event for s in seen for event in _envelope_items(s)]
    tags = {e["tags"]["job_id"]: e["tags"] for e in events}
    assert set(tags) == {failing, secret}, events
    assert tags[failing]["task"] == "always_fail" and tags[secret]["task"] == "use_secret"
    assert tags[failing]["process"] == "worker"
    assert any("boom" in json.dumps(e) for e in events)
    assert succeeding not in tags
    for s in seen:
        assert s.headers["x-sentry-auth"].find("sentry_key=publickey") >= 0
        raw = _raw(s)
        assert SECRET.encode() not in raw
        assert b"test-token-0123456789abcdef" not in raw and b"dashboard-secret-123" not in raw


@pytest.mark.integration
def test_nothing_is_sent_without_sentry_dsn(
    ingest: HttpPeer, start: Starter, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    enqueue(client, auth, "always_fail", {"message": "boom"})
    worker = start("worker.py", "--burst", "--mode", "inline", SENTRY_DSN=None)
    assert start.wait(worker, 30) == 0, start.output(worker)
    time.sleep(1)
    assert ingest.requests() == []
    assert observability._sentry_ready is False  # and not in this process either


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["fork", "inline"])
def test_real_web_and_worker_processes_trace_one_call_and_its_job(mode: str, start: Starter) -> None:
    """gunicorn (post_fork) and worker.py (start_process) set tracing up; the console exporter's
    spans of the request and of the job's run share a trace, the run a child of the request."""
    import re

    import requests

    from tests.conftest import TOKEN
    from tests.servers import start_web

    extra = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    base = start_web(start, **extra)
    r = requests.post(
        f"{base}/api/v1/tasks/add",
        json={"args": {"x": 1, "y": 2}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    worker = start("worker.py", "--burst", "--mode", mode, **extra)
    assert start.wait(worker, 30) == 0, start.output(worker)

    def spans(text: str) -> list[dict[str, Any]]:
        found = []
        for block in re.findall(r"^\{\n.*?^\}$", text, flags=re.S | re.M):
            try:
                found.append(json.loads(block))
            except ValueError:
                continue
        return found

    web = start.procs[0]
    wait_for(
        lambda: any(s["name"].startswith("POST") for s in spans(start.output(web))), 10, message="web span"
    )
    (request,) = [s for s in spans(start.output(web)) if s["name"] == "POST /api/v1/tasks/<name>"]
    (run,) = [s for s in spans(start.output(worker)) if s["name"] == "run add"]
    assert run["context"]["trace_id"] == request["context"]["trace_id"]
    assert run["parent_id"] == request["context"]["span_id"]
    assert run["attributes"]["tasklane.job_id"] == job_id and run["attributes"]["tasklane.task"] == "add"
    assert request["resource"]["attributes"]["tasklane.process"] == "web"
