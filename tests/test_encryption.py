"""Encrypted arguments at rest (issue 21): option ``encrypt`` and tasks declared ``sensitive=True``.

The integration test reads Redis as an attacker with a dump would: every key, every value
of every type, searched for the plaintext after a real worker ran the jobs.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path

import pytest
import redis
from flask import Flask
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app import create_app
from app.calling.calls import task_handle
from app.calling.canvas import chain
from app.calling.client import Client
from app.calling.result import AsyncResult
from app.core import outbox, schedules
from app.core.dispatch import digest
from app.core.queues import JsonJob, JsonQueue
from app.foundation import keys, signals
from app.foundation.config import Settings
from app.foundation.crypto import KeyRing
from app.foundation.meta import Meta
from app.foundation.models import OutboxEntry
from app.processes.workers import JsonInlineWorker
from tests.conftest import DASHBOARD, TOKEN, make_env
from tests.databases import database
from tests.jobs import HOOK_CALLS
from tests.servers import Starter, start_scheduler, start_web, start_worker, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKER = "PLAINTEXT-MARKER-4111111111111111"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY = new_key()


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """The test environment, with ENCRYPTION_KEYS (the `start` fixture's processes get it too)."""
    return make_env(tmp_path, redis_url, ENCRYPTION_KEYS=KEY)


def dump_everything(conn: redis.Redis) -> bytes:
    """Every key and every value in Redis, whatever its type, as one blob (compressed ones inflated)."""
    out: list[bytes] = []
    for key in conn.scan_iter(count=1000):
        out.append(key)
        kind = conn.type(key)
        if kind == b"string":
            out.append(conn.get(key) or b"")
        elif kind == b"hash":
            for field, value in conn.hgetall(key).items():
                out += [field, value]
        elif kind == b"list":
            out += conn.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(conn.smembers(key))
        elif kind == b"zset":
            out += [member for member, _ in conn.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            for _, fields in conn.xrange(key):
                for field, value in fields.items():
                    out += [field, value]
        else:
            out.append(conn.dump(key) or b"")
    # RQ stores a job's data zlib-compressed and a result base64-encoded: an attacker decodes
    # both, and so does this.
    return b"\n".join([*out, *(_decoded(value) for value in out)])


def _decoded(value: bytes) -> bytes:
    try:
        return zlib.decompress(value)
    except zlib.error:
        pass
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def test_encrypted_jobs_leave_no_plaintext_in_redis_and_answer_in_clear(
    app: Flask, start: Starter, rconn: redis.Redis
) -> None:
    client = app.test_client()

    def post(task: str, body: dict[str, object], headers: dict[str, str] | None = None) -> str:
        r = client.post(f"/api/v1/tasks/{task}", json=body, headers={**AUTH, **(headers or {})})
        assert r.status_code == 202, r.get_data(as_text=True)
        return str(r.get_json()["job_id"])

    sealed = {"encrypt": True}
    echo_id = post("echo", {"args": {"text": MARKER}, "options": sealed}, {"Idempotency-Key": "k1"})
    card_id = post("charge_card", {"args": {"card": MARKER}})  # declared sensitive: always
    failing_id = post("echo", {"args": {"text": f"fail:{MARKER}"}, "options": {"encrypt": True}})
    delayed_id = post("echo", {"args": {"text": MARKER}, "options": {"encrypt": True, "countdown": 3600}})
    items = [{"args": {"text": MARKER}}]
    batch = client.post("/api/v1/tasks/echo/batch", json={"items": items, "encrypt": True}, headers=AUTH)
    assert batch.status_code == 202, batch.get_data(as_text=True)
    (batch_id,) = batch.get_json()["job_ids"]
    assert MARKER.encode() not in dump_everything(rconn)  # at rest before any run

    start_worker(start, rconn, "--burst")

    def view(job_id: str) -> dict[str, object]:
        return dict(client.get(f"/api/v1/jobs/{job_id}", headers=AUTH).get_json())

    def finished() -> bool:
        ids = (echo_id, card_id, failing_id, batch_id)
        return all(view(i)["state"] in ("SUCCESS", "FAILURE") for i in ids)

    wait_for(finished, timeout=30, message="the encrypted jobs to finish")
    assert view(echo_id)["result"] == {"echo": MARKER, "length": len(MARKER)}
    assert view(batch_id)["result"] == {"echo": MARKER, "length": len(MARKER)}
    assert view(card_id)["result"] == {"charged": MARKER, "last4": "1111"}
    failed = view(failing_id)
    assert failed["state"] == "FAILURE"
    assert "asked to fail with ***" in str(failed["error"])
    assert MARKER not in str(failed)
    assert view(delayed_id)["state"] == "PENDING"

    blob = dump_everything(rconn)
    assert blob.count(b"tlenc1.") >= 8  # args of 5 jobs, results of 3: each stored sealed
    assert MARKER.encode() not in blob
    assert MARKER[-12:].encode() not in blob

    # The dashboard shows the job's call as task(***) and its result as the envelope, never plaintext.
    basic = {"Authorization": "Basic " + base64.b64encode(":".join(DASHBOARD).encode()).decode()}
    pages = ["/rq/0/data/jobs/default/finished/10/asc/1.json", "/rq/0/data/jobs/default/failed/10/asc/1.json"]
    pages.append("/console/jobs")
    for job_id in (echo_id, card_id, failing_id):
        pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json", f"/console/jobs/{job_id}"]
    for page in pages:
        r = client.get(page, headers=basic)
        assert r.status_code == 200, page
        assert MARKER not in r.get_data(as_text=True), page
    data = client.get(f"/rq/0/data/job/{echo_id}.json", headers=basic).get_json()
    assert data["description"] == "echo(***)"
    assert str(data["result"]).startswith("tlenc1.")


def test_encrypt_without_keys_is_a_422_and_enqueues_nothing(tmp_path: Path, redis_url: str) -> None:
    app = create_app(make_env(tmp_path, redis_url))
    client = app.test_client()
    cases = [
        ("/api/v1/tasks/echo", {"args": {"text": MARKER}, "options": {"encrypt": True}}),
        ("/api/v1/tasks/charge_card", {"args": {"card": MARKER}}),
        ("/api/v1/tasks/echo/batch", {"items": [{"args": {"text": MARKER}}], "encrypt": True}),
    ]
    for path, body in cases:
        r = client.post(path, json=body, headers=AUTH)
        assert r.status_code == 422, r.get_data(as_text=True)
        error = r.get_json()["error"]
        assert error["code"] == "encryption_unavailable"
        assert "ENCRYPTION_KEYS is not set" in error["message"]
        assert MARKER not in r.get_data(as_text=True)
    conn = app.extensions["tasklane"].redis
    assert conn.llen("rq:queue:default") == 0


def test_a_job_whose_key_is_gone_fails_once_with_a_clear_error(tmp_path: Path, redis_url: str) -> None:
    old = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=new_key()))
    r = old.test_client().post(
        "/api/v1/tasks/echo", json={"args": {"text": MARKER}, "options": {"encrypt": True}}, headers=AUTH
    )
    job_id = r.get_json()["job_id"]
    app = create_app(Settings.from_env(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=new_key())))
    conn = app.extensions["tasklane"].redis
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=conn)], connection=conn).work(burst=True)
    job = JsonJob.fetch(job_id, connection=conn)
    assert job.get_status() == "failed"
    attempts = job.meta[Meta.ATTEMPTS]
    assert len(attempts) == 1
    assert attempts[0]["type"] == "DecryptError"
    assert "cannot be decrypted" in attempts[0]["message"]
    assert "not in ENCRYPTION_KEYS" in attempts[0]["message"]
    body = app.test_client().get(f"/api/v1/jobs/{job_id}", headers=AUTH).get_json()
    assert body["state"] == "FAILURE" and "not in ENCRYPTION_KEYS" in body["error"]["message"]
    assert conn.llen("rq:queue:default") == 0  # not put back: no crash loop


