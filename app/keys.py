"""Every Redis key the service writes besides RQ's own: one home, one format.

Keys are ``tasklane:<concept>:<part>``. RQ keeps its keys under ``rq:``; nothing here
reaches into those, so rq-dashboard and the ``rq`` CLI stay the authority on them.
"""

from __future__ import annotations

PREFIX = "tasklane"


def _key(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


def health_report() -> str:
    """The latest report of the health_check task (a JSON string)."""
    return _key("health", "latest")


def idempotency(token_hash: str, key: str) -> str:
    """The job an API caller's Idempotency-Key maps to, per caller."""
    return _key("idempotency", token_hash, key)


def unique_lock(task: str, args_hash: str) -> str:
    """The job holding a unique task's argument set while it waits or runs."""
    return _key("unique", task, args_hash)


def metrics_jobs() -> str:
    """Hash of job outcome counters: ``<task>|<outcome>`` -> count."""
    return _key("metrics", "jobs")


def metrics_durations() -> str:
    """Hash of job duration histogram buckets: ``<task>|<le>`` -> count, plus sums."""
    return _key("metrics", "durations")


def schedule_entries() -> str:
    """Hash of periodic entries this deployment registered: task name -> JSON description."""
    return _key("schedules")
