"""Every tunable default of the service, one documented constant each."""

from __future__ import annotations

#: Redis used when REDIS_URL is unset outside production (the run command sets the embedded one)
#: and no embedded Redis of this folder's VAR_DIR is running.
REDIS_URL = "redis://127.0.0.1:6379/0"
#: The embedded Redis's folder and unix socket, under VAR_DIR (``python -m app.foundation.embedded_redis``).
EMBEDDED_REDIS_DIR = "redis"
EMBEDDED_REDIS_SOCKET = "redis.sock"
#: Seconds a web request waits on Redis before answering 503.
REDIS_SOCKET_TIMEOUT = 3.0
#: Port gunicorn binds when PORT is unset.
PORT = 5000
#: Largest request body the API accepts (MAX_REQUEST_BYTES), in bytes.
MAX_REQUEST_BYTES = 1024 * 1024
#: Deepest nesting of arrays and objects a JSON request body may have (the body itself is
#: level 1). Deeper bodies are refused before parsing: a parser and the validators after it
#: recurse once per level, and ~1,000 levels (2 KB of brackets) exhaust Python's stack.
MAX_JSON_DEPTH = 32
#: Most items one array, or members one object, of a JSON request body may have. At least
#: the longest list a task's input accepts (xsum takes 100,000 numbers).
MAX_JSON_ITEMS = 100_000
#: Most bytes of a request body the app did not read that are read and thrown away after
#: answering, so that a client that sends its whole body before reading (urllib, requests)
#: receives the answer (say a 413) instead of a reset connection, as nginx's lingering
#: close does. A larger rest is not read: the connection is closed instead.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
#: Longest time spent reading and throwing away such a rest, in seconds.
DRAIN_SECONDS = 5.0
#: Sender address of outgoing mail when MAIL_FROM is unset.
MAIL_FROM = "tasklane@localhost"
#: Shortest bearer token API_TOKENS accepts: shorter ones are guessable.
MIN_TOKEN_LENGTH = 16
#: Seconds a failed job stays in the failed-job registry (the dead-letter view): 7 days.
FAILED_JOB_TTL = 7 * 24 * 3600
#: Seconds a successful job's result is kept unless the task or the call says otherwise.
RESULT_TTL = 24 * 3600
#: Hard time limit of a task that declares none, in seconds.
TIME_LIMIT = 300
#: Queues a worker listens on when none are named, highest priority first.
WORKER_QUEUES = ("high", "default", "low")
#: Seconds between the scheduler's sweeps for dead workers' jobs.
SWEEP_INTERVAL = 5.0
#: Seconds a job may sit between dequeue and start before the sweep puts it back.
RESCUE_AFTER = 15.0
#: Seconds between two passes of the scheduler process.
SCHEDULER_INTERVAL = 1.0
#: Seconds a scheduler's lock on moving delayed jobs lives unless renewed; the active
#: scheduler renews it every pass, a standby tries to take it every pass, so a standby
#: takes over at most this long (plus one pass) after the active scheduler died.
SCHEDULER_LOCK_TTL = 10.0
#: Seconds back a scheduler catches up an interval entry's ticks that came due while no
#: scheduler ran (a takeover, a restart): each is enqueued, once; older ones are skipped.
CATCHUP_WINDOW = 60
#: Replicas that must acknowledge an enqueue (Redis WAIT) before the API answers 202
#: (ENQUEUE_MIN_REPLICAS); 0 answers as soon as the primary has the job.
ENQUEUE_MIN_REPLICAS = 0
#: Longest an enqueue waits for those acknowledgements, in ms (ENQUEUE_REPLICA_TIMEOUT_MS).
ENQUEUE_REPLICA_TIMEOUT_MS = 1000
#: Seconds an HTTP dependency of the health check may take.
HEALTH_CHECK_TIMEOUT = 5.0
#: Longest an idle worker waits on its queues' doorbells before it scans them anyway, in s.
DOORBELL_WAIT = 1.0
#: Most rings a doorbell keeps (rings only wake workers; extra ones are dropped).
DOORBELL_CAP = 64
#: Longest wait for a rate-limit slot a worker spends holding the job, in s; longer waits
#: put the job back in the scheduled registry.
RATE_LIMIT_HOLD = 1.0
#: Largest ``burst`` of a rate limit (starts let through at once), declared or in TASK_OVERRIDES.
MAX_BURST = 10_000
#: Longest ``rate_key`` a call may give (characters); it becomes part of a Redis key's name.
MAX_RATE_KEY = 200
#: Seconds past its hard limit after which the supervisor kills the process of a stuck
#: inline or threaded job (the signal or async exception could not reach it).
STUCK_JOB_GRACE = 5.0
#: Page size of job listings.
PAGE_SIZE = 50
#: Seconds an Idempotency-Key is remembered.
IDEMPOTENCY_TTL = 24 * 3600
#: Seconds the mark that an outbox row's job reached Redis is kept: a row whose delete was lost
#: is then only deleted when pushed again, never enqueued twice.
OUTBOX_DELIVERED_TTL = 7 * 24 * 3600
#: Outbox rows the scheduler's relay pushes per batch (each batch its own transaction).
OUTBOX_BATCH = 100
#: Seconds a workflow's record is kept (as long as a failed job).
WORKFLOW_TTL = 7 * 24 * 3600
#: Most jobs one workflow may create.
MAX_WORKFLOW_STEPS = 10_000
#: Steps a workflow's status lists per page (a workflow this small lists them all, as before).
WORKFLOW_STEPS_PAGE = 200
#: Jobs a workflow's build writes per pipeline (the first steps go last, so none runs early).
WORKFLOW_WRITE_CHUNK = 500
#: Most attempt records a job keeps (the latest ones).
MAX_ATTEMPT_RECORDS = 25
#: Seconds the alert webhook (ALERT_WEBHOOK_URL) may take.
ALERT_TIMEOUT = 5.0
#: Seconds the latest health report is kept for /readyz.
HEALTH_REPORT_TTL = 3600
#: Seconds between a worker's checks on the job in hand (heartbeat, hard limit).
MONITOR_INTERVAL = 5
#: A worker's and its job's heartbeat outlive the monitor interval by this much, in s.
HEARTBEAT_SLACK = 15
#: Seconds a worker's registration outlives its last heartbeat while it waits for jobs
#: (WORKER_TTL); an idle worker renews it every WORKER_TTL - 15 s at the latest.
WORKER_TTL = 60
#: Jobs a pooled worker process runs before it is replaced by a fresh one
#: (WORKER_MAX_JOBS_PER_CHILD; 0: never), as Celery's worker_max_tasks_per_child.
WORKER_MAX_JOBS_PER_CHILD = 10_000
#: Resident memory (MiB) past which a pooled worker process is replaced after its job
#: (WORKER_MAX_MEMORY_PER_CHILD_MB; 0: no cap), as Celery's worker_max_memory_per_child.
WORKER_MAX_MEMORY_PER_CHILD_MB = 512
#: Seconds a work horse stuck past its hard limit (in C code, say) has before it is killed.
HARD_KILL_GRACE = 1.0
#: Times a job is put back on its queue because the worker holding it died, before it
#: fails as a poison job (a job that kills its worker every time). Not counted as retries.
MAX_ORPHAN_REQUEUES = 3
#: Times a job is put back because its run's outcome was lost to a Redis outage (its work horse
#: exited EX_OUTCOME_LOST) before it fails: far more than the deaths allowed, since outages say
#: nothing about the job, yet bounded, so that a task that itself exits 75 cannot loop for ever.
MAX_OUTCOME_LOST_REQUEUES = 20
#: Seconds the supervisor waits before restarting a worker process that exited.
RESTART_DELAY = 0.5
#: Seconds between the supervisor's checks on its children (exits, stuck jobs).
SUPERVISOR_POLL = 0.25
#: Seconds an outbound HTTP call may take unless its caller says otherwise.
HTTP_TIMEOUT = 30.0
#: Most redirects an outbound call that follows them (call_external_api) goes through.
MAX_REDIRECTS = 5
#: Largest response body an outbound HTTP call reads, in bytes; a larger one fails the call.
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
#: Largest response call_external_api returns (it becomes the job's result in Redis), in bytes.
EXTERNAL_API_MAX_BYTES = 1024 * 1024
#: Seconds call_external_api's POST may take.
EXTERNAL_API_TIMEOUT = 30.0
#: Longest Retry-After (s) a task honours; a peer asking for more is retried after this.
RETRY_AFTER_LIMIT = 3600.0
#: Seconds a webhook receiver may take to answer.
WEBHOOK_TIMEOUT = 10.0
#: Seconds a payment gateway call may take; a timed-out charge is retried with the same
#: Idempotency-Key, so the gateway charges it once.
PAYMENT_GATEWAY_TIMEOUT = 10.0
#: Seconds a model provider (Ollama, LiteLLM) may take to list its models.
MODEL_PROVIDER_TIMEOUT = 10.0
#: Seconds a provider's model list stays cached in Redis.
MODEL_CACHE_TTL = 3600
#: Seconds an SMTP conversation may stall (connect, each command) before it fails.
SMTP_TIMEOUT = 30.0
#: Seconds a process starting up waits for Redis to answer (REDIS_WAIT_SECONDS) before it
#: gives up with one line naming REDIS_URL.
REDIS_WAIT_SECONDS = 60
#: First delay, in s, before a process asks Redis again after losing it; doubled each attempt...
RECONNECT_FIRST_DELAY = 0.5
#: ...up to this many seconds between attempts.
RECONNECT_MAX_DELAY = 10.0
#: Seconds after Redis comes back (restarted, or reachable again from this process) before the
#: sweep judges runs by their expired leases: a lease that ran out while Redis was away says
#: nothing about its worker, which needs up to RECONNECT_MAX_DELAY to notice Redis is back and
#: a MONITOR_INTERVAL to renew it (or to record the run's outcome).
OUTAGE_GRACE = RECONNECT_MAX_DELAY + MONITOR_INTERVAL + 1
#: Seconds the scheduler's heartbeat key outlives its last pass (SCHEDULER_HEARTBEAT_TTL):
#: /readyz reports the scheduler missing once it has expired.
SCHEDULER_HEARTBEAT_TTL = 30
#: Longest delay a job may be given (countdown, or eta from now), in seconds: 366 days.
MAX_DELAY = 366 * 24 * 3600
#: Seconds a warm shutdown (SIGTERM, as a platform deploy sends it) waits for the job in hand
#: (WORKER_SHUTDOWN_GRACE); past it the job is stopped and put back on its queue without
#: spending a retry. Below Heroku's 30 s between SIGTERM and SIGKILL.
WORKER_SHUTDOWN_GRACE = 25
#: Per-job memory cap in MiB (JOB_MEMORY_LIMIT_MB); 0 is no cap.
JOB_MEMORY_LIMIT_MB = 0

