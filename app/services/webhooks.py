"""Signed webhooks: a JSON POST whose receiver can check that it came from us, and when.

The body is sent exactly as signed. ``X-Signature: sha256=<hex>`` is the HMAC-SHA256,
keyed with ``WEBHOOK_SECRET``, of ``<timestamp>.<body>``, where ``<timestamp>`` is the
Unix time in ``X-Signature-Timestamp``: a receiver that checks the signature and rejects
old timestamps (the README shows one in a few lines) cannot be fooled by a replay.
``X-Webhook-Id`` stays the same across retries of one delivery, so a receiver can drop
a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from app.foundation import defaults
from app.foundation.config import Settings
from app.services.http import HttpClient, PermanentHTTPError, Reply, raise_for_status

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
ID_HEADER = "X-Webhook-Id"


class WebhookNotConfigured(Exception):
    """WEBHOOK_SECRET is unset: a webhook cannot be signed."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def encode(payload: Any) -> bytes:
    """The exact bytes sent (and signed) for ``payload``: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSender:
    """Delivers signed JSON POSTs through the outbound (policy-checked) HTTP client."""

    def __init__(self, http: HttpClient, secret: str, timeout: float = defaults.WEBHOOK_TIMEOUT) -> None:
        self.http = http
        self.secret = secret
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, http: HttpClient) -> WebhookSender:
        """The sender of ``WEBHOOK_SECRET`` over ``http``."""
        return cls(http, settings.webhook_secret)

    def deliver(self, url: str, payload: Any, delivery_id: str) -> Reply:
        """POST ``payload`` to ``url``, signed now; redirects are not followed.

        Raises WebhookNotConfigured, OutboundURLRefused, httpx.TransportError,
        TransientHTTPError (5xx, 408, 429) or PermanentHTTPError (any other 4xx, or a 3xx).
        """
        if not self.secret:
            raise WebhookNotConfigured("WEBHOOK_SECRET is not set: webhooks cannot be signed")
        body = encode(payload)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
            ID_HEADER: delivery_id,
        }
        reply = self.http.request("POST", url, content=body, headers=headers, timeout=self.timeout)
        raise_for_status(reply, "webhook receiver")
        if reply.status_code >= 300:  # a receiver that moved: its URL needs updating, not a retry
            raise PermanentHTTPError(reply, "webhook receiver (redirects are not followed)")
        return reply

    def close(self) -> None:
        """The HTTP client is shared; nothing of its own to release."""
