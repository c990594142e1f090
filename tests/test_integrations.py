"""call_external_api and model_cache_refresh through real worker.py and scheduler.py processes,
against scripted loopback peers (an API, Ollama, LiteLLM)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from app.foundation import keys
from tests.conftest import make_env
from tests.peers import Answer, HttpPeer, gaps
from tests.servers import (
    FINAL,
    Starter,
    catalogue,
    enqueue,
    free_port,
    start_scheduler,
    start_worker,
    wait_state,
)

OLLAMA_TAGS = {
    "models": [
        {
            "name": "llama3.2:3b",
            "model": "llama3.2:3b",
            "modified_at": "2026-10-01T10:00:00Z",
            "size": 2019393189,
            "digest": "a80c4f17acd5",
            "details": {"family": "llama", "parameter_size": "3.2B"},
        },
        {"name": "nomic-embed-text:latest", "size": 274302450, "details": {"family": "nomic-bert"}},
    ]
}
LITELLM_MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "openai"},
        {"id": "claude-sonnet", "object": "model", "created": 1721172742, "owned_by": "anthropic"},
        {"id": "local-llama", "object": "model", "created": 1721172743, "owned_by": "ollama"},
    ],
}


@pytest.fixture
def api(http_peer: Callable[..., HttpPeer]) -> HttpPeer:
    return http_peer()


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Loopback (127.0.0.1 only, not the rest of 127/8) is allowed for the peers."""
    return make_env(tmp_path, redis_url, OUTBOUND_URL_ALLOWLIST="127.0.0.1")


