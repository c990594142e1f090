"""send_welcome_email and send_notification through real worker.py and scheduler.py processes,
against aiosmtpd (STARTTLS + AUTH) and scripted webhook receivers on loopback."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine

from tests.conftest import make_env
from tests.peers import Answer, Certificates, HttpPeer, Seen, SmtpPeer, add_user, engine_for, gaps, migrate
from tests.servers import (
    FINAL,
    Starter,
    catalogue,
    enqueue,
    free_port,
    get_job,
    invalid_fields,
    start_scheduler,
    start_worker,
    wait_state,
)

SECRET = "whsec-0123456789abcdef"
README = Path(__file__).resolve().parent.parent / "docs" / "TASKS.md"


def readme_verifier() -> Callable[..., bool]:
    """The webhook receiver's check exactly as docs/TASKS.md shows it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [code] = [b for b in blocks if "def verify_webhook(" in b]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify_webhook"]  # type: ignore[no-any-return]


def mail_parts(raw: bytes) -> tuple[EmailMessage, dict[str, str]]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    found = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        found[part.get_content_type()] = part.get_content()
    return message, found


@pytest.fixture
def smtp(smtp_peer: Callable[..., SmtpPeer]) -> SmtpPeer:
    return smtp_peer()


@pytest.fixture
def env(tmp_path: Path, redis_url: str, smtp: SmtpPeer, certificates: Certificates) -> dict[str, str]:
    """SMTP through the aiosmtpd peer (its CA trusted), webhooks signed, loopback receivers allowed."""
    return make_env(
        tmp_path,
        redis_url,
        SMTP_URL=smtp.url,
        SSL_CERT_FILE=str(certificates.ca),
        MAIL_FROM="Acme <noreply@acme.example>",
        WEBHOOK_SECRET=SECRET,
        OUTBOUND_URL_ALLOWLIST="127.0.0.1",
    )


@pytest.fixture
def engine(start: Starter, rconn: redis.Redis, env: dict[str, str]) -> Engine:
    """The migrated database, one worker and the scheduler (which runs the retries when due)."""
    migrate(start)
    start_worker(start, rconn)
    start_scheduler(start, rconn)
    return engine_for(env)


# --- the API's validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fields"),
    [
        ({"user_id": 0, "message": "hi"}, ["args.user_id"]),
        ({"user_id": -3, "message": "hi", "channel": "email"}, ["args.user_id"]),
        ({"user_id": 1, "message": ""}, ["args.message"]),
        ({"user_id": 1, "message": "x" * 1001}, ["args.message"]),
        ({"user_id": 1, "message": "hi", "channel": "sms"}, ["args.channel"]),
        ({"message": "hi"}, ["args.user_id"]),
        ({"user_id": 1, "message": "hi", "priority": "high"}, ["args.priority"]),
    ],
)
def test_send_notification_validation(
    client: FlaskClient, auth: dict[str, str], args: dict[str, Any], fields: list[str]
) -> None:
    """It answers 422 naming the field for user_id <= 0, a message outside 1..1000 and an unknown channel."""
    assert invalid_fields(client, auth, "send_notification", args) == fields


def test_send_notification_schema(client: FlaskClient, auth: dict[str, str]) -> None:
    """It publishes the rules in the input schema: positive id, 1..1000 characters, two channels."""
    tasks = catalogue(client, auth)
    props = tasks["send_notification"]["input_schema"]["properties"]
    assert props["user_id"]["type"] == "integer" and props["user_id"]["exclusiveMinimum"] == 0
    assert (props["message"]["minLength"], props["message"]["maxLength"]) == (1, 1000)
    assert props["channel"]["enum"] == ["email", "webhook"]
    assert tasks["send_notification"]["retry"]["max_retries"] == 5
    assert tasks["send_notification"]["retry"]["backoff"]["cap"] == 300
    welcome = tasks["send_welcome_email"]["input_schema"]["properties"]
    assert welcome["email"]["format"] == "email"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"email": "not-an-address", "name": "Al"}, "args.email"),
        ({"email": "al@example.com", "name": ""}, "args.name"),
        ({"email": "al@example.com", "name": "Al\r\nBcc: everyone@example.com"}, "args.name"),
    ],
)
def test_send_welcome_email_validation(
    client: FlaskClient, auth: dict[str, str], args: dict[str, Any], field: str
) -> None:
    """It answers 422 for a bad address, an empty name, or a name that would inject a header."""
    response = client.post("/api/v1/tasks/send_welcome_email", json={"args": args}, headers=auth)
    assert response.status_code == 422, response.get_json()
    assert [d["field"] for d in response.get_json()["error"]["details"]] == [field]


