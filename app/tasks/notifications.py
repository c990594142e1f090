"""Notification tasks: the welcome email, and notifications by email or signed webhook."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, Literal

import httpx
from pydantic import EmailStr, Field, PositiveInt
from rq import get_current_job
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.catalogue.registry import QueueName, RetryPolicy, TaskInput, honour_retry_after, snooze_on_429, task
from app.foundation.models import User
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso, utcnow
from app.services import services
from app.services.http import PermanentHTTPError, TransientHTTPError
from app.services.mail import PermanentMailError, TransientMailError
from app.services.outbound import OutboundURLRefused
from app.services.webhooks import WebhookNotConfigured

#: A display name: printable, one line (it goes into mail headers).
DISPLAY_NAME = r"^[^\x00-\x1f\x7f]+$"


class Channel(StrEnum):
    """How a notification reaches the user."""

    EMAIL = "email"
    WEBHOOK = "webhook"


class UnknownUser(LookupError):
    """No user has the id; retrying will not create one."""


class NoWebhookURL(LookupError):
    """The user has no webhook URL to notify."""


class WelcomeInput(TaskInput):
    """Whom to welcome."""

    email: EmailStr = Field(description="the new user's address")
    name: str = Field(min_length=1, max_length=200, pattern=DISPLAY_NAME, description="the new user's name")


@task(
    input=WelcomeInput,
    queue=QueueName.DEFAULT,
    time_limit=120,
    retry=RetryPolicy(
        max_retries=3,
        backoff_base=1,
        backoff_cap=600,
        retry_for=(TransientMailError,),
        dont_retry_for=(PermanentMailError,),
    ),
)
def send_welcome_email(email: str, name: str) -> dict[str, Any]:
    """Render the welcome templates (text + HTML) and send them as one multipart mail through SMTP."""
    mail = services().mail
    message = mail.compose(
        to=email,
        subject=f"Welcome to {mail.product}, {name}!",
        template="welcome",
        context={"name": name},
        display_name=name,
    )
    delivery = mail.send(message)
    return {"status": "sent", "recipient": email, "sent_at": iso(utcnow()), **delivery.describe()}


class NotificationInput(TaskInput):
    """Whom to notify, with what, and how."""

    user_id: PositiveInt = Field(description="the user's id (users table)")
    message: str = Field(min_length=1, max_length=1000, description="the text of the notification")
    channel: Literal["email", "webhook"] = Field(default="email", description="email or webhook")


@task(
    input=NotificationInput,
    queue=QueueName.DEFAULT,
    time_limit=120,
    retry=RetryPolicy(
        max_retries=5,
        backoff_base=1,
        backoff_cap=300,
        retry_for=(TransientMailError, TransientHTTPError, httpx.TransportError, OperationalError),
        dont_retry_for=(
            PermanentMailError,
            PermanentHTTPError,
            OutboundURLRefused,
            UnknownUser,
            NoWebhookURL,
            WebhookNotConfigured,
        ),
    ),
)
def send_notification(user_id: int, message: str, channel: str = "email") -> dict[str, Any]:
    """Notify a user by email (SMTP), or by a signed JSON POST to the user's webhook URL."""
    with Session(runtime().engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise UnknownUser(f"no user with id {user_id}")
        email, name, webhook_url = user.email, user.name, user.webhook_url
    sent: dict[str, Any] = {"status": "sent", "channel": channel, "user_id": user_id}
    if Channel(channel) is Channel.EMAIL:
        mail = services().mail
        note = mail.compose(
            to=email,
            subject=f"{mail.product}: a notification for you",
            template="notification",
            context={"name": name, "message": message},
            display_name=name,
        )
        return {**sent, **mail.send(note).describe(), "sent_at": iso(utcnow())}
    if not webhook_url:
        raise NoWebhookURL(f"user {user_id} has no webhook URL")
    job = get_current_job()
    delivery_id = job.id if job is not None else uuid.uuid4().hex
    payload = {
        "id": delivery_id,
        "type": "notification",
        "user_id": user_id,
        "message": message,
        "created_at": iso(utcnow()),
    }
    try:
        reply = services().webhooks.deliver(webhook_url, payload, delivery_id)
    except TransientHTTPError as exc:
        snooze_on_429(exc.status_code, exc.retry_after, str(exc))  # the peer's rate: no retry spent
        honour_retry_after(exc.retry_after, str(exc))
        raise
    return {**sent, "delivery_id": delivery_id, "http_status": reply.status_code, "sent_at": iso(utcnow())}
