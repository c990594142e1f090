"""The mail service against aiosmtpd on loopback (STARTTLS, SMTPS, AUTH, 4xx and 5xx), and .eml files."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from app.foundation.config import Settings
from app.services.mail import Mailer, PermanentMailError, SmtpServer, TransientMailError
from tests.conftest import make_env
from tests.peers import Certificates, SmtpPeer

FROM = "Acme <noreply@acme.example>"


@pytest.fixture
def trusted_ca(certificates: Certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process trusts the test CA, as the workers do through SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> dict[str, str]:
    """The text of each part by content type."""
    assert message.get_content_type() == "multipart/alternative"
    found = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        found[part.get_content_type()] = part.get_content()
    return found


def welcome(mailer: Mailer, to: str = "alice@example.com", name: str = "Alice <O'Hara>") -> EmailMessage:
    return mailer.compose(to, "Welcome!", "welcome", {"name": name}, display_name=name)


def test_smtp_url_forms() -> None:
    """It reads host, port, implicit TLS and percent-encoded credentials from SMTP_URL."""
    assert SmtpServer.parse("smtp://mail.example") == SmtpServer("mail.example", 25, False)
    assert SmtpServer.parse("smtps://u%40x:p%3Aw@mail.example") == SmtpServer(
        "mail.example", 465, True, "u@x", "p:w"
    )
    assert SmtpServer.parse("smtp://u:@127.0.0.1:2525").password == ""


def test_compose_renders_both_templates_into_multipart_alternative(tmp_path: Path) -> None:
    """It renders the text and the HTML template (HTML escaped), product name from MAIL_FROM."""
    message = welcome(Mailer("", FROM, tmp_path))
    assert message["To"] == '"Alice <O\'Hara>" <alice@example.com>'
    assert message["From"] == FROM
    assert message["Message-ID"].endswith("@acme.example>")
    found = parts(message)
    assert "Hello Alice <O'Hara>," in found["text/plain"]
    assert "welcome to Acme!" in found["text/plain"]
    assert "Hello Alice &lt;O&#39;Hara&gt;," in found["text/html"]
    assert "<strong>Acme</strong>" in found["text/html"]


def test_without_smtp_url_mail_is_written_as_eml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It writes the message under VAR_DIR/mail as an .eml file and logs where, outside production."""
    settings = Settings.from_env(make_env(tmp_path, "redis://127.0.0.1:1/0", MAIL_FROM=FROM))
    mailer = Mailer.from_settings(settings)
    with caplog.at_level("INFO", logger="tasklane.mail"):
        delivery = mailer.send(welcome(mailer))
    assert delivery.transport == "file"
    path = Path(delivery.path or "")
    assert path.parent == tmp_path / "var" / "mail" and path.suffix == ".eml"
    stored = parse(path.read_bytes())
    assert stored["To"].addresses[0].addr_spec == "alice@example.com"
    assert set(parts(stored)) == {"text/plain", "text/html"}
    assert str(path) in caplog.text and "alice@example.com" in caplog.text


def test_production_without_smtp_url_fails(tmp_path: Path) -> None:
    """It refuses to drop mail silently in production: no SMTP_URL is a permanent error."""
    mailer = Mailer("", FROM, tmp_path / "mail", required=True)
    with pytest.raises(PermanentMailError, match="SMTP_URL is not set"):
        mailer.send(welcome(mailer))
    assert not (tmp_path / "mail").exists()


def test_starttls_and_auth(trusted_ca: None, smtp_peer: Callable[..., SmtpPeer], tmp_path: Path) -> None:
    """It upgrades with STARTTLS, logs in, and the server receives both parts for the recipient."""
    server = smtp_peer()
    mailer = Mailer(server.url, FROM, tmp_path)
    delivery = mailer.send(welcome(mailer))
    assert delivery.transport == "smtp" and delivery.recipients == ("alice@example.com",)
    [mail] = server.received
    assert (mail.mail_from, mail.rcpt_tos, mail.tls, mail.login) == (
        "noreply@acme.example",
        ["alice@example.com"],
        True,
        "mailer",
    )
    received = parse(mail.content)
    assert received["Subject"] == "Welcome!"
    assert received["Message-ID"] == delivery.message_id
    assert set(parts(received)) == {"text/plain", "text/html"}


def test_smtps_implicit_tls(trusted_ca: None, smtp_peer: Callable[..., SmtpPeer], tmp_path: Path) -> None:
    """It speaks TLS from the first byte for smtps:// and logs in."""
    server = smtp_peer(implicit_tls=True)
    Mailer(server.url, FROM, tmp_path).send(welcome(Mailer("", FROM, tmp_path)))
    [mail] = server.received
    assert mail.tls and mail.login == "mailer"


def test_untrusted_certificate_is_a_transient_error(
    smtp_peer: Callable[..., SmtpPeer], tmp_path: Path
) -> None:
    """It verifies the server's certificate: one from an unknown CA fails before any credentials are sent."""
    server = smtp_peer()
    with pytest.raises(TransientMailError, match="CERTIFICATE_VERIFY_FAILED"):
        Mailer(server.url, FROM, tmp_path).send(welcome(Mailer("", FROM, tmp_path)))
    assert server.logins == [] and server.received == []


def test_no_credentials_over_plain_text(smtp_peer: Callable[..., SmtpPeer], tmp_path: Path) -> None:
    """It refuses to send credentials to a server that offers no STARTTLS (a permanent error)."""
    server = smtp_peer(starttls=False)
    with pytest.raises(PermanentMailError, match="refusing to send SMTP credentials unencrypted"):
        Mailer(server.url, FROM, tmp_path).send(welcome(Mailer("", FROM, tmp_path)))
    assert server.logins == []


def test_4xx_is_transient_and_5xx_permanent(
    trusted_ca: None, smtp_peer: Callable[..., SmtpPeer], tmp_path: Path
) -> None:
    """It classifies a 450 reply to RCPT as transient and a 550 as permanent; nothing is delivered."""
    server = smtp_peer()
    server.refuse("alice@example.com", "450 4.2.1 Mailbox busy, try later", "550 5.1.1 No such user")
    mailer = Mailer(server.url, FROM, tmp_path)
    with pytest.raises(TransientMailError, match="450"):
        mailer.send(welcome(mailer))
    with pytest.raises(PermanentMailError, match=r"550 5\.1\.1 No such user"):
        mailer.send(welcome(mailer))
    assert server.received == []
    mailer.send(welcome(mailer))
    assert len(server.received) == 1


def test_wrong_password_is_permanent(
    trusted_ca: None, smtp_peer: Callable[..., SmtpPeer], tmp_path: Path
) -> None:
    """It treats a refused login (535) as permanent."""
    server = smtp_peer()
    wrong = server.url.replace("@127.0.0.1", "x@127.0.0.1")
    with pytest.raises(PermanentMailError, match="535"):
        Mailer(wrong, FROM, tmp_path).send(welcome(Mailer("", FROM, tmp_path)))


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    """It treats a server that does not answer as transient."""
    from tests.servers import free_port

    with pytest.raises(TransientMailError, match="ConnectionRefusedError"):
        Mailer(f"smtp://127.0.0.1:{free_port()}", FROM, tmp_path).send(welcome(Mailer("", FROM, tmp_path)))
