"""Document tasks through real worker.py processes on generated files: the large-file load with
progress seen through the API, ingestion and search, embeddings over HTTP, the text-analysis chord."""

from __future__ import annotations

import io
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.orm import Session

from app.foundation.db import make_engine
from app.foundation.models import Base, Chunk, Document, FileImport, LoadedRecord, RejectedLine
from app.services.embeddings import EmbeddingsUnavailable, HashingEmbedder, HttpEmbedder
from app.services.extraction import chunk, extract, sentiment, summary
from app.services.http import HttpClient
from app.tasks import file_ingestion, process_large_file
from app.tasks.documents import BadRecord, LoadCounts, load_file, text_analysis_workflow, validate_record
from tests.conftest import make_env
from tests.media_files import write_csv, write_pdf
from tests.peers import Answer, HttpPeer, engine_for, gaps, migrate
from tests.servers import FINAL, Starter, enqueue, get_job, start_worker, wait_for, wait_state

HTML = """<!doctype html><html><head><title>Harbour report</title><style>body{color:red}</style>
<script>var secret = "never indexed";</script></head><body><h1>Harbour</h1>
<p>The harbour cranes lift containers &amp; timber every morning.</p>
<p>Fishing boats return at dusk with mackerel and herring.</p></body></html>"""


# --- units ---------------------------------------------------------------------------------------


COLUMNS = {"id": "integer", "name": "string", "email": "email", "amount": "number", "date": "date"}


def test_validate_record() -> None:
    """It passes a record whose declared columns fit and names the column of one that does not;
    fields nobody declared pass as they are."""
    good = {"id": "7", "name": " Ann ", "email": "a@b.io", "amount": "1.5", "date": "2024-02-29", "x": ""}
    validate_record(good, COLUMNS)
    validate_record(
        {"id": 7, "amount": 1, "ok": True}, {"id": "integer", "amount": "number", "ok": "boolean"}
    )
    for change, reason in [
        ({"id": "x"}, "id: must be a whole number"),
        ({"id": "1.5"}, "id: must be a whole number"),
        ({"name": ""}, "name: required"),
        ({"name": "  "}, "name: required"),
        ({"email": "ab.io"}, "email: not an email address"),
        ({"amount": "nan"}, "amount: must be a finite number"),
        ({"amount": "ten"}, "amount: must be a number"),
        ({"date": "2023-02-29"}, "date: no such day"),
        ({"date": "29/02/2024"}, "date: must be YYYY-MM-DD"),
    ]:
        with pytest.raises(BadRecord, match=reason):
            validate_record(good | change, COLUMNS)
    with pytest.raises(BadRecord, match="flag: must be true or false"):
        validate_record({"flag": "maybe"}, {"flag": "boolean"})
    with pytest.raises(BadRecord, match="id: required"):
        validate_record({"name": "A"}, {"id": "integer"})
    with pytest.raises(BadRecord, match="n: must be a string"):
        validate_record({"n": 5}, {"n": "string"})


def loaded(conn: Connection, data: bytes, fmt: str = "csv", **options: Any) -> tuple[LoadCounts, list[Any]]:
    """Load ``data`` into a new import; the counts, and (line, record) of the loaded and
    (line, reason) of the rejected lines, in line order."""
    import_id = conn.execute(insert(FileImport).values(job_id=str(uuid.uuid4()), path="p", format=fmt))
    iid = import_id.inserted_primary_key[0]  # type: ignore[index]
    conn.commit()
    counts = load_file(io.BytesIO(data), fmt, len(data), conn, iid, **options)
    good = conn.execute(select(LoadedRecord.line, LoadedRecord.data).where(LoadedRecord.import_id == iid))
    bad = conn.execute(select(RejectedLine.line, RejectedLine.reason).where(RejectedLine.import_id == iid))
    rows = [(line, json.loads(data)) for line, data in good] + list(bad)
    return counts, sorted(rows, key=lambda r: r[0])


