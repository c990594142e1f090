"""``app.client``: the public import path of :mod:`app.calling.client` (README's Python section)."""

from app.calling.client import *  # noqa: F403
from app.calling.client import __all__ as __all__
