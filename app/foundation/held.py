"""A connection a worker holds for its hot path: one write out, the answers read in order.

What a redis-py pipeline without a transaction does (commands packed together, sent in one
write, each answer read in turn, an error reply kept as the answer), less what it costs per
call and per command: a connection taken from the pool and given back, the pipeline's stack
and callbacks, a Python pass over every argument before hiredis packs it. A pooled child
sends one such round trip per job (pooled.py), so those costs were about a sixth of its CPU.

The connection is redis-py's own, from the client's pool: its health check (a PING before a
write after ``health_check_interval`` idle seconds), its reconnection and a Sentinel pool's
choice of master are unchanged. Unlike a pipeline it does not repeat a round trip after a
connection error (redis-py's ``Retry``): the caller knows which commands are safe to repeat
(pooled.py puts back a job its lost answer may have taken, then repeats the success), so the
error is raised to it, once the connection is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import hiredis  # pinned in requirements.txt (redis-py's parser uses it too)
from redis import Redis
from redis.exceptions import ResponseError


class HeldConnection:
    """One connection of ``client``'s pool, held by this process (taken again after a fork)."""

    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None
        self._pid = 0

    def round_trip(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` (each a command's name and arguments) in one write and return their
        answers in order; an error reply is returned as its exception (NoScriptError, ...), as a
        pipeline's ``execute(raise_on_error=False)`` returns it. A connection error or timeout is
        raised, and the connection dropped: some of the commands may have run."""
        connection = self._held()
        try:
            # One buffer, one write: redis-py sends each item of a list with a write of its own, and
            # two writes let Redis answer the first command before it has read the second.
            connection.send_packed_command([b"".join(_packed(connection, command) for command in commands)])
            return [_answer(connection) for _ in commands]
        except BaseException:
            connection.disconnect()  # its stream may be out of step: the next use reconnects
            raise

    def close(self) -> None:
        """Give the connection back to the pool (a worker leaving)."""
        connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            self._pool.release(connection)

    def _held(self) -> Any:
        if self._connection is None or self._pid != os.getpid():
            self._connection = self._pool.get_connection()
            self._pid = os.getpid()
        return self._connection


def _packed(connection: Any, command: Sequence[Any]) -> bytes:
    try:
        return hiredis.pack_command(tuple(command))
    except TypeError:  # an argument hiredis does not take: redis-py's packer names it (DataError)
        return b"".join(connection.pack_command(*command))


def _answer(connection: Any) -> Any:
    try:
        return connection.read_response()
    except ResponseError as exc:
        return exc
