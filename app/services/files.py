"""The input-file policy: file-taking tasks read only regular files below ``INPUT_DIRS``.

A path is refused when it names ``..``, lies outside every input directory once its
symlinks are resolved, is not a regular file (a device, a FIFO, a socket, a directory), or
is larger than ``INPUT_MAX_BYTES``. The same check runs at the API (through the
:data:`InputPath` type of a task's input model: 422) and again in the worker, where
:func:`open_input` opens the file without following a symlink swapped in since the check
and re-checks what it opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from app.foundation import runtime
from app.foundation.config import Settings


class PathRefused(ValueError):
    """The path is not one a task may read; the message says why."""


def _settings() -> Settings:
    return runtime.settings()


def _roots(input_dirs: Sequence[Path]) -> list[Path]:
    return [Path(d).resolve() for d in input_dirs]


def lexical_check(raw: str, input_dirs: Sequence[Path]) -> Path:
    """The absolute path ``raw`` names (a relative one is below the first input dir), checked
    without touching the disk: no ``..``, no NUL, below an input directory as written."""
    if not raw or "\x00" in raw:
        raise PathRefused("the path is empty or contains a NUL character")
    if not input_dirs:
        raise PathRefused("no INPUT_DIRS are configured: no file may be read")
    given = Path(raw)
    if ".." in given.parts:
        raise PathRefused("the path must not contain '..'")
    roots = _roots(input_dirs)
    path = given if given.is_absolute() else roots[0] / given
    if not any(
        path.is_relative_to(root) or path.is_relative_to(Path(d).absolute())
        for root, d in zip(roots, input_dirs, strict=True)
    ):
        raise PathRefused(f"{raw} is not below any of INPUT_DIRS ({':'.join(str(d) for d in input_dirs)})")
    return path


def _check_stat(raw: str, st: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise PathRefused(f"{raw} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise PathRefused(f"{raw} is not a regular file (a device, FIFO or socket)")
    if st.st_size > max_bytes:
        raise PathRefused(f"{raw} has {st.st_size} bytes, more than INPUT_MAX_BYTES ({max_bytes})")


def check_input(raw: str, settings: Settings | None = None, *, must_exist: bool = True) -> Path:
    """The resolved path of an input file ``raw`` may name, or PathRefused saying why.

    With ``must_exist=False`` (validation at the API, which may run on another host than the
    workers) a missing file passes only when the input directory it would be in is not on this
    host either (it is the workers'); when that directory is here, a missing file is refused
    at once instead of failing later in a worker. Everything else that can be known is checked.
    """
    s = settings or _settings()
    path = lexical_check(raw, s.input_dirs)
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        if must_exist or _input_dir_here(path, s.input_dirs):
            raise PathRefused(f"{raw} does not exist") from None
        return path
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission error
        raise PathRefused(f"{raw} cannot be resolved: {exc}") from None
    if not any(resolved.is_relative_to(root) for root in _roots(s.input_dirs)):
        raise PathRefused(f"{raw} leads outside INPUT_DIRS (through a symlink)")
    _check_stat(raw, resolved.stat(), s.input_max_bytes)
    return resolved


def _input_dir_here(path: Path, input_dirs: Sequence[Path]) -> bool:
    """True when an input directory that ``path`` lies below exists on this host."""
    return any(
        Path(d).is_dir()
        and (path.is_relative_to(Path(d).absolute()) or path.is_relative_to(Path(d).resolve()))
        for d in input_dirs
    )


def shown_path(stored: str, settings: Settings | None = None) -> str:
    """A stored input path as clients see it: relative to the input directory it lies below
    (a relative path names it again); its file name alone when it is below none of them now.
    The server's own layout is never shown."""
    s = settings or _settings()
    path = Path(stored)
    for d in s.input_dirs:
        for root in (Path(d).resolve(), Path(d).absolute()):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
    return path.name


def open_input(raw: str, settings: Settings | None = None) -> BinaryIO:
    """Open an input file for reading in binary, after :func:`check_input`.

    The resolved path is opened with O_NOFOLLOW and O_NONBLOCK (a FIFO swapped in does not
    block the open) and the open file is checked again, so a race loses.
    """
    s = settings or _settings()
    resolved = check_input(raw, s)
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PathRefused(f"{raw} cannot be opened: {exc.strerror}") from None
    try:
        _check_stat(raw, os.fstat(fd), s.input_max_bytes)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _validated(raw: str) -> str:
    try:
        check_input(raw, must_exist=False)
    except PathRefused as exc:
        raise PydanticCustomError("path_refused", "{reason}", {"reason": str(exc)}) from None
    return raw


#: A task argument naming an input file: checked by the policy at validation (API and worker).
InputPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, description="a file below one of INPUT_DIRS"),
    AfterValidator(_validated),
]