@pytest.fixture
def sqlite_conn(tmp_path: Path) -> Iterator[Connection]:
    engine = make_engine(f"sqlite:///{tmp_path / 'load.db'}")
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def test_any_csv_header_and_json_lines_load_as_they_are(sqlite_conn: Connection) -> None:
    """A user's own CSV header loads, each line stored as a JSON object by the header's names; a
    JSON-lines object is stored as is (issue 21, loose end 8)."""
    counts, rows = loaded(sqlite_conn, b"sku, Colour ,qty\nA-1,red,3\nB-2,,x\n\nC-3,blue\n")
    assert (counts.loaded, counts.rejected, counts.lines) == (2, 1, 5)
    assert rows == [
        (2, {"sku": "A-1", "Colour": "red", "qty": "3"}),
        (3, {"sku": "B-2", "Colour": "", "qty": "x"}),
        (5, "has 2 fields, the header 3"),
    ]
    data = b'{"a": 1, "nested": {"b": [true, null]}, "t": "\xc3\xa9"}\n[1]\n{"a": 2}\n'
    counts, rows = loaded(sqlite_conn, data, "jsonl")
    assert rows == [
        (1, {"a": 1, "nested": {"b": [True, None]}, "t": "\u00e9"}),
        (2, "not a JSON object"),
        (3, {"a": 2}),
    ]


def test_declared_columns_reject_lines_that_do_not_fit(sqlite_conn: Connection) -> None:
    """``columns`` requires each declared column, of its type; a line that does not fit is kept
    with its number and reason; a CSV header without a declared column fails the load."""
    data = (
        b"id,email,when,extra\n1,a@b.io,2026-01-02,\nx,a@b.io,2026-01-02,z\n"
        b"3,nope,2026-01-02,z\n4,c@d.io,,z\n"
    )
    columns = {"id": "integer", "email": "email", "when": "date"}
    counts, rows = loaded(sqlite_conn, data, columns=columns)
    assert (counts.loaded, counts.rejected) == (1, 3)
    assert rows == [
        (2, {"id": "1", "email": "a@b.io", "when": "2026-01-02", "extra": ""}),
        (3, "id: must be a whole number, got 'x'"),
        (4, "email: not an email address: 'nope'"),
        (5, "when: required"),
    ]
    counts, rows = loaded(sqlite_conn, b'{"n": 1.5}\n{"n": "2"}\n{}\n', "jsonl", columns={"n": "number"})
    assert rows == [(1, {"n": 1.5}), (2, {"n": "2"}), (3, "n: required")]
    with pytest.raises(BadRecord, match=r"the CSV header lacks amount \(it has id, email\)"):
        loaded(sqlite_conn, b"id,email\n1,a@b.io\n", columns={"amount": "number"})
    with pytest.raises(BadRecord, match="names id more than once"):
        loaded(sqlite_conn, b"id,id\n1,2\n")


def test_a_failed_or_revoked_load_is_marked_so_and_its_rows_removed(
    app: Flask, engine: Engine, inputs: Path
) -> None:
    """A load whose job failed for good or was revoked (its horse killed, so its own code never ran)
    leaves no partial rows and no import ``loading`` forever (issue 21, loose end 2)."""
    from app.foundation import signals

    with engine.connect() as conn:
        for job_id in ("revoked-job", "failed-job", "done-job", "stopped-job"):
            iid = conn.execute(insert(FileImport).values(job_id=job_id, path="p", format="csv"))
            conn.commit()
            loaded_id = iid.inserted_primary_key[0]  # type: ignore[index]
            load_file(io.BytesIO(b"a\n1\n2\n"), "csv", 6, conn, loaded_id)
        conn.execute(update(FileImport).where(FileImport.job_id == "done-job").values(status="completed"))
        # Stopped by raising in it (inline or threads mode): its own code recorded a failure first.
        conn.execute(update(FileImport).where(FileImport.job_id == "stopped-job").values(status="failed"))
        conn.commit()
    with app.app_context():
        signals.send(signals.task_revoked, "process_large_file", job_id="revoked-job", kwargs={})
        signals.send(signals.task_failure, "process_large_file", job_id="failed-job", kwargs={}, error={})
        signals.send(signals.task_revoked, "process_large_file", job_id="done-job", kwargs={})
        signals.send(signals.task_revoked, "process_large_file", job_id="stopped-job", kwargs={})
    with Session(engine) as session:
        imports = {i.job_id: i for i in session.scalars(select(FileImport))}
        assert {k: v.status for k, v in imports.items()} == {
            "revoked-job": "revoked",
            "failed-job": "failed",
            "done-job": "completed",
            "stopped-job": "revoked",
        }
        assert imports["revoked-job"].finished_at is not None
        left = session.scalars(select(LoadedRecord.import_id)).all()
        assert left == [imports["done-job"].id] * 2
    # A load that fails in its own code (a header without a declared column) is marked too.
    (inputs / "bad.csv").write_text("a,b\n1,2\n")
    with app.app_context(), pytest.raises(BadRecord):
        process_large_file("bad.csv", columns={"c": "string"})
    with Session(engine) as session:
        assert (
            session.scalars(select(FileImport.status).where(FileImport.path == "bad.csv")).one() == "failed"
        )


