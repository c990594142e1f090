"""Document tasks: loading large CSV / JSON-lines files, ingesting documents into searchable
chunks, embeddings, and the text-analysis workflow.

The text-analysis workflow is one ``POST /api/v1/workflows`` (see :func:`text_analysis_workflow`)::

    {"type": "chain", "steps": [
        {"task": "extract_text", "args": {"path": "report.pdf"}},
        {"type": "chord",
         "steps": [{"task": "analyze_sentiment"}, {"task": "generate_summary"}],
         "callback": {"task": "save_analysis"}}]}
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import PurePath
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import Field
from rq import get_current_job
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from app.catalogue.progress import report_progress
from app.catalogue.registry import QueueName, RetryPolicy, TaskInput, task
from app.foundation import defaults, signals
from app.foundation.models import (
    Chunk,
    Document,
    DocumentStatus,
    FileImport,
    ImportStatus,
    LoadedRecord,
    RejectedLine,
)
from app.foundation.runtime import client_runtime, runtime
from app.foundation.timeutil import utcnow
from app.services import services
from app.services.embeddings import Embedder, EmbeddingsError, EmbeddingsUnavailable, pack
from app.services.extraction import UnsupportedFile, chunk, extract, sentiment, summary
from app.services.files import InputPath, PathRefused, check_input, open_input

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else f"local-{uuid.uuid4()}"


# --- process_large_file ---------------------------------------------------------------------


class BadRecord(ValueError):
    """A line is not a valid record (the message is the reason kept with it), or the file has
    no usable header (the message says why; the load fails)."""


#: The types a ``columns`` declaration may give a column.
ColumnType = Literal["string", "integer", "number", "email", "date", "boolean"]
_INTEGER = re.compile(r"^[+-]?\d+$")
_BOOLEANS = {"true", "false", "1", "0"}


def _shown(value: Any) -> str:
    return repr(str(value)[:40])


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _string(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else "required"
    return "required" if value is None else f"must be a string, got {_shown(value)}"


def _integer(value: Any) -> str | None:
    if isinstance(value, str):
        if value.isascii() and _INTEGER.match(value):
            return None
    elif isinstance(value, int) and not isinstance(value, bool):
        return None
    return "required" if _blank(value) else f"must be a whole number, got {_shown(value)}"


def _number(value: Any) -> str | None:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return None if math.isfinite(number) else f"must be a finite number, got {_shown(value)}"
    return "required" if _blank(value) else f"must be a number, got {_shown(value)}"


def _email(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= 320 and _EMAIL.match(value.strip()):
        return None
    return "required" if _blank(value) else f"not an email address: {_shown(value)}"


def _date(value: Any) -> str | None:
    if isinstance(value, str) and _DAY.match(day := value.strip()):
        try:
            date.fromisoformat(day)
        except ValueError:
            return f"no such day {day}"
        return None
    return "required" if _blank(value) else f"must be YYYY-MM-DD, got {_shown(value)}"


def _boolean(value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in _BOOLEANS):
        return None
    return "required" if _blank(value) else f"must be true or false (or 1 or 0), got {_shown(value)}"


#: Why a value is not of a column type, or None when it is one (a missing or blank value: "required").
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "email": _email,
    "date": _date,
    "boolean": _boolean,
}


def validate_record(record: Mapping[str, Any], columns: Mapping[str, str]) -> None:
    """Check ``record`` against the declared ``columns`` (name -> type): each is present, non-empty
    and of its type; BadRecord naming the first column that is not. Other fields pass as they are.

    Hand-written rather than a pydantic model: a million records must take about a second.
    """
    _check(record, [(name, _CHECKS[kind]) for name, kind in columns.items()])


def _check(record: Mapping[str, Any], checks: Sequence[tuple[str, Callable[[Any], str | None]]]) -> None:
    for name, check in checks:
        problem = check(record.get(name))
        if problem is not None:
            raise BadRecord(f"{name}: {problem}")


@dataclass
class LoadCounts:
    """How far a load got."""

    lines: int = 0
    loaded: int = 0
    rejected: int = 0
    bytes_read: int = 0


#: Called with (lines, estimated total lines, counts) at most every PROGRESS_EVERY_LINES lines.
Reporter = Callable[[int, int, LoadCounts], None]


def throttled_reporter(size: int, min_interval: float = defaults.PROGRESS_MIN_INTERVAL) -> Reporter:
    """A Reporter that writes the job's progress at most every ``min_interval`` s: the check is
    made every 100 lines, the write to Redis only when it is due (and always at 100%)."""
    last = [0.0]

    def report(lines: int, total: int, counts: LoadCounts) -> None:
        now = time.monotonic()
        if now - last[0] >= min_interval or counts.bytes_read >= size:
            last[0] = now
            report_progress(
                lines,
                max(total, lines),
                stage="loading",
                message=f"{counts.loaded} loaded, {counts.rejected} rejected, {counts.bytes_read}/{size} B",
            )

    return report


def _lines(fh: BinaryIO, counts: LoadCounts) -> Iterator[str]:
    for raw in fh:
        counts.bytes_read += len(raw)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield raw.decode("utf-8", errors="replace")


def _header(row: list[str] | None, columns: Mapping[str, str]) -> list[str]:
    """The CSV header's column names, checked: none empty, none repeated, every declared one there."""
    if row is None:
        if columns:
            raise BadRecord(f"the file is empty: no header with {', '.join(columns)}")
        return []
    names = [h.strip() for h in row]
    if names and names[0].startswith("\ufeff"):  # a byte order mark some editors write
        names[0] = names[0][1:]
    empty = [str(n + 1) for n, name in enumerate(names) if not name]
    if empty:
        raise BadRecord(f"the CSV header has no name for column {', '.join(empty)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadRecord(f"the CSV header names {', '.join(repeated)} more than once")
    missing = [c for c in columns if c not in names]
    if missing:
        raise BadRecord(f"the CSV header lacks {', '.join(missing)} (it has {', '.join(names)})")
    return names


def _records(
    fh: BinaryIO, fmt: str, counts: LoadCounts, columns: Mapping[str, str]
) -> Iterator[tuple[int, dict[str, Any] | str, str | list[str]]]:
    """(line number, the record as a mapping or the reason it is none, the line or its CSV fields)
    for each record."""
    lines = _lines(fh, counts)
    if fmt == "jsonl":
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not JSON: {exc.msg}", line
                continue
            if isinstance(value, dict):
                yield number, value, line
            else:
                yield number, "not a JSON object", line
        return
    reader = csv.reader(lines)
    names = _header(next(reader, None), columns)
    width = len(names)
    for row in reader:
        if not row:
            continue
        if len(row) != width:
            yield reader.line_num, f"has {len(row)} fields, the header {width}", row
            continue
        yield reader.line_num, dict(zip(names, row, strict=True)), row


def _table(model: type[Any]) -> Table:
    """The Core table of a model."""
    return model.__table__


def load_file(
    fh: BinaryIO,
    fmt: str,
    size: int,
    conn: Connection,
    import_id: int,
    report: Reporter | None = None,
    batch: int = defaults.LOAD_BATCH,
    columns: Mapping[str, str] | None = None,
) -> LoadCounts:
    """Stream ``fh`` into loaded_records (each record as JSON) / rejected_lines in batches; memory
    stays flat. ``columns`` (name -> type) are required in every record, each of its type."""
    columns = dict(columns or {})
    checks = [(name, _CHECKS[kind]) for name, kind in columns.items()]
    counts = LoadCounts()
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    # Core inserts of the tables: no ORM objects per row.
    records, rejects = _table(LoadedRecord), _table(RejectedLine)
    every = defaults.PROGRESS_EVERY_LINES
    countdown = every
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def flush() -> None:
        if good:
            conn.execute(records.insert(), good)
            good.clear()
        if bad:
            conn.execute(rejects.insert(), bad)
            bad.clear()
        conn.commit()

    for number, value, raw in _records(fh, fmt, counts, columns):
        counts.lines = number
        reason = value if isinstance(value, str) else None
        if reason is None and checks:
            try:
                _check(value, checks)  # type: ignore[arg-type]
            except BadRecord as exc:
                reason = str(exc)
        if reason is not None:
            text = raw if isinstance(raw, str) else ",".join(raw)
            bad.append({"import_id": import_id, "line": number, "reason": reason[:500], "raw": text[:1000]})
        else:
            good.append({"import_id": import_id, "line": number, "data": dumps(value)})
        if len(good) + len(bad) >= batch:
            counts.loaded += len(good)
            counts.rejected += len(bad)
            flush()
        countdown -= 1
        if countdown <= 0:
            countdown = every
            if report is not None:
                estimate = round(number * size / counts.bytes_read) if counts.bytes_read else number
                report(number, estimate, counts)
    counts.loaded += len(good)
    counts.rejected += len(bad)
    flush()
    if report is not None:
        report(counts.lines, counts.lines, counts)
    return counts


class LargeFileInput(TaskInput):
    """A CSV (any header) or JSON-lines file below INPUT_DIRS, and the columns every record needs."""

    path: InputPath
    format: Literal["csv", "jsonl"] | None = Field(
        default=None, description="csv or jsonl; by default from the extension (.jsonl/.ndjson: jsonl)"
    )
    columns: dict[Annotated[str, Field(min_length=1, max_length=200)], ColumnType] | None = Field(
        default=None,
        max_length=200,
        description="required columns and their types; a line whose value is missing or does not fit "
        "is rejected with its number and the reason (a string must be non-empty)",
    )


@task(
    input=LargeFileInput,
    queue=QueueName.LOW,
    time_limit=3 * 3600,
    retry=RetryPolicy(max_retries=1, backoff_base=30, dont_retry_for=(PathRefused, BadRecord)),
)
def process_large_file(
    path: str, format: str | None = None, columns: dict[str, str] | None = None
) -> dict[str, Any]:
    """Stream a CSV or JSON-lines file into loaded_records in batches, each record as JSON; keep
    rejected lines and why. A failed or revoked load is marked so and its rows are removed."""
    fmt = format or ("jsonl" if PurePath(path).suffix.lower() in (".jsonl", ".ndjson") else "csv")
    engine = runtime().engine
    job_id = _job_id()
    with open_input(path) as fh:
        size = max(1, _size(fh))
        with engine.connect() as conn:
            # A run of this job before (a worker died) left rows: start it again from nothing.
            _remove_rows(conn, job_id, drop_import=True)
            import_id = conn.execute(
                insert(FileImport).values(
                    job_id=job_id, path=str(path), format=fmt, status=ImportStatus.LOADING
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            conn.commit()
            report_progress(0, 0, stage="loading")
            try:
                counts = load_file(fh, fmt, size, conn, import_id, throttled_reporter(size), columns=columns)
            except BaseException:
                conn.rollback()
                _remove_rows(conn, job_id)
                _mark(conn, job_id, ImportStatus.FAILED)
                conn.commit()
                raise
            conn.execute(
                update(FileImport)
                .where(FileImport.id == import_id)
                .values(
                    status=ImportStatus.COMPLETED,
                    lines=counts.lines,
                    loaded=counts.loaded,
                    rejected=counts.rejected,
                    finished_at=utcnow(),
                )
            )
            conn.commit()
    return {
        "import_id": import_id,
        "format": fmt,
        "lines": counts.lines,
        "loaded": counts.loaded,
        "rejected": counts.rejected,
    }


def _remove_rows(conn: Connection, job_id: str, *, drop_import: bool = False) -> None:
    """Delete the loaded and rejected rows of the job's import (and the import row itself)."""
    old = conn.scalar(select(FileImport.id).where(FileImport.job_id == job_id))
    if old is None:
        return
    conn.execute(delete(LoadedRecord).where(LoadedRecord.import_id == old))
    conn.execute(delete(RejectedLine).where(RejectedLine.import_id == old))
    if drop_import:
        conn.execute(delete(FileImport).where(FileImport.id == old))


def _mark(conn: Connection, job_id: str, status: ImportStatus) -> None:
    """Mark an unfinished import; a revoke also wins over the failure its own code recorded
    when it was stopped (an inline or threaded worker stops a job by raising in it)."""
    unfinished = [ImportStatus.LOADING.value]
    if status is ImportStatus.REVOKED:
        unfinished.append(ImportStatus.FAILED.value)
    conn.execute(
        update(FileImport)
        .where(FileImport.job_id == job_id, FileImport.status.in_(unfinished))
        .values(status=status, finished_at=utcnow())
    )


def _load_ended_badly(status: ImportStatus) -> Callable[..., None]:
    def handler(_sender: str, *, job_id: str, **_: Any) -> None:
        """A load that failed for good or was revoked (its work horse killed mid-batch, so its own
        ``except`` never ran) is marked so, and the rows it had committed are removed."""
        with client_runtime().engine.connect() as conn:
            unfinished = FileImport.status.in_([ImportStatus.LOADING, ImportStatus.FAILED])
            if conn.scalar(select(FileImport.id).where(FileImport.job_id == job_id, unfinished)) is None:
                return  # never started, or completed
            _remove_rows(conn, job_id)
            _mark(conn, job_id, status)
            conn.commit()

    return handler


# Sent by the one place that decides each outcome, in whichever process saw it (the worker that
# stopped the horse, the sweep that found it dead); held strongly here, so never collected.
_on_failure = _load_ended_badly(ImportStatus.FAILED)
_on_revoked = _load_ended_badly(ImportStatus.REVOKED)
signals.task_failure.connect(_on_failure, sender="process_large_file", weak=False)
signals.task_revoked.connect(_on_revoked, sender="process_large_file", weak=False)


def _size(fh: BinaryIO) -> int:
    return os.fstat(fh.fileno()).st_size


# --- ingestion and embeddings ---------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> tuple[str, bytes]:
    resolved = str(check_input(path))
    with open_input(path) as fh:
        return resolved, fh.read()


def _upsert_document(session: Session, resolved: str, data: bytes, source_name: str) -> tuple[Document, bool]:
    """The document of ``resolved`` with its text; True when its content changed (or is new)."""
    content_hash = _sha256(data)
    doc = session.scalars(
        select(Document).where(Document.path_hash == _sha256(resolved.encode()))
    ).one_or_none()
    unchanged = doc is not None and doc.content_hash == content_hash
    if unchanged and doc is not None and doc.status != DocumentStatus.FAILED and doc.embedder is not None:
        return doc, False  # ingested (chunked and embedded) already
    found = extract(resolved, data)
    if doc is None:
        doc = Document(path_hash=_sha256(resolved.encode()), path=resolved)
        session.add(doc)
    else:  # the chunks of the old content must not be found any more
        session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
    doc.kind, doc.title, doc.text = found.kind, found.title[:500], found.text
    doc.content_hash, doc.source_name = content_hash, source_name[:200]
    doc.status, doc.error, doc.chunk_count, doc.embedder = DocumentStatus.PROCESSING, None, 0, None
    if not unchanged:  # an analysis (the text-analysis workflow's) of the same content stays
        doc.sentiment = doc.sentiment_label = doc.summary = doc.analysed_at = None
    session.flush()
    return doc, True


def embed_document(
    engine: Engine, document_id: int, embedder: Embedder, report: Callable[[int, int], object] | None = None
) -> int:
    """(Re)chunk and embed one document: processing -> completed, or failed with the error; its chunks."""
    with Session(engine) as session, session.begin():
        doc = session.get(Document, document_id)
        if doc is None:
            raise LookupError(f"no document with id {document_id}")
        doc.status, doc.error = DocumentStatus.PROCESSING, None
        text = doc.text
    try:
        pieces = chunk(text, defaults.CHUNK_SIZE, defaults.CHUNK_OVERLAP)
        rows = []
        step = defaults.EMBEDDINGS_BATCH
        for i in range(0, len(pieces), step):
            part = pieces[i : i + step]
            vectors = embedder.embed([p for _, p in part])
            rows += [
                {
                    "document_id": document_id,
                    "position": i + j,
                    "start": start,
                    "text": piece,
                    "dimensions": len(vec),
                    "vector": pack(vec),
                }
                for j, ((start, piece), vec) in enumerate(zip(part, vectors, strict=True))
            ]
            if report is not None:
                report(min(i + step, len(pieces)), len(pieces))
        with Session(engine) as session, session.begin():
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            if rows:
                session.execute(insert(Chunk), rows)
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(status=DocumentStatus.COMPLETED, chunk_count=len(rows), embedder=embedder.name)
            )
        return len(rows)
    except Exception as exc:
        with Session(engine) as session, session.begin():
            session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(status=DocumentStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
            )
        raise


class IngestInput(TaskInput):
    """Files to ingest (text, Markdown, HTML, PDF) and the name of their source."""

    file_paths: list[InputPath] = Field(min_length=1, max_length=1000)
    source_name: str = Field(default="", max_length=200)


_NEVER = (PathRefused, UnsupportedFile, EmbeddingsError, LookupError)


@task(
    input=IngestInput,
    queue=QueueName.LOW,
    time_limit=3600,
    retry=RetryPolicy(
        max_retries=3, backoff_base=10, retry_for=(EmbeddingsUnavailable, OSError), dont_retry_for=_NEVER
    ),
)
def file_ingestion(file_paths: list[str], source_name: str = "") -> dict[str, Any]:
    """Extract, chunk (with overlap) and embed files into documents and chunks; unchanged files: no-op."""
    engine, embedder = runtime().engine, services().embedder
    out: list[dict[str, Any]] = []
    total = len(file_paths)
    for n, path in enumerate(file_paths):
        resolved, data = _read(path)
        with Session(engine) as session, session.begin():
            doc, changed = _upsert_document(session, resolved, data, source_name)
            document_id, chunks = doc.id, doc.chunk_count
        if changed:

            def report(done: int, of: int, n: int = n, path: str = path) -> None:
                report_progress(
                    n * 1000 + done * 1000 // max(of, 1),
                    total * 1000,
                    stage="embedding",
                    message=f"{path}: {done}/{of} chunks",
                )

            chunks = embed_document(engine, document_id, embedder, report)
        out.append({"path": path, "document_id": document_id, "chunks": chunks, "unchanged": not changed})
        report_progress((n + 1) * 1000, total * 1000, stage="ingesting", message=f"{n + 1} of {total} files")
    return {"documents": out, "embedder": embedder.name}


class EmbeddingsInput(TaskInput):
    """A document already ingested."""

    document_id: int = Field(ge=1)


@task(
    input=EmbeddingsInput,
    queue=QueueName.LOW,
    time_limit=3600,
    retry=RetryPolicy(
        max_retries=5, backoff_base=5, retry_for=(EmbeddingsUnavailable,), dont_retry_for=_NEVER
    ),
)
def generate_embeddings(document_id: int) -> dict[str, Any]:
    """Re-chunk and embed one document (status processing -> completed/failed), with progress."""
    embedder = services().embedder
    count = embed_document(
        runtime().engine, document_id, embedder, lambda d, t: report_progress(d, t, stage="embedding")
    )
    return {"document_id": document_id, "chunks": count, "embedder": embedder.name}


# --- the text-analysis workflow ---------------------------------------------------------------


class PathInput(TaskInput):
    """A file below INPUT_DIRS (text, Markdown, HTML or PDF)."""

    path: InputPath


@task(input=PathInput, queue=QueueName.DEFAULT, time_limit=600, retry=RetryPolicy(dont_retry_for=_NEVER))
def extract_text(path: str) -> dict[str, Any]:
    """Extract a file's text onto its document record (the first step of the text-analysis workflow)."""
    resolved, data = _read(path)
    with Session(runtime().engine) as session, session.begin():
        doc, changed = _upsert_document(session, resolved, data, "")
        if changed and doc.status == DocumentStatus.PROCESSING and not doc.chunk_count:
            doc.status = DocumentStatus.COMPLETED
        return {"document_id": doc.id, "path": path, "title": doc.title, "characters": len(doc.text)}


class ExtractedInput(TaskInput):
    """The output of extract_text."""

    extracted: dict[str, Any] = Field(description="extract_text's result: {document_id, ...}")


def _text_of(extracted: dict[str, Any]) -> tuple[int, str]:
    document_id = extracted.get("document_id")
    if not isinstance(document_id, int):
        raise LookupError("the extracted step gave no document_id")
    with Session(runtime().engine) as session:
        doc = session.get(Document, document_id)
        if doc is None:
            raise LookupError(f"no document with id {document_id}")
        return document_id, doc.text[: defaults.ANALYSIS_MAX_CHARS]


@task(input=ExtractedInput, queue=QueueName.DEFAULT, time_limit=300, retry=RetryPolicy(dont_retry_for=_NEVER))
def analyze_sentiment(extracted: dict[str, Any]) -> dict[str, Any]:
    """A lexicon sentiment score of the extracted text, in [-1, 1], with its label."""
    document_id, text = _text_of(extracted)
    return {"document_id": document_id, "sentiment": sentiment(text)}


@task(input=ExtractedInput, queue=QueueName.DEFAULT, time_limit=300, retry=RetryPolicy(dont_retry_for=_NEVER))
def generate_summary(extracted: dict[str, Any]) -> dict[str, Any]:
    """An extractive summary of the extracted text: its three most representative sentences."""
    document_id, text = _text_of(extracted)
    return {"document_id": document_id, "summary": summary(text)}


class AnalysisInput(TaskInput):
    """The group's results: analyze_sentiment's and generate_summary's."""

    results: list[dict[str, Any]] = Field(min_length=1, max_length=10)


@task(input=AnalysisInput, queue=QueueName.DEFAULT, time_limit=60, retry=RetryPolicy(dont_retry_for=_NEVER))
def save_analysis(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Save the sentiment and the summary on the document's record (the chord's callback)."""
    merged: dict[str, Any] = {}
    for result in results:
        merged.update(result)
    ids = {r.get("document_id") for r in results}
    if len(ids) != 1 or "sentiment" not in merged or "summary" not in merged:
        raise LookupError("save_analysis needs one document's sentiment and summary")
    document_id = ids.pop()
    score = merged["sentiment"]
    with Session(runtime().engine) as session, session.begin():
        doc = session.get(Document, document_id)
        if doc is None:
            raise LookupError(f"no document with id {document_id}")
        doc.sentiment, doc.sentiment_label = float(score["score"]), str(score["label"])
        doc.summary, doc.analysed_at = str(merged["summary"]), utcnow()
    return {"document_id": document_id, "sentiment": score, "summary": merged["summary"]}


def text_analysis_workflow(path: str) -> dict[str, Any]:
    """The body of ``POST /api/v1/workflows`` that analyses one file."""
    return {
        "type": "chain",
        "steps": [
            {"task": "extract_text", "args": {"path": path}},
            {
                "type": "chord",
                "steps": [{"task": "analyze_sentiment"}, {"task": "generate_summary"}],
                "callback": {"task": "save_analysis"},
            },
        ],
    }
