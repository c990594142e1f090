"""The web process: ``python web.py [gunicorn options]`` runs gunicorn serving ``app:create_app()``.

Gunicorn reads WEB_CONCURRENCY with ``int()`` while it is being imported (the variable is
the default of its ``workers`` setting), before it reads any configuration file: a value
that is not a whole number (``abc``, or blank) stops it with a traceback that
gunicorn.conf.py cannot prevent. This launcher checks the variable first, with the reader
every integer setting goes through, then becomes gunicorn (an exec: same process, so the
PID and the signals are still the ones the Procfile's runner knows).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gunicorn.glogging import Logger

from app.foundation.config import integer_or_exit

#: What gunicorn serves.
APP = "app:create_app()"

#: Gunicorn's default access line (``access_log_format``), which :class:`AccessLogger` builds directly.
DEFAULT_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class AccessLogger(Logger):
    """Gunicorn's logger (gunicorn.conf.py's ``logger_class``) with the same access line, built
    from the nine values the default format prints. Gunicorn's own builds a dict of every request
    header, response header and WSGI environ entry for each request first (a sampled profile of
    the API under load: 5-8 % of a worker's CPU per enqueue in the access line). Another
    ``access_log_format`` (``--access-logformat``) gets gunicorn's full set, as before."""

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Gunicorn's line, except its empty "Listening at:" of a master whose workers bind their own
        sockets (``reuse_port``): :func:`refuse_taken_addresses` logs the addresses instead."""
        if msg == "Listening at: %s (%s)" and args and not args[0]:
            return
        super().info(msg, *args, **kwargs)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        if self.cfg.access_log_format != DEFAULT_ACCESS_FORMAT:
            return dict(super().atoms(resp, req, environ, request_time))
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "l": "-",
            "u": self._get_user(environ) or "-",
            "t": self.now(),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status,
            "b": str(sent) if sent is not None else "-",
            "f": environ.get("HTTP_REFERER", "-"),
            "a": environ.get("HTTP_USER_AGENT", "-"),
        }


def refuse_taken_addresses(server: Any) -> None:
    """Gunicorn's ``on_starting`` hook (gunicorn.conf.py): stop with one line if an address to bind
    is in use, and log the addresses.

    Each worker binds its own socket with SO_REUSEPORT (``reuse_port``), so that the kernel spreads
    new connections over the workers: with one shared socket, the worker that woke first took every
    keep-alive connection of a burst (docs/BENCHMARK.md). SO_REUSEPORT also lets a second service
    bind the same port, silently, and take half the first one's connections; so the master first
    binds each TCP address itself without it (as gunicorn does without ``reuse_port``): a port that
    anything listens on is refused with "in use", then the probe is closed for the workers."""
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket or a file descriptor: gunicorn's own checks apply
        host, port = address[0], address[1]
        family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            print(f"web: cannot listen at {shown}: address {reason}"
                  + (" (another web process?)" if exc.errno == errno.EADDRINUSE else ""),
                  file=sys.stderr, flush=True)  # fmt: skip
            sys.exit(1)
        finally:
            probe.close()
        if server.cfg.reuse_port:  # else gunicorn's master binds the socket and logs it
            server.log.info("Listening at: http://%s:%s (each worker on its own SO_REUSEPORT socket)",
                            f"[{host}]" if family == socket.AF_INET6 else host, port)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Check WEB_CONCURRENCY, then exec gunicorn with ``argv`` (default: this process's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("WEB_CONCURRENCY", "").strip():
        workers = integer_or_exit("WEB_CONCURRENCY", 1, minimum=1, process="web")
        os.environ["WEB_CONCURRENCY"] = str(workers)  # as gunicorn's int() reads it
    else:
        os.environ.pop("WEB_CONCURRENCY", None)  # blank means the default (gunicorn.conf.py's)
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", APP, *args])
