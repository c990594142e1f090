"""Report and export tasks: CSV and PDF reports from the analytics tables, streamed CSV exports.

Files are written under a temporary name in their final directory and renamed when
complete, so a reader never sees half a file and a crashed run leaves only a ``.part``.
"""

from __future__ import annotations

import csv
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import psutil
from fpdf import FPDF
from pydantic import EmailStr, Field, PositiveInt, model_validator
from rq import get_current_job
from sqlalchemy import Select, Table, func, select
from sqlalchemy.orm import Session

from app.catalogue.progress import report_progress
from app.catalogue.registry import (
    QueueName,
    RetryPolicy,
    SoftTimeLimitExceeded,
    TaskInput,
    check_soft_limit,
    task,
)
from app.foundation import defaults
from app.foundation.db import dialect_of
from app.foundation.models import (
    Export,
    Invoice,
    JobRollup,
    LatencyRollup,
    Payment,
    RequestRollup,
    Subscription,
    User,
)
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso, stamp, utcnow
from app.services import services
from app.services.mail import TransientMailError


class AtomicFile:
    """A text file written as ``.<name>.part`` beside its final name and renamed on ``commit``."""

    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final = final
        self.temp = final.with_name(f".{final.name}.part")
        self.handle: TextIO = self.temp.open("w", newline="", encoding="utf-8")

    def commit(self) -> Path:
        """Flush, fsync and rename to the final name."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.final)
        return self.final

    def discard(self) -> None:
        """Close and delete the temporary file."""
        self.handle.close()
        self.temp.unlink(missing_ok=True)


def _cut_after_last_row(out: AtomicFile) -> int:
    """Cut a CSV being written after its last whole row; the number of data rows it keeps.

    The soft limit is raised asynchronously, between any two bytecodes: it can land after a row
    is written and before it is counted (or, were a write interrupted, inside one). The file is
    the truth, so the count is read back from it rather than kept beside it.
    """
    out.handle.flush()
    with out.temp.open("r+b") as raw:
        data = raw.read()
        last = data.rfind(b"\r\n")  # csv.writer ends every row with CRLF
        raw.truncate(last + 2 if last >= 0 else 0)
    with out.temp.open(newline="", encoding="utf-8") as handle:
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


# --- reports ---------------------------------------------------------------------------------------


class ReportType(StrEnum):
    """What a report is about."""

    USAGE = "usage"
    JOBS = "jobs"
    BILLING = "billing"


class Period(StrEnum):
    """How far back a report looks."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


PERIOD_DAYS = {Period.DAY: 1, Period.WEEK: 7, Period.MONTH: 30}


class ReportInput(TaskInput):
    """Which report, over which period."""

    report_type: ReportType = Field(description="usage (API requests), jobs (task outcomes) or billing")
    period: Period = Field(default=Period.DAY, description="the last day, week or 30 days")


def _naive(session: Session, moment: datetime) -> datetime:
    return moment.replace(tzinfo=None) if dialect_of(session) in ("sqlite", "mysql") else moment


def _detail_query(report_type: ReportType, since: datetime) -> tuple[list[str], Any]:
    """The CSV's header and rows: every stored row of the period, oldest first."""
    if report_type is ReportType.USAGE:
        r = RequestRollup
        return ["window_start", "method", "route", "status", "requests"], select(
            r.window_start, r.method, r.route, r.status, r.requests
        ).where(r.window_start >= since).order_by(r.window_start, r.route, r.method, r.status)
    if report_type is ReportType.JOBS:
        j = JobRollup
        header = [
            "window_start",
            "task",
            "succeeded",
            "failed",
            "retried",
            "other",
            "mean_s",
            "p50_s",
            "p95_s",
            "p99_s",
        ]
        return header, select(
            j.window_start,
            j.task,
            j.succeeded,
            j.failed,
            j.retried,
            j.other,
            j.mean_s,
            j.p50_s,
            j.p95_s,
            j.p99_s,
        ).where(j.window_start >= since).order_by(j.window_start, j.task)
    i, s = Invoice, Subscription
    return ["created_at", "invoice_id", "month", "subscription_id", "plan", "amount_minor", "currency"], (
        select(i.created_at, i.id, i.month, i.subscription_id, s.plan, i.amount_minor, i.currency)
        .join(s, s.id == i.subscription_id)
        .where(i.created_at >= since)
        .order_by(i.created_at, i.id)
    )


