"""Mail: Jinja2 templates rendered into a multipart/alternative message, sent through SMTP.

``SMTP_URL`` names the server: ``smtp://user:pass@host:587`` speaks plain SMTP and
upgrades with STARTTLS whenever the server offers it (credentials are never sent over an
unencrypted connection), ``smtps://user:pass@host:465`` speaks TLS from the first byte.
Certificates are verified against the system's CAs (``SSL_CERT_FILE`` may name others).

With ``SMTP_URL`` unset outside production, a message is written as an ``.eml`` file
under ``$VAR_DIR/mail/`` and logged, never silently dropped; in production it fails.

An SMTP 4xx reply, a lost connection or a timeout is a :class:`TransientMailError`
(worth another attempt); a 5xx reply (an unknown recipient, a refused sender or login)
is a :class:`PermanentMailError`.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import socket
import ssl
import uuid
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jinja2

from app.foundation import defaults
from app.foundation.config import Settings
from app.foundation.timeutil import utcnow

log = logging.getLogger("tasklane.mail")


class MailError(Exception):
    """A message could not be sent."""


class TransientMailError(MailError):
    """An SMTP 4xx reply, a refused or lost connection, a timeout: another attempt may succeed."""


class PermanentMailError(MailError):
    """An SMTP 5xx reply (a recipient, sender or login refused) or a configuration that cannot work."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to reach the SMTP server of ``SMTP_URL``."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        """``smtp://[user:pass@]host[:port]`` (port 25) or ``smtps://...`` (port 465)."""
        parts = urlsplit(url)
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


@dataclass(frozen=True)
class Delivery:
    """What became of a message: sent through SMTP, or written to a file in development."""

    transport: str
    message_id: str
    recipients: tuple[str, ...]
    path: str | None = None

    def describe(self) -> dict[str, Any]:
        """The delivery as JSON for a task's result."""
        out: dict[str, Any] = {
            "transport": self.transport,
            "message_id": self.message_id,
            "recipients": list(self.recipients),
        }
        if self.path is not None:
            out["path"] = self.path
        return out


def template_environment() -> jinja2.Environment:
    """The mail templates (``app/templates/mail``): HTML autoescaped, undefined names an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("app", "templates/mail"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _classify(code: int, message: str) -> MailError:
    return PermanentMailError(message) if 500 <= code < 600 else TransientMailError(message)


def _reply_text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


class Mailer:
    """Renders and sends mail; one per process, built from the settings."""

    def __init__(
        self,
        smtp_url: str,
        mail_from: str,
        spool_dir: Path,
        required: bool = False,
        timeout: float = defaults.SMTP_TIMEOUT,
    ) -> None:
        self.server = SmtpServer.parse(smtp_url) if smtp_url else None
        self.mail_from = mail_from
        self.spool_dir = spool_dir
        self.required = required
        self.timeout = timeout
        self.templates = template_environment()
        sender_name, sender = parseaddr(mail_from)
        self.domain = sender.rpartition("@")[2] or "localhost"
        #: What the templates call the product: MAIL_FROM's display name, else Tasklane.
        self.product = sender_name or "Tasklane"

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """The mailer the settings describe (``SMTP_URL``, ``MAIL_FROM``, ``VAR_DIR``)."""
        return cls(
            settings.smtp_url,
            settings.mail_from,
            settings.var_dir / "mail",
            required=settings.is_production,
        )

    def compose(
        self, to: str, subject: str, template: str, context: dict[str, Any], display_name: str = ""
    ) -> EmailMessage:
        """A multipart/alternative message: ``<template>.txt`` then ``<template>.html``, rendered.

        The templates see ``context`` and ``product`` (MAIL_FROM's display name).
        """
        values = {"product": self.product, **context}
        text = self.templates.get_template(f"{template}.txt").render(**values)
        html = self.templates.get_template(f"{template}.html").render(**values)
        message = EmailMessage()
        message["From"] = self.mail_from
        local, _, domain = to.rpartition("@")
        message["To"] = Address(display_name=display_name, username=local, domain=domain)
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.domain)
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message

    def send(self, message: EmailMessage) -> Delivery:
        """Send ``message`` through SMTP, or write it under the spool directory when SMTP_URL is unset."""
        if self.server is None:
            if self.required:
                raise PermanentMailError("SMTP_URL is not set: mail cannot be sent in production")
            return self._write(message)
        return self._smtp(self.server, message)

    def close(self) -> None:
        """Nothing is pooled: each message has its own SMTP conversation."""

    def _write(self, message: EmailMessage) -> Delivery:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        path = self.spool_dir / f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
        path.write_bytes(bytes(message))
        recipients = tuple(a.addr_spec for a in message["To"].addresses)
        log.info(
            "SMTP_URL is unset: mail to %s (%s) written to %s",
            ", ".join(recipients),
            message["Subject"],
            path,
        )
        return Delivery("file", str(message["Message-ID"]), recipients, str(path))

    @functools.cached_property
    def tls_context(self) -> ssl.SSLContext:
        """The TLS settings of every conversation: built once (loading the CA bundle takes ~0.1 s)."""
        return ssl.create_default_context()

    def _smtp(self, server: SmtpServer, message: EmailMessage) -> Delivery:
        context = self.tls_context
        recipients = tuple(a.addr_spec for a in message["To"].addresses)
        local_name = socket.gethostname()
        try:
            client: smtplib.SMTP
            if server.implicit_tls:
                client = smtplib.SMTP_SSL(
                    server.host, server.port, local_name, timeout=self.timeout, context=context
                )
            else:
                client = smtplib.SMTP(server.host, server.port, local_name, timeout=self.timeout)
            with client:
                client.ehlo()
                encrypted = server.implicit_tls
                if not encrypted and client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                    encrypted = True
                if server.username is not None:
                    if not encrypted:
                        raise PermanentMailError(
                            f"{server.host} offers no STARTTLS: refusing to send SMTP credentials unencrypted"
                        )
                    if not f"{server.username}{server.password or ''}".isascii():
                        raise PermanentMailError("SMTP_URL: smtplib sends ASCII credentials only")
                    client.login(server.username, server.password or "")
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(
                f"{rcpt}: {code} {_reply_text(text)}" for rcpt, (code, text) in exc.recipients.items()
            )
            error = _classify(min(codes), f"recipient refused: {detail}")
            raise error from exc
        except smtplib.SMTPResponseException as exc:  # sender, data, login, greeting refused
            raise _classify(exc.smtp_code, f"SMTP {exc.smtp_code} {_reply_text(exc.smtp_error)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentMailError(f"SMTP server does not support it: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:  # lost connection, refused, timeout, TLS
            raise TransientMailError(
                f"SMTP {server.host}:{server.port}: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("mail sent to %s (%s)", ", ".join(recipients), message["Subject"])
        return Delivery("smtp", str(message["Message-ID"]), recipients)
