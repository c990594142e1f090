"""Tasks that exist only for the tests; processes load them with TASK_MODULES=tests.jobs."""

from __future__ import annotations

import os
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, field_validator

from app.catalogue.progress import report_progress
from app.catalogue.registry import RetryPolicy, Snooze, TaskInput, task
from app.core.execution import RetryTask
from app.core.limits import SoftTimeLimitExceeded


class TouchInput(TaskInput):
    path: str


@task(input=TouchInput)
def touch(path: str) -> str:
    """Create a file, so that a test can see the job ran."""
    Path(path).write_text("ran")
    return path


class SlowInput(TaskInput):
    path: str
    seconds: float = Field(ge=0, le=30)
    steps: int = Field(default=4, ge=1, le=100)


@task(input=SlowInput, time_limit=60)
def slow_touch(path: str, seconds: float, steps: int) -> str:
    """Report progress while waiting ``seconds``, then create the file."""
    for step in range(steps):
        report_progress(step, steps, stage="waiting")
        time.sleep(seconds / steps)
    report_progress(steps, steps, stage="done")
    Path(path).write_text("ran")
    return path


class FailInput(TaskInput):
    message: str


@task(input=FailInput)
def always_fail(message: str) -> None:
    """Raise, so that a test can see a failure."""
    raise RuntimeError(message)


class FlakyInput(TaskInput):
    path: str
    failures: int = Field(ge=0, le=10)


@task(input=FlakyInput, retry=RetryPolicy(max_retries=3, backoff_base=0.5, backoff_cap=1, jitter=False))
def flaky(path: str, failures: int) -> int:
    """Fail ``failures`` times (counted in the file at ``path``), then return the attempt number."""
    counter = Path(path)
    attempt = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@task(input=FailInput, retry=RetryPolicy(max_retries=3, backoff_base=0.5, dont_retry_for=(ValueError,)))
def fail_for_good(message: str) -> None:
    """Raise an error the retry policy never retries."""
    raise ValueError(message)


class CountdownInput(TaskInput):
    path: str
    countdown: float


@task(input=CountdownInput, retry=RetryPolicy(max_retries=1))
def retry_itself(path: str, countdown: float) -> str:
    """Ask for one retry after ``countdown`` seconds, then succeed."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text(str(time.time()))
        raise RetryTask(countdown=countdown, reason="not yet")
    return f"{time.time() - float(marker.read_text()):.3f}"


class PartialInput(TaskInput):
    items: int = Field(ge=1, le=1000)
    per_item: float = Field(ge=0, le=5)


@task(input=PartialInput, time_limit=4, soft_time_limit=1)
def partial_work(items: int, per_item: float) -> dict[str, object]:
    """Process items until the soft limit, then return what was done."""
    done = 0
    try:
        for _ in range(items):
            time.sleep(per_item)
            done += 1
    except SoftTimeLimitExceeded:
        return {"status": "partial", "done": done}
    return {"status": "complete", "done": done}


class StuckInput(TaskInput):
    seconds: float = Field(ge=0, le=60)
    block_signals: bool = False


@task(input=StuckInput, time_limit=2)
def stuck(seconds: float, block_signals: bool) -> str:
    """Block past the hard limit; with block_signals no in-process alarm can interrupt it."""
    if block_signals:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "finished"


class AddressInput(TaskInput):
    port: int


@task(input=AddressInput, time_limit=2)
def blocking_read(port: int) -> str:
    """Read from a loopback socket that never answers (a blocking call with no timeout)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(None)
        return conn.recv(10).decode()


class StampInput(TaskInput):
    path: str
    seconds: float = Field(default=0, ge=0, le=10)


@task(input=StampInput, rate_limit="4/s")
def rate_limited_stamp(path: str, seconds: float) -> float:
    """Append the start time to a file (rate limited to 4 starts a second)."""
    started = time.time()
    with open(path, "a") as f:
        f.write(f"{started}\n")
    return started


class KeyedStampInput(TaskInput):
    path: str
    account: str = "a"


@task(input=KeyedStampInput, rate_limit="5/s", rate_key="account", retry=RetryPolicy(max_retries=0))
def keyed_stamp(path: str, account: str) -> float:
    """Append the account and the start time to a file (5 starts a second per account)."""
    started = time.time()
    with open(path, "a") as f:
        f.write(f"{account} {started}\n")
    return started


@task(input=StampInput, rate_limit="1/m", burst=2, retry=RetryPolicy(max_retries=0))
def bursty_stamp(path: str, seconds: float) -> float:
    """Append the start time to a file (one start a minute, two at once after a quiet minute)."""
    started = time.time()
    with open(path, "a") as f:
        f.write(f"{started}\n")
    return started