def _summary(session: Session, report_type: ReportType, since: datetime) -> tuple[list[str], list[list[str]]]:
    """The PDF's table: the period's totals per route, task or currency."""
    if report_type is ReportType.USAGE:
        r, lat = RequestRollup, LatencyRollup
        errors = func.sum(func.coalesce(func.nullif(func.floor(r.status / 500), 0) * r.requests, 0))
        rows = session.execute(
            select(r.route, func.sum(r.requests), errors)
            .where(r.window_start >= since)
            .group_by(r.route)
            .order_by(func.sum(r.requests).desc())
        ).all()
        p95 = dict(
            session.execute(
                select(lat.route, func.max(lat.p95_ms)).where(lat.window_start >= since).group_by(lat.route)
            ).all()
        )
        return ["route", "requests", "5xx", "worst p95 ms"], [
            [str(route), str(int(total)), str(int(err or 0)), f"{float(p95.get(route) or 0):.1f}"]
            for route, total, err in rows
        ]
    if report_type is ReportType.JOBS:
        j = JobRollup
        rows = session.execute(
            select(j.task, func.sum(j.succeeded), func.sum(j.failed), func.sum(j.retried), func.max(j.p95_s))
            .where(j.window_start >= since)
            .group_by(j.task)
            .order_by(func.sum(j.succeeded + j.failed).desc())
        ).all()
        return ["task", "succeeded", "failed", "retried", "worst p95 s"], [
            [str(t), str(int(ok)), str(int(bad)), str(int(retry)), f"{float(p95 or 0):.3f}"]
            for t, ok, bad, retry, p95 in rows
        ]
    i = Invoice
    rows = session.execute(
        select(i.currency, func.count(i.id), func.sum(i.amount_minor))
        .where(i.created_at >= since)
        .group_by(i.currency)
        .order_by(func.count(i.id).desc())
    ).all()
    return ["currency", "invoices", "total (minor units)"], [
        [str(c), str(int(n)), str(int(t))] for c, n, t in rows
    ]