def test_outbox_rows_hold_the_args_sealed_and_a_relay_without_keys_pushes_them_sealed(
    tmp_path: Path, redis_url: str, rconn: redis.Redis
) -> None:
    """``apply_async(encrypt=True, session=...)``: the SQL row holds only the envelope; pushed by a
    relay that has no key, the job reaches Redis still sealed and a worker with the key runs it."""
    with database("sqlite", tmp_path) as url:
        assert url is not None
        app = create_app(make_env(tmp_path, redis_url, DATABASE_URL=url, ENCRYPTION_KEYS=KEY))
        keyless = create_app(make_env(tmp_path, redis_url, DATABASE_URL=url))
        engine = app.extensions["tasklane"].engine
        with app.app_context():
            with Session(engine) as session:
                staged = task_handle("echo").apply_async(
                    kwargs={"text": MARKER}, encrypt=True, session=session
                )
                # The row as the transaction wrote it (rolled back after: no push, no job).
                (row,) = session.execute(select(OutboxEntry.kwargs)).scalars().all()
                assert MARKER not in row and "tlenc1." in row
            with engine.begin() as conn:
                conn.execute(
                    insert(OutboxEntry).values(
                        job_id="outbox-sealed",
                        task="echo",
                        kwargs=json.dumps({"__sealed__": _ring().seal({"text": MARKER}, "outbox-sealed")}),
                        options=json.dumps({"encrypt": True}),
                    )
                )
                rows = conn.execute(select(OutboxEntry.kwargs)).scalars().all()
            assert rows and all(MARKER not in row and "tlenc1." in row for row in rows)
            assert not rconn.exists(f"rq:job:{staged.id}")  # rolled back: no job
        with keyless.app_context():
            assert (
                outbox.relay(
                    keyless.extensions["tasklane"].engine, rconn, keyless.extensions["tasklane"].settings
                )
                == 1
            )
        assert MARKER.encode() not in dump_everything(rconn)
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=rconn)], connection=rconn).work(burst=True)
            assert AsyncResult("outbox-sealed", rconn).get(timeout=5) == {
                "echo": MARKER,
                "length": len(MARKER),
            }
        assert MARKER.encode() not in dump_everything(rconn)
        engine.dispose()
        keyless.extensions["tasklane"].engine.dispose()


