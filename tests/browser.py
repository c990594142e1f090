"""A real headless browser for tests: Playwright driving Debian's chromium (never a downloaded one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: Debian's chromium, which Playwright drives (``playwright install`` downloads a browser and
#: cannot work here).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent


def ensure_chromium() -> str | None:
    """Install Debian's chromium when it is missing and we are root; None when it is there,
    else the reason it is not (for a skip)."""
    if CHROMIUM.exists():
        return None
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and only root can apt-get install chromium"
    if not shutil.which("apt-get"):
        return f"{CHROMIUM} is missing and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() else f"apt-get installed chromium, yet {CHROMIUM} is missing"


def artifacts_dir() -> Path:
    """Where screenshots go: $TEST_ARTIFACTS_DIR, else tests/artifacts/ (git-ignored)."""
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