def _pdf(path: Path, title: str, header: list[str], rows: list[list[str]]) -> Path:
    """A PDF with the summary table and a bar chart of its first numeric column (top 12)."""
    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_creator("Tasklane")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=9)
    pdf.cell(0, 6, f"generated {iso(utcnow())}", new_x="LMARGIN", new_y="NEXT")
    top = rows[:12]
    values = [float(r[1]) for r in top]
    if values and max(values) > 0:
        pdf.set_font("helvetica", "B", 11)
        pdf.cell(0, 8, f"{header[1]} by {header[0]}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=7)
        x0, y0, width, bar = pdf.l_margin + 45, pdf.get_y() + 2, 120.0, 5.0
        peak = max(values)
        pdf.set_fill_color(52, 101, 164)
        for n, (row, value) in enumerate(zip(top, values, strict=True)):
            y = y0 + n * (bar + 1.5)
            pdf.set_xy(pdf.l_margin, y)
            pdf.cell(44, bar, row[0][:40], align="R")
            pdf.rect(x0, y, max(0.3, width * value / peak), bar, style="F")
            pdf.set_xy(x0 + width * value / peak + 1, y)
            pdf.cell(20, bar, row[1])
        pdf.set_y(y0 + len(top) * (bar + 1.5) + 6)
    pdf.set_font("helvetica", size=8)
    with pdf.table(col_widths=[3] + [1] * (len(header) - 1), text_align="LEFT") as table:
        table.row(header)
        for row in rows:
            table.row([cell[:60] for cell in row])
    partial = AtomicFile(path)
    partial.handle.close()
    pdf.output(str(partial.temp))
    os.replace(partial.temp, path)
    return path


@task(
    input=ReportInput,
    queue=QueueName.LOW,
    time_limit=300,
    soft_time_limit=240,
    retry=RetryPolicy(max_retries=1, backoff_base=60, backoff_cap=60, retry_for=(OSError,)),
)
def generate_report(report_type: str, period: str = "day") -> dict[str, Any]:
    """Write a CSV (the period's rows) and a PDF (totals, a chart) to REPORTS_DIR; partial past soft limit."""
    kind, span = ReportType(report_type), Period(period)
    now = utcnow()
    since_aware = now - timedelta(days=PERIOD_DAYS[span])
    directory = runtime().settings.reports_dir
    name = f"{kind.value}-{span.value}-{stamp(now)}"
    files: list[str] = []
    rows_written = 0
    stage = "csv"
    started = time.monotonic()
    out: AtomicFile | None = None
    session = Session(runtime().engine)
    try:
        since = _naive(session, since_aware)
        header, query = _detail_query(kind, since)
        out = AtomicFile(directory / f"{name}.csv")
        writer = csv.writer(out.handle)
        writer.writerow(header)
        for partition in session.execute(query.execution_options(yield_per=1000)).partitions():
            check_soft_limit()  # in case the limit's own exception landed in a finalizer and was lost
            for row in partition:  # one at a time: a soft limit between two rows counts exactly
                writer.writerow(_csv_row(row))
                rows_written += 1
        files.append(str(out.commit()))
        out = None
        stage = "pdf"
        check_soft_limit()
        summary_header, summary = _summary(session, kind, since)
        title = f"Tasklane {kind.value} report, last {span.value} (since {iso(since_aware)})"
        files.append(str(_pdf(directory / f"{name}.pdf", title, summary_header, summary)))
    except SoftTimeLimitExceeded:
        # The connection may be cut mid-result (a server-side cursor half read): never reuse it.
        session.invalidate()
        if out is not None:  # keep what was written: a CSV cut at a row boundary, named as partial
            rows_written = _cut_after_last_row(out)
            out.final = out.final.with_name(f"{name}.partial.csv")
            files.append(str(out.commit()))
        for leftover in directory.glob(f".{name}*.part"):
            leftover.unlink(missing_ok=True)
        return {
            "status": "partial",
            "report_type": kind.value,
            "period": span.value,
            "stopped_in": stage,
            "rows": rows_written,
            "files": files,
            "seconds": round(time.monotonic() - started, 3),
        }
    except BaseException:
        session.invalidate()
        if out is not None:
            out.discard()
        raise
    finally:
        session.close()
    return {
        "status": "complete",
        "report_type": kind.value,
        "period": span.value,
        "rows": rows_written,
        "summary_rows": len(summary),
        "files": files,
        "seconds": round(time.monotonic() - started, 3),
    }


def _csv_row(row: Sequence[Any]) -> list[Any]:
    return [iso(v if v.tzinfo else v.replace(tzinfo=UTC)) if isinstance(v, datetime) else v for v in row]


# --- exports ---------------------------------------------------------------------------------------


class Entity(StrEnum):
    """What can be exported."""

    USERS = "users"
    PAYMENTS = "payments"
    SUBSCRIPTIONS = "subscriptions"
    INVOICES = "invoices"


#: Each entity's table, its time column, and the filters it accepts besides the time range.
ENTITIES: dict[Entity, tuple[Any, str, frozenset[str]]] = {
    Entity.USERS: (User, "created_at", frozenset()),
    Entity.PAYMENTS: (Payment, "recorded_at", frozenset({"status", "currency"})),
    Entity.SUBSCRIPTIONS: (Subscription, "created_at", frozenset({"status", "currency", "user_id"})),
    Entity.INVOICES: (Invoice, "created_at", frozenset({"month", "currency", "subscription_id"})),
}


class ExportFilters(TaskInput):
    """Which rows: a time range on the entity's creation time, and equality filters."""

    created_after: datetime | None = Field(default=None, description="inclusive, ISO 8601")
    created_before: datetime | None = Field(default=None, description="exclusive, ISO 8601")
    status: str | None = Field(default=None, max_length=16)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    month: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    user_id: PositiveInt | None = None
    subscription_id: PositiveInt | None = None


class ExportInput(TaskInput):
    """What to export, and whom to tell."""

    entity: Entity = Field(description="users, payments, subscriptions or invoices")
    filters: ExportFilters = Field(default_factory=ExportFilters)
    requested_by: EmailStr = Field(description="who is emailed the file's location")

    @model_validator(mode="after")
    def _filters_fit_entity(self) -> ExportInput:
        allowed = ENTITIES[self.entity][2]
        given = {k for k, v in self.filters.model_dump().items() if v is not None}
        extra = given - allowed - {"created_after", "created_before"}
        if extra:
            raise ValueError(f"{self.entity.value} cannot be filtered by {', '.join(sorted(extra))}")
        return self


def _export_query(entity: Entity, filters: dict[str, Any], dialect: str) -> tuple[Table, Select[Any]]:
    model, time_column, _ = ENTITIES[entity]
    table: Table = model.__table__
    stmt = select(*table.c).order_by(table.c.id)
    for bound, op in (("created_after", "__ge__"), ("created_before", "__lt__")):
        value = filters.get(bound)
        if value is not None:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            if dialect in ("sqlite", "mysql"):
                moment = moment.astimezone(UTC).replace(tzinfo=None)
            stmt = stmt.where(getattr(table.c[time_column], op)(moment))
    for name, value in filters.items():
        if value is not None and name in table.c and name not in ("created_after", "created_before"):
            stmt = stmt.where(table.c[name] == value)
    return table, stmt


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _stream(session: Session, stmt: Select[Any]) -> Iterator[Sequence[Any]]:
    """Batches of EXPORT_BATCH rows from a server-side cursor (psycopg named cursor, PyMySQL SSCursor)."""
    result = session.execute(stmt.execution_options(stream_results=True, yield_per=defaults.EXPORT_BATCH))
    yield from result.partitions()


@task(
    input=ExportInput,
    queue=QueueName.LOW,
    time_limit=3 * 3600,
    retry=RetryPolicy(max_retries=2, backoff_base=60, backoff_cap=600, retry_for=(TransientMailError,)),
)
def process_batch_export(
    entity: str, requested_by: str, filters: ExportFilters | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Stream matching rows in batches of 1000 into a CSV under EXPORTS_DIR, then email its location."""
    kind = Entity(entity)
    given = filters.model_dump() if isinstance(filters, ExportFilters) else dict(filters or {})
    wanted = {k: v for k, v in given.items() if v is not None}
    started, rss_start = time.monotonic(), _rss()
    rss_peak = rss_start
    job = get_current_job()
    job_id = job.id if job is not None else uuid.uuid4().hex
    engine = runtime().engine
    now = utcnow()
    final = runtime().settings.exports_dir / f"{kind.value}-{stamp(now)}-{job_id[:8]}.csv"
    with Session(engine) as session:
        table, stmt = _export_query(kind, wanted, dialect_of(session))
        total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
        report_progress(0, total, stage="export")
        out = AtomicFile(final)
        try:
            writer = csv.writer(out.handle)
            writer.writerow([c.name for c in table.c])
            done = 0
            for batch in _stream(session, stmt):
                writer.writerows(_csv_row(r) for r in batch)
                done += len(batch)
                rss_peak = max(rss_peak, _rss())
                report_progress(done, max(total, done), stage="export")
            path = out.commit()
        except BaseException:
            out.discard()
            raise
    size = path.stat().st_size
    seconds = time.monotonic() - started
    with Session(engine) as session, session.begin():
        session.add(
            Export(
                job_id=job_id,
                entity=kind.value,
                filters=json.dumps(wanted, sort_keys=True, default=str),
                requested_by=requested_by,
                path=str(path),
                rows=done,
                finished_at=utcnow(),
            )
        )
    mail = services().mail
    delivery = mail.send(
        mail.compose(
            requested_by,
            f"Your {kind.value} export is ready",
            "export_ready",
            {"entity": kind.value, "rows": done, "size": size, "location": str(path.resolve())},
        )
    )
    return {
        "entity": kind.value,
        "rows": done,
        "file": str(path),
        "bytes": size,
        "seconds": round(seconds, 3),
        "rows_per_second": round(done / seconds) if seconds > 0 else None,
        "memory": {"rss_start_bytes": rss_start, "rss_peak_bytes": rss_peak},
        "mail": delivery.describe(),
    }
