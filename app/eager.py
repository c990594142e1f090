"""``app.eager``: the public import path of :mod:`app.calling.eager` (README's Python section)."""

from app.calling.eager import *  # noqa: F403
from app.calling.eager import __all__ as __all__
