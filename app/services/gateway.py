"""The payment gateway's HTTP API (``PAYMENT_GATEWAY_URL``), spoken with an Idempotency-Key.

``POST <PAYMENT_GATEWAY_URL>/charges`` with ``Idempotency-Key: <payment_id>`` and
``{"payment_id", "amount", "currency"}`` (``amount`` in the currency's minor unit, as an
integer), Stripe-style:

- 2xx ``{"id": "...", "status": "succeeded"}``: approved;
- 402, or 2xx with ``"status": "declined"``: declined, a final business result
  (``decline_code`` and ``message`` are kept when the gateway gives them);
- a connection error, a timeout, 5xx, 408, 429, an unreadable 2xx or a charge still
  ``pending``: :class:`GatewayUnavailable`, to be retried with the same key, so the
  gateway charges once however often the request is repeated;
- any other 4xx: :class:`GatewayError` (the request itself is wrong), final.

Credentials in the URL (``https://key:@gateway.example/v1``) are sent as HTTP Basic auth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from app.foundation import defaults
from app.foundation.config import Settings, mask_url
from app.foundation.models import PaymentStatus
from app.services.http import HttpClient, PermanentHTTPError, Reply, TransientHTTPError, raise_for_status


class GatewayUnavailable(Exception):
    """The gateway could not give an answer now; the same request (same key) may later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayError(Exception):
    """The gateway refused the request itself (or none is configured); repeating it will not help."""


@dataclass(frozen=True)
class ChargeOutcome:
    """The gateway's answer to a charge."""

    status: PaymentStatus
    reference: str | None = None
    decline_code: str | None = None
    message: str | None = None


def _text(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    return str(value)[:limit] if value is not None else None


class PaymentGateway:
    """Charges through ``PAYMENT_GATEWAY_URL``."""

    def __init__(
        self, base_url: str, http: HttpClient, timeout: float = defaults.PAYMENT_GATEWAY_TIMEOUT
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, http: HttpClient) -> PaymentGateway:
        """The gateway of ``PAYMENT_GATEWAY_URL`` over ``http``."""
        return cls(settings.payment_gateway_url, http)

    def charge(self, payment_id: str, amount_minor: int, currency: str) -> ChargeOutcome:
        """Charge ``amount_minor`` of ``currency`` once per ``payment_id``: approved or declined.

        Raises GatewayUnavailable (retry with the same payment id) or GatewayError (final).
        """
        if not self.base_url:
            raise GatewayError("PAYMENT_GATEWAY_URL is not set")
        url = f"{self.base_url}/charges"
        payload = {"payment_id": payment_id, "amount": amount_minor, "currency": currency}
        try:
            reply = self.http.post_json(
                url, payload, headers={"Idempotency-Key": payment_id}, timeout=self.timeout
            )
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"payment gateway {mask_url(url)}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code == 402:
            return self._declined(_object(reply))
        try:
            raise_for_status(reply, "payment gateway")
        except TransientHTTPError as exc:
            raise GatewayUnavailable(str(exc), exc.retry_after) from exc
        except PermanentHTTPError as exc:
            raise GatewayError(f"{exc}: {exc.body}") from exc
        try:
            body = _object(reply)
        except ValueError as exc:  # a 2xx we cannot read: ask again, the key makes that safe
            raise GatewayUnavailable(
                f"payment gateway answered {reply.status_code} without a JSON object"
            ) from exc
        status = str(body.get("status", "")).lower()
        if status in ("succeeded", "approved", "paid"):
            return ChargeOutcome(PaymentStatus.APPROVED, reference=_text(body, "id", 255))
        if status == "declined":
            return self._declined(body)
        raise GatewayUnavailable(
            f"payment gateway reports the charge as {status or 'unknown'!r}; asking again"
        )

    @staticmethod
    def _declined(body: dict[str, Any]) -> ChargeOutcome:
        return ChargeOutcome(
            PaymentStatus.DECLINED,
            reference=_text(body, "id", 255),
            decline_code=_text(body, "decline_code", 64),
            message=_text(body, "message", 1000),
        )

    def close(self) -> None:
        """The HTTP client is shared; nothing of its own to release."""


def _object(reply: Reply) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if reply.status_code == 402:
            return {}
        raise ValueError("not a JSON object")
    return body