def test_extract_html_markdown_and_pdf(tmp_path: Path) -> None:
    """HTML through a parser (no script or style), Markdown without markup, PDF through pypdf."""
    html = extract("page.html", HTML.encode())
    assert html.title == "Harbour report" and "cranes lift containers & timber" in html.text
    assert "never indexed" not in html.text and "color" not in html.text
    md = extract("notes.md", b"# Notes\n\nSome **bold** text and a [link](http://x.invalid).\n")
    assert md.title == "Notes" and "Some bold text and a link." in md.text and "http" not in md.text
    write_pdf(tmp_path / "a.pdf", "Quarterly", ["Revenue grew in every region.", "Costs fell."])
    pdf = extract("a.pdf", (tmp_path / "a.pdf").read_bytes())
    assert pdf.title == "Quarterly" and "Revenue grew in every region." in pdf.text


def test_chunks_overlap_and_cover_the_text() -> None:
    """Every chunk is at most the size; consecutive chunks share text; together they cover it all."""
    text = " ".join(f"word{i}" for i in range(2000))
    pieces = chunk(text, 500, 100)
    assert all(len(p) <= 500 for _, p in pieces) and len(pieces) > 20
    for (s1, p1), (s2, _) in itertools.pairwise(pieces):
        assert s1 < s2 < s1 + len(p1)  # overlaps
    assert set(text.split()) == {w for _, p in pieces for w in p.split()}


def test_sentiment_and_summary() -> None:
    """The lexicon scores praise above complaint, a negation flips; the summary keeps sentences in order."""
    assert sentiment("A great, wonderful product. I love it.")["label"] == "positive"
    assert sentiment("Terrible and broken. The worst.")["label"] == "negative"
    assert sentiment("This is not good")["score"] < 0
    text = "Dogs bark. Cats purr when cats are happy. The weather is grey. Cats hunt mice at night, cats do."
    assert summary(text, 2) == "Cats purr when cats are happy. Cats hunt mice at night, cats do."
    assert summary("One. Two.", 3) == "One. Two."


def test_hashing_embedder_ranks_related_text_first() -> None:
    """Unit vectors; a text shares more with a paraphrase than with an unrelated text."""
    e = HashingEmbedder()
    a, b, c = e.embed(["fishing boats return with mackerel", "boats return with mackerel", "tax forms"])
    assert abs(sum(x * x for x in a) - 1) < 1e-9
    dot = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))  # noqa: E731
    assert dot(a, b) > 0.5 > dot(a, c)


def test_http_embedder_backs_off_on_429(http_peer: Callable[..., HttpPeer]) -> None:
    """A 429 is retried after Retry-After / back-off; the vectors come back normalised, in order."""
    peer = http_peer()
    body = {"data": [{"index": 1, "embedding": [0, 2]}, {"index": 0, "embedding": [3, 4]}]}
    peer.script(
        "/v1/embeddings",
        Answer(429, {"error": "slow down"}, {"Retry-After": "1"}),
        Answer(429),
        Answer(200, body),
    )
    embedder = HttpEmbedder(
        peer.url("/v1").replace("http://", "http://:sk-abc@"), "m1", HttpClient(), backoff=0.2
    )
    assert embedder.embed(["a", "b"]) == [[0.6, 0.8], [0.0, 1.0]]
    seen = peer.requests("/v1/embeddings")
    assert len(seen) == 3 and seen[0].json() == {"model": "m1", "input": ["a", "b"]}
    assert seen[0].headers["authorization"] == "Bearer sk-abc"
    assert gaps(seen)[0] >= 0.9 and gaps(seen)[1] >= 0.35  # Retry-After 1 s, then 2 x 0.2 s
    down = http_peer().script("/v1/embeddings", Answer(503))
    with pytest.raises(EmbeddingsUnavailable):
        HttpEmbedder(down.url("/v1"), "m1", HttpClient(), attempts=2, backoff=0.05).embed(["a"])


# --- through the worker --------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


