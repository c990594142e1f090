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


def replication_probe() -> str:
    """A key the API writes after an enqueue when ENQUEUE_MIN_REPLICAS is set, then WAITs on."""
    return _key("replication", "probe")


def scheduler_heartbeat() -> str:
    """The latest scheduler pass (a JSON string, with a TTL): absent when no scheduler runs."""
    return _key("scheduler", "heartbeat")


def idempotency(token_hash: str, key: str) -> str:
    """The job an API caller's Idempotency-Key maps to, per caller."""
    return _key("idempotency", token_hash, key)


def outbox_delivered(job_id: str) -> str:
    """Set (with a TTL) once an outbox row's job is in Redis: a later push of the row only deletes it."""
    return _key("outbox", "delivered", job_id)


def unique_lock(task: str, args_hash: str) -> str:
    """The job holding a unique task's argument set while it waits or runs."""
    return _key("unique", task, args_hash)


def unique_key(task: str, key_hash: str) -> str:
    """The job holding a caller-named uniqueness key of a task (``unique={"key": ...}``)."""
    return _key("unique", task, "key", key_hash)


def debounce(task: str, key_hash: str) -> str:
    """The scheduled job of a task's debounce key (``debounce={"key": ...}``), while it waits."""
    return _key("debounce", task, key_hash)


def rate_limit(task: str, rate_key: str | None = None) -> str:
    """The theoretical arrival time (GCRA) of a rate-limited task's next start; with a
    ``rate_key``, of that key's own bucket (``tasklane:ratelimit:<task>:key:<rate_key>``)."""
    return _key("ratelimit", task) if rate_key is None else _key("ratelimit", task, "key", rate_key)


def rate_line(task: str, rate_key: str) -> str:
    """The last start slot promised to a job of ``rate_key`` put back to wait for its bucket (GCRA
    with reservations): each such job comes back at its own time, not all at the next free one."""
    return _key("ratelimit", task, "line", rate_key)


def concurrency(task: str, value: str | None = None) -> str:
    """The name of RQ's concurrency limit of a task, or of one value of its concurrency key."""
    return _key(task) if value is None else _key(f"{task}:{value}")


def intermediate_seen(queue: str) -> str:
    """When the sweep first saw each job id in a queue's intermediate list (a hash)."""
    return _key("intermediate-seen", queue)


def doorbell(queue: str) -> str:
    """A list workers block on; pushing a job rings it so idle workers scan their queues."""
    return _key("doorbell", queue)


def paused_queues() -> str:
    """The names of the paused queues (a set): no worker takes a job from them."""
    return _key("queues", "paused")


def resume_bell(queue: str) -> str:
    """A list the idle workers of a paused queue block on; resuming it rings them all at once."""
    return _key("resume-bell", queue)


def expiries() -> str:
    """Jobs enqueued with ``expires``, scored by that time: the sweep ends those still waiting past it."""
    return _key("expiries")


def sequence(key: str) -> str:
    """A sequence's job ids in enqueue order (``sequence`` option): its head's turn, the rest wait."""
    return _key("sequence", key)


def sequences() -> str:
    """The set of sequence keys (:func:`sequence`) that hold jobs: what the sweep settles."""
    return _key("sequences")


def lanes(queue: str) -> str:
    """The priorities (a sorted set, member and score the number) of a queue that may hold jobs
    outside its plain list: a priority other than 5, or groups. Absent: the plain path only."""
    return _key("lanes", queue)


def laned_queues() -> str:
    """The names of the queues whose :func:`lanes` hold a priority (a set): while it and the paused
    set are both absent, a dequeue takes from the plain lists alone (one EXISTS for every queue)."""
    return _key("queues", "laned")


def ring(queue: str, priority: int | str) -> str:
    """The groups with waiting jobs at one priority of a queue, in turn order (a list; ``""`` is the
    priority's ungrouped jobs); the dequeue takes the head's first job and puts it back at the tail."""
    return _key("ring", queue, str(priority))


def ring_members(queue: str, priority: int | str) -> str:
    """The members of :func:`ring` (a set), so a group is put on the ring once."""
    return ring(queue, priority) + ":members"


def ring_pending(queue: str, priority: int | str) -> str:
    """Groups pushed to since the last dequeue (a set, one write per push, no condition): the
    dequeue puts each one not yet on :func:`ring` at its tail before it takes a turn."""
    return ring(queue, priority) + ":pending"


def workflow(workflow_id: str) -> str:
    """A workflow's structure and job ids (a JSON string)."""
    return _key("workflow", workflow_id)


def workflow_summary(workflow_id: str) -> str:
    """A workflow's steps counted by how they ended (a hash: ``total``, ``SUCCESS``, ``FAILURE``,
    ``REVOKED``, and ``failed_step``: the first step that failed)."""
    return _key("workflow", workflow_id, "summary")


def job_counts() -> str:
    """Jobs by outcome, across every worker: a hash of ``<task>|<outcome>`` -> count."""
    return _key("metrics", "jobs")


def job_durations(task: str) -> str:
    """One task's run times: a hash of histogram bucket index -> count, plus ``sum`` and ``count``."""
    return _key("metrics", "duration", task)


def http_counts() -> str:
    """API requests: a hash of ``<method>|<route>|<status>`` -> count."""
    return _key("metrics", "http")


def http_durations(route: str) -> str:
    """One route's latencies: a hash of histogram bucket index -> count, plus ``sum`` and ``count``."""
    return _key("metrics", "http-duration", route)


def model_cache(provider: str) -> str:
    """A model provider's cached model list (a JSON string with a one-hour TTL)."""
    return _key("models", provider)


def hourly_http(hour: str) -> str:
    """API requests of one hour (``YYYYMMDDHH`` UTC): ``<method>|<route>|<status>`` -> count,
    ``<route>|d<bucket>`` -> latency histogram counts, ``<route>|dsum`` -> seconds (with a TTL)."""
    return _key("metrics", "hourly", "http", hour)


def hourly_jobs(hour: str) -> str:
    """Job outcomes of one hour (``YYYYMMDDHH`` UTC): ``<task>|<outcome>`` -> count,
    ``<task>|d<bucket>`` -> run time histogram counts, ``<task>|dsum`` -> seconds (with a TTL)."""
    return _key("metrics", "hourly", "jobs", hour)


def series_minute(minute: str) -> str:
    """Job outcomes of one minute (``YYYYMMDDHHMM`` UTC) for the console's charts, per task, per
    queue and in all: ``<t|q|a>:<name>|<outcome>`` -> count, ``<t|q|a>:<name>|d<bucket>`` -> run
    time histogram counts (with a TTL of about a day)."""
    return _key("series", "minute", minute)


def series_hour(hour: str) -> str:
    """As :func:`series_minute`, for one hour (``YYYYMMDDHH`` UTC), kept about eight days."""
    return _key("series", "hour", hour)


def bulk(bulk_id: str) -> str:
    """A bulk action's progress: action, filter, matched, done, skipped, failed, by whom (a hash, a day)."""
    return _key("bulk", bulk_id)


def console_audit() -> str:
    """The console's latest actions, newest first (a capped list of JSON strings)."""
    return _key("console", "audit")


def cache(name: str) -> str:
    """An application cache entry."""
    return _key("cache", name)


#: SCAN patterns of the application's cache keys (cleanup_expired_data looks only at these).
CACHE_PATTERNS = (cache("*"), model_cache("*"))
