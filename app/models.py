"""The SQL schema: SQLAlchemy 2 declarative models, migrated with Alembic (``alembic upgrade head``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

#: Constraint names spelled the same on every database, so migrations can name them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every table; the catalogue's domain modules add theirs."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A user of the product: whom notifications and mail go to."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Where the webhook channel of send_notification POSTs (checked by the outbound policy).
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @validates("email")
    def _normalised_email(self, _key: str, value: str) -> str:
        """Only a syntactically valid address is stored, in its normalised form (no DNS lookup)."""
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email address {value!r}: {exc}") from None

    @validates("name")
    def _one_line(self, _key: str, value: str) -> str:
        """A name goes into mail headers: printable, on one line."""
        if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("a user's name must be non-empty, on one line, without control characters")
        return value

    @validates("webhook_url")
    def _http_url(self, _key: str, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("a webhook URL must be http(s)")
        return value


class PaymentStatus(StrEnum):
    """The final business result of a charge."""

    APPROVED = "approved"
    DECLINED = "declined"


class Payment(Base):
    """The recorded outcome of one payment: one row per payment id, whatever the retries."""

    __tablename__ = "payments"
    __table_args__ = (CheckConstraint("status IN ('approved', 'declined')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: The amount in the currency's minor unit (cents for USD, yen for JPY).
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    #: The gateway's id of the charge.
    gateway_reference: Mapped[str | None] = mapped_column(String(255), default=None)
    decline_code: Mapped[str | None] = mapped_column(String(64), default=None)
    decline_message: Mapped[str | None] = mapped_column(String(1000), default=None)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
