"""The other side of the catalogue's conversations, on loopback: scripted HTTP peers."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# --- HTTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a scripted peer answers: a status, a body (dict/list sent as JSON), headers, a delay first."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    """A request as it crossed the wire."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Script:
    path: str
    answers: list[Answer]
    when: Callable[[Seen], bool] | None


class HttpPeer:
    """A loopback HTTP server answering from a script and recording every request.

    ``script(path, a1, a2, ...)`` answers the requests to ``path`` with a1, then a2, ...;
    the last answer repeats. A path with no script answers 404.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        peer = self
        self.seen: list[Seen] = []
        self._scripts: list[_Script] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    at=time.time(),
                )
                answer = peer._answer(seen)
                if answer.delay:
                    time.sleep(answer.delay)
                if isinstance(answer.body, bytes | str):
                    payload = answer.body.encode() if isinstance(answer.body, str) else answer.body
                    content_type = "text/plain; charset=utf-8"
                elif answer.body is None:
                    payload, content_type = b"", "text/plain"
                else:
                    payload, content_type = json.dumps(answer.body).encode(), "application/json"
                try:
                    self.send_response(answer.status)
                    headers = {"Content-Type": content_type, **answer.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self.server = Server((host, port), Handler)
        self.host = host
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, path: str, *answers: Answer, when: Callable[[Seen], bool] | None = None) -> HttpPeer:
        """Answer requests to ``path`` (and, with ``when``, only those it accepts) in this order."""
        with self._lock:
            self._scripts.append(_Script(path, list(answers), when))
        return self

    def _answer(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            path = seen.path.split("?", 1)[0]
            for script in self._scripts:
                if script.path == path and (script.when is None or script.when(seen)):
                    return script.answers.pop(0) if len(script.answers) > 1 else script.answers[0]
        return Answer(404, {"error": "not scripted"})

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def requests(self, path: str | None = None) -> list[Seen]:
        """The requests seen so far (to ``path`` only, when given)."""
        with self._lock:
            return [s for s in self.seen if path is None or s.path.split("?", 1)[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def gaps(requests: list[Seen]) -> list[float]:
    """Seconds between consecutive requests."""
    return [b.at - a.at for a, b in itertools.pairwise(requests)]
