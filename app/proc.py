"""Process helpers shared by the worker processes (Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import os

#: prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int, parent: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux; no-op elsewhere).

    A parent that died before the call was made is noticed too: the signal is sent at once.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent is already gone: we were re-parented
        os.kill(os.getpid(), signum)
