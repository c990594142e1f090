"""The SQL schema: SQLAlchemy 2 declarative models, migrated with Alembic (``alembic upgrade head``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects import mysql
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


# --- documents and media (issue 10: app/tasks/documents.py) --------------------------------
# Portable across SQLite, PostgreSQL and MariaDB: long text is LONGTEXT on MySQL/MariaDB,
# vectors are float32 bytes (LargeBinary), and long paths are looked up by their SHA-256.

#: Text without a practical length limit on every backend (MySQL's TEXT stops at 64 KiB).
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class ImportStatus(StrEnum):
    """Where one run of process_large_file is."""

    LOADING = "loading"
    COMPLETED = "completed"
    #: Failed for good, or revoked: the rows it had loaded are removed.
    FAILED = "failed"
    REVOKED = "revoked"


class FileImport(Base):
    """One run of process_large_file: one row per job id, so a re-run replaces its rows."""

    __tablename__ = "file_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(4096))
    format: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.LOADING.value)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    loaded: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class LoadedRecord(Base):
    """A record of a loaded file, as it was: a CSV line's fields by the header's names (strings),
    or a JSON-lines object."""

    __tablename__ = "loaded_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("file_imports.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    #: The record as a JSON object (text, so every backend stores it alike).
    data: Mapped[str] = mapped_column(LongText)


class RejectedLine(Base):
    """A line of a loaded file that was not a valid record: where, why, and (the start of) what."""

    __tablename__ = "rejected_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("file_imports.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(500))
    raw: Mapped[str] = mapped_column(String(1000))


class DocumentStatus(StrEnum):
    """A document's progress through ingestion: processing -> completed / failed."""

    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class Document(Base):
    """An ingested (or analysed) file: its text, its chunks' embedder, and the analysis results."""

    __tablename__ = "documents"
    __table_args__ = (CheckConstraint("status IN ('processing', 'completed', 'failed')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: SHA-256 of the resolved path: the document's identity (a 4 KiB path cannot be a unique key on MariaDB).
    path_hash: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(4096))
    source_name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the file's bytes: an unchanged file is not ingested again.
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(500), default="")
    text: Mapped[str] = mapped_column(LongText, default="")
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.PROCESSING.value)
    error: Mapped[str | None] = mapped_column(String(2000), default=None)
    embedder: Mapped[str | None] = mapped_column(String(200), default=None)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    sentiment: Mapped[float | None] = mapped_column(Float, default=None)
    sentiment_label: Mapped[str | None] = mapped_column(String(16), default=None)
    summary: Mapped[str | None] = mapped_column(LongText, default=None)
    analysed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Chunk(Base):
    """A piece of a document's text, with its embedding (float32, little-endian, as bytes)."""

    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    dimensions: Mapped[int | None] = mapped_column(Integer, default=None)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


# --- data tasks (issue 9): activity, profiles, sessions, tokens, billing, analytics, exports ---------


class UserStats(Base):
    """A user's activity counters (update_user_stats): one row per user, created on first use."""

    __tablename__ = "user_stats"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    login_count: Mapped[int] = mapped_column(Integer, default=0)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class UserProfile(Base):
    """A user's profile: at most one per user (create_user_profile)."""

    __tablename__ = "user_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    bio: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserSession(Base):
    """A signed-in session; cleanup_old_sessions deletes those not seen for N days."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: SHA-256 of the session cookie: the cookie itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class TokenKind(StrEnum):
    """What a stored token is for."""

    API = "api"
    REFRESH = "refresh"


class AuthToken(Base):
    """An API or refresh token (its hash); cleanup_expired_tokens deletes the expired ones."""

    __tablename__ = "auth_tokens"
    __table_args__ = (CheckConstraint("kind IN ('api', 'refresh')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class SubscriptionStatus(StrEnum):
    """Only active subscriptions are invoiced."""

    ACTIVE = "active"
    CANCELLED = "cancelled"


class Subscription(Base):
    """A user's plan, billed monthly by generate_monthly_invoices while active."""

    __tablename__ = "subscriptions"
    __table_args__ = (CheckConstraint("status IN ('active', 'cancelled')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    plan: Mapped[str] = mapped_column(String(64))
    #: The monthly price in the currency's minor unit.
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Invoice(Base):
    """One subscription's invoice for one month: the unique constraint makes it exactly one."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("subscription_id", "month", name="uq_invoices_subscription_month"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    #: ``YYYY-MM``.
    month: Mapped[str] = mapped_column(String(7), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: When its mail was handed to SMTP; NULL until then (a sender claims it by setting it).
    emailed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class RequestRollup(Base):
    """API requests of one window (an hour) per method, route and status."""

    __tablename__ = "analytics_requests"
    __table_args__ = (
        UniqueConstraint("window_start", "method", "route", "status", name="uq_analytics_requests_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    method: Mapped[str] = mapped_column(String(10))
    route: Mapped[str] = mapped_column(String(255))
    status: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger)


class LatencyRollup(Base):
    """API latency of one window per route: count, mean and percentiles in milliseconds."""

    __tablename__ = "analytics_latency"
    __table_args__ = (UniqueConstraint("window_start", "route", name="uq_analytics_latency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    route: Mapped[str] = mapped_column(String(255))
    requests: Mapped[int] = mapped_column(BigInteger)
    mean_ms: Mapped[float] = mapped_column(Double)
    p50_ms: Mapped[float] = mapped_column(Double)
    p95_ms: Mapped[float] = mapped_column(Double)
    p99_ms: Mapped[float] = mapped_column(Double)


class JobRollup(Base):
    """Job outcomes of one window per task: counts, mean and percentile run times in seconds."""

    __tablename__ = "analytics_jobs"
    __table_args__ = (UniqueConstraint("window_start", "task", name="uq_analytics_jobs_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    task: Mapped[str] = mapped_column(String(200))
    succeeded: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    retried: Mapped[int] = mapped_column(BigInteger)
    other: Mapped[int] = mapped_column(BigInteger)
    mean_s: Mapped[float] = mapped_column(Double)
    p50_s: Mapped[float] = mapped_column(Double)
    p95_s: Mapped[float] = mapped_column(Double)
    p99_s: Mapped[float] = mapped_column(Double)


class Export(Base):
    """One process_batch_export run: what was asked, where the file went, how many rows."""

    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    entity: Mapped[str] = mapped_column(String(32))
    filters: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(320))
    path: Mapped[str | None] = mapped_column(String(1024), default=None)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


# --- transactional enqueue (issue 21): app/core/outbox.py ------------------------------------


class OutboxEntry(Base):
    """A job enqueued inside a caller's transaction (``apply_async(..., session=conn)``): it exists
    only if that transaction commits, and is pushed to Redis after, then deleted."""

    __tablename__ = "job_outbox"

    #: The job's id: pushing a row twice finds the job already there.
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    task: Mapped[str] = mapped_column(String(200))
    #: The validated arguments, and the enqueue options (a countdown already turned into an eta), JSON.
    kwargs: Mapped[str] = mapped_column(LongText)
    options: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