@pytest.fixture
def env(tmp_path: Path, redis_url: str, inputs: Path) -> dict[str, str]:
    return make_env(tmp_path, redis_url, INPUT_DIRS=str(inputs))


@pytest.fixture
def engine(start: Starter, env: dict[str, str]) -> Engine:
    migrate(start)
    return engine_for(env)


def horse_rss(worker: psutil.Process) -> int:
    """The resident memory of the worker's work horse (0 when none)."""
    try:
        return sum(c.memory_info().rss for c in worker.children(recursive=True))
    except psutil.Error:
        return 0


def load_and_watch(
    client: FlaskClient, auth: dict[str, str], worker: psutil.Process, path: str, timeout: float
) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """Enqueue process_large_file and poll it: its final view, the progress seen, the horse's RSS samples."""
    job_id = enqueue(client, auth, "process_large_file", {"path": path, "columns": COLUMNS})
    seen: list[dict[str, Any]] = []
    rss: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = get_job(client, auth, job_id)
        if view["progress"] and (not seen or view["progress"] != seen[-1]):
            seen.append(view["progress"])
        if view["state"] in FINAL:
            return view, seen, rss
        if (sample := horse_rss(worker)) > 0:
            rss.append(sample)
        time.sleep(0.1)
    raise AssertionError(f"process_large_file did not finish in {timeout} s")