@pytest.fixture
def processes(start: Starter, rconn: redis.Redis) -> None:
    start_worker(start, rconn)
    start_scheduler(start, rconn)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_call_external_api_retries_then_returns_the_decoded_reply(
    processes: None,
    api: HttpPeer,
    http_peer: Callable[..., HttpPeer],
    client: FlaskClient,
    auth: dict[str, str],
) -> None:
    """It POSTs the JSON body; a 503 or a refused connection is retried after a back-off, a 429 as told."""
    api.script("/flaky", Answer(503), Answer(503), Answer(200, {"ok": True, "echo": [1, 2]}))
    api.script("/busy", Answer(429, headers={"Retry-After": "2"}), Answer(200, "plain text reply"))
    api.script("/moved", Answer(303, headers={"Location": "/landing"}))
    api.script("/landing", Answer(200, {"landed": True}))
    later_port = free_port()
    down = enqueue(client, auth, "call_external_api", {"url": f"http://127.0.0.1:{later_port}/up", "data": 7})
    waiting = wait_state(client, auth, down, {"RETRY"})
    assert waiting["error"]["type"] == "ConnectError"
    later = http_peer(port=later_port).script("/up", Answer(200, {"up": True}))
    payload = {"order": 42, "items": ["a", "b"], "note": "ünïcode", "nested": {"x": None}}
    flaky = enqueue(client, auth, "call_external_api", {"url": api.url("/flaky?v=1"), "data": payload})
    busy = enqueue(client, auth, "call_external_api", {"url": api.url("/busy"), "data": None})
    moved = enqueue(client, auth, "call_external_api", {"url": api.url("/moved"), "data": [1]})

    done = wait_state(client, auth, moved, FINAL)
    assert done["state"] == "SUCCESS" and done["result"] == {"landed": True}, done
    assert [(s.method, s.path) for s in api.requests() if s.path in ("/moved", "/landing")] == [
        ("POST", "/moved"),
        ("GET", "/landing"),  # a 303 turns the POST into a GET
    ]

    done = wait_state(client, auth, flaky, FINAL, timeout=40)
    assert done["state"] == "SUCCESS", done
    assert done["result"] == {"ok": True, "echo": [1, 2]}
    assert done["retries"] == 2
    seen = api.requests("/flaky")
    assert len(seen) == 3 and all(gap >= 0.5 for gap in gaps(seen))
    for request in seen:
        assert request.path == "/flaky?v=1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "tasklane/0.1"
        assert request.json() == payload

    done = wait_state(client, auth, busy, FINAL, timeout=40)
    assert done["state"] == "SUCCESS" and done["result"] == "plain text reply", done
    seen = api.requests("/busy")
    assert len(seen) == 2 and gaps(seen)[0] >= 2.0
    assert seen[0].body == b"null"

    done = wait_state(client, auth, down, FINAL, timeout=40)
    assert done["state"] == "SUCCESS" and done["result"] == {"up": True}, done
    assert [s.body for s in later.requests("/up")] == [b"7"]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_call_external_api_final_failures(
    processes: None,
    api: HttpPeer,
    http_peer: Callable[..., HttpPeer],
    client: FlaskClient,
    auth: dict[str, str],
) -> None:
    """It fails at once, without retries, on a 404, a redirect to a refused address, an oversized reply."""
    inside = http_peer(host="127.0.0.2").script("/admin", Answer(200, "internal"))
    api.script("/missing", Answer(404, {"error": "no such thing"}))
    api.script("/to-inside", Answer(307, headers={"Location": inside.url("/admin")}))
    api.script("/huge", Answer(200, "x" * (1024 * 1024 + 1)))
    jobs = {
        path: enqueue(client, auth, "call_external_api", {"url": api.url(path), "data": {}})
        for path in ("/missing", "/to-inside", "/huge")
    }
    expected = {
        "/missing": ("PermanentHTTPError", "HTTP 404"),
        "/to-inside": ("OutboundURLRefused", "127.0.0.2 is a loopback address"),
        "/huge": ("ResponseTooLarge", "larger than 1048576"),
    }
    for path, job_id in jobs.items():
        done = wait_state(client, auth, job_id, FINAL)
        assert done["state"] == "FAILURE" and done["retries"] == 0, done
        kind, words = expected[path]
        assert done["error"]["type"] == kind and words in done["error"]["message"], done["error"]
        assert len(api.requests(path)) == 1
    assert inside.requests() == []


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_model_cache_refresh_caches_each_provider(
    start: Starter,
    rconn: redis.Redis,
    http_peer: Callable[..., HttpPeer],
    client: FlaskClient,
    auth: dict[str, str],
) -> None:
    """It caches Ollama's and LiteLLM's lists for an hour; a provider down is reported, the other cached."""
    ollama, litellm = http_peer(), http_peer()
    ollama.script("/api/tags", Answer(200, OLLAMA_TAGS))
    litellm.script("/v1/models", Answer(200, LITELLM_MODELS), Answer(503, {"error": "overloaded"}))
    start_worker(
        start,
        rconn,
        OLLAMA_URL=ollama.url(""),
        LITELLM_URL=litellm.url("/").replace("http://", "http://:sk-litellm-key@"),
    )

    done = wait_state(client, auth, enqueue(client, auth, "model_cache_refresh", {}), FINAL)
    assert done["state"] == "SUCCESS", done
    report = done["result"]
    assert report["status"] == "ok"
    assert {name: (p["status"], p["count"]) for name, p in report["providers"].items()} == {
        "ollama": ("ok", 2),
        "litellm": ("ok", 3),
    }
    [tags] = ollama.requests()
    assert (tags.method, tags.path) == ("GET", "/api/tags")
    [models] = litellm.requests()
    assert (models.method, models.path) == ("GET", "/v1/models")
    assert models.headers["authorization"] == "Bearer sk-litellm-key"
    cached = json.loads(rconn.get(keys.model_cache("ollama")) or b"{}")
    assert [m["id"] for m in cached["models"]] == ["llama3.2:3b", "nomic-embed-text:latest"]
    assert cached["models"][0]["family"] == "llama" and cached["models"][0]["parameter_size"] == "3.2B"
    litellm_cached = json.loads(rconn.get(keys.model_cache("litellm")) or b"{}")
    assert [m["id"] for m in litellm_cached["models"]] == ["gpt-4o-mini", "claude-sonnet", "local-llama"]
    for provider in ("ollama", "litellm"):
        assert 3500 < rconn.ttl(keys.model_cache(provider)) <= 3600

    # LiteLLM down now: Ollama is refreshed, LiteLLM's failure reported, its last list kept.
    rconn.expire(keys.model_cache("ollama"), 100)
    done = wait_state(client, auth, enqueue(client, auth, "model_cache_refresh", {}), FINAL)
    assert done["state"] == "SUCCESS", done
    report = done["result"]
    assert report["status"] == "partial"
    assert report["providers"]["ollama"]["status"] == "ok"
    assert report["providers"]["litellm"]["status"] == "error"
    assert "HTTP 503" in report["providers"]["litellm"]["error"]
    assert "sk-litellm-key" not in json.dumps(report)
    assert rconn.ttl(keys.model_cache("ollama")) > 3500
    assert json.loads(rconn.get(keys.model_cache("litellm")) or b"{}")["models"] == litellm_cached["models"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_model_cache_refresh_with_both_providers_down(
    start: Starter,
    rconn: redis.Redis,
    http_peer: Callable[..., HttpPeer],
    client: FlaskClient,
    auth: dict[str, str],
) -> None:
    """It reports each failure (a refused connection, an answer that is no model list) and caches nothing."""
    broken = http_peer().script("/api/tags", Answer(200, {"unexpected": True}))
    start_worker(start, rconn, OLLAMA_URL=broken.url(""), LITELLM_URL=f"http://127.0.0.1:{free_port()}")
    done = wait_state(client, auth, enqueue(client, auth, "model_cache_refresh", {}), FINAL)
    assert done["state"] == "SUCCESS", done
    report = done["result"]
    assert report["status"] == "failed"
    assert "no list of models" in report["providers"]["ollama"]["error"]
    assert "ConnectError" in report["providers"]["litellm"]["error"]
    assert rconn.keys(keys.model_cache("*")) == []


def test_model_cache_refresh_is_declared_hourly_on_low(client: FlaskClient, auth: dict[str, str]) -> None:
    """It is a periodic task of the low queue, run every hour."""
    tasks = catalogue(client, auth)
    assert tasks["model_cache_refresh"]["queue"] == "low"
    assert tasks["model_cache_refresh"]["schedule"]["interval"] == 3600
    assert tasks["call_external_api"]["retry"]["max_retries"] == 5
    assert tasks["call_external_api"]["retry"]["backoff"]["cap"] == 600


# --- the policy at the API ------------------------------------------------------------------------


@pytest.fixture
def strict_client(tmp_path: Path, redis_url: str) -> FlaskClient:
    """The API of an app without OUTBOUND_URL_ALLOWLIST."""
    return create_app(make_env(tmp_path / "strict", redis_url)).test_client()


def post_call(client: FlaskClient, auth: dict[str, str], url: str) -> TestResponse:
    return client.post(
        "/api/v1/tasks/call_external_api", json={"args": {"url": url, "data": {}}}, headers=auth
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5000/hook",
        "http://localhost/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://192.168.0.10/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "ftp://example.com/",
    ],
)
def test_api_answers_422_for_a_refused_url(
    strict_client: FlaskClient, auth: dict[str, str], url: str
) -> None:
    """It answers 422 naming args.url when call_external_api is given a URL the policy refuses."""
    response = post_call(strict_client, auth, url)
    assert response.status_code == 422, response.get_json()
    details = response.get_json()["error"]["details"]
    assert [d["field"] for d in details] == ["args.url"], details
    assert "outbound URL refused" in details[0]["message"] or url.startswith("ftp:")


def test_api_accepts_a_public_url_and_what_the_allowlist_admits(
    strict_client: FlaskClient, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It enqueues a public address; with OUTBOUND_URL_ALLOWLIST=127.0.0.1 that address too, not 127.0.0.2."""
    assert post_call(strict_client, auth, "https://93.184.216.34/v1").status_code == 202
    assert post_call(client, auth, "http://127.0.0.1:5000/hook").status_code == 202
    assert post_call(client, auth, "http://[::ffff:127.0.0.1]:5000/hook").status_code == 202
    assert post_call(client, auth, "http://127.0.0.2:5000/hook").status_code == 422
