"""The connection a pooled child holds for its success's round trip (app/foundation/held.py)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import redis
from redis.exceptions import DataError, NoScriptError

from app.foundation.held import HeldConnection


def test_answers_come_back_in_order_with_error_replies_as_answers(rconn: redis.Redis) -> None:
    held = HeldConnection(rconn)
    rconn.delete("held:list")
    answers = held.round_trip(
        [
            ("RPUSH", "held:list", "a", b"b", 3, 1.5),
            ("EVALSHA", "0" * 40, 0),  # no such script: the reply is an error, kept as the answer
            ("LRANGE", "held:list", 0, -1),
        ]
    )
    assert answers[0] == 4
    assert isinstance(answers[1], NoScriptError)
    assert answers[2] == [b"a", b"b", b"3", b"1.5"]
    # One connection, held: the same client id answers every round trip.
    first = held.round_trip([("CLIENT", "ID")])[0]
    assert held.round_trip([("CLIENT", "ID")])[0] == first
    held.close()


def test_a_connection_error_is_raised_and_the_next_round_trip_reconnects(rconn: redis.Redis) -> None:
    """No silent repeat (some of the commands may have run): the caller decides; then a new connection."""
    held = HeldConnection(rconn)
    rconn.set("held:n", 0)
    (client_id,) = held.round_trip([("CLIENT", "ID")])
    rconn.client_kill_filter(_id=client_id)
    with pytest.raises(redis.exceptions.ConnectionError):
        held.round_trip([("INCR", "held:n")])
    assert rconn.get("held:n") == b"0"  # not repeated behind the caller's back
    (again,) = held.round_trip([("CLIENT", "ID")])
    assert again != client_id
    assert held.round_trip([("INCR", "held:n")]) == [1]
    held.close()


def test_an_argument_hiredis_does_not_take_gets_redis_pys_error(rconn: redis.Redis) -> None:
    held = HeldConnection(rconn)
    with pytest.raises(DataError):
        held.round_trip([("SET", "held:x", None)])
    assert held.round_trip([("PING",)]) == [b"PONG"]
    held.close()


def test_after_a_fork_the_child_takes_a_connection_of_its_own(rconn: redis.Redis) -> None:
    held = HeldConnection(rconn)
    (parent,) = held.round_trip([("CLIENT", "ID")])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its answer goes through the pipe
        try:
            (child,) = held.round_trip([("CLIENT", "ID")])
            os.write(write, str(child).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = int(os.read(read, 64))
    os.close(read)
    assert child != parent
    assert held.round_trip([("CLIENT", "ID")]) == [parent]  # the parent's connection was left alone
    held.close()


def test_a_round_trip_goes_out_in_one_write(rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writes would let Redis answer the first command before it has read the second (an extra
    wake-up on each side per job): the commands are packed into one buffer."""
    held = HeldConnection(rconn)
    held.round_trip([("PING",)])  # connected (its handshake's writes are not counted)
    writes: list[int] = []
    real = socket.socket.sendall

    def sendall(self: socket.socket, data: Any, *args: Any) -> None:
        writes.append(len(data))
        real(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", sendall)
    answers = held.round_trip([("SET", "held:a", "1"), ("INCR", "held:a"), ("GET", "held:a")])
    assert answers == [b"OK", 2, b"2"]
    assert len(writes) == 1
    held.close()