def check_large_load(
    client: FlaskClient,
    auth: dict[str, str],
    rconn: redis.Redis,
    start: Starter,
    engine: Engine,
    inputs: Path,
    lines: int,
) -> dict[str, Any]:
    bad = write_csv(inputs / "big.csv", lines)
    proc = start_worker(start, rconn, "low")
    view, seen, rss = load_and_watch(client, auth, psutil.Process(proc.pid), "big.csv", timeout=lines / 2000)
    assert view["state"] == "SUCCESS", view
    assert view["result"] | {"import_id": 0} == {
        "import_id": 0,
        "format": "csv",
        "lines": lines + 1,
        "loaded": lines - bad,
        "rejected": bad,
    }
    # Progress rose through the API, reported in lines, and ended at 100%.
    percents = [p["percent"] for p in seen]
    assert len(percents) >= 3 and percents == sorted(percents) and percents[-1] == 100.0, seen
    assert {"current", "total", "percent", "stage"} <= set(seen[0])
    # Memory stays flat: the horse grows by a few MB at most, whatever the file's size.
    assert rss and max(rss) - rss[0] < 40 * 2**20, [r // 2**20 for r in rss]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(LoadedRecord)) == lines - bad
        rejects = session.scalars(select(RejectedLine).order_by(RejectedLine.line).limit(2)).all()
        assert [(r.line, r.reason.split(":")[0]) for r in rejects] == [(51, "email"), (101, "email")]
        assert session.scalars(select(FileImport.status)).one() == "completed"
    return {"rss_mib": [r // 2**20 for r in rss], "progress_reports_seen": len(seen)}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_large_file_100k_lines(
    client: FlaskClient,
    auth: dict[str, str],
    rconn: redis.Redis,
    start: Starter,
    engine: Engine,
    inputs: Path,
) -> None:
    """100,000 lines load through a worker; rejects keep line and reason; progress rises; memory flat."""
    check_large_load(client, auth, rconn, start, engine, inputs, 100_000)


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_large_file_1m_lines(
    client: FlaskClient,
    auth: dict[str, str],
    rconn: redis.Redis,
    start: Starter,
    engine: Engine,
    inputs: Path,
) -> None:
    """The full 1,000,000-line file, as the 100k test checks it."""
    started = time.monotonic()
    figures = check_large_load(client, auth, rconn, start, engine, inputs, 1_000_000)
    print(f"\n1M lines through the worker: {time.monotonic() - started:.1f} s, horse RSS MiB {figures}")


def test_search_shows_paths_below_their_input_dir_and_only_related_chunks(
    app: Flask, client: FlaskClient, auth: dict[str, str], engine: Engine, inputs: Path
) -> None:
    """A hit's path is relative to its input directory (the server's layout is not shown) and
    chunks with no similarity (score 0) are left out, in the API and the CLI (issue 21, loose end 5)."""
    (inputs / "geo").mkdir()
    (inputs / "geo" / "lava.txt").write_text("Lava flows downhill from the erupting volcano crater.")
    (inputs / "bread.md").write_text("Knead the dough and bake the bread.")  # no feature shared
    with app.app_context():
        file_ingestion(["geo/lava.txt", "bread.md"])
    r = client.get("/api/v1/search", query_string={"q": "volcano crater", "limit": 5}, headers=auth)
    hits = r.get_json()["results"]
    assert [h["path"] for h in hits] == ["geo/lava.txt"], hits
    assert hits[0]["score"] > 0
    out = app.test_cli_runner().invoke(args=["documents", "search", "volcano crater"])
    assert out.exit_code == 0 and len(out.output.splitlines()) == 1, out.output
    assert " geo/lava.txt #0 " in out.output and str(inputs) not in out.output


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_large_file_revoked_stops_and_leaves_no_child(
    client: FlaskClient,
    auth: dict[str, str],
    rconn: redis.Redis,
    start: Starter,
    engine: Engine,
    inputs: Path,
) -> None:
    """DELETE of a running load stops it: REVOKED, the horse gone, the loading stops, the import
    marked revoked and its partial rows removed."""
    write_csv(inputs / "big.csv", 600_000)
    proc = start_worker(start, rconn, "low")
    worker = psutil.Process(proc.pid)
    job_id = enqueue(client, auth, "process_large_file", {"path": "big.csv"})
    wait_for(lambda: (get_job(client, auth, job_id)["progress"] or {}).get("percent", 0) > 3, 60)
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=auth).status_code == 202
    assert wait_state(client, auth, job_id, FINAL, timeout=20)["state"] == "REVOKED"
    wait_for(lambda: not worker.children(recursive=True), 10, message="the horse to go")

    def status() -> str:
        with Session(engine) as session:
            return str(session.scalars(select(FileImport.status)).one())

    # The import is marked revoked (not loading forever) and its partial rows are gone.
    wait_for(lambda: status() == "revoked", 10, message="the import to be marked revoked")
    time.sleep(1)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(LoadedRecord)) == 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_ingestion_search_and_no_op_reingest(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    rconn: redis.Redis,
    start: Starter,
    engine: Engine,
    inputs: Path,
) -> None:
    """Text, Markdown, HTML and PDF become completed documents with chunks; search finds the right one;
    an unchanged file is a no-op; generate_embeddings re-embeds one document."""
    (inputs / "a.txt").write_text("Glaciers carve valleys slowly over thousands of years. " * 60)
    (inputs / "b.md").write_text(
        "# Bread\n\nKnead the **dough**, let it rise, then bake the loaf at 220 degrees.\n"
    )
    (inputs / "c.html").write_text(HTML)
    write_pdf(inputs / "d.pdf", "Volcanoes", ["Lava flows downhill from the erupting volcano crater."])
    start_worker(start, rconn, "low")
    paths = ["a.txt", "b.md", "c.html", "d.pdf"]
    job_id = enqueue(client, auth, "file_ingestion", {"file_paths": paths, "source_name": "tests"})
    done = wait_state(client, auth, job_id, FINAL, timeout=60)
    assert done["state"] == "SUCCESS", done
    assert [d["unchanged"] for d in done["result"]["documents"]] == [False] * 4
    assert done["result"]["documents"][0]["chunks"] > 2 and done["progress"]["percent"] == 100.0
    with Session(engine) as session:
        docs = session.scalars(select(Document).order_by(Document.id)).all()
        assert [(d.kind, d.status) for d in docs] == [
            ("text", "completed"),
            ("markdown", "completed"),
            ("html", "completed"),
            ("pdf", "completed"),
        ]
        assert all(d.embedder == "hashing-512" for d in docs)
    for query, path in [
        ("lava volcano crater", "d.pdf"),
        ("knead dough bake loaf", "b.md"),
        ("mackerel herring boats", "c.html"),
    ]:
        r = client.get("/api/v1/search", query_string={"q": query, "limit": 2}, headers=auth)
        assert r.status_code == 200, r.get_json()
        hits = r.get_json()["results"]
        assert hits[0]["path"] == path and all(h["score"] > 0 for h in hits), hits
        assert len(hits) == 1 or hits[0]["score"] > hits[1]["score"], hits
    assert client.get("/api/v1/search", headers=auth).get_json()["error"]["code"] == "invalid_query"
    assert client.get("/api/v1/search?q=x").status_code == 401
    out = app.test_cli_runner().invoke(args=["documents", "search", "glaciers carving valleys"])
    assert out.exit_code == 0 and "a.txt" in out.output.splitlines()[0], out.output
    # Unchanged: a no-op; changed: re-ingested.
    with Session(engine) as session:
        before = session.scalars(select(Chunk.id).order_by(Chunk.id)).all()
    (inputs / "b.md").write_text("# Bread\n\nNow about sourdough starters and rye.\n")
    again = wait_state(
        client, auth, enqueue(client, auth, "file_ingestion", {"file_paths": paths}), FINAL, timeout=60
    )
    assert [d["unchanged"] for d in again["result"]["documents"]] == [True, False, True, True], again
    with Session(engine) as session:
        after = session.scalars(select(Chunk.id).order_by(Chunk.id)).all()
        doc_a = session.scalars(select(Document).where(Document.path.endswith("a.txt"))).one()
    assert set(before) - set(after) and len(after) == len(before)
    regen = wait_state(
        client, auth, enqueue(client, auth, "generate_embeddings", {"document_id": doc_a.id}), FINAL
    )
    assert regen["state"] == "SUCCESS" and regen["result"]["chunks"] == doc_a.chunk_count, regen
    missing = wait_state(
        client, auth, enqueue(client, auth, "generate_embeddings", {"document_id": 999}), FINAL
    )
    assert missing["state"] == "FAILURE" and missing["error"]["type"] == "LookupError"


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(90)
def test_ingestion_through_an_embeddings_endpoint(
    http_peer: Callable[..., HttpPeer],
    tmp_path: Path,
    redis_url: str,
    inputs: Path,
    rconn: redis.Redis,
) -> None:
    """With EMBEDDINGS_URL the worker embeds through it, riding out a 429; the document records the model."""
    peer = http_peer()

    def vectors(n: int) -> dict[str, Any]:
        return {"data": [{"index": i, "embedding": [1.0, float(i)]} for i in range(n)]}

    peer.script("/v1/embeddings", Answer(429, headers={"Retry-After": "1"}), Answer(200, vectors(1)))
    env = make_env(
        tmp_path, redis_url, INPUT_DIRS=str(inputs), EMBEDDINGS_URL=peer.url("/v1"), EMBEDDINGS_MODEL="tiny"
    )
    starter = Starter(env, tmp_path)
    try:
        migrate(starter)
        (inputs / "n.txt").write_text("A short note.")
        start_worker(starter, rconn, "low")
        from app import create_app

        client = create_app(env).test_client()
        auth = {"Authorization": f"Bearer {env['API_TOKENS']}"}
        done = wait_state(
            client,
            auth,
            enqueue(client, auth, "file_ingestion", {"file_paths": ["n.txt"]}),
            FINAL,
            timeout=30,
        )
        assert done["state"] == "SUCCESS" and done["result"]["embedder"] == "openai:tiny", done
        seen = peer.requests("/v1/embeddings")
        assert len(seen) == 2 and seen[1].json() == {"model": "tiny", "input": ["A short note."]}
        assert gaps(seen)[0] >= 0.9
    finally:
        starter.stop_all()


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_text_analysis_chord_in_one_call(
    client: FlaskClient,
    auth: dict[str, str],
    rconn: redis.Redis,
    start: Starter,
    engine: Engine,
    inputs: Path,
) -> None:
    """One POST runs extract_text -> (analyze_sentiment, generate_summary) -> save_analysis on a worker."""
    write_pdf(
        inputs / "review.pdf",
        "Review",
        [
            "The new harbour ferry is wonderful and the crew were helpful.",
            "Boarding was slow on Monday. The ferry crossing itself was great.",
            "Tickets are easy to buy. The cafe on the ferry serves excellent coffee.",
            "Parking near the harbour is a problem.",
        ],
    )
    start_worker(start, rconn)
    r = client.post("/api/v1/workflows", json=text_analysis_workflow("review.pdf"), headers=auth)
    assert r.status_code == 202, r.get_json()
    workflow = r.get_json()["workflow_id"]
    status = wait_for(
        lambda: (
            (v := client.get(f"/api/v1/workflows/{workflow}", headers=auth).get_json())["state"] in FINAL
            and v
        ),
        45,
    )
    assert status["state"] == "SUCCESS", json.dumps(status, indent=1)
    result = status["result"]
    assert result["sentiment"]["label"] == "positive" and "ferry" in result["summary"]
    with Session(engine) as session:
        doc = session.scalars(select(Document)).one()
        assert doc.kind == "pdf" and doc.sentiment_label == "positive" and doc.summary == result["summary"]
        assert doc.analysed_at is not None
    # The analysed file can still be ingested for search (it once stayed "unchanged" with no chunks),
    # and its analysis stays.
    job_id = enqueue(client, auth, "file_ingestion", {"file_paths": ["review.pdf"]})
    done = wait_state(client, auth, job_id, FINAL, timeout=45)
    assert done["state"] == "SUCCESS" and done["result"]["documents"][0]["chunks"] > 0, done
    found = client.get("/api/v1/search", query_string={"q": "ferry crossing"}, headers=auth)
    hits = found.get_json()["results"]
    assert hits and hits[0]["path"].endswith("review.pdf")
    with Session(engine) as session:
        assert session.scalars(select(Document)).one().sentiment_label == "positive"


