"""Gunicorn settings for the web process (read automatically from the working directory)."""

import os

from app.config import load_or_exit
from app.logs import configure_logging

# Validate the environment in the master before any worker boots: a bad setting stops
# the web process with one line naming it, not a traceback per worker.
_settings = load_or_exit(process="web")
configure_logging(_settings)

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 25
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
# The largest body the API takes is enforced by the app (MAX_REQUEST_BYTES, 413).
limit_request_line = 8190
