"""A client of Tasklane's HTTP API for other services: ``Client(base_url, token)``.

It needs nothing of the service but its URL and a token (only ``requests``)::

    client = Client("https://tasks.example.com", token)
    job_id = client.enqueue("add", {"x": 2, "y": 3}, countdown=10)
    job = client.wait(job_id, timeout=30)       # the job's view once it has finished

Errors raise :class:`TasklaneError` carrying the API's ``status`` and ``code``; a 503 or a
refused connection is retried with backoff; one pooled session is reused across calls.
"""

from __future__ import annotations

import time
from typing import Any

import requests

__all__ = ["Client", "TasklaneError", "TasklaneTimeout"]

#: States after which a job does not change.
FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class TasklaneError(Exception):
    """The API answered with an error: ``status`` (HTTP), ``code``, ``message``, ``details``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class TasklaneTimeout(TasklaneError, TimeoutError):
    """``wait`` gave up before the job finished."""


class Client:
    """Calls Tasklane's HTTP API; retries 503 and connection errors with exponential backoff."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.25,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    # --- the calls -------------------------------------------------------------------------

    def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        """Enqueue ``task`` with keyword ``args``; options: countdown, eta, queue, job_id, result_ttl,
        and ``idempotency_key`` (sent as the Idempotency-Key header). Returns the job id."""
        headers = {}
        key = options.pop("idempotency_key", None)
        if key is not None:
            headers["Idempotency-Key"] = str(key)
        body = {"args": args or {}, "options": options}
        return str(self._call("POST", f"/api/v1/tasks/{task}", json=body, headers=headers)["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's view: state, status, progress, result, error, ..."""
        return dict(self._call("GET", f"/api/v1/jobs/{job_id}"))

    def wait(
        self, job_id: str, timeout: float = 60.0, interval: float = 0.05, max_interval: float = 1.0
    ) -> dict[str, Any]:
        """Poll the job with a growing interval until it finishes; its final view (raises TasklaneTimeout)."""
        deadline = time.monotonic() + timeout
        pause = interval
        while True:
            view = self.job(job_id)
            if view.get("state") in FINAL:
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TasklaneTimeout(408, "timeout", f"job {job_id} did not finish within {timeout} s", view)
            time.sleep(min(pause, remaining))
            pause = min(pause * 1.5, max_interval)

    def revoke(self, job_id: str) -> dict[str, Any]:
        """Cancel a waiting job or stop a running one."""
        return dict(self._call("DELETE", f"/api/v1/jobs/{job_id}"))

    def retry(self, job_id: str) -> dict[str, Any]:
        """Requeue a failed job."""
        return dict(self._call("POST", f"/api/v1/jobs/{job_id}/retry"))

    def workflow(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a workflow (``{"type": "chain"|"group"|"chord", "steps": [...], ...}``)."""
        return dict(self._call("POST", "/api/v1/workflows", json=spec))

    def workflow_status(self, workflow_id: str) -> dict[str, Any]:
        """A workflow's state, steps and result."""
        return dict(self._call("GET", f"/api/v1/workflows/{workflow_id}"))

    def jobs(self, **filters: str) -> dict[str, Any]:
        """One page of jobs (filters: state, task, queue, cursor, limit)."""
        return dict(self._call("GET", "/api/v1/jobs", params=filters))

    def tasks(self) -> list[dict[str, Any]]:
        """The catalogue."""
        return list(self._call("GET", "/api/v1/tasks")["tasks"])

    def close(self) -> None:
        """Release the pooled connections."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.retries:
                    raise TasklaneError(503, "unreachable", f"{method} {path}: {exc}") from exc
                self._pause(attempt, None)
                attempt += 1
                continue
            if response.status_code == 503 and attempt < self.retries:
                self._pause(attempt, response.headers.get("Retry-After"))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response.json() if response.content else {}

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2**attempt
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 30.0))
        time.sleep(delay)


def _error(response: requests.Response) -> TasklaneError:
    try:
        body = response.json()["error"]
        return TasklaneError(
            response.status_code, str(body["code"]), str(body["message"]), body.get("details")
        )
    except (ValueError, KeyError, TypeError):
        return TasklaneError(response.status_code, "http_error", response.text[:200] or response.reason)