# --- mail through the worker ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_welcome_email_over_starttls_with_4xx_retried_and_5xx_final(
    engine: Engine, smtp: SmtpPeer, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It sends both MIME parts over STARTTLS with AUTH; a 451 is retried after a back-off, a 550 is final."""
    smtp.refuse("grey@example.com", "451 4.7.1 Greylisted, please try again")
    smtp.refuse("ghost@example.com", "550 5.1.1 No such user here")
    sent = enqueue(client, auth, "send_welcome_email", {"email": "alice@example.com", "name": "Alice"})
    grey = enqueue(client, auth, "send_welcome_email", {"email": "grey@example.com", "name": "Grey"})
    ghost = enqueue(client, auth, "send_welcome_email", {"email": "ghost@example.com", "name": "Ghost"})

    done = wait_state(client, auth, sent, FINAL)
    assert done["state"] == "SUCCESS", done
    assert done["result"]["transport"] == "smtp" and done["result"]["recipient"] == "alice@example.com"
    [mail] = [m for m in smtp.received if m.rcpt_tos == ["alice@example.com"]]
    assert (mail.mail_from, mail.tls, mail.login) == ("noreply@acme.example", True, "mailer")
    message, parts = mail_parts(mail.content)
    assert message["Subject"] == "Welcome to Acme, Alice!"
    assert message["To"] == "Alice <alice@example.com>"
    assert message["Message-ID"] == done["result"]["message_id"]
    assert "Hello Alice," in parts["text/plain"] and "Hello Alice," in parts["text/html"]
    assert "<strong>Acme</strong>" in parts["text/html"]

    failed = wait_state(client, auth, ghost, FINAL)
    assert failed["state"] == "FAILURE", failed
    assert failed["retries"] == 0
    assert failed["error"]["type"] == "PermanentMailError"
    assert "550 5.1.1 No such user here" in failed["error"]["message"]
    assert len(smtp.rcpt_attempts["ghost@example.com"]) == 1

    retried = wait_state(client, auth, grey, FINAL, timeout=30)
    assert retried["state"] == "SUCCESS", retried
    assert retried["retries"] == 1
    attempts = smtp.rcpt_attempts["grey@example.com"]
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.5  # the back-off, not at once
    assert [m.rcpt_tos for m in smtp.received].count(["grey@example.com"]) == 1
    assert "ghost@example.com" not in [r for m in smtp.received for r in m.rcpt_tos]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_development_mail_is_written_as_eml(
    start: Starter, rconn: redis.Redis, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    """It writes the welcome mail under VAR_DIR/mail when SMTP_URL is unset, and says where in the result."""
    start_worker(start, rconn, SMTP_URL=None)
    job = enqueue(client, auth, "send_welcome_email", {"email": "dev@example.com", "name": "Dev"})
    done = wait_state(client, auth, job, FINAL)
    assert done["state"] == "SUCCESS", done
    assert done["result"]["transport"] == "file"
    path = Path(done["result"]["path"])
    assert path.parent == tmp_path / "var" / "mail" and path.suffix == ".eml"
    message, parts = mail_parts(path.read_bytes())
    assert message["To"] == "Dev <dev@example.com>"
    assert set(parts) == {"text/plain", "text/html"}


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_email_notification_and_unknown_user(
    engine: Engine, smtp: SmtpPeer, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It mails the user found in the database; an unknown user fails at once, without retries."""
    user = add_user(engine, "Carol@Example.com", "Carol")
    job = enqueue(client, auth, "send_notification", {"user_id": user, "message": "Your export is <ready>."})
    unknown = enqueue(client, auth, "send_notification", {"user_id": 999_999, "message": "hello"})
    done = wait_state(client, auth, job, FINAL)
    assert done["state"] == "SUCCESS", done
    assert done["result"]["channel"] == "email" and done["result"]["recipients"] == ["Carol@example.com"]
    [mail] = smtp.received
    assert mail.rcpt_tos == ["Carol@example.com"] and mail.tls
    _, parts = mail_parts(mail.content)
    assert "Your export is <ready>." in parts["text/plain"]
    assert "Your export is &lt;ready&gt;." in parts["text/html"]

    failed = wait_state(client, auth, unknown, FINAL)
    assert failed["state"] == "FAILURE" and failed["retries"] == 0
    assert failed["error"]["type"] == "UnknownUser"


# --- webhooks through the worker -------------------------------------------------------------------


