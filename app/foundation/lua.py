"""Lua scripts, registered one way: a module-level :class:`LuaScript` called with a connection.

Redis caches a script by its SHA1; the first call on a server that lacks it loads it
(redis-py's EVALSHA-then-SCRIPT-LOAD), so one object serves every connection and every
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.commands.core import Script


class LuaScript:
    """A Lua script run on whichever connection (or pipeline) a call names."""

    def __init__(self, source: str) -> None:
        # Bytes, so that the SHA1 needs no client to encode the text.
        self._script = Script(None, source.encode())  # type: ignore[arg-type]

    def __call__(self, connection: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``keys`` and ``args`` on ``connection``."""
        return self._script(keys=list(keys), args=list(args), client=connection)

    def queue(self, pipeline: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> None:
        """Queue a bare EVALSHA on ``pipeline`` (redis-py's script-in-pipeline path adds a SCRIPT
        EXISTS to every round trip). A server that lacks the script answers NoScriptError in the
        pipeline's results: :meth:`load` it, then repeat."""
        pipeline.evalsha(self._script.sha, len(keys), *keys, *args)

    def load(self, connection: Any) -> None:
        """Load the script on ``connection``'s server (SCRIPT LOAD)."""
        connection.script_load(self._script.script)
