"""What the sync and the async clients share: requests built, answers read, retries paced."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tasklane_client.errors import InvalidArguments, TasklaneError

#: States after which a job (or a workflow) does not change.
FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
#: The longest pause a 503's Retry-After may ask for, in seconds.
MAX_RETRY_AFTER = 30.0


@dataclass
class Call:
    """One API call: method, path under the base URL, and what goes with it."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def enqueue_call(task: str, args: dict[str, Any] | None, options: dict[str, Any]) -> Call:
    """``POST /api/v1/tasks/<task>``; ``idempotency_key`` goes in the Idempotency-Key header,
    ``task_id`` is Celery's name for ``job_id``, an ``eta`` datetime is sent as ISO 8601 (naive = UTC)."""
    options = {k: v for k, v in options.items() if v is not None}
    headers = {}
    key = options.pop("idempotency_key", None)
    if key is not None:
        headers["Idempotency-Key"] = str(key)
    if "task_id" in options:
        options.setdefault("job_id", options.pop("task_id"))
    for name in ("eta", "expires"):
        value = options.get(name)
        if isinstance(value, datetime):
            options[name] = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    body = {"args": args or {}, "options": options}
    return Call("POST", f"/api/v1/tasks/{task}", json=body, headers=headers)


def retry_delay(attempt: int, backoff: float, retry_after: str | None) -> float:
    """The pause before retry number ``attempt`` (0-based): doubling, or Retry-After when longer."""
    delay = float(backoff * 2**attempt)
    if retry_after and retry_after.strip().isdigit():
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
    return delay


def answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer, or the TasklaneError of a failed one."""
    if response.status_code >= 400:
        raise error_of(response)
    return response.json() if response.content else {}


def error_of(response: httpx.Response) -> TasklaneError:
    """The API's error shape as an exception (any other body: ``http_error`` and its first 200 characters)."""
    try:
        body = response.json()["error"]
        cls = InvalidArguments if response.status_code == 422 else TasklaneError
        return cls(response.status_code, str(body["code"]), str(body["message"]), body.get("details"))
    except (ValueError, KeyError, TypeError):
        text = response.text[:200] or response.reason_phrase
        return TasklaneError(response.status_code, "http_error", text)


def may_repeat(call: Call, exc: Exception) -> bool:
    """Whether a call that failed with ``exc`` can be sent again without doing its work twice: it never
    reached the service (no connection), or it is a read or a revoke, or an Idempotency-Key makes a
    repeat return the same job. A POST whose answer was lost may have enqueued its job."""
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return never_sent or call.method in ("GET", "DELETE") or "Idempotency-Key" in call.headers


def answer_lost(call: Call, exc: Exception) -> TasklaneError:
    """The error of a POST sent whose answer never came (not repeated: it may have been done)."""
    message = (
        f"{call.method} {call.path}: sent, but no answer ({exc!r}); it may have been done (not repeated: "
    )
    return TasklaneError(504, "no_answer", message + "give an idempotency_key to make repeats safe)")


def unreachable(call: Call, exc: Exception) -> TasklaneError:
    """The error raised once a service that cannot be reached has used up its retries."""
    return TasklaneError(503, "unreachable", f"{call.method} {call.path}: {exc}")


def headers(token: str) -> dict[str, str]:
    """The headers of every call."""
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def fields_of(catalogue: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each task's input fields in order (positional arguments fill them), from ``GET /api/v1/tasks``."""
    return {t["name"]: list((t.get("input_schema") or {}).get("properties") or {}) for t in catalogue}


def unknown_task(name: str) -> TasklaneError:
    """What the service answers for a task it does not have (raised before a call needs its fields)."""
    return TasklaneError(404, "unknown_task", f"no task named {name!r}")
