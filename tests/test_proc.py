"""Process helpers (app/foundation/proc.py) and the settings that drive them."""

from __future__ import annotations

import faulthandler
import os
import signal

import pytest

from app.foundation import proc
from app.foundation.config import ConfigError, Settings


def test_describe_exit_names_the_signal_or_the_status() -> None:
    """A wait status reads as the signal that killed the process, or the status it exited with."""
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()  # pytest's would print a traceback for the signal
        os.kill(os.getpid(), signal.SIGSEGV)
    _, status = os.waitpid(pid, 0)
    assert proc.describe_exit(status) == "was killed by signal 11 (SIGSEGV)"
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert proc.describe_exit(status) == "exited with status 3"


def test_limit_memory_caps_what_the_process_may_allocate_beyond_its_size() -> None:
    """Under limit_memory(32), a child can allocate 8 MiB but not 256 MiB: MemoryError, whose message
    names the cap."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        outcome = "none"
        try:
            proc.limit_memory(32)
            small = bytearray(8 * 1024 * 1024)
            del small
            try:
                bytearray(256 * 1024 * 1024)
                outcome = "allocated"
            except MemoryError as exc:
                outcome = proc.memory_error_message(exc) or "no message"
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    outcome = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert outcome.startswith("exceeded memory limit of 32 MB (JOB_MEMORY_LIMIT_MB)"), outcome


def test_no_cap_and_other_errors_give_no_memory_message() -> None:
    """limit_memory(0) sets nothing; an error other than MemoryError, or no cap, gives no message."""
    assert proc.limit_memory(0) is None
    assert proc.memory_error_message(ValueError("x")) is None
    assert proc.memory_error_message(MemoryError()) is None


def test_shutdown_grace_and_memory_cap_settings() -> None:
    """WORKER_SHUTDOWN_GRACE defaults to 25 s (below Heroku's 30), JOB_MEMORY_LIMIT_MB to off; bad values
    name their variable."""
    settings = Settings.from_env({})
    assert (settings.worker_shutdown_grace, settings.job_memory_limit_mb) == (25, 0)
    assert (
        Settings.from_env({"WORKER_SHUTDOWN_GRACE": "5", "JOB_MEMORY_LIMIT_MB": "256"}).job_memory_limit_mb
        == 256
    )
    for env, variable in [
        ({"WORKER_SHUTDOWN_GRACE": "-1"}, "WORKER_SHUTDOWN_GRACE"),
        ({"WORKER_SHUTDOWN_GRACE": "soon"}, "WORKER_SHUTDOWN_GRACE"),
        ({"JOB_MEMORY_LIMIT_MB": "lots"}, "JOB_MEMORY_LIMIT_MB"),
        ({"JOB_MEMORY_LIMIT_MB": "-5"}, "JOB_MEMORY_LIMIT_MB"),
    ]:
        with pytest.raises(ConfigError) as info:
            Settings.from_env(env)
        assert info.value.variable == variable
