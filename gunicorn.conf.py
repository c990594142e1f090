"""Gunicorn settings for the web process (read automatically from the working directory)."""

import os

from app.factory import check_catalogue as _check_catalogue
from app.foundation.config import integer_or_exit, load_or_exit
from app.ops.logs import configure_logging

# Validate the environment in the master before any worker boots: a bad setting stops
# the web process with one line naming it, not a traceback per worker.
_settings = load_or_exit(process="web")
configure_logging(_settings)
# The catalogue and TASK_OVERRIDES are checked here too, for the same one line.
_check_catalogue(_settings, process="web")

# Gunicorn itself reads WEB_CONCURRENCY when it is imported, before this file: one that is
# not a whole number at all stops it there with a traceback. `python web.py` (the Procfile's
# command) checks it first; values like 0 or -1 are caught here too.
workers = integer_or_exit("WEB_CONCURRENCY", 2, minimum=1, process="web")
threads = integer_or_exit("WEB_THREADS", 4, minimum=1, process="web")
worker_class = "gthread"
# Each worker listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections over
# them: with one shared socket, the worker that wakes first took every keep-alive connection of a
# burst (docs/BENCHMARK.md). on_starting refuses an address in use first (SO_REUSEPORT alone would
# let a second service bind the same port silently and take half the first one's connections).
# WEB_REUSE_PORT=0: one shared socket (a worker that exits then leaves its waiting connections to
# the others; with its own socket they are reset).
reuse_port = bool(integer_or_exit("WEB_REUSE_PORT", 1, minimum=0, maximum=1, process="web"))
timeout = 30
graceful_timeout = 25
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Gunicorn's control socket (gunicornc) defaults to ~/.gunicorn/gunicorn.ctl, one per user: two services on
# one machine (another VAR_DIR) would share it, and stopping one deletes the other's. Keep it under VAR_DIR.
control_socket = str((_settings.var_dir / "gunicorn.ctl").absolute())
accesslog = "-"
# The same access line as gunicorn's own logger, at a fraction of its CPU (see app/web.py).
logger_class = "app.web.AccessLogger"
errorlog = "-"
loglevel = _settings.log_level.lower()
# The largest body the API takes is enforced by the app (MAX_REQUEST_BYTES, 413).
limit_request_line = 8190


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Sentry and tracing, when configured, in each web worker process (their senders are threads)."""
    from app.ops.observability import init_process

    init_process(_settings, "web")


def on_starting(server):  # type: ignore[no-untyped-def]
    """Before any socket is bound: stop with one line if the address is in use (see reuse_port)."""
    from app.web import refuse_taken_addresses

    refuse_taken_addresses(server)
