"""``app.canvas``: the public import path of :mod:`app.calling.canvas` (README's Python section)."""

from app.calling.canvas import *  # noqa: F403
from app.calling.canvas import __all__ as __all__
