"""Process helpers shared by the worker processes (Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal

#: prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1

#: The per-job memory cap this process runs under (MiB), once :func:`limit_memory` set one.
_memory_cap_mb = 0


def die_with_parent(signum: int, parent: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux; no-op elsewhere).

    A parent that died before the call was made is noticed too: the signal is sent at once.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent is already gone: we were re-parented
        os.kill(os.getpid(), signum)


def limit_memory(megabytes: int) -> int | None:
    """Let this process (a work horse, one job) map at most ``megabytes`` MiB more than it has now.

    Sets RLIMIT_AS, soft and hard (the job cannot raise it again), to the process's current
    address space plus the cap: the worker's own code and libraries, inherited through the
    fork, are not charged to the job. Past it an allocation fails: Python raises MemoryError
    (see :func:`memory_error_message`); C code that does not check malloc may crash instead,
    which its worker sees as a work horse killed by a signal. 0 (or less) sets no cap.
    Returns the limit in bytes, or None.
    """
    global _memory_cap_mb
    if megabytes <= 0:
        return None
    limit = address_space() + megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _memory_cap_mb = megabytes
    return limit


def address_space(pid: int | str = "self") -> int:
    """Bytes of virtual address space of ``pid`` (this process by default)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def resident(pid: int | str = "self") -> int:
    """Bytes of resident memory (RSS) of ``pid``."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_error_message(exc: BaseException) -> str | None:
    """What to record for a MemoryError raised under this process's cap; None for anything else."""
    if not isinstance(exc, MemoryError) or not _memory_cap_mb:
        return None
    detail = f" ({exc})" if str(exc) else ""
    return f"exceeded memory limit of {_memory_cap_mb} MB (JOB_MEMORY_LIMIT_MB){detail}"


def describe_exit(wait_status: int | None) -> str:
    """How a process ended: "was killed by signal 11 (SIGSEGV)", "exited with status 3"."""
    if wait_status is None:
        return "ended (status unknown)"
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {number} ({name})"
    return f"exited with status {os.waitstatus_to_exitcode(wait_status)}"