# --- documents and media (app/tasks/documents.py, app/tasks/media.py) -----------------------
#: Largest file a file-taking task reads (INPUT_MAX_BYTES), in bytes: 4 GiB.
INPUT_MAX_BYTES = 4 * 1024**3
#: Model name sent to an OpenAI-compatible EMBEDDINGS_URL (EMBEDDINGS_MODEL).
EMBEDDINGS_MODEL = "nomic-embed-text"
#: Dimensions of the local hashing embedder's vectors.
HASHING_DIMENSIONS = 512
#: Attempts an embeddings request gets when the endpoint answers 429 or 5xx, and the first
#: back-off delay in s (doubled each time, or the peer's Retry-After, at most 30 s).
EMBEDDINGS_ATTEMPTS = 5
EMBEDDINGS_BACKOFF = 0.5
#: Texts sent per embeddings request.
EMBEDDINGS_BATCH = 32
#: Chunking of ingested documents: characters per chunk and characters shared with the next.
CHUNK_SIZE = 1000
CHUNK_OVERLAP = 200
#: Rows per INSERT batch of process_large_file.
LOAD_BATCH = 5000
#: process_large_file computes its progress every this many lines...
PROGRESS_EVERY_LINES = 100
#: ...and writes it into the job's meta at most once per this many seconds (and at the end).
PROGRESS_MIN_INTERVAL = 0.5
#: Longest text (characters) extract_text keeps for the analysis steps.
ANALYSIS_MAX_CHARS = 2_000_000
#: Largest image resize_image opens, in pixels (Pillow's decompression-bomb limit).
IMAGE_MAX_PIXELS = 50_000_000
#: Largest thumbnail edge resize_image makes, in pixels.
IMAGE_MAX_EDGE = 4096

