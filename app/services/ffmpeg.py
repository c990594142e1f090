"""ffmpeg from the imageio-ffmpeg wheel (no system install), run so that it never outlives its job.

Each ffmpeg runs in its own process group, with the kernel told to SIGKILL it when the
thread that started it dies (PR_SET_PDEATHSIG: a work horse killed by a revoke, a hard time
limit or a cold shutdown takes its ffmpeg along), and any exception in the caller (a soft
limit, a revoke raised in the job's thread, a warm shutdown's SystemExit) kills the group
before it propagates. Progress comes from ffmpeg's own ``-progress pipe:1`` output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from functools import cache

from app.foundation import proc

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*Video: (\w+).*?, (\d{2,5})x(\d{2,5})")


class FfmpegError(RuntimeError):
    """ffmpeg failed; the message carries the end of its error output."""


@cache
def executable() -> str:
    """The ffmpeg binary the imageio-ffmpeg wheel ships."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _start(args: Sequence[str], stdout: int | None) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    return subprocess.Popen(
        [executable(), "-hide_banner", "-nostdin", *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: killpg reaches it and whatever it starts
        preexec_fn=lambda: proc.die_with_parent(signal.SIGKILL, parent),
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ffmpeg's process group and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def running(
    args: Sequence[str], stdout: int | None = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ffmpeg; whatever happens in the block, it is not running after it."""
    process = _start(args, stdout)
    try:
        yield process
    finally:
        if process.poll() is None:
            kill(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run(args: Sequence[str]) -> str:
    """Run ffmpeg to the end; its error output (FfmpegError when it fails)."""
    with running(args) as process:
        _, err = process.communicate()
    text = err.decode(errors="replace")
    if process.returncode != 0:
        raise FfmpegError(f"ffmpeg exited with {process.returncode}: {text.strip()[-500:]}")
    return text


def probe(path: str) -> dict[str, object]:
    """Duration (s), video codec and size of a media file, read from ``ffmpeg -i``."""
    with running(["-i", path]) as process:
        _, err = process.communicate()
    text = err.decode(errors="replace")
    duration = _DURATION.search(text)
    video = _VIDEO.search(text)
    if duration is None or video is None:
        raise FfmpegError(f"not a video ffmpeg can read: {text.strip()[-300:]}")
    hours, minutes, seconds = duration.groups()
    return {
        "duration": round(int(hours) * 3600 + int(minutes) * 60 + float(seconds), 3),
        "codec": video.group(1),
        "width": int(video.group(2)),
        "height": int(video.group(3)),
    }


def run_with_progress(args: Sequence[str], duration: float, on_progress: Callable[[float], None]) -> None:
    """Run ffmpeg with ``-progress pipe:1``; ``on_progress(percent)`` for each report it writes."""
    with running(["-progress", "pipe:1", "-nostats", *args], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        err = bytearray()
        import threading

        drain = threading.Thread(target=lambda: err.extend(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
        drain.start()
        for raw in process.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit() and duration > 0:
                on_progress(max(0.0, min(100.0, int(value) / 1e4 / duration)))
            elif key == "progress" and value == "end":
                on_progress(100.0)
        process.wait()
        drain.join(5)
    if process.returncode != 0:
        raise FfmpegError(
            f"ffmpeg exited with {process.returncode}: {err.decode(errors='replace').strip()[-500:]}"
        )
