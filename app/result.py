"""``app.result``: the public import path of :mod:`app.calling.result` (README's Python section)."""

from app.calling.result import *  # noqa: F403
from app.calling.result import __all__ as __all__
