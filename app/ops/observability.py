"""Errors to Sentry and traces to OpenTelemetry: each off unless configured, set up once per process.

- Sentry (``SENTRY_DSN``): every job's final failure is an event tagged with the task and the
  job id (:func:`capture_failure`, called by app/core/outcomes.py), and so is an unexpected error of
  the API. ``send_default_pii`` is off and every event passes through the log redaction (the
  settings' secrets, a running job's sensitive arguments) before it leaves.
- OpenTelemetry (``OTEL_TRACES_EXPORTER=console|otlp``, or an ``OTEL_EXPORTER_OTLP_ENDPOINT``):
  a span per API request, the W3C trace context carried in the job's meta at enqueue
  (``Meta.TRACE``), and a span per job run in the worker, a child of the request's span.

With neither configured, nothing is imported, the web app gets no hook, and enqueue and
execution each test one module attribute (``TRACER is None``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, g, request

from app.foundation.config import Settings, TracesExporter
from app.ops.logs import redact

log = logging.getLogger("tasklane.observability")

_sentry_ready = False
#: The process's tracer; None while tracing is off (the only thing the hot paths look at).
TRACER: Any = None
_provider: Any = None
_provider_pid = 0


def init_process(settings: Settings, process: str) -> None:
    """Set up Sentry and tracing for this process, as configured (once; later calls do nothing)."""
    init_sentry(settings, process)
    init_tracing(settings, process)


# --- Sentry -----------------------------------------------------------------------------------


def init_sentry(settings: Settings, process: str) -> bool:
    """Initialise sentry-sdk when SENTRY_DSN is set; True when it is (now or before)."""
    global _sentry_ready
    if _sentry_ready or not settings.sentry_dsn:
        return _sentry_ready
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.app_env.value,
        send_default_pii=False,
        # Only what is named here: RQ's integration would report every attempt, retries too,
        # and the logging one every ERROR line; app/core/outcomes.py reports final failures itself.
        auto_enabling_integrations=False,
        integrations=[FlaskIntegration(), LoggingIntegration(level=None, event_level=None)],
        before_send=_scrub,
    )
    sentry_sdk.set_tag("process", process)
    _sentry_ready = True
    return True


def _scrub(event: Any, hint: Any) -> Any:
    """The event with every held secret masked (the log redaction, applied to the whole event)."""
    text = json.dumps(event, default=str)
    redacted = redact(text)
    return event if redacted == text else json.loads(redacted)


def capture_failure(job_id: str, task: str, error_type: str, message: str) -> None:
    """Report a job's final failure to Sentry (when configured), tagged with its task and id."""
    if not _sentry_ready:
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("task", task)
        scope.set_tag("job_id", job_id)
        scope.fingerprint = ["tasklane-job-failure", task, error_type]
        sentry_sdk.capture_message(f"task {task} failed for good: {error_type}: {message}", level="error")
    # A fork-mode work horse ends with os._exit: send now (failures are rare; 2 s at most).
    sentry_sdk.flush(timeout=2)


def capture_exception(exc: BaseException) -> None:
    """Report an unexpected error of the API to Sentry (when configured)."""
    if _sentry_ready:
        import sentry_sdk

        sentry_sdk.capture_exception(exc)


# --- OpenTelemetry tracing ------------------------------------------------------------------------


def init_tracing(settings: Settings, process: str, exporter: Any = None) -> bool:
    """Start tracing when configured (or with ``exporter``, a test's in-memory one); True when on."""
    global TRACER, _provider, _provider_pid
    if TRACER is not None:
        return True
    if exporter is None and settings.traces_exporter is TracesExporter.NONE:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({"service.name": settings.service_name, "tasklane.process": process})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        if settings.traces_exporter is TracesExporter.CONSOLE:
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, ...
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # the process's own: other instrumentation nests in it
    _provider, _provider_pid = provider, os.getpid()
    TRACER = provider.get_tracer("tasklane")
    return True


def stop_tracing() -> None:
    """Flush and stop tracing (tests; a process just exits)."""
    global TRACER, _provider
    if _provider is not None:
        _provider.shutdown()
    TRACER = _provider = None


def init_app(app: Flask) -> None:
    """A span per request, when tracing is on (set up before the app is built: start_process,
    gunicorn's post_fork); with tracing off no hook is added, so a request pays nothing."""
    if TRACER is None:
        return
    app.before_request(_start_request_span)
    app.after_request(_response_status)
    app.teardown_request(_end_request_span)


def _start_request_span() -> None:
    if TRACER is None:
        return
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    parent = extract({name.lower(): value for name, value in request.headers.items()})
    route = request.url_rule.rule if request.url_rule is not None else ""
    span = TRACER.start_span(
        f"{request.method} {route}".strip(),
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route, "url.path": request.path},
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    g._tasklane_span = (span, token)


def _response_status(response: Response) -> Response:
    held = g.get("_tasklane_span")
    if held is not None:
        from opentelemetry.trace import Status, StatusCode

        held[0].set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            held[0].set_status(Status(StatusCode.ERROR))
    return response


def _end_request_span(exc: BaseException | None) -> None:
    held = g.pop("_tasklane_span", None)
    if held is None:
        return
    from opentelemetry import context

    span, token = held
    if exc is not None:
        span.record_exception(exc)
    span.end()
    context.detach(token)


def trace_carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``), for a job's meta;
    None while tracing is off or outside any span."""
    if TRACER is None:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier or None


@contextlib.contextmanager
def job_span(job_id: str, task: str, queue: str, carrier: dict[str, str] | None) -> Iterator[Any]:
    """The span of one run of a job, a child of the span that enqueued it (``carrier``)."""
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    parent = extract(carrier) if carrier else None
    attributes = {
        "tasklane.task": task,
        "tasklane.job_id": job_id,
        "messaging.system": "rq",
        "messaging.message.id": job_id,
        "messaging.destination.name": queue,
    }
    try:
        with TRACER.start_as_current_span(
            f"run {task}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            yield span
    finally:
        if _provider is not None and os.getpid() != _provider_pid:
            # A fork-mode work horse ends with os._exit: export its span before that.
            _provider.force_flush(2000)