def _ring() -> KeyRing:
    return KeyRing.from_text(KEY)


def test_keys_rotate_reseals_waiting_and_stored_jobs_under_the_first_key(
    tmp_path: Path, redis_url: str
) -> None:
    """After ``flask keys rotate`` with a new key first, nothing in Redis is sealed under the old key:
    the old key can go, and the finished job's result and the waiting job's args open with the new
    one alone. A job under a key already gone is reported (exit status 1) and left as it is."""
    old, new, gone = new_key(), new_key(), new_key()
    before = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=old))
    lost = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=gone))
    conn = before.extensions["tasklane"].redis

    def enqueue(app: Flask, text: str) -> str:
        body = {"args": {"text": text}, "options": {"encrypt": True}}
        return str(app.test_client().post("/api/v1/tasks/echo", json=body, headers=AUTH).get_json()["job_id"])

    done = enqueue(before, MARKER)
    schedule = {"name": "charge", "task": "charge_card", "args": {"card": MARKER}, "interval": 3600}
    assert before.test_client().post("/api/v1/schedules", json=schedule, headers=AUTH).status_code == 201
    with before.app_context():
        JsonInlineWorker([JsonQueue("default", connection=conn)], connection=conn).work(burst=True)
    waiting, orphan = enqueue(before, MARKER + "-waiting"), enqueue(lost, MARKER + "-orphan")
    old_id, new_id = KeyRing.from_text(old).current_id, KeyRing.from_text(new).current_id
    assert dump_everything(conn).count(f"tlenc1.{old_id}.".encode()) == 4  # two args, a result, a schedule

    rotating = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=f"{new},{old}"))
    outcome = rotating.test_cli_runner().invoke(args=["keys", "rotate"])
    assert outcome.exit_code == 1, outcome.output
    assert (
        f"3 encrypted job(s): 2 re-encrypted under key {new_id}, 0 already under it, 1 under a key"
        in outcome.output
    )
    assert orphan in outcome.output and MARKER not in outcome.output
    blob = dump_everything(conn)
    assert f"tlenc1.{old_id}.".encode() not in blob
    assert blob.count(f"tlenc1.{new_id}.".encode()) == 4  # done's args and result, waiting's args, schedule
    assert MARKER.encode() not in blob
    again = rotating.test_cli_runner().invoke(args=["keys", "rotate"])
    assert "0 re-encrypted" in again.output and "2 already under it" in again.output

    after = create_app(make_env(tmp_path, redis_url, ENCRYPTION_KEYS=new))  # the old key dropped
    client = after.test_client()
    assert client.get(f"/api/v1/jobs/{done}", headers=AUTH).get_json()["result"]["echo"] == MARKER
    with after.app_context():
        JsonInlineWorker([JsonQueue("default", connection=conn)], connection=conn).work(burst=True)
        assert schedules.load(conn, "charge").args == {"card": MARKER}
    assert (
        client.get(f"/api/v1/jobs/{waiting}", headers=AUTH).get_json()["result"]["echo"]
        == MARKER + "-waiting"
    )
    assert client.get(f"/api/v1/jobs/{orphan}", headers=AUTH).get_json()["state"] == "FAILURE"


