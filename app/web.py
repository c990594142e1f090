"""The web process: ``python web.py [gunicorn options]`` runs gunicorn serving ``app:create_app()``.

Gunicorn reads WEB_CONCURRENCY with ``int()`` while it is being imported (the variable is
the default of its ``workers`` setting), before it reads any configuration file: a value
that is not a whole number (``abc``, or blank) stops it with a traceback that
gunicorn.conf.py cannot prevent. This launcher checks the variable first, with the reader
every integer setting goes through, then becomes gunicorn (an exec: same process, so the
PID and the signals are still the ones the Procfile's runner knows).
"""

from __future__ import annotations

import os
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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Check WEB_CONCURRENCY, then exec gunicorn with ``argv`` (default: this process's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("WEB_CONCURRENCY", "").strip():
        workers = integer_or_exit("WEB_CONCURRENCY", 1, minimum=1, process="web")
        os.environ["WEB_CONCURRENCY"] = str(workers)  # as gunicorn's int() reads it
    else:
        os.environ.pop("WEB_CONCURRENCY", None)  # blank means the default (gunicorn.conf.py's)
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", APP, *args])
