"""Media tasks: video through the ffmpeg of the imageio-ffmpeg wheel, images through Pillow.

Outputs go under ``MEDIA_DIR/<job id>/``.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from pydantic import Field, field_validator
from rq import get_current_job

from app.catalogue.progress import report_progress
from app.catalogue.registry import QueueName, RetryPolicy, TaskInput, task
from app.foundation import defaults
from app.foundation.runtime import runtime
from app.services import ffmpeg
from app.services.files import InputPath, PathRefused, check_input, open_input


class MediaError(ValueError):
    """The file is not media this task can handle."""


def _output_dir() -> Path:
    job = get_current_job()
    out = Path(runtime().settings.media_dir) / (job.id if job is not None else f"local-{uuid.uuid4()}")
    out.mkdir(parents=True, exist_ok=True)
    return out


class VideoInput(TaskInput):
    """A video below INPUT_DIRS, and how often to grab a frame."""

    path: InputPath
    frame_interval: float = Field(
        default=5.0, ge=0.1, le=3600, description="seconds between extracted frames"
    )
    max_frames: int = Field(default=20, ge=0, le=500, description="at most this many frames")


@task(
    input=VideoInput,
    queue=QueueName.LOW,
    time_limit=2 * 3600,
    retry=RetryPolicy(max_retries=1, backoff_base=30, dont_retry_for=(PathRefused, ffmpeg.FfmpegError)),
)
def process_video(path: str, frame_interval: float = 5.0, max_frames: int = 20) -> dict[str, Any]:
    """Probe a video, take a thumbnail and frames, transcode it to H.264 MP4; stage + percent progress."""
    source = str(check_input(path))
    open_input(path).close()  # the policy's checks on what is really opened
    report_progress(0, 100, stage="probing")
    info = ffmpeg.probe(source)
    duration = float(info["duration"])  # type: ignore[arg-type]
    out = _output_dir()

    report_progress(0, 100, stage="extracting", message="thumbnail and frames")
    thumbnail = out / "thumbnail.jpg"
    ffmpeg.run(
        [
            "-y",
            "-ss",
            f"{min(1.0, duration / 2):.3f}",
            "-i",
            source,
            "-frames:v",
            "1",
            "-vf",
            "scale=320:-2",
            str(thumbnail),
        ]
    )
    frames: list[str] = []
    count = min(max_frames, math.floor(duration / frame_interval) + 1) if duration > 0 else 0
    if count:
        ffmpeg.run(
            [
                "-y",
                "-i",
                source,
                "-vf",
                f"fps=1/{frame_interval},scale=640:-2",
                "-frames:v",
                str(count),
                str(out / "frame-%03d.jpg"),
            ]
        )
        frames = sorted(str(p) for p in out.glob("frame-*.jpg"))
    report_progress(5, 100, stage="extracting", message=f"{len(frames)} frames")

    mp4 = out / "video.mp4"
    last = [-1]

    def progress(percent: float) -> None:
        whole = int(percent)
        if whole > last[0]:
            last[0] = whole
            report_progress(5 + whole * 95 // 100, 100, stage="processing", message=f"transcoding {whole}%")

    ffmpeg.run_with_progress(
        [
            "-y",
            "-i",
            source,
            "-map",
            "0:v:0",
            "-map",
            "0:a?",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-vf",
            "scale=trunc(iw/2)*2:trunc(ih/2)*2",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-movflags",
            "+faststart",
            str(mp4),
        ],
        duration,
        progress,
    )
    report_progress(100, 100, stage="done")
    return {
        "duration": duration,
        "source": info,
        "thumbnail": str(thumbnail),
        "frames": frames,
        "mp4": str(mp4),
        "mp4_bytes": mp4.stat().st_size,
    }


class ResizeInput(TaskInput):
    """An image below INPUT_DIRS and the edge lengths of the thumbnails to make."""

    path: InputPath
    sizes: list[int] = Field(
        min_length=1, max_length=10, description="longest edge of each thumbnail, in pixels"
    )

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        for size in sizes:
            if not 1 <= size <= defaults.IMAGE_MAX_EDGE:
                raise ValueError(f"each size must be from 1 to {defaults.IMAGE_MAX_EDGE} pixels")
        if len(set(sizes)) != len(sizes):
            raise ValueError("sizes must not repeat")
        return sizes


@task(
    input=ResizeInput,
    queue=QueueName.DEFAULT,
    time_limit=300,
    retry=RetryPolicy(dont_retry_for=(PathRefused, MediaError)),
)
def resize_image(path: str, sizes: list[int]) -> dict[str, Any]:
    """Pillow thumbnails in the requested sizes (EXIF orientation honoured; decompression bombs refused)."""
    out = _output_dir()
    Image.MAX_IMAGE_PIXELS = defaults.IMAGE_MAX_PIXELS
    with open_input(path) as fh:
        try:
            with Image.open(fh) as opened:
                if opened.width * opened.height > defaults.IMAGE_MAX_PIXELS:
                    raise MediaError(
                        f"{opened.width}x{opened.height} is more than {defaults.IMAGE_MAX_PIXELS} pixels"
                    )
                image = ImageOps.exif_transpose(opened)
                image.load()
        except Image.UnidentifiedImageError:
            # Pillow names the open file object (<_io.BufferedReader name=8>), not the file.
            raise MediaError(f"{path} is not an image (Pillow cannot identify its format)") from None
        except (Image.DecompressionBombError, OSError) as exc:
            raise MediaError(f"{path}: {exc}") from None
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    made = []
    for n, size in enumerate(sizes):
        copy = image.copy()
        copy.thumbnail((size, size), Image.Resampling.LANCZOS)
        target = out / f"{Path(path).stem}-{size}.jpg"
        copy.save(target, "JPEG", quality=85)
        made.append({"size": size, "path": str(target), "width": copy.width, "height": copy.height})
        report_progress(n + 1, len(sizes), stage="resizing")
    return {"width": image.width, "height": image.height, "thumbnails": made}