def test_stored_schedules_of_an_encrypted_task_hold_their_args_sealed(
    app: Flask, start: Starter, rconn: redis.Redis, tmp_path: Path, redis_url: str
) -> None:
    """A schedule of a task declared sensitive keeps its args sealed in Redis (the record and the
    rq-scheduler entry's definition), shows them as ``***``, and its runs are encrypted jobs."""
    client = app.test_client()
    body = {"name": "nightly-charge", "task": "charge_card", "args": {"card": MARKER}, "interval": 3600}
    created = client.post("/api/v1/schedules", json=body, headers=AUTH)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["args"] == {"card": "***"}
    listed = client.get("/api/v1/schedules", headers=AUTH)
    assert MARKER not in listed.get_data(as_text=True)
    assert MARKER.encode() not in dump_everything(rconn)
    run = client.post("/api/v1/schedules/nightly-charge/run", headers=AUTH)
    assert run.status_code in (200, 202), run.get_data(as_text=True)
    job_id = run.get_json()["job_id"]
    assert MARKER.encode() not in dump_everything(rconn)
    with app.app_context():
        JsonInlineWorker([JsonQueue("default", connection=rconn)], connection=rconn).work(burst=True)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=AUTH).get_json()["result"]["charged"] == MARKER
    assert MARKER.encode() not in dump_everything(rconn)

    # The scheduler process writes the rq-scheduler entry of the schedule: no args in it either.
    start_scheduler(start, rconn)
    entry = f"rq:job:{schedules.entry_id('nightly-charge')}"
    wait_for(lambda: rconn.exists(entry), 15, message="the schedule's rq-scheduler entry")
    assert MARKER.encode() not in dump_everything(rconn)

    keyless = create_app(make_env(tmp_path, redis_url)).test_client()
    refused = keyless.post("/api/v1/schedules", json={**body, "name": "other"}, headers=AUTH)
    assert refused.status_code == 422
    assert "ENCRYPTION_KEYS is not set" in refused.get_data(as_text=True)


def test_an_encrypted_workflow_passes_sealed_payloads_between_steps(
    app: Flask, start: Starter, rconn: redis.Redis, tmp_path: Path, redis_url: str
) -> None:
    """``"encrypt": true`` on a workflow: every step's args and result are sealed, the request the
    record keeps too; the next step still receives the previous one's result, in clear, in the task."""
    client = app.test_client()
    body = {
        "type": "chain",
        "encrypt": True,
        "steps": [
            {"task": "relay_text", "args": {"text": MARKER}},
            {"task": "relay_text", "args": {"suffix": "!"}},
        ],
    }
    created = client.post("/api/v1/workflows", json=body, headers=AUTH)
    assert created.status_code == 202, created.get_data(as_text=True)
    workflow_id = created.get_json()["workflow_id"]
    start_worker(start, rconn, "--burst")

    def view() -> dict[str, object]:
        return dict(client.get(f"/api/v1/workflows/{workflow_id}", headers=AUTH).get_json())

    wait_for(lambda: view()["state"] == "SUCCESS", timeout=30, message="the encrypted workflow")
    assert view()["result"] == MARKER + "!"
    assert MARKER.encode() not in dump_everything(rconn)

    keyless = create_app(make_env(tmp_path, redis_url)).test_client()
    refused = keyless.post("/api/v1/workflows", json=body, headers=AUTH)
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "encryption_unavailable"


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_the_http_client_passes_encrypt(start: Starter, rconn: redis.Redis) -> None:
    """``Client.enqueue(..., encrypt=True)`` (the tasklane-client package) against gunicorn."""
    base = start_web(start)
    start_worker(start, rconn, "default", "--mode", "inline")
    with Client(base, TOKEN) as client:
        job_id = client.enqueue("echo", {"text": MARKER}, encrypt=True)
        assert client.wait(job_id, timeout=20)["result"] == {"echo": MARKER, "length": len(MARKER)}
    assert JsonJob.fetch(job_id, connection=rconn).meta[Meta.ENCRYPTED] is True
    assert MARKER.encode() not in dump_everything(rconn)