@task(input=StampInput, concurrency=1)
def one_at_a_time(path: str, seconds: float) -> list[float]:
    """Record start and end times; at most one runs at once."""
    started = time.time()
    time.sleep(seconds)
    ended = time.time()
    with open(path, "a") as f:
        f.write(f"{started} {ended}\n")
    return [started, ended]


@task(input=StampInput, unique=True)
def unique_stamp(path: str, seconds: float) -> float:
    """Sleep, then stamp: identical calls while one waits or runs share its job."""
    time.sleep(seconds)
    return time.time()


@task(input=FailInput, critical=True)
def critical_fail(message: str) -> None:
    """A critical task that fails."""
    raise RuntimeError(message)


class ExistsInput(TaskInput):
    path: str


@task(input=ExistsInput)
def needs_file(path: str) -> str:
    """Fail unless the file exists (so a retried job can succeed)."""
    return Path(path).read_text()


@task(input=SlowInput, time_limit=60, retry=RetryPolicy(max_retries=2, backoff_base=0.5, jitter=False))
def durable_touch(path: str, seconds: float, steps: int) -> str:
    """slow_touch with retries: a run lost with its worker is run again."""
    return slow_touch(path, seconds, steps)


class RunsInput(TaskInput):
    path: str


@task(input=RunsInput, time_limit=30)
def die_once(path: str) -> int:
    """Note the run in the file; the first run kills its own process (a crash, an OOM kill)."""
    runs = Path(path)
    with runs.open("a") as f:
        f.write("run\n")
    count = len(runs.read_text().splitlines())
    if count == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return count


@task(input=RunsInput, time_limit=30)
def always_die(path: str) -> None:
    """Note the run, then kill its own process, every time: a poison job. While a file named as
    ``path`` plus ``.hold`` exists, its second run (after one rescue) waits for it to go first."""
    runs = Path(path)
    with runs.open("a") as f:
        f.write("run\n")
    hold = Path(path + ".hold")
    if len(runs.read_text().splitlines()) == 2:
        deadline = time.monotonic() + 25
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


class NoteInput(TaskInput):
    note: str = "x"


#: What the hooks of ``hooked`` saw (in the process that ran the job).
HOOK_CALLS: list[tuple[str, object, str]] = []


def _on_success(result: object, job_id: str, kwargs: dict[str, object]) -> None:
    HOOK_CALLS.append(("success", result, job_id))


def _on_failure(error: object, job_id: str, kwargs: dict[str, object]) -> None:
    HOOK_CALLS.append(("failure", error, job_id))
    raise RuntimeError("a broken hook must not fail the job")


@task(input=NoteInput, on_success=_on_success, on_failure=_on_failure)
def hooked(note: str) -> str:
    """Return the note, or fail when it is "fail"; its hooks record what they saw."""
    if note == "fail":
        raise ValueError("asked to fail")
    return note.upper()


@task(input=FlakyInput, retry=RetryPolicy(max_retries=2, backoff_base=0.5, backoff_cap=0.5, jitter=False))
def context_aware(path: str, failures: int) -> dict[str, object]:
    """Fail ``failures`` times unless on the last attempt (the seeds' ``self.request.retries``
    fallback), then return the task context it saw."""
    from app.foundation.context import current_task

    ctx = current_task()
    assert ctx is not None
    with Path(path).open("a") as f:
        f.write(f"{ctx.attempt}\n")
    if ctx.attempt <= failures and not ctx.is_last_attempt:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return {"job_id": ctx.job_id, "attempt": ctx.attempt, "retries": ctx.retries, "left": ctx.retries_left,
            "last": ctx.is_last_attempt}  # fmt: skip


@task()
def logs_a_line() -> None:
    """Write a log line from inside a task, through a library-style logger."""
    import logging

    logging.getLogger("some.library").info("hello from the task")


class SensitiveInput(TaskInput):
    path: str
    api_key: str = Field(min_length=8, json_schema_extra={"sensitive": True})
    fail: bool = False

    @field_validator("api_key")
    @classmethod
    def _known(cls, value: str) -> str:
        if value.startswith("bad-"):
            raise ValueError(f"unknown key {value}")  # a validator that echoes the value
        return value


@task(input=SensitiveInput)
def use_secret(path: str, api_key: str, fail: bool) -> str:
    """Write the key it received to ``path`` (so a test sees the real value arrived), log it, maybe fail."""
    import logging

    Path(path).write_text(api_key)
    logging.getLogger("tests.jobs").warning("calling the peer with key %s", api_key)
    if fail:
        raise RuntimeError(f"the peer refused key {api_key}")
    return "used"


# --- fault tests (tests/test_faults.py) -----------------------------------------------------------


class EffectInput(TaskInput):
    db: str
    seconds: float = Field(default=0, ge=0, le=10)


