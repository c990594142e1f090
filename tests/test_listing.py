"""GET /api/v1/jobs: newest first, cursor pages that skip and repeat nothing, filters, bounded cost."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue
from rq.job import JobStatus, Retry
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import DefaultSerializer

from app.core import listing
from app.core.queues import JsonJob, JsonQueue
from app.foundation.meta import Meta

ADD = "app.tasks.platform.add"
FAIL = "tests.jobs.always_fail"
TTL = 7 * 24 * 3600
NOW = datetime.now(UTC).replace(microsecond=0)


def make_job(
    conn: redis.Redis, queue: str, task: str = ADD, job_id: str | None = None, **options: Any
) -> JsonJob:
    kwargs = {"x": 1, "y": 2} if task == ADD else {"message": "boom"}
    job = JsonQueue(queue, connection=conn).create_job(task, kwargs=kwargs, job_id=job_id, **options)
    job.origin = queue
    return job  # type: ignore[return-value]


def add_failed(
    pipe: Any,
    conn: redis.Redis,
    queue: str,
    ended: datetime,
    score: float | None = None,
    task: str = ADD,
    job_id: str | None = None,
    status: JobStatus = JobStatus.FAILED,
) -> str:
    """A job ended at ``ended`` in ``queue``'s failed registry, scored as RQ scores it unless told."""
    job = make_job(conn, queue, task, job_id)
    job.enqueued_at = ended - timedelta(milliseconds=3)
    job.started_at = ended - timedelta(milliseconds=1)
    job.ended_at = ended
    job._status = status
    job.save(pipeline=pipe)
    pipe.zadd(f"rq:failed:{queue}", {job.id: int(ended.timestamp()) + TTL if score is None else score})
    return job.id


def pages(client: FlaskClient, auth: dict[str, str], query: str, most: int = 200) -> Iterator[dict[str, Any]]:
    """Every page of /api/v1/jobs?<query>, following next_cursor to the end."""
    url = f"/api/v1/jobs?{query}"
    for _ in range(most):
        response = client.get(url, headers=auth)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"jobs", "next_cursor"}
        yield body
        if body["next_cursor"] is None:
            return
        url = f"/api/v1/jobs?{query}&cursor={body['next_cursor']}"
    raise AssertionError("the cursor never ends")


def listed(client: FlaskClient, auth: dict[str, str], query: str) -> list[dict[str, Any]]:
    return [job for page in pages(client, auth, query) for job in page["jobs"]]


def ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["job_id"] for j in jobs]


# --- order and exactly-once across pages ----------------------------------------------------


