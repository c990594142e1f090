"""The asyncio twin: ``AsyncTasklane`` (Celery-shaped calls) and ``AsyncClient`` (call by call), on httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import httpx

from tasklane_client import canvas as cv
from tasklane_client._http import (
    FINAL,
    Call,
    answer,
    answer_lost,
    enqueue_call,
    fields_of,
    headers,
    may_repeat,
    retry_delay,
    unknown_task,
    unreachable,
)
from tasklane_client.canvas import Canvas, Signature, Task, arguments
from tasklane_client.errors import TasklaneError, TasklaneTimeout
from tasklane_client.tasklane import job_outcome, workflow_outcome

__all__ = ["AioResult", "AioWorkflowResult", "AsyncClient", "AsyncTasklane"]


class AsyncClient:
    """The same calls as :class:`~tasklane_client.client.Client`, each a coroutine."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers(token), timeout=timeout, transport=transport
        )

    async def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        """Enqueue ``task`` with keyword ``args`` and options; the job id."""
        return str((await self.call(enqueue_call(task, args, options)))["job_id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        """The job's view."""
        return dict(await self.call(Call("GET", f"/api/v1/jobs/{job_id}")))

    async def wait(
        self, job_id: str, timeout: float | None = 60.0, interval: float = 0.05, max_interval: float = 1.0
    ) -> dict[str, Any]:
        """Poll the job with a growing interval until it finishes; its final view.

        Raises :class:`TasklaneTimeout` (a ``TimeoutError``) after ``timeout`` s (None: no limit).
        """
        return await self._wait(self.job, job_id, "job", timeout, interval, max_interval)

    async def wait_workflow(
        self,
        workflow_id: str,
        timeout: float | None = 60.0,
        interval: float = 0.05,
        max_interval: float = 1.0,
    ) -> dict[str, Any]:
        """Poll the workflow until it finishes (succeeded, failed or revoked); its final status."""
        fetch = self.workflow_status
        return await self._wait(fetch, workflow_id, "workflow", timeout, interval, max_interval)

    async def _wait(
        self, fetch: Any, key: str, what: str, timeout: float | None, interval: float, max_interval: float
    ) -> dict[str, Any]:
        deadline = None if timeout is None else self.clock() + timeout
        pause = interval
        while True:
            view: dict[str, Any] = await fetch(key)
            if view.get("state") in FINAL:
                return view
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                raise TasklaneTimeout(408, "timeout", f"{what} {key} did not finish within {timeout} s", view)
            await self.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 1.5, max_interval)

    async def revoke(self, job_id: str) -> dict[str, Any]:
        """Cancel a waiting job or stop a running one."""
        return dict(await self.call(Call("DELETE", f"/api/v1/jobs/{job_id}")))

    async def retry(self, job_id: str) -> dict[str, Any]:
        """Requeue a failed job."""
        return dict(await self.call(Call("POST", f"/api/v1/jobs/{job_id}/retry")))

    async def workflow(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a workflow."""
        return dict(await self.call(Call("POST", "/api/v1/workflows", json=spec)))

    async def workflow_status(self, workflow_id: str) -> dict[str, Any]:
        """A workflow's state, steps and result."""
        return dict(await self.call(Call("GET", f"/api/v1/workflows/{workflow_id}")))

    async def jobs(self, **filters: str) -> dict[str, Any]:
        """One page of jobs."""
        return dict(await self.call(Call("GET", "/api/v1/jobs", params=filters)))

    async def tasks(self) -> list[dict[str, Any]]:
        """The catalogue."""
        return list((await self.call(Call("GET", "/api/v1/tasks")))["tasks"])

    async def aclose(self) -> None:
        """Release the pooled connections."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def call(self, call: Call) -> Any:
        """Send one call, retrying a 503 or a connection error; its JSON answer."""
        attempt = 0
        while True:
            try:
                response = await self.http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                if not may_repeat(call, exc):
                    raise answer_lost(call, exc) from exc
                if attempt >= self.retries:
                    raise unreachable(call, exc) from exc
                await self.sleep(retry_delay(attempt, self.backoff, None))
                attempt += 1
                continue
            if response.status_code == 503 and attempt < self.retries:
                await self.sleep(retry_delay(attempt, self.backoff, response.headers.get("Retry-After")))
                attempt += 1
                continue
            return answer(response)


class AioResult:
    """:class:`~tasklane_client.tasklane.AsyncResult` for asyncio: ``await r.state``, ``await r.get()``."""

    def __init__(self, id: str, tasklane: AsyncTasklane) -> None:
        self.id = id
        self.tasklane = tasklane

    @property
    def task_id(self) -> str:
        """Celery's name for ``id``."""
        return self.id

    async def view(self) -> dict[str, Any]:
        """The job's whole view."""
        return await self.tasklane.client.job(self.id)

    @property
    def state(self) -> Awaitable[str]:
        """``await r.state``: PENDING, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE or REVOKED."""
        return self._field("state")

    @property
    def status(self) -> Awaitable[str]:
        """``await r.status``: RQ's own status word."""
        return self._field("status")

    @property
    def result(self) -> Awaitable[Any]:
        """``await r.result``: the return value once it succeeded, the exception once it failed, else None."""
        return self._result()

    async def _field(self, name: str) -> str:
        return str((await self.view())[name])

    async def _result(self) -> Any:
        view = await self.view()
        return job_outcome(view)[1] if view["state"] in FINAL else None

    async def ready(self) -> bool:
        """True once it has finished."""
        return await self.state in FINAL

    async def successful(self) -> bool:
        """True when it succeeded."""
        return await self.state == "SUCCESS"

    async def failed(self) -> bool:
        """True when it failed for good."""
        return await self.state == "FAILURE"

    async def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """Wait for the job; its result, or its error raised (returned if not ``propagate``)."""
        ok, value = job_outcome(await self.tasklane.client.wait(self.id, timeout=timeout, interval=interval))
        if not ok and propagate:
            raise value
        return value

    async def revoke(self) -> None:
        """Cancel it if it waits, stop it if it runs (nothing if it has already finished)."""
        try:
            await self.tasklane.client.revoke(self.id)
        except TasklaneError as exc:
            if exc.status != 409:
                raise

    def __repr__(self) -> str:
        return f"<AioResult: {self.id}>"


class AioWorkflowResult:
    """:class:`~tasklane_client.tasklane.WorkflowResult` for asyncio: ``await flow.get()``."""

    def __init__(self, id: str, job_ids: list[str], tasklane: AsyncTasklane) -> None:
        self.id = id
        self.job_ids = job_ids
        self.tasklane = tasklane

    @property
    def state(self) -> Awaitable[str]:
        """``await flow.state``: the workflow's aggregate state."""
        return self._state()

    async def _state(self) -> str:
        return str((await self.tasklane.client.workflow_status(self.id))["state"])

    @property
    def results(self) -> list[AioResult]:
        """One result per job of the workflow, in creation order."""
        return [AioResult(job_id, self.tasklane) for job_id in self.job_ids]

    async def ready(self) -> bool:
        """True once it has finished."""
        return await self.state in FINAL

    async def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """Wait for the workflow; its result, or the failed step's error."""
        status = await self.tasklane.client.wait_workflow(self.id, timeout=timeout, interval=interval)
        ok, value = workflow_outcome(status)
        if not ok and propagate:
            raise value
        return value

    async def revoke(self) -> None:
        """Revoke every job of the workflow that has not finished."""
        for result in self.results:
            await result.revoke()


AioJob = Coroutine[Any, Any, AioResult]
AioWorkflow = Coroutine[Any, Any, AioWorkflowResult]


class AsyncTasklane:
    """:class:`~tasklane_client.tasklane.Tasklane` with ``await``: ``await tl.task("add").delay(2, 3)``."""

    def __init__(self, base_url: str, token: str, **options: Any) -> None:
        self.client = AsyncClient(base_url, token, **options)
        self._fields: dict[str, list[str]] | None = None

    def task(self, name: str) -> Task[AioJob, AioWorkflow]:
        """The handle of the remote task ``name``."""
        return Task(self, name)

    def AsyncResult(self, id: str) -> AioResult:  # Celery's app.AsyncResult(id)
        """The result of a job enqueued earlier, by its id."""
        return AioResult(id, self)

    def chain(self, *steps: Any) -> cv.chain[AioJob, AioWorkflow]:
        """Steps one after another, each receiving the previous step's result."""
        return cv.chain(self, *steps)

    def group(self, *steps: Any) -> cv.group[AioJob, AioWorkflow]:
        """Steps side by side; the result is the list of their results."""
        return cv.group(self, *steps)

    def chord(self, header: Any, body: Signature[AioJob, AioWorkflow]) -> cv.chord[AioJob, AioWorkflow]:
        """A group whose list of results goes to ``body``."""
        return cv.chord(self, header, body)

    async def fields(self, task: str) -> list[str]:
        """The task's input fields in order, from the service's catalogue (read once, then kept)."""
        return (await self._catalogue([task]))[task]

    async def aclose(self) -> None:
        """Release the pooled connections."""
        await self.client.aclose()

    async def __aenter__(self) -> AsyncTasklane:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _catalogue(self, tasks: Iterable[str]) -> dict[str, list[str]]:
        wanted = set(tasks)
        if wanted and (self._fields is None or not wanted <= self._fields.keys()):
            self._fields = fields_of(await self.client.tasks())
        missing = wanted - self._fields.keys() if self._fields is not None else set()
        if missing:
            raise unknown_task(sorted(missing)[0])
        return self._fields or {}

    async def _enqueue(
        self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: dict[str, Any]
    ) -> AioResult:
        if args:
            kwargs = arguments(task, (await self._catalogue([task]))[task], args, kwargs)
        return AioResult(await self.client.enqueue(task, dict(kwargs), **options), self)

    async def _start_workflow(self, canvas: Canvas[Any, Any]) -> AioWorkflowResult:
        spec = canvas.node(False, await self._catalogue(canvas.tasks()))
        created = await self.client.workflow(spec)
        return AioWorkflowResult(str(created["workflow_id"]), list(created["job_ids"]), self)
