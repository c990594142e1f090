"""The worker classes, one module per mode; RQ's classes own the work loop.

- ``pooled`` (:class:`~app.workers.pooled.JsonPooledWorker`, the default): long-lived children
  of the supervisor, each running many jobs, recycled after N jobs or past a memory cap;
- ``fork`` (:class:`JsonWorker`): one work horse per job, the most isolated;
- ``inline`` (:class:`JsonInlineWorker`): jobs in the worker process, the fewest round trips;
- ``threads`` (:class:`JsonThreadWorker`, :class:`ThreadPool`): inline workers on threads,
  for jobs that wait on I/O.

Every mode keeps RQ's data model (job hashes, registries, results, worker keys), so
rq-dashboard and the ``rq`` CLI read their jobs and workers. Process management lives in
app/processes/supervisor.py.
"""

from __future__ import annotations

from app.processes.workers.base import TasklaneWorkerMixin
from app.processes.workers.fork import JsonWorker
from app.processes.workers.inline import DeadlineBoard, JsonInlineWorker
from app.processes.workers.threads import JsonThreadWorker, ThreadPool

__all__ = [
    "DeadlineBoard",
    "JsonInlineWorker",
    "JsonThreadWorker",
    "JsonWorker",
    "TasklaneWorkerMixin",
    "ThreadPool",
]