def test_jobs_wait_label_shows_stage_and_message() -> None:
    """`flask jobs wait` labels its bar with the stage and message while the job runs, not after."""
    from app.surfaces.cli import _label

    running = {"task": "process_video", "state": "PROGRESS"}
    progress = {"percent": 40.0, "stage": "processing", "message": "transcoding 40%"}
    assert _label(running, "j1", progress) == "process_video j1 PROGRESS processing transcoding 40%"
    assert _label({"task": "process_video", "state": "SUCCESS"}, "j1", progress) == "process_video j1 SUCCESS"


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("admin", "scheme"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg"),
        ("mysql+pymysql://root@127.0.0.1:3306/test", "mysql+pymysql"),
    ],
)
def test_schema_on_postgresql_and_mariadb(admin: str, scheme: str, tmp_path: Path, start: Starter) -> None:
    """The migrations build the models' tables there (and drop them); records load in batches as JSON,
    a 200,000-character text and a float32 vector round-trip."""
    import io
    import os
    import subprocess
    import uuid

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine, insert, text

    from app.foundation.models import Base
    from app.services.embeddings import pack, unpack
    from app.tasks.documents import load_file

    try:
        server = create_engine(admin, isolation_level="AUTOCOMMIT").connect()
    except Exception as exc:
        pytest.skip(f"{admin.split('@')[1]} not reachable: {type(exc).__name__}")
    name = f"tasklane_docs_{uuid.uuid4().hex[:10]}"
    server.execute(text(f"CREATE DATABASE {name}"))
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, **make_env(tmp_path, "redis://127.0.0.1:1/0"), "DATABASE_URL": url}

    def alembic(*args: str) -> None:
        r = subprocess.run([sys.executable, "-m", "alembic", *args], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-1000:]

    try:
        alembic("upgrade", "head")
        engine = create_engine(url)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            iid = conn.execute(
                insert(FileImport).values(job_id="j", path="p", format="csv")
            ).inserted_primary_key[0]
            conn.commit()
            data = b"id,name,email,amount,date\n1,A,a@b.io,1.5,2026-01-02\n2,B,bad,1,2026-01-02\n"
            counts = load_file(io.BytesIO(data), "csv", len(data), conn, iid, columns=COLUMNS)
            assert (counts.loaded, counts.rejected) == (1, 1)
            stored = json.loads(conn.scalar(select(LoadedRecord.data)))
            assert stored == {
                "id": "1",
                "name": "A",
                "email": "a@b.io",
                "amount": "1.5",
                "date": "2026-01-02",
            }
            values = {
                "path_hash": "h",
                "path": "p",
                "kind": "text",
                "content_hash": "c",
                "text": "x" * 200_000,
            }
            did = conn.execute(insert(Document).values(**values)).inserted_primary_key[0]
            conn.execute(
                insert(Chunk).values(document_id=did, position=0, start=0, text="t", vector=pack([0.5] * 512))
            )
            conn.commit()
            assert unpack(conn.scalar(select(Chunk.vector)))[0] == 0.5
            assert conn.scalar(select(func.length(Document.text))) == 200_000
        engine.dispose()
        alembic("downgrade", "0002")
    finally:
        server.execute(text(f"DROP DATABASE {name}"))
        server.close()


def test_search_on_a_database_not_migrated_answers_503(client: FlaskClient, auth: dict[str, str]) -> None:
    """Before the release step made the tables, a search is a 503 naming the cause, never a 500."""
    response = client.get("/api/v1/search?q=anything", headers=auth)
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "database_unavailable" and "alembic upgrade head" in error["message"]