#: Connections an engine keeps open per process (PostgreSQL, MySQL/MariaDB), and how many more
#: it may open under load: a threads-mode worker's threads each hold one while a job runs.
DB_POOL_SIZE = 5
DB_MAX_OVERFLOW = 10
#: Seconds a job waits for a pooled connection before failing.
DB_POOL_TIMEOUT = 30
#: Seconds a SQLite statement waits for another process's write lock.
SQLITE_BUSY_TIMEOUT = 15
#: Rows deleted per statement (and transaction) by the cleanup tasks: short locks on big tables.
CLEANUP_BATCH = 1000
#: The cleanup tasks stop after this many batches in one run (the next run goes on).
CLEANUP_MAX_BATCHES = 10_000
#: Rows fetched and written per batch by process_batch_export (one progress report each).
EXPORT_BATCH = 1000
#: Seconds an hour's request and job counters stay in Redis for analytics_aggregation.
HOURLY_METRICS_TTL = 8 * 24 * 3600

# --- unique and debounce (issue 19) ---
#: A debounce key outlives its job's start time by this much (seconds), so that a scheduler
#: running late does not let a second job of the key in; the job's start ends the window anyway.
DEBOUNCE_KEY_GRACE = 3600
#: A debounced job due within this many seconds is left to the scheduler (which may be moving it
#: to its queue): an enqueue then makes a new job instead of rewriting one that may be starting.
DEBOUNCE_MARGIN = 1.0
# Priorities and fair groups inside a queue (the enqueue options ``priority`` and ``group``).
#: A job's priority when none is given: 5, the queue's plain list (0 first .. 9 last).
DEFAULT_PRIORITY = 5
#: The lowest and highest priority numbers.
MIN_PRIORITY, MAX_PRIORITY = 0, 9
#: What a group name may be (it becomes part of a queue name: no ':' or spaces).
GROUP_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
