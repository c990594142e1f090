"""Payment tasks: charging through the gateway, once per payment id, with the outcome recorded."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.catalogue.registry import QueueName, RetryPolicy, TaskInput, honour_retry_after, task
from app.foundation.models import Payment
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso
from app.services import services
from app.services.currency import CURRENCY_EXPONENTS, minor_units
from app.services.gateway import ChargeOutcome, GatewayError, GatewayUnavailable

#: A payment id: also the Idempotency-Key header, so letters, digits, ``-`` and ``_`` only.
PAYMENT_ID = r"^[A-Za-z0-9_-]{1,64}$"


class PaymentConflict(ValueError):
    """The payment id was recorded before with another amount or currency."""


def _iso4217(code: str) -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValueError(f"{code!r} is not an active ISO 4217 currency code")
    return code


#: An active ISO 4217 code, upper case; the schema lists them.
Currency = Annotated[
    str, AfterValidator(_iso4217), WithJsonSchema({"type": "string", "enum": sorted(CURRENCY_EXPONENTS)})
]


class PaymentInput(TaskInput):
    """A charge: which payment, how much, in what currency."""

    payment_id: str = Field(pattern=PAYMENT_ID, description="the payment's id: also its Idempotency-Key")
    amount: float = Field(
        gt=0,
        le=1e12,
        allow_inf_nan=False,
        description="in major units, with no more decimals than the currency has (19.99 USD, 1999 JPY)",
    )
    currency: Currency = Field(description="ISO 4217 code")

    @model_validator(mode="after")
    def _amount_fits_currency(self) -> PaymentInput:
        minor_units(self.amount, self.currency)
        return self


def _recorded(payment: Payment) -> dict[str, Any]:
    exponent = CURRENCY_EXPONENTS.get(payment.currency, 2)
    return {
        "payment_id": payment.payment_id,
        "status": payment.status,
        "amount": str(Decimal(payment.amount_minor).scaleb(-exponent)),
        "currency": payment.currency,
        "gateway_reference": payment.gateway_reference,
        "decline_code": payment.decline_code,
        "decline_message": payment.decline_message,
        "recorded_at": iso(payment.recorded_at),
    }


def _existing(session: Session, payment_id: str, amount_minor: int, currency: str) -> Payment | None:
    payment = session.scalars(select(Payment).where(Payment.payment_id == payment_id)).one_or_none()
    if payment is not None and (payment.amount_minor, payment.currency) != (amount_minor, currency):
        raise PaymentConflict(
            f"payment {payment_id} was recorded for {payment.amount_minor} {payment.currency} (minor units), "
            f"not {amount_minor} {currency}"
        )
    return payment


def _record(payment_id: str, amount_minor: int, currency: str, outcome: ChargeOutcome) -> dict[str, Any]:
    engine = runtime().engine
    try:
        with Session(engine) as session, session.begin():
            payment = Payment(
                payment_id=payment_id,
                amount_minor=amount_minor,
                currency=currency,
                status=outcome.status.value,
                gateway_reference=outcome.reference,
                decline_code=outcome.decline_code,
                decline_message=outcome.message,
            )
            session.add(payment)
            session.flush()
            session.refresh(payment)
            return _recorded(payment)
    except IntegrityError:
        # Another run recorded it first (at-least-once, or the same payment enqueued twice).
        with Session(engine) as session:
            existing = _existing(session, payment_id, amount_minor, currency)
            assert existing is not None
            return {**_recorded(existing), "already_recorded": True}


@task(
    input=PaymentInput,
    queue=QueueName.HIGH,
    time_limit=120,
    retry=RetryPolicy(
        max_retries=3,
        backoff_base=1,
        backoff_cap=600,
        retry_for=(GatewayUnavailable,),
        dont_retry_for=(GatewayError, PaymentConflict),
    ),
)
def process_payment(payment_id: str, amount: float, currency: str) -> dict[str, Any]:
    """Charge through PAYMENT_GATEWAY_URL (Idempotency-Key: payment_id); record approved or declined once."""
    amount_minor = minor_units(amount, currency)
    with Session(runtime().engine) as session:
        existing = _existing(session, payment_id, amount_minor, currency)
        if existing is not None:
            return {**_recorded(existing), "already_recorded": True}
    try:
        outcome = services().gateway.charge(payment_id, amount_minor, currency)
    except GatewayUnavailable as exc:
        honour_retry_after(exc.retry_after, str(exc))
        raise
    return _record(payment_id, amount_minor, currency, outcome)