def assert_signed(seen: Seen, verify: Callable[..., bool]) -> None:
    """The request is signed as docs/TASKS.md says a receiver checks it."""
    assert seen.headers["content-type"] == "application/json"
    timestamp = seen.headers["x-signature-timestamp"]
    assert abs(time.time() - int(timestamp)) < 60
    assert seen.headers["x-signature"].startswith("sha256=")
    assert verify(SECRET, seen.body, timestamp, seen.headers["x-signature"])
    assert not verify("another-secret", seen.body, timestamp, seen.headers["x-signature"])
    assert not verify(SECRET, seen.body + b" ", timestamp, seen.headers["x-signature"])
    assert not verify(SECRET, seen.body, str(int(timestamp) - 1), seen.headers["x-signature"])
    assert not verify(SECRET, seen.body, str(int(timestamp) - 3600), seen.headers["x-signature"])


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_webhooks_signed_retried_on_429_and_503_not_on_400(
    engine: Engine, http_peer: Callable[..., HttpPeer], client: FlaskClient, auth: dict[str, str]
) -> None:
    """It POSTs signed JSON; 429 snoozes for Retry-After (no retry spent), 503 backs off, both then
    succeed; 400 is final."""
    receiver = http_peer()
    receiver.script("/slow", Answer(429, headers={"Retry-After": "2"}), Answer(204))
    receiver.script("/flaky", Answer(503), Answer(200, {"received": True}))
    receiver.script("/gone", Answer(400, {"error": "unknown subscription"}))
    ids = {
        path: add_user(engine, f"{path[1:]}@example.com", path[1:], receiver.url(path))
        for path in ("/slow", "/flaky", "/gone")
    }
    jobs = {
        path: enqueue(
            client, auth, "send_notification", {"user_id": uid, "message": f"to {path}", "channel": "webhook"}
        )
        for path, uid in ids.items()
    }
    verify = readme_verifier()

    gone = wait_state(client, auth, jobs["/gone"], FINAL)
    assert gone["state"] == "FAILURE" and gone["retries"] == 0, gone
    assert gone["error"]["type"] == "PermanentHTTPError" and "HTTP 400" in gone["error"]["message"]
    assert len(receiver.requests("/gone")) == 1

    for path in ("/slow", "/flaky"):
        done = wait_state(client, auth, jobs[path], FINAL, timeout=30)
        assert done["state"] == "SUCCESS", done
        # A 429 with Retry-After is the receiver's rate: a snooze, not a failed attempt.
        assert (done["retries"], done["snoozed"]) == ((0, 1) if path == "/slow" else (1, 0)), done
        seen = receiver.requests(path)
        assert len(seen) == 2
        for request in seen:
            assert_signed(request, verify)
            body = request.json()
            assert body["type"] == "notification" and body["message"] == f"to {path}"
            assert body["user_id"] == ids[path] and body["id"] == jobs[path]
            assert request.headers["x-webhook-id"] == jobs[path]  # the same across attempts
        assert done["result"]["delivery_id"] == jobs[path]
    slow = receiver.requests("/slow")
    assert gaps(slow)[0] >= 2.0  # Retry-After honoured
    assert get_job(client, auth, jobs["/slow"])["result"]["http_status"] == 204


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_webhook_refused_by_policy_and_connection_refused_then_up(
    engine: Engine, http_peer: Callable[..., HttpPeer], client: FlaskClient, auth: dict[str, str]
) -> None:
    """It never calls a receiver the policy refuses (final); a refused connection is retried until it's up."""
    private = http_peer(host="127.0.0.2").script("/hook", Answer(200))
    later_port = free_port()
    refused = add_user(engine, "p@example.com", "P", private.url("/hook"))
    down = add_user(engine, "d@example.com", "D", f"http://127.0.0.1:{later_port}/hook")
    no_url = add_user(engine, "n@example.com", "N")
    args = {"message": "hello", "channel": "webhook"}
    refused_job = enqueue(client, auth, "send_notification", {"user_id": refused, **args})
    down_job = enqueue(client, auth, "send_notification", {"user_id": down, **args})
    no_url_job = enqueue(client, auth, "send_notification", {"user_id": no_url, **args})

    waiting = wait_state(client, auth, down_job, {"RETRY"})
    assert waiting["error"]["type"] == "ConnectError"
    receiver = http_peer(port=later_port).script("/hook", Answer(200))

    failed = wait_state(client, auth, refused_job, FINAL)
    assert failed["state"] == "FAILURE" and failed["retries"] == 0, failed
    assert failed["error"]["type"] == "OutboundURLRefused"
    assert "127.0.0.2 is a loopback address" in failed["error"]["message"]
    assert private.requests() == []
    assert wait_state(client, auth, no_url_job, FINAL)["error"]["type"] == "NoWebhookURL"
    done = wait_state(client, auth, down_job, FINAL, timeout=30)
    assert done["state"] == "SUCCESS", done
    assert len(receiver.requests("/hook")) == 1