def test_flask_tasks_enqueue_encrypt(app: Flask, rconn: redis.Redis, tmp_path: Path, redis_url: str) -> None:
    outcome = app.test_cli_runner().invoke(args=["tasks", "enqueue", "echo", f"text={MARKER}", "--encrypt"])
    assert outcome.exit_code == 0, outcome.output
    job = JsonJob.fetch(outcome.output.strip(), connection=rconn)
    assert job.meta[Meta.ENCRYPTED] is True
    assert MARKER.encode() not in dump_everything(rconn)
    keyless = create_app(make_env(tmp_path, redis_url))
    refused = keyless.test_cli_runner().invoke(
        args=["tasks", "enqueue", "echo", f"text={MARKER}", "--encrypt"]
    )
    assert refused.exit_code == 1 and "ENCRYPTION_KEYS is not set" in refused.output


def test_unique_and_idempotency_records_of_encrypted_jobs_hold_keyed_digests(
    app: Flask, rconn: redis.Redis
) -> None:
    """A unique task's lock and an Idempotency-Key's record still deduplicate an encrypted job,
    and hold an HMAC under the key, not a plain hash anyone could match by hashing guesses."""
    client = app.test_client()
    args = {"path": MARKER, "seconds": 0.0}

    def post(headers: dict[str, str]) -> str:
        body = {"args": args, "options": {"encrypt": True}}
        r = client.post("/api/v1/tasks/unique_stamp", json=body, headers={**AUTH, **headers})
        assert r.status_code == 202, r.get_data(as_text=True)
        return str(r.get_json()["job_id"])

    first = post({"Idempotency-Key": "same"})
    assert post({"Idempotency-Key": "same"}) == first  # idempotency
    assert post({}) == first  # uniqueness
    plain = digest(args)
    assert not rconn.exists(keys.unique_lock("unique_stamp", plain))
    assert rconn.exists(keys.unique_lock("unique_stamp", _ring().fingerprint(plain)))
    blob = dump_everything(rconn)
    assert plain.encode() not in blob and MARKER.encode() not in blob


def test_hooks_and_signals_of_an_encrypted_job_get_its_values_opened(app: Flask, rconn: redis.Redis) -> None:
    """In-process handlers see what the task saw and returned, not the envelopes Redis holds."""
    seen: list[tuple[str, object, object]] = []

    def on_success(sender: str, **info: object) -> None:
        seen.append((sender, info["kwargs"], info["result"]))

    signals.task_success.connect(on_success)
    try:
        body = {"args": {"note": MARKER}, "options": {"encrypt": True}}
        job_id = app.test_client().post("/api/v1/tasks/hooked", json=body, headers=AUTH).get_json()["job_id"]
        HOOK_CALLS.clear()
        with app.app_context():
            JsonInlineWorker([JsonQueue("default", connection=rconn)], connection=rconn).work(burst=True)
    finally:
        signals.task_success.disconnect(on_success)
    calls = list(HOOK_CALLS)
    HOOK_CALLS.clear()  # shared with tests/test_signals.py, which may run next in this process
    assert seen == [("hooked", {"note": MARKER}, MARKER.upper())]
    assert [("success", MARKER.upper(), job_id)] == calls
    blob = dump_everything(rconn)
    assert MARKER.encode() not in blob and MARKER.upper().encode() not in blob


def test_a_python_chain_with_encrypt(app: Flask, rconn: redis.Redis) -> None:
    """``chain(...).apply_async(encrypt=True)`` in process: as the workflow option of the API."""
    relay = task_handle("relay_text")
    with app.app_context():
        flow = chain(relay.s(text=MARKER), relay.s(suffix="!")).apply_async(encrypt=True)
        assert MARKER.encode() not in dump_everything(rconn)
        JsonInlineWorker([JsonQueue("default", connection=rconn)], connection=rconn).work(burst=True)
        assert flow.get(timeout=5) == MARKER + "!"
    assert MARKER.encode() not in dump_everything(rconn)
