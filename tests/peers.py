"""The other side of the catalogue's conversations, on loopback: scripted HTTP peers, aiosmtpd,
a throw-away certificate authority, and the database a test's processes share."""

from __future__ import annotations

import itertools
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.foundation.config import Settings
from app.foundation.db import make_engine
from app.foundation.models import User
from tests.servers import Starter, free_port

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


# --- TLS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA made for the test session and a server certificate it signed for localhost and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        """Generate them with the openssl command line (nothing is committed)."""

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=Tasklane test CA")  # fmt: skip
        openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
        (directory / "server.ext").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "server.ext")  # fmt: skip
        return cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """A message as the SMTP server received it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: str | None


class SmtpPeer:
    """aiosmtpd on loopback: STARTTLS (or TLS from the start), AUTH required, scripted RCPT replies.

    ``refuse("bob@example.com", "450 ...", "550 ...")`` answers the next RCPT commands for that
    address so; afterwards they are accepted.
    """

    def __init__(
        self,
        certificates: Certificates,
        credentials: tuple[str, str] = ("mailer", "pa ss:w@rd/%"),
        implicit_tls: bool = False,
        starttls: bool = True,
    ) -> None:
        self.credentials = credentials
        self.implicit_tls = implicit_tls
        self.received: list[Mail] = []
        self.rcpt_attempts: dict[str, list[float]] = {}
        self.logins: list[str] = []
        self._replies: dict[str, list[str]] = {}
        self.port = free_port()
        context = certificates.server_context()
        options: dict[str, Any] = {"authenticator": self._authenticate, "auth_required": bool(credentials)}
        if implicit_tls:  # aiosmtpd only knows of STARTTLS when it checks that AUTH is encrypted
            options.update(ssl_context=context, auth_require_tls=False)
        elif starttls:
            options.update(tls_context=context, require_starttls=True)
        else:
            options.update(auth_require_tls=False)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    @property
    def url(self) -> str:
        from urllib.parse import quote

        user, password = (quote(part, safe="") for part in self.credentials)
        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}"

    def refuse(self, address: str, *replies: str) -> None:
        self._replies.setdefault(address, []).extend(replies)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if (login, password) == self.credentials:
                self.logins.append(login)
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpt_attempts.setdefault(address, []).append(time.time())
        if self._replies.get(address):
            return self._replies[address].pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls, login))
        return "250 Message accepted for delivery"

    def close(self) -> None:
        self.controller.stop()


# --- the database -----------------------------------------------------------------------------


def migrate(start: Starter) -> None:
    """Run the release step (``alembic upgrade head``) with the test's environment."""
    proc = start("-m", "alembic", "upgrade", "head")
    assert start.wait(proc, 60) == 0, start.output(proc)


def engine_for(env: dict[str, str]) -> Engine:
    """An engine on the database the test's processes use."""
    return make_engine(Settings.from_env(env).database_url)


def add_user(engine: Engine, email: str, name: str, webhook_url: str | None = None) -> int:
    """Insert a user; its id."""
    with Session(engine) as session, session.begin():
        user = User(email=email, name=name, webhook_url=webhook_url)
        session.add(user)
        session.flush()
        return user.id