def test_pages_across_tied_scores_list_each_job_once_newest_first(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It lists jobs that share a registry score by their own end time, each once, over pages of 4.

    23 failures in default and 9 in high share one score (they failed within one second), with
    end times interleaved between the queues and ids in the opposite order of time, plus older
    and newer seconds around them.
    """
    ended: dict[str, datetime] = {}
    second = NOW - timedelta(hours=1)
    with rconn.pipeline() as pipe:
        for n in range(32):
            queue = "high" if n % 3 == 1 and n < 27 else "default"
            when = second + timedelta(microseconds=1000 * n + 7)
            job_id = f"{queue[0]}-{99 - n:02d}"
            ended[add_failed(pipe, rconn, queue, when, score=second.timestamp() + TTL, job_id=job_id)] = when
        for n in range(5):
            for delta in (-3, 2):
                when = second + timedelta(seconds=delta, microseconds=n)
                ended[add_failed(pipe, rconn, "default", when, job_id=f"o-{delta}-{n}")] = when
        pipe.execute()
    assert sum(1 for j in ended if j.startswith("h")) == 9

    jobs = listed(client, auth, "state=FAILURE&limit=4")
    assert sorted(ids(jobs)) == sorted(ended)  # each exactly once
    assert ids(jobs) == sorted(ended, key=lambda j: ended[j], reverse=True)  # newest first
    assert all(j["state"] == "FAILURE" for j in jobs)
    # Every page but the last is full.
    sizes = [len(p["jobs"]) for p in pages(client, auth, "state=FAILURE&limit=4")]
    assert sizes[:-1] == [4] * (len(sizes) - 1)


def test_long_run_of_tied_scores_pages_by_member_exactly_once(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It lists a run of tied scores longer than it sorts by time in Redis's member order, each once."""
    score = (NOW - timedelta(hours=2)).timestamp() + TTL
    tied = listing.TIME_ORDERED_TIES + 37
    rng = random.Random(7)
    with rconn.pipeline() as pipe:
        run = [add_failed(pipe, rconn, "default", NOW - timedelta(hours=2, microseconds=rng.randrange(10**6)),
                          score=score, job_id=f"run-{n:03d}") for n in range(tied)]  # fmt: skip
        newer = [add_failed(pipe, rconn, "default", NOW - timedelta(hours=1, minutes=n)) for n in range(3)]
        older = [add_failed(pipe, rconn, "default", NOW - timedelta(hours=3, minutes=n)) for n in range(3)]
        pipe.execute()

    jobs = ids(listed(client, auth, "state=FAILURE&queue=default&limit=7"))
    assert sorted(jobs) == sorted(run + newer + older)
    assert jobs[:3] == newer
    assert jobs[3 : 3 + tied] == sorted(run, reverse=True)
    assert jobs[3 + tied :] == older


def test_entries_that_leave_or_arrive_between_pages_skip_and_repeat_nothing(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It goes on right after the cursor's job when that job (and others) left the registry meanwhile,
    in a long run of tied scores and in a short, time-ordered one; newer failures are not listed."""
    long_score = (NOW - timedelta(hours=2)).timestamp() + TTL
    short_score = (NOW - timedelta(hours=3)).timestamp() + TTL
    with rconn.pipeline() as pipe:
        long_run = [
            add_failed(
                pipe, rconn, "default", NOW - timedelta(hours=2), score=long_score, job_id=f"long-{n:03d}"
            )
            for n in range(listing.TIME_ORDERED_TIES + 20)
        ]
        short_run = [
            add_failed(pipe, rconn, "default", NOW - timedelta(hours=3, microseconds=n), score=short_score,
                       job_id=f"short-{n:02d}")
            for n in range(12)
        ]  # fmt: skip
        pipe.execute()
    expected = sorted(long_run, reverse=True) + short_run  # by member in the long run, by time in the short
    query = "state=FAILURE&limit=10"
    seen: list[str] = []
    removed: set[str] = set()
    url = f"/api/v1/jobs?{query}"
    for _ in range(100):
        body = client.get(url, headers=auth).get_json()
        seen += ids(body["jobs"])
        if body["next_cursor"] is None:
            break
        # The cursor's own job and the next one to list leave; two newer failures arrive.
        following = next(j for j in expected if j not in seen and j not in removed)
        rconn.zrem("rq:failed:default", seen[-1], following)
        removed.add(following)
        with rconn.pipeline() as pipe:
            for n in range(2):
                add_failed(pipe, rconn, "default", datetime.now(UTC), job_id=f"new-{len(seen)}-{n}")
            pipe.execute()
        url = f"/api/v1/jobs?{query}&cursor={body['next_cursor']}"
    assert seen == [j for j in expected if j not in removed]
    assert len(removed) > 10


def test_queue_pages_from_the_tail_while_workers_take_from_the_head(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It lists queued jobs newest first, each once, while new jobs are pushed and workers take some."""
    queue = JsonQueue("default", connection=rconn)
    original = [queue.enqueue_job(make_job(rconn, "default", job_id=f"q-{n:02d}")).id for n in range(30)]
    query = "state=PENDING&queue=default&limit=7"
    seen: list[str] = []
    url = f"/api/v1/jobs?{query}"
    for round_ in range(20):
        body = client.get(url, headers=auth).get_json()
        seen += ids(body["jobs"])
        if body["next_cursor"] is None:
            break
        for n in range(3):
            queue.enqueue_job(make_job(rconn, "default", job_id=f"new-{round_}-{n}"))
        rconn.lpop(queue.key, 2)  # a worker takes the two oldest
        url = f"/api/v1/jobs?{query}&cursor={body['next_cursor']}"
    still_queued = set(queue.get_job_ids())
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(original)
    assert set(original) & still_queued <= set(seen)
    assert seen == sorted(seen, reverse=True)


def test_queue_listing_ends_when_workers_took_everything_older(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It ends (no repeats of newer jobs) when the cursor's job and its successor have been dequeued."""
    queue = JsonQueue("default", connection=rconn)
    for n in range(10):
        queue.enqueue_job(make_job(rconn, "default", job_id=f"q-{n:02d}"))
    first = client.get("/api/v1/jobs?state=PENDING&queue=default&limit=4", headers=auth).get_json()
    assert ids(first["jobs"]) == ["q-09", "q-08", "q-07", "q-06"]
    rconn.lpop(queue.key, 8)
    queue.enqueue_job(make_job(rconn, "default", job_id="q-10"))
    rest = client.get(
        f"/api/v1/jobs?state=PENDING&queue=default&limit=4&cursor={first['next_cursor']}", headers=auth
    ).get_json()
    assert rest == {"jobs": [], "next_cursor": None}


# --- filters ---------------------------------------------------------------------------------


@pytest.fixture
def one_of_each(rconn: redis.Redis) -> dict[str, set[str]]:
    """Jobs in every state, in several queues and of two tasks; returns job ids by expected state."""
    by_state: dict[str, set[str]] = {}

    def note(state: str, job_id: str) -> None:
        by_state.setdefault(state, set()).add(job_id)

    default, high = JsonQueue("default", connection=rconn), JsonQueue("high", connection=rconn)
    note("PENDING", default.enqueue_job(make_job(rconn, "default", job_id="pending-queued")).id)
    note("PENDING", high.enqueue_job(make_job(rconn, "high", FAIL, job_id="pending-high")).id)
    later = make_job(rconn, "default", job_id="pending-later")
    later._status = JobStatus.SCHEDULED
    note("PENDING", default.schedule_job(later, NOW + timedelta(hours=1)).id)
    parent = default.enqueue_job(make_job(rconn, "default", job_id="parent"))
    note("PENDING", parent.id)
    note(
        "PENDING",
        default.enqueue_job(make_job(rconn, "default", job_id="pending-deferred", depends_on=parent)).id,
    )
    retry = make_job(rconn, "default", FAIL, job_id="retry", retry=Retry(max=3), meta={"max_retries": 3})
    retry.retries_left = 2
    retry._status = JobStatus.SCHEDULED
    note("RETRY", default.schedule_job(retry, NOW + timedelta(minutes=5)).id)
    for name, meta in (("started", {}), ("progress", {Meta.PROGRESS: {"current": 1, "total": 2}})):
        job = make_job(rconn, "low", job_id=name, meta=meta)
        job.started_at = NOW
        job._status = JobStatus.STARTED
        job.save()
        rconn.zadd("rq:wip:low", {f"{job.id}:execution-1": NOW.timestamp() + 60})
        note(name.upper(), job.id)
    done = make_job(rconn, "default", job_id="success")
    done.ended_at = NOW
    done._status = JobStatus.FINISHED
    done.save()
    FinishedJobRegistry("default", connection=rconn).add(done, ttl=600)
    note("SUCCESS", done.id)
    with rconn.pipeline() as pipe:
        note("FAILURE", add_failed(pipe, rconn, "default", NOW, job_id="failure-add"))
        note("FAILURE", add_failed(pipe, rconn, "high", NOW, task=FAIL, job_id="failure-fail"))
        note("REVOKED", add_failed(pipe, rconn, "default", NOW, job_id="stopped", status=JobStatus.STOPPED))
        pipe.execute()
    canceled = default.enqueue_job(make_job(rconn, "default", FAIL, job_id="canceled"))
    canceled.cancel()
    note("REVOKED", canceled.id)
    return by_state


@pytest.mark.parametrize(
    "state", ["PENDING", "RETRY", "STARTED", "PROGRESS", "SUCCESS", "FAILURE", "REVOKED"]
)
def test_state_filter_lists_exactly_the_jobs_in_that_state(
    client: FlaskClient, auth: dict[str, str], one_of_each: dict[str, set[str]], state: str
) -> None:
    """It lists, for each state, exactly the jobs in that state (RETRY apart from PENDING in the
    scheduled registry, REVOKED from the canceled and failed registries), over pages of 2."""
    jobs = listed(client, auth, f"state={state.lower()}&limit=2")
    assert sorted(ids(jobs)) == sorted(one_of_each[state])
    assert {j["state"] for j in jobs} == {state}


def test_no_filter_lists_every_job_once(
    client: FlaskClient, auth: dict[str, str], one_of_each: dict[str, set[str]]
) -> None:
    """It lists every job exactly once without filters, over pages of 3, each with its state."""
    jobs = listed(client, auth, "limit=3")
    assert sorted(ids(jobs)) == sorted(j for group in one_of_each.values() for j in group)
    assert {j["job_id"]: j["state"] for j in jobs} == {
        j: s for s, group in one_of_each.items() for j in group
    }


def test_task_and_queue_filters(
    client: FlaskClient, auth: dict[str, str], one_of_each: dict[str, set[str]]
) -> None:
    """It filters by task and by queue, alone and together with a state."""
    assert set(ids(listed(client, auth, "task=always_fail&limit=2"))) == {
        "pending-high", "retry", "failure-fail", "canceled"
    }  # fmt: skip
    assert set(ids(listed(client, auth, "queue=high"))) == {"pending-high", "failure-fail"}
    assert set(ids(listed(client, auth, "queue=low&limit=1"))) == {"started", "progress"}
    assert ids(listed(client, auth, "state=FAILURE&task=add")) == ["failure-add"]
    assert ids(listed(client, auth, "state=REVOKED&task=always_fail&queue=default")) == ["canceled"]
    assert listed(client, auth, "task=no_such_task") == []


def test_rare_match_gives_short_pages_that_still_lead_on(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It stops a page after a bounded number of skipped jobs, with a next_cursor that leads on to
    the one match at the bottom of 600 failures."""
    with rconn.pipeline() as pipe:
        match = add_failed(pipe, rconn, "default", NOW - timedelta(days=1), task=FAIL)
        for n in range(600):
            add_failed(pipe, rconn, "default", NOW - timedelta(seconds=n))
        pipe.execute()
    got = list(pages(client, auth, "state=FAILURE&task=always_fail&limit=5"))
    assert [ids(p["jobs"]) for p in got][-1] == [match]
    assert all(p["jobs"] == [] for p in got[:-1])
    assert 2 <= len(got) <= 600 // listing.MIN_SCAN + 1


# --- cost: a page never reads whole lists or registries ------------------------------------------


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every Redis command this test's thread sends from now on, direct or pipelined, as its arguments.

    The test client runs a request in the test's own thread, so these are the request's commands; a
    background thread's (the request-metrics flush) and another process's on the same server are not.
    """
    calls: list[tuple[Any, ...]] = []
    mine = threading.get_ident()
    direct = redis.Redis.execute_command
    piped = redis.client.Pipeline.pipeline_execute_command

    def record_direct(self: Any, *args: Any, **options: Any) -> Any:
        if threading.get_ident() == mine:
            calls.append(args)
        return direct(self, *args, **options)

    def record_piped(self: Any, *args: Any, **options: Any) -> Any:
        if threading.get_ident() == mine:
            calls.append(args)
        return piped(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", record_direct)
    monkeypatch.setattr(redis.client.Pipeline, "pipeline_execute_command", record_piped)
    return calls


def _fill(conn: redis.Redis, failed: int, queued: int) -> None:
    """``failed`` failures one second apart and ``queued`` queued jobs, in default."""
    with conn.pipeline(transaction=False) as pipe:
        for n in range(failed):
            add_failed(pipe, conn, "default", NOW - timedelta(seconds=n))
        for n in range(queued):
            job = make_job(conn, "default")
            job.enqueued_at = NOW - timedelta(seconds=queued - n)
            job._status = JobStatus.QUEUED
            job.save(pipeline=pipe)
            pipe.rpush("rq:queue:default", job.id)
        pipe.execute()


def _page_costs(
    client: FlaskClient, auth: dict[str, str], sent: list[tuple[Any, ...]], query: str
) -> list[Counter[str]]:
    """The commands, by name, that pages 1, 2 and 4 of ``query`` sent.

    Counted as sent by the request rather than as run by the server: the server's counts also hold
    whatever another client of the session's Redis did meanwhile (CI once saw five more).
    """
    costs = []
    url = f"/api/v1/jobs?{query}"
    for page in range(1, 5):
        sent.clear()
        body = client.get(url, headers=auth).get_json()
        if page != 3:
            costs.append(Counter(str(args[0]).upper() for args in sent))
        url = f"/api/v1/jobs?{query}&cursor={body['next_cursor']}"
    return costs


@pytest.mark.parametrize("query", ["state=FAILURE&limit=20", "state=PENDING&limit=20", "limit=20"])
def test_page_cost_does_not_grow_with_the_number_of_jobs(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis, sent: list[tuple[Any, ...]], query: str
) -> None:
    """A page sends the same Redis commands with 5,000 failed and 5,000 queued jobs as with 100 each."""
    client.get("/api/v1/jobs", headers=auth)  # the app's connections say hello once
    _fill(rconn, 100, 100)
    small = _page_costs(client, auth, sent, query)
    rconn.flushall()
    _fill(rconn, 5000, 5000)
    large = _page_costs(client, auth, sent, query)
    assert large == small
    assert all(costs for costs in large)  # the recording saw the pages' commands
    assert max(sum(c.values()) for c in large) < 40 * 20  # a few commands per job on the page, per source


def test_a_page_reads_no_whole_list_or_registry(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis, sent: list[tuple[Any, ...]]
) -> None:
    """It reads lists and registries only in slices: no LRANGE/ZRANGE/ZREVRANGE 0 -1, a LIMIT on every
    score range except one score's run of ties, and no more entries asked for than a few pages' worth."""
    _fill(rconn, 300, 300)
    sent.clear()
    for query in ("state=FAILURE&limit=10", "state=PENDING&limit=10", "limit=10"):
        assert len(list(islice(pages(client, auth, query), 3))) == 3
    assert sent
    for args in sent:
        name = str(args[0]).upper()
        if name in ("LRANGE", "ZRANGE", "ZREVRANGE"):
            start, end = int(args[2]), int(args[3])
            assert (start < 0) == (end < 0), args  # never from one end to the other, as 0 -1 is
            assert 0 <= end - start < 50, args
        if name in ("ZRANGEBYSCORE", "ZREVRANGEBYSCORE"):
            words = [str(a).upper() for a in args]
            one_score = str(args[2]).lstrip("(") == str(args[3]).lstrip("(")
            assert "LIMIT" in words or one_score, args
            if "LIMIT" in words:
                assert int(args[words.index("LIMIT") + 2]) <= 50, args
        assert name not in ("KEYS", "SCAN", "SSCAN", "ZSCAN", "SMEMBERS"), args
    hgetall = sum(1 for a in sent if str(a[0]).upper() == "HGETALL")
    assert hgetall <= 3 * 3 * (10 + 1)  # the jobs on the pages, not the 600 in Redis


# --- cursors --------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!!",
        _b64(b"50"),  # the old offset cursors
        _b64(b"\xff\xfe"),
        _b64(b"[]"),
        _b64(json.dumps({"v": 2, "p": {}}).encode()),
        _b64(json.dumps({"v": 1, "p": {"nosuch/failed": [1.0, "a", None]}}).encode()),
        _b64(json.dumps({"v": 1, "p": {"default/nosuch": [1.0, "a", None]}}).encode()),
        _b64(json.dumps({"v": 1, "p": {"default/queue": [0, "a", None]}}).encode()),
        _b64(json.dumps({"v": 1, "p": {"default/queue": [True, "a", None]}}).encode()),
        _b64(json.dumps({"v": 1, "p": {"default/failed": ["NaN", "a", None]}}).encode()),
        _b64(b'{"v": 1, "p": {"default/failed": [NaN, "a", null]}}'),
        _b64(json.dumps({"v": 1, "p": {"default/failed": [1.0, 5, None]}}).encode()),
        _b64(json.dumps({"v": 1, "p": {"default/failed": [1.0, "a"]}}).encode()),
        _b64(b"[" * 2000 + b"]" * 2000),
        "A" * 9000,
    ],
)
def test_cursor_not_made_by_the_api_is_400(client: FlaskClient, auth: dict[str, str], cursor: str) -> None:
    """It answers 400 bad_cursor to a cursor it did not make (including the old offset cursors)."""
    response = client.get(f"/api/v1/jobs?cursor={cursor}", headers=auth)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == "bad_cursor"


def test_cursor_round_trips_infinite_scores_and_is_opaque_base64url_json() -> None:
    """It encodes positions as unpadded base64url JSON, an infinite score (result_ttl=-1) included."""
    cursor: listing.Cursor = {
        "default/finished": (float("inf"), "job-1", None),
        "high/failed": (1764860000.0, "job-2", "2026-01-01T00:00:00.000001Z"),
        "low/queue": (3, "job-3", "job-4"),
    }
    raw = listing.encode_cursor(cursor)
    assert "=" not in raw and "+" not in raw and "/" not in raw
    assert json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))["v"] == 1
    assert listing.decode_cursor(raw) == cursor


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("state=NOPE", "bad_state"),
        ("queue=nope", "bad_queue"),
        ("limit=0", "bad_limit"),
        ("limit=x", "bad_limit"),
    ],
)
def test_other_bad_parameters_are_still_400(
    client: FlaskClient, auth: dict[str, str], query: str, code: str
) -> None:
    """It still answers 400 with its code for a bad state, queue or limit."""
    response = client.get(f"/api/v1/jobs?{query}", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_finished_jobs_kept_forever_are_listed(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It pages a registry whose scores are +inf (results kept with result_ttl=-1), each job once."""
    registry = FinishedJobRegistry("default", connection=rconn)
    for n in range(5):
        job = make_job(rconn, "default", job_id=f"kept-{n}")
        job.ended_at = NOW - timedelta(seconds=n)
        job._status = JobStatus.FINISHED
        job.save()
        registry.add(job, ttl=-1)
    assert rconn.zscore(registry.key, "kept-0") == float("inf")
    jobs = listed(client, auth, "state=SUCCESS&limit=2")
    assert ids(jobs) == [f"kept-{n}" for n in range(5)]


def test_a_job_not_stored_as_json_is_left_out(
    client: FlaskClient, auth: dict[str, str], rconn: redis.Redis
) -> None:
    """It answers 200 without a pickled job (written by something else) instead of failing the page."""
    pickled_queue = Queue("default", connection=rconn, serializer=DefaultSerializer)
    pickled = pickled_queue.enqueue_call(func="os.getcwd")
    pickled_queue.remove(pickled)
    FailedJobRegistry("default", connection=rconn, serializer=DefaultSerializer).add(pickled, ttl=600)
    with rconn.pipeline() as pipe:
        readable = add_failed(pipe, rconn, "default", NOW - timedelta(hours=1))
        pipe.execute()
    assert ids(listed(client, auth, "state=FAILURE")) == [readable]
    assert ids(listed(client, auth, "limit=1")) == [readable]
