"""``Client``: Tasklane's HTTP API call by call (``AsyncClient`` in :mod:`tasklane_client.aio`).

    client = Client("https://tasks.example.com", token)
    job_id = client.enqueue("add", {"x": 2, "y": 3}, countdown=10)
    job = client.wait(job_id, timeout=30)       # the job's view once it has finished

Errors raise :class:`TasklaneError` carrying the API's ``status`` and ``code``; a 503 or a
refused connection is retried with back-off; one pooled connection is reused across calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tasklane_client._http import (
    FINAL,
    Call,
    answer,
    answer_lost,
    enqueue_call,
    headers,
    may_repeat,
    retry_delay,
    unreachable,
)
from tasklane_client.errors import TasklaneTimeout

__all__ = ["Client"]


class Client:
    """Calls Tasklane's HTTP API; retries 503 and connection errors with exponential back-off.

    ``sleep`` and ``clock`` are the pause and the monotonic clock that retries and ``wait``
    use (``time.sleep`` and ``time.monotonic``; tests give their own); ``transport`` is
    httpx's, for tests and proxies.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self.http = httpx.Client(
            base_url=self.base_url, headers=headers(token), timeout=timeout, transport=transport
        )

    # --- the calls -------------------------------------------------------------------------

    def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        """Enqueue ``task`` with keyword ``args``; options as ``POST /api/v1/tasks/<name>`` takes them
        (countdown, eta, queue, job_id, result_ttl, priority, group, encrypt, rate_key, ...), and
        ``idempotency_key`` (sent as the Idempotency-Key header). Returns the job id.
        ``sequence="user-42"``: one at a time, in order."""
        return str(self.call(enqueue_call(task, args, options))["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's view: state, status, progress, result, error, ..."""
        return dict(self.call(Call("GET", f"/api/v1/jobs/{job_id}")))

    def wait(
        self, job_id: str, timeout: float | None = 60.0, interval: float = 0.05, max_interval: float = 1.0
    ) -> dict[str, Any]:
        """Poll the job with a growing interval until it finishes; its final view.

        Raises :class:`TasklaneTimeout` (a ``TimeoutError``) after ``timeout`` s (None: no limit).
        """
        return self._wait(self.job, job_id, "job", timeout, interval, max_interval)

    def wait_workflow(
        self,
        workflow_id: str,
        timeout: float | None = 60.0,
        interval: float = 0.05,
        max_interval: float = 1.0,
    ) -> dict[str, Any]:
        """Poll the workflow until it finishes (succeeded, failed or revoked); its final status."""
        return self._wait(self.workflow_status, workflow_id, "workflow", timeout, interval, max_interval)

    def _wait(
        self, fetch: Any, key: str, what: str, timeout: float | None, interval: float, max_interval: float
    ) -> dict[str, Any]:
        deadline = None if timeout is None else self.clock() + timeout
        pause = interval
        while True:
            view: dict[str, Any] = fetch(key)
            if view.get("state") in FINAL:
                return view
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                raise TasklaneTimeout(408, "timeout", f"{what} {key} did not finish within {timeout} s", view)
            self.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 1.5, max_interval)

    def revoke(self, job_id: str) -> dict[str, Any]:
        """Cancel a waiting job or stop a running one."""
        return dict(self.call(Call("DELETE", f"/api/v1/jobs/{job_id}")))

    def retry(self, job_id: str) -> dict[str, Any]:
        """Requeue a failed job."""
        return dict(self.call(Call("POST", f"/api/v1/jobs/{job_id}/retry")))

    def workflow(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a workflow (``{"type": "chain"|"group"|"chord", "steps": [...], ...}``)."""
        return dict(self.call(Call("POST", "/api/v1/workflows", json=spec)))

    def workflow_status(self, workflow_id: str) -> dict[str, Any]:
        """A workflow's state, steps and result."""
        return dict(self.call(Call("GET", f"/api/v1/workflows/{workflow_id}")))

    def jobs(self, **filters: str) -> dict[str, Any]:
        """One page of jobs (filters: state, task, queue, cursor, limit)."""
        return dict(self.call(Call("GET", "/api/v1/jobs", params=filters)))

    def tasks(self) -> list[dict[str, Any]]:
        """The catalogue."""
        return list(self.call(Call("GET", "/api/v1/tasks"))["tasks"])

    def close(self) -> None:
        """Release the pooled connections."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------

    def call(self, call: Call) -> Any:
        """Send one call, retrying a 503 or a connection error; its JSON answer."""
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                if not may_repeat(call, exc):
                    raise answer_lost(call, exc) from exc
                if attempt >= self.retries:
                    raise unreachable(call, exc) from exc
                self.sleep(retry_delay(attempt, self.backoff, None))
                attempt += 1
                continue
            if response.status_code == 503 and attempt < self.retries:
                self.sleep(retry_delay(attempt, self.backoff, response.headers.get("Retry-After")))
                attempt += 1
                continue
            return answer(response)