@task(input=EffectInput, time_limit=60)
def record_once(db: str, seconds: float) -> bool:
    """An idempotent side effect keyed by job id: a row in SQLite, inserted once however often the
    job runs (INSERT OR IGNORE); every execution is counted in a second table. True if it inserted."""
    import sqlite3

    from app.foundation.context import current_task

    ctx = current_task()
    assert ctx is not None
    if seconds:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # short steps: an async stop or a kill lands mid-job
            time.sleep(min(0.02, seconds))
    with sqlite3.connect(db, timeout=30, isolation_level=None) as conn:
        conn.execute("INSERT INTO runs (job_id) VALUES (?)", (ctx.job_id,))
        inserted = conn.execute("INSERT OR IGNORE INTO effects (job_id) VALUES (?)", (ctx.job_id,)).rowcount
    return bool(inserted)


class ExitInput(TaskInput):
    code: int = Field(default=3, ge=0, le=255)


@task(input=ExitInput, retry=RetryPolicy(max_retries=1, backoff_base=0.1, jitter=False))
def exit_process(code: int) -> None:
    """A poison job: end its process at once (os._exit), every time."""
    os._exit(code)


@task(input=NoteInput, retry=RetryPolicy(max_retries=1, backoff_base=0.1, jitter=False))
def segfault(note: str) -> None:
    """A poison job: crash its process in C code (SIGSEGV), every time."""
    import ctypes

    ctypes.string_at(0)


class MemoryInput(TaskInput):
    megabytes: int = Field(ge=1, le=65536)
    hold: float = Field(default=0, ge=0, le=30)


@task(input=MemoryInput, retry=RetryPolicy(max_retries=1, backoff_base=0.1, jitter=False))
def hog_memory(megabytes: int, hold: float) -> int:
    """Allocate and touch ``megabytes`` MiB, keep them ``hold`` s (a job that exhausts memory under
    JOB_MEMORY_LIMIT_MB)."""
    block = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    time.sleep(hold)
    return len(block)


@task(input=NoteInput)
def typed_result(note: str) -> dict[str, object]:
    """Return values JSON has no type for (a datetime, a tuple, a set): stored as JSON makes them."""
    return {"note": note, "when": datetime(2024, 1, 1, tzinfo=UTC), "pair": (1, 2), "tags": {"a"}}


class LoseInput(TaskInput):
    path: str
    times: int = Field(ge=0, le=10)


@task(input=LoseInput, time_limit=30)
def lose_outcome(path: str, times: int) -> int:
    """The first ``times`` runs end as a work horse that lost Redis before writing its outcome does
    (exit status 75, EX_OUTCOME_LOST); the next returns how many runs there were."""
    counter = Path(path)
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs <= times:
        os._exit(75)
    return runs


class CardInput(TaskInput):
    card: str


@task(input=CardInput, sensitive=True)
def charge_card(card: str) -> dict[str, object]:
    """A task declared sensitive: every job's args and result are stored encrypted."""
    return {"charged": card, "last4": card[-4:]}


class EchoInput(TaskInput):
    text: str


@task(input=EchoInput)
def echo(text: str) -> dict[str, object]:
    """Return the text (a plain task; ``encrypt`` seals a job of it on request)."""
    if text.startswith("fail:"):
        raise ValueError(f"asked to fail with {text}")
    return {"echo": text, "length": len(text)}


class RelayInput(TaskInput):
    text: str
    suffix: str = ""


@task(input=RelayInput)
def relay_text(text: str, suffix: str) -> str:
    """Return the text with a suffix (a workflow step: it receives the previous step's result)."""
    return text + suffix


class SnoozeInput(TaskInput):
    path: str
    times: int = 1
    seconds: float = 1.0
    returned: bool = False


@task(input=SnoozeInput, retry=RetryPolicy(max_retries=0))
def snooze_first(path: str, times: int, seconds: float, returned: bool) -> int:
    """Snooze the first ``times`` runs (raising Snooze, or returning it), then return the run count."""
    runs = Path(path)
    count = int(runs.read_text()) + 1 if runs.exists() else 1
    runs.write_text(str(count))
    if count <= times:
        if returned:
            return Snooze(seconds)  # type: ignore[return-value]
        raise Snooze(seconds)
    return count


class StepInput(TaskInput):
    path: str
    label: str
    seconds: float = Field(default=0.0, ge=0, le=30)
    fail: bool = False


@task(input=StepInput, time_limit=60, retry=RetryPolicy(max_retries=1, backoff_base=0.1, jitter=False))
def sequence_step(path: str, label: str, seconds: float, fail: bool) -> str:
    """Append ``start <label>`` and, ``seconds`` later, ``end <label>`` to a file (O_APPEND: one
    write per line, whichever process); with ``fail``, raise after the start (retried once)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"start {label} {os.getpid()} {time.time():.6f}\n".encode())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # short sleeps: a revoke in an in-process mode lands between them
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if fail:
            os.write(fd, f"fail {label}\n".encode())
            raise ValueError(f"step {label} fails")
        os.write(fd, f"end {label} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    return label
