"""Gunicorn settings for the web process (read automatically from the working directory)."""

import os
import sys

from app.config import load_or_exit
from app.logs import configure_logging

# Validate the environment in the master before any worker boots: a bad setting stops
# the web process with one line naming it, not a traceback per worker.
_settings = load_or_exit(process="web")
configure_logging(_settings)


def _process_count(name: str, default: int) -> int:
    """A positive whole number from the environment, or stop with one line naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        print(
            f"web: configuration error: {name}: must be a whole number of at least 1, got {raw!r}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)
    return value


# (A WEB_CONCURRENCY that is not an integer at all already fails inside gunicorn's own
# import, before this file is read; values like 0 or -1 are caught here.)
workers = _process_count("WEB_CONCURRENCY", 2)
threads = _process_count("WEB_THREADS", 4)
worker_class = "gthread"
timeout = 30
graceful_timeout = 25
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
# The largest body the API takes is enforced by the app (MAX_REQUEST_BYTES, 413).
limit_request_line = 8190
