"""Integration tasks: calling a caller's HTTP API, and caching the model lists of LLM providers."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from pydantic import Field, HttpUrl, JsonValue

from app.catalogue.registry import (
    QueueName,
    RetryPolicy,
    Schedule,
    TaskInput,
    honour_retry_after,
    snooze_on_429,
    task,
)
from app.foundation import defaults, keys
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso, utcnow
from app.services import services
from app.services.http import PermanentHTTPError, ResponseTooLarge, TransientHTTPError, raise_for_status
from app.services.outbound import OutboundUrl, OutboundURLRefused
from app.services.providers import ProviderError


class ExternalCallInput(TaskInput):
    """Where to POST, and what."""

    url: OutboundUrl = Field(description="http(s) URL; private, loopback and link-local hosts are refused")
    data: JsonValue = Field(description="any JSON value, sent as the request body")


@task(
    input=ExternalCallInput,
    queue=QueueName.DEFAULT,
    time_limit=240,
    retry=RetryPolicy(
        max_retries=5,
        backoff_base=1,
        backoff_cap=600,
        retry_for=(httpx.TransportError, TransientHTTPError),
        dont_retry_for=(OutboundURLRefused, PermanentHTTPError, ResponseTooLarge, httpx.TooManyRedirects),
    ),
)
def call_external_api(url: HttpUrl | str, data: Any) -> Any:
    """POST data as JSON to url (30 s timeout, redirects checked by the outbound policy); return the reply."""
    try:
        reply = raise_for_status(
            services().outbound.post_json(
                str(url), data, timeout=defaults.EXTERNAL_API_TIMEOUT, follow_redirects=True
            ),
            "external API",
        )
    except TransientHTTPError as exc:
        snooze_on_429(exc.status_code, exc.retry_after, str(exc))  # the peer's rate: no retry spent
        honour_retry_after(exc.retry_after, str(exc))
        raise
    if not reply.content:
        return None
    if reply.is_json:
        return reply.json()
    return reply.text


@task(queue=QueueName.LOW, time_limit=120, schedule=Schedule(interval=3600))
def model_cache_refresh() -> dict[str, Any]:
    """Fetch the model lists of Ollama and LiteLLM (OpenAI-compatible) and cache each in Redis for 1 h."""
    rt = runtime()
    http = services().http
    report: dict[str, Any] = {}
    for provider in services().model_providers:
        started = time.perf_counter()
        try:
            models = provider.list_models(http)
        except ProviderError as exc:  # one provider down does not fail the others
            report[provider.name] = {"status": "error", "error": str(exc)}
        else:
            fetched_at = iso(utcnow())
            record = {
                "provider": provider.name,
                "kind": provider.kind.value,
                "fetched_at": fetched_at,
                "models": models,
            }
            rt.redis.set(keys.model_cache(provider.name), json.dumps(record), ex=defaults.MODEL_CACHE_TTL)
            report[provider.name] = {"status": "ok", "count": len(models)}
        report[provider.name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    failed = [name for name, outcome in report.items() if outcome["status"] != "ok"]
    status = "ok" if not failed else "partial" if len(failed) < len(report) else "failed"
    return {"status": status, "providers": report, "refreshed_at": iso(utcnow())}
