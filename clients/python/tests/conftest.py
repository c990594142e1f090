"""A scripted loopback HTTP peer standing in for a Tasklane service: the client's tests need no service."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class Seen:
    """One request the peer received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Peer:
    """Answers each ``(method, path)`` with the next scripted answer (the last one repeats)."""

    url: str
    script: dict[tuple[str, str], list[Answer] | Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.script[(method, path)] = list(answers)

    def handle(self, request: Seen) -> Answer:
        self.seen.append(request)
        found = self.script.get((request.method, request.path.split("?")[0]))
        if found is None:
            return 404, {"error": {"code": "not_found", "message": request.path, "details": None}}
        if callable(found):
            return found(request)
        return found.pop(0) if len(found) > 1 else found[0]


def _handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, dict(self.headers), json.loads(raw) if raw else None)
            status, body, *extra = peer.handle(seen)
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A scripted HTTP peer on a loopback port, stopped afterwards."""
    made = Peer("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(made))
    made.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield made
    server.shutdown()
    server.server_close()


class Clock:
    """A fake monotonic clock whose sleep moves it on and records each pause."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def error(status: int, code: str, message: str = "", details: Any = None) -> Answer:
    """An answer in the API's error shape."""
    return status, {"error": {"code": code, "message": message, "details": details}}


#: The catalogue entries the tests' peer serves (fields in order, as the service lists them).
CATALOGUE = {
    "tasks": [
        {"name": "add", "input_schema": {"properties": {"x": {}, "y": {}}}},
        {"name": "always_fail", "input_schema": {"properties": {"message": {}}}},
    ]
}
