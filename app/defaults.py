"""Every tunable default of the service, one documented constant each."""

from __future__ import annotations

#: Redis used when REDIS_URL is unset outside production (the run command sets the embedded one).
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Seconds a web request waits on Redis before answering 503.
REDIS_SOCKET_TIMEOUT = 3.0
#: Port gunicorn binds when PORT is unset.
PORT = 5000
#: Largest request body the API accepts (MAX_REQUEST_BYTES), in bytes.
MAX_REQUEST_BYTES = 1024 * 1024
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
#: Seconds an HTTP dependency of the health check may take.
HEALTH_CHECK_TIMEOUT = 5.0
#: Seconds a worker heartbeat may be old before the worker counts as gone.
WORKER_STALE_AFTER = 120
#: Longest an idle worker waits on its queues' doorbells before it scans them anyway, in s.
DOORBELL_WAIT = 1.0
#: Most rings a doorbell keeps (rings only wake workers; extra ones are dropped).
DOORBELL_CAP = 64
#: Longest wait for a rate-limit slot a worker spends holding the job, in s; longer waits
#: put the job back in the scheduled registry.
RATE_LIMIT_HOLD = 1.0
#: Seconds past its hard limit after which the supervisor kills the process of a stuck
#: inline or threaded job (the signal or async exception could not reach it).
STUCK_JOB_GRACE = 5.0
#: Page size of job listings.
PAGE_SIZE = 50
#: Seconds an Idempotency-Key is remembered.
IDEMPOTENCY_TTL = 24 * 3600
#: Seconds a workflow's record is kept (as long as a failed job).
WORKFLOW_TTL = 7 * 24 * 3600
#: Most jobs one workflow may create.
MAX_WORKFLOW_STEPS = 200
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
WORKER_TTL = 420
#: Seconds a work horse stuck past its hard limit (in C code, say) has before it is killed.
HARD_KILL_GRACE = 1.0
#: Times a job is put back on its queue because the worker holding it died, before it
#: fails as a poison job (a job that kills its worker every time). Not counted as retries.
MAX_ORPHAN_REQUEUES = 3
#: Seconds the supervisor waits before restarting a worker process that exited.
RESTART_DELAY = 0.5
#: Seconds between the supervisor's checks on its children (exits, stuck jobs).
SUPERVISOR_POLL = 0.25
#: Seconds an outbound HTTP call may take unless its caller says otherwise.
HTTP_TIMEOUT = 30.0
#: Seconds a process starting up waits for Redis to answer (REDIS_WAIT_SECONDS) before it
#: gives up with one line naming REDIS_URL.
REDIS_WAIT_SECONDS = 60
#: First delay, in s, before a process asks Redis again after losing it; doubled each attempt...
RECONNECT_FIRST_DELAY = 0.5
#: ...up to this many seconds between attempts.
RECONNECT_MAX_DELAY = 10.0
#: Seconds the scheduler's heartbeat key outlives its last pass (SCHEDULER_HEARTBEAT_TTL):
#: /readyz reports the scheduler missing once it has expired.
SCHEDULER_HEARTBEAT_TTL = 30
