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
from typing import NoReturn

from app.foundation.config import integer_or_exit

#: What gunicorn serves.
APP = "app:create_app()"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Check WEB_CONCURRENCY, then exec gunicorn with ``argv`` (default: this process's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("WEB_CONCURRENCY", "").strip():
        workers = integer_or_exit("WEB_CONCURRENCY", 1, minimum=1, process="web")
        os.environ["WEB_CONCURRENCY"] = str(workers)  # as gunicorn's int() reads it
    else:
        os.environ.pop("WEB_CONCURRENCY", None)  # blank means the default (gunicorn.conf.py's)
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", APP, *args])
