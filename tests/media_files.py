"""Real files the document and media tests generate: CSV, PDF, HTML, video (with the wheel's
ffmpeg), images."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

from fpdf import FPDF
from PIL import Image

from app.services.ffmpeg import executable


def write_csv(path: Path, lines: int, bad_every: int = 50) -> int:
    """A CSV with a header and ``lines`` records, every ``bad_every``-th invalid; the number of bad ones."""
    bad = 0
    with path.open("w", newline="") as f:
        f.write("id,name,email,amount,date\n")
        for i in range(1, lines + 1):
            if bad_every and i % bad_every == 0:
                bad += 1
                f.write(f"{i},Name {i},no-at-sign,{i * 0.01:.2f},2026-01-01\n")
            else:
                f.write(
                    f"{i},Name {i},u{i}@example.com,{i * 0.01:.2f},2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}\n"
                )
    return bad


def write_pdf(path: Path, title: str, paragraphs: list[str]) -> None:
    """A real PDF (fpdf2) with a title and paragraphs of text."""
    pdf = FPDF()
    pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for paragraph in paragraphs:
        pdf.multi_cell(0, 6, paragraph)
        pdf.ln(4)
    pdf.output(str(path))


def write_video(path: Path, seconds: int, size: str = "320x240", rate: int = 25) -> None:
    """A test-pattern video with a tone, made by the same ffmpeg the tasks use."""
    subprocess.run(
        [
            executable(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=duration={seconds}:size={size}:rate={rate}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:v",
            "mpeg4",
            "-q:v",
            "5",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
        timeout=120,
    )


def write_image(path: Path, width: int, height: int, orientation: int | None = None) -> None:
    """A JPEG, left half red and right half blue; ``orientation`` sets the EXIF tag."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste(Image.new("RGB", (width // 2, height), "red"), (0, 0))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, "JPEG", exif=exif.tobytes())


def write_png_bomb(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's shape."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))
