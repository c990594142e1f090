"""The names of the job-metadata fields the platform owns: one home, one spelling.

RQ keeps a job's ``meta`` as a JSON object beside its data; these are the keys Tasklane
writes there. The job API, the dashboard's job page and the workers read them by these
names only.
"""

from __future__ import annotations

from enum import StrEnum


class Meta(StrEnum):
    """A job-metadata key."""

    #: The registry name of the job's task.
    TASK = "task"
    #: The retry budget the job was created with (RQ keeps only what is left).
    MAX_RETRIES = "max_retries"
    #: Set when the latest failure must not be retried (policy, bad arguments, revoke).
    NO_RETRY = "no_retry"
    #: Set when the job was revoked; a run that has not started yet is skipped.
    REVOKED = "revoked"
    #: Seconds before the next attempt, asked for by the task (``raise RetryTask(countdown)``).
    RETRY_COUNTDOWN = "retry_countdown"
    #: When the next attempt is due (ISO 8601, UTC).
    NEXT_RETRY_AT = "next_retry_at"
    #: The latest error: ``{"type", "message"}``.
    ERROR = "error"
    #: Every failed attempt: ``[{"attempt", "type", "message", "at"}, ...]``.
    ATTEMPTS = "attempts"
    #: When a job that has not started by then never runs (ISO 8601, UTC): ``expires``.
    EXPIRES = "expires"
    #: The job's priority in its queue, 0 (first) .. 9 (last), when not the default 5: ``priority``.
    PRIORITY = "priority"
    #: The job's fairness group in its queue (round robin over groups): ``group``.
    GROUP = "group"
    #: Seconds the task asked to snooze for in the run that just ended (``Snooze``); read once.
    SNOOZE_FOR = "snooze_for"
    #: How many times the job snoozed.
    SNOOZED = "snoozed"
    #: When a job deferred by its task's rate limit may start (ISO 8601, UTC).
    RATE_LIMITED_UNTIL = "rate_limited_until"
    #: The key whose own bucket of the task's rate limit the job starts in (``rate_key``).
    RATE_KEY = "rate_key"
    #: The key of the sequence the job belongs to (``sequence``): one at a time, in enqueue order.
    SEQUENCE = "sequence"
    #: The uniqueness lock the job holds while it waits or runs.
    UNIQUE_KEY = "unique_key"
    #: ``"period"`` when the job's uniqueness key holds for its whole period (``unique.until``), ended or not.
    UNIQUE_UNTIL = "unique_until"
    #: What the task last reported: ``{"current", "total", "percent", "stage"?, "message"?}``.
    PROGRESS = "progress"
    #: The job's place in a workflow: ``{"id", "path", "input"?}``.
    WORKFLOW = "workflow"
    #: The periodic entry a job was enqueued for, and the tick it runs.
    PERIODIC = "periodic"
    TICK = "tick"
    #: A periodic entry's definition (func, queue, schedule).
    DEFINITION = "definition"
    #: How often the job was put back because the worker holding it died.
    ORPHANED = "orphaned"
    #: How often it was put back because its run's outcome was lost to a Redis outage.
    OUTCOMES_LOST = "outcomes_lost"
    #: The W3C trace context (``traceparent``, ``tracestate``) of the span that enqueued the
    #: job; only while tracing is on. The job's run is traced as its child.
    TRACE = "trace"
    #: Set when the job's args and result are stored sealed (AES-GCM, ENCRYPTION_KEYS).
    ENCRYPTED = "encrypted"
