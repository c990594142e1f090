"""Schedules as data: time zones and DST, the store, overlap and catch-up, history, the API.

Time is explicit: the pure functions take ``after``; the store reads the clock only through
``app.core.schedules._now``, which these tests set (``clock``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from app.catalogue.registry import MASK, REGISTRY, QueueName, Schedule, TaskRegistry, task
from app.core import schedules as store
from app.core.queues import JsonQueue
from app.foundation.ticks import Cadence, check_cron, fires, next_fire, zone
from app.processes.scheduling import make_scheduler, register_periodic
from tests.servers import drain

NY = zone("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def ts(*parts: int) -> int:
    return int(utc(*parts).timestamp())


@pytest.fixture
def redis(app: Flask) -> Redis:
    return app.extensions["tasklane"].redis


class Clock:
    """What ``store._now`` answers: a UNIX second the test moves."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(ts(2026, 3, 7, 12, 0, 0))
    monkeypatch.setattr(store, "_now", fixed)
    return fixed


# --- when a schedule fires: pure functions of explicit times -----------------------------------


def test_a_daily_time_the_zone_skips_runs_once_at_the_end_of_the_gap() -> None:
    """02:30 does not exist in New York on 2026-03-08 (clocks jump 02:00 EST -> 03:00 EDT): that day's
    run comes once, at 03:00 EDT (07:00 UTC); the days around run at 02:30 local."""
    got = fires("30 2 * * *", NY, utc(2026, 3, 6, 12), utc(2026, 3, 10, 12), 10)
    assert got == [
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 9, 6, 30),
        utc(2026, 3, 10, 6, 30),
    ]


def test_times_inside_the_gap_collapse_into_one_run() -> None:
    """Every 20 minutes of the skipped hour (02:00, 02:20, 02:40) run once, at 03:00 EDT."""
    got = fires("*/20 2 * * *", NY, utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 12), 10)
    assert got == [utc(2026, 3, 8, 7, 0)]


def test_a_daily_time_the_zone_repeats_runs_once() -> None:
    """01:30 happens twice in New York on 2026-11-01 (EDT, then EST): it runs once, at the first."""
    got = fires("30 1 * * *", NY, utc(2026, 10, 30, 12), utc(2026, 11, 2, 12), 10)
    assert got == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_an_hourly_wildcard_runs_in_both_repeated_hours() -> None:
    """``*/30 * * * *`` keeps its cadence through the repeated hour: every real half hour, once."""
    got = fires("*/30 * * * *", NY, utc(2026, 11, 1, 4, 50), utc(2026, 11, 1, 7, 10), 20)
    assert got == [utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 0),
                   utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 0)]  # fmt: skip
    # Asked from inside the first pass of the repeated hour, the next run is in the second pass.
    assert next_fire("*/30 * * * *", NY, utc(2026, 11, 1, 5, 50)) == utc(2026, 11, 1, 6, 0)


def test_cron_with_a_seconds_field_and_utc_default() -> None:
    """Six fields: seconds first."""
    got = fires("*/20 * * * * *", zone("UTC"), utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 1, 0), 10)
    assert got == [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1, 0)]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * *", "has 3 fields"),
        ("61 * * * *", "invalid"),
        ("0 0 30 2 *", "never fires"),
        ("x y z a b", "invalid"),
        ("@reboot", "unknown cron nickname '@reboot'"),
    ],
)
def test_bad_cron_is_refused_with_its_reason(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_cron(expr)


def test_cron_nicknames_are_their_five_fields_on_the_wall_clock() -> None:
    """``@daily`` and its kin are taken (as cron takes them) and stored as the fields they stand for."""
    assert check_cron("@daily") == check_cron(" @Midnight ") == "0 0 * * *"
    assert check_cron("@hourly") == "0 * * * *"
    got = fires(check_cron("@daily"), zone("Europe/Paris"), utc(2026, 3, 1), utc(2026, 3, 3), 10)
    assert got == [utc(2026, 3, 1, 23), utc(2026, 3, 2, 23)]


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


def test_interval_ticks_count_from_the_anchor() -> None:
    cadence = Cadence(interval=10, anchor=1000)
    assert cadence.next_after(500) == 1000
    assert cadence.ticks(999, 1030, 10) == [1000, 1010, 1020, 1030]
    assert cadence.count(1000, 1_000_000, 50) == 50


# --- the API, with the clock set: a New York schedule across both DST changes -----------------


def create(client: FlaskClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post("/api/v1/schedules", json=body, headers=auth)


def test_api_new_york_schedule_across_dst(
    client: FlaskClient, auth: dict[str, str], redis: Redis, clock: Clock
) -> None:
    """A daily 02:30 America/New_York schedule: the API's next_run is 07:00 UTC on the day 02:30 is
    skipped, then 06:30 UTC (EDT); each tick is enqueued once, as ``periodic-<name>-<tick>``."""
    answer = create(client, auth, name="ny-report", task="add", args={"x": 1, "y": 2}, cron="30 2 * * *",
                    timezone="America/New_York")  # fmt: skip
    assert answer.status_code == 201, answer.get_json()
    assert answer.headers["Location"].endswith("/api/v1/schedules/ny-report")
    body = answer.get_json()
    assert body["next_run"] == "2026-03-08T07:00:00Z"
    assert body | {"next_run": None} == body | {
        "name": "ny-report", "task": "add", "cron": "30 2 * * *", "interval": None,
        "timezone": "America/New_York", "overlap": "skip", "catchup_window": 60, "paused": False,
        "last_run": None, "last_job_id": None, "origin": "api", "operator_fields": [], "next_run": None,
    }  # fmt: skip

    clock.now = ts(2026, 3, 8, 7, 0, 0)
    enqueued, due = store.fire_due(redis, "ny-report")
    assert enqueued == [f"periodic-ny-report-{ts(2026, 3, 8, 7)}"]
    assert due == ts(2026, 3, 9, 6, 30)
    (listed,) = [s for s in client.get("/api/v1/schedules", headers=auth).get_json()["schedules"]
                 if s["name"] == "ny-report"]  # fmt: skip
    assert listed["next_run"] == "2026-03-09T06:30:00Z"
    assert listed["last_run"] == "2026-03-08T07:00:00Z"
    assert listed["last_job_id"] == enqueued[0]
    assert store.fire_due(redis, "ny-report")[0] == []  # the same second again: nothing

    # Autumn: 01:30 comes twice on 2026-11-01; it runs at the first (05:30 UTC) only.
    clock.now = ts(2026, 10, 31, 12)
    patched = client.patch("/api/v1/schedules/ny-report", json={"cron": "30 1 * * *"}, headers=auth)
    assert patched.status_code == 200
    drain(client.application)
    store.fire_due(redis, "ny-report")  # the ticks of the months between: missed, recorded once
    assert (
        client.get("/api/v1/schedules/ny-report", headers=auth).get_json()["next_run"]
        == "2026-11-01T05:30:00Z"
    )
    clock.now = ts(2026, 11, 1, 5, 30)
    assert store.fire_due(redis, "ny-report")[0] == [f"periodic-ny-report-{ts(2026, 11, 1, 5, 30)}"]
    drain(client.application)
    clock.now = ts(2026, 11, 1, 6, 30)  # 01:30 EST, the repeated one
    assert store.fire_due(redis, "ny-report")[0] == []
    assert (
        client.get("/api/v1/schedules/ny-report", headers=auth).get_json()["next_run"]
        == "2026-11-02T06:30:00Z"
    )
    history = client.get("/api/v1/schedules/ny-report/history", headers=auth).get_json()["history"]
    assert [h["kind"] for h in history] == ["scheduled", "missed", "scheduled"]
    assert history[0]["state"] == "SUCCESS" and history[0]["duration"] is not None
    assert history[1]["count"] == 237  # 2026-03-09 .. 2026-10-31, at 01:30 local


def test_create_refuses_bad_fields_with_field_errors(client: FlaskClient, auth: dict[str, str]) -> None:
    """422 in the error shape, naming each bad field; 409 for a name taken; nothing stored."""
    wrong = {"args": {"x": "one"}, "cron": "61 * * * *", "timezone": "Mars/Olympus", "overlap": "sometimes"}
    bad = create(client, auth, name="x", task="add", **wrong)
    assert bad.status_code == 422
    error = bad.get_json()["error"]
    assert error["code"] == "invalid_schedule"
    fields = {e["field"] for e in error["details"]}
    assert {"args.x", "args.y", "cron", "timezone", "overlap"} <= fields, fields
    assert (
        create(client, auth, name="x", task="nope", cron="* * * * *").get_json()["error"]["details"][0][
            "field"
        ]
        == "task"
    )
    assert create(client, auth, name="x", task="add", args={"x": 1, "y": 2}).status_code == 422  # no cadence
    assert create(client, auth, name="bad name!", task="add", interval=5).status_code == 422
    assert client.get("/api/v1/schedules/x", headers=auth).status_code == 404
    assert create(client, auth, name="x", task="add", args={"x": 1, "y": 2}, interval=5).status_code == 201
    taken = create(client, auth, name="x", task="add", args={"x": 1, "y": 2}, interval=5)
    assert taken.status_code == 409 and taken.get_json()["error"]["code"] == "schedule_exists"
    # A catalogue schedule's name is taken too.
    assert (
        create(client, auth, name="health_check", task="add", args={"x": 1, "y": 2}, interval=5).status_code
        == 409
    )
    malformed = client.post(
        "/api/v1/schedules", data="{", headers={**auth, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert client.get("/api/v1/schedules").status_code == 401


def test_patch_pause_run_delete(
    client: FlaskClient, auth: dict[str, str], redis: Redis, clock: Clock
) -> None:
    """PATCH changes fields (422 for bad ones, 404 for no schedule); paused has no next_run and runs
    nothing, and its ticks are not caught up on resume; /run enqueues now; DELETE removes it."""
    assert (
        create(client, auth, name="tick", task="add", args={"x": 1, "y": 2}, interval=10).status_code == 201
    )
    assert (
        client.patch("/api/v1/schedules/tick", json={"timezone": "Nowhere/Town"}, headers=auth).status_code
        == 422
    )
    assert client.patch("/api/v1/schedules/tick", json={"colour": "red"}, headers=auth).status_code == 422
    assert client.patch("/api/v1/schedules/none", json={"paused": True}, headers=auth).status_code == 404
    paused = client.patch("/api/v1/schedules/tick", json={"paused": True}, headers=auth).get_json()
    assert paused["paused"] is True and paused["next_run"] is None
    clock.now += 35
    assert store.fire_due(redis, "tick")[0] == []
    resumed = client.patch("/api/v1/schedules/tick", json={"paused": False}, headers=auth).get_json()
    assert resumed["next_run"] == store.iso_of(clock.now + 5)  # anchor + 40: the pause's ticks are gone
    run = client.post("/api/v1/schedules/tick/run", headers=auth)
    assert run.status_code == 202
    job_id = run.get_json()["job_id"]
    assert job_id.encode() in redis.lrange("rq:queue:default", 0, -1)
    assert client.get("/api/v1/schedules/tick", headers=auth).get_json()["last_job_id"] == job_id
    assert client.post("/api/v1/schedules/none/run", headers=auth).status_code == 404
    assert client.delete("/api/v1/schedules/tick", headers=auth).status_code == 204
    assert client.get("/api/v1/schedules/tick", headers=auth).status_code == 404
    assert client.delete("/api/v1/schedules/tick", headers=auth).status_code == 404
    assert not redis.exists(store.state_key("tick"), store.history_key("tick"))


def test_deleting_a_catalogue_schedule_pauses_it(
    client: FlaskClient, auth: dict[str, str], redis: Redis
) -> None:
    assert client.delete("/api/v1/schedules/health_check", headers=auth).status_code == 204
    view = client.get("/api/v1/schedules/health_check", headers=auth).get_json()
    assert view["paused"] is True and view["next_run"] is None and view["operator_fields"] == ["paused"]
    declared = {
        "args": {},
        "cron": None,
        "interval": 300,
        "timezone": "UTC",
        "overlap": "skip",
        "catchup_window": 60,
    }
    assert view["declared"] == declared
    store.seed(redis)  # a restart
    assert client.get("/api/v1/schedules/health_check", headers=auth).get_json()["paused"] is True


# --- the catalogue's declarations and the operator's edits -----------------------------------------


def nightly() -> None:
    """A stand-in periodic task body (never run here)."""


def declared(schedule: Schedule) -> TaskRegistry:
    registry = TaskRegistry(catalogue_module=None)
    task(name="nightly", queue=QueueName.LOW, schedule=schedule, registry=registry)(nightly)
    return registry


def test_a_changed_declaration_applies_except_to_the_operators_fields(redis: Redis, clock: Clock) -> None:
    """Seeded from code; the operator moves it to New York; a deploy changes cron and time zone in code:
    the cron follows the code, the time zone stays the operator's, and the view says which is whose."""
    store.seed(redis, declared(Schedule(cron="0 3 * * *")))
    store.update(redis, "nightly", {"timezone": "America/New_York"}, declared(Schedule(cron="0 3 * * *")))
    after_deploy = declared(Schedule(cron="0 4 * * *", timezone="Europe/Paris", args={}))
    store.seed(redis, after_deploy)
    view = store.get_view(redis, "nightly", after_deploy)
    assert view["cron"] == "0 4 * * *"
    assert view["timezone"] == "America/New_York"
    assert view["operator_fields"] == ["timezone"]
    assert view["declared"]["timezone"] == "Europe/Paris"
    assert view["next_run"] == "2026-03-08T08:00:00Z"  # 04:00 EDT (clocks went forward at 02:00)
    # A declaration removed from the code removes the stored schedule.
    store.seed(redis, TaskRegistry(catalogue_module=None))
    with pytest.raises(store.ScheduleNotFound):
        store.load(redis, "nightly", TaskRegistry(catalogue_module=None))


# --- overlap, catch-up, history ----------------------------------------------------------------------


def every(redis: Redis, name: str, seconds: int, **fields: Any) -> None:
    store.create(
        redis, {"name": name, "task": "add", "args": {"x": 1, "y": 2}, "interval": seconds, **fields}
    )


def test_overlap_skip_records_the_skipped_tick_and_allow_runs_it(
    app: Flask, redis: Redis, clock: Clock
) -> None:
    every(redis, "skipper", 10)
    every(redis, "allower", 10, overlap="allow")
    start = clock.now
    assert len(store.fire_due(redis, "skipper")[0]) == 1  # the first tick, at once
    assert len(store.fire_due(redis, "allower")[0]) == 1
    clock.now = start + 10  # no worker ran the first runs
    assert store.fire_due(redis, "skipper")[0] == []
    assert len(store.fire_due(redis, "allower")[0]) == 1
    history = store.history(redis, "skipper")
    assert [h["kind"] for h in history] == ["skipped", "scheduled"]
    assert history[0]["state"] == "SKIPPED" and history[0]["running"] == history[1]["job_id"]
    drain(app)  # the first run ends: the next tick runs
    clock.now = start + 20
    assert len(store.fire_due(redis, "skipper")[0]) == 1


def test_catch_up_enqueues_ticks_in_the_window_and_records_older_ones_missed(
    redis: Redis, clock: Clock
) -> None:
    """No scheduler for 300 s on a 10-second schedule with a 60 s window: the ticks of the last 60 s
    are enqueued, each once; the 24 before are one "missed" entry."""
    every(redis, "gap", 10, overlap="allow")
    start = clock.now
    store.fire_due(redis, "gap")  # tick `start`
    clock.now = start + 300
    enqueued, due = store.fire_due(redis, "gap")
    assert enqueued == [f"periodic-gap-{start + s}" for s in range(240, 301, 10)]
    assert due == start + 310
    missed = store.history(redis, "gap")[len(enqueued)]
    assert missed["kind"] == "missed" and missed["state"] == "MISSED" and missed["count"] == 23
    assert missed["tick"] == store.iso_of(start + 10)
    assert store.fire_due(redis, "gap")[0] == []


def test_history_keeps_the_last_50(redis: Redis, clock: Clock) -> None:
    every(redis, "busy", 1, overlap="allow", catchup_window=1000)
    clock.now += 80
    assert len(store.fire_due(redis, "busy")[0]) == 81
    history = store.history(redis, "busy")
    assert len(history) == 50 == redis.llen(store.history_key("busy"))
    assert history[0]["tick"] == store.iso_of(clock.now)


def test_two_schedulers_deal_with_each_tick_once(redis: Redis, clock: Clock) -> None:
    """Passes of two schedulers interleaved (one read the state before the other moved it): every tick
    once, and a tick one enqueued is never recorded skipped by the other."""
    every(redis, "pair", 1)
    jobs = store.fire_due(redis, "pair")[0]
    drain_queue(redis)
    for _second in range(20):
        clock.now += 1
        jobs += store.fire_due(redis, "pair")[0]
        jobs += store.fire_due(redis, "pair")[0]
        drain_queue(redis)
    assert len(jobs) == len(set(jobs)) == 21
    assert all(h["kind"] == "scheduled" for h in store.history(redis, "pair"))


def drain_queue(redis: Redis) -> None:
    """End every waiting job (as if a worker ran it): delete it."""
    queue = JsonQueue("default", connection=redis)
    for job in queue.jobs:
        job.delete()


def test_catalogue_schedules_are_listed_before_any_scheduler_ran(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    listed = {s["name"]: s for s in client.get("/api/v1/schedules", headers=auth).get_json()["schedules"]}
    assert {spec.name for spec in REGISTRY.periodic()} <= listed.keys()
    assert listed["health_check"]["next_run"] is None and listed["health_check"]["origin"] == "catalogue"


# --- the CLI -------------------------------------------------------------------------------------------


def test_cli_add_list_edit_pause_resume_run_history_rm(app: Flask, redis: Redis) -> None:
    """`flask schedules ...` goes through the same store as the API, with its errors as one line."""
    runner = app.test_cli_runner()

    def cli(*words: str, code: int = 0) -> str:
        result = runner.invoke(args=["schedules", *words])
        assert result.exit_code == code, result.output
        return result.output

    added = json.loads(
        cli("add", "ny", "add", "x=1", "y=2", "--cron", "0 9 * * 1-5", "--timezone", "America/New_York")
    )
    assert (
        added["cron"] == "0 9 * * 1-5"
        and added["timezone"] == "America/New_York"
        and added["origin"] == "api"
    )
    refused = cli("add", "z", "add", "x=1", "y=2", "--interval", "5", "--timezone", "Mars/Olympus", code=1)
    assert "invalid schedule: timezone: unknown time zone 'Mars/Olympus'" in refused
    assert "args.x" in cli("add", "z", "add", "x=one", "y=2", "--interval", "5", code=1)
    assert "exists already" in cli("add", "ny", "add", "x=1", "y=2", "--interval", "5", code=1)
    line = next(x for x in cli("list").splitlines() if x.startswith("ny "))
    assert "0 9 * * 1-5" in line and "America/New_York" in line and "next 20" in line
    long_name = "nightly-reconciliation-of-partner-ledgers"
    cli("add", long_name, "add", "x=1", "y=2", "--cron", "@daily")
    lines = cli("list").splitlines()
    # The columns line up whatever the names' lengths (a long name used to shift its row's columns).
    assert len({x.index(" next 20") for x in lines if " next 20" in x}) == 1, lines
    cli("rm", long_name)
    assert json.loads(cli("edit", "ny", "x=5", "y=6", "--interval", "30"))["args"] == {"x": 5, "y": 6}
    cli("edit", "health_check", "--timezone", "Europe/Paris")
    line = next(x for x in cli("list").splitlines() if x.startswith("health_check "))
    assert "Europe/Paris*" in line  # the operator's field is marked
    assert cli("pause", "ny").strip() == "ny paused"
    assert next(v for v in json.loads(cli("list", "--json")) if v["name"] == "ny")["paused"] is True
    assert cli("resume", "ny").strip() == "ny resumed"
    job_id = cli("run", "ny").strip()
    assert job_id.startswith("periodic-ny-run-")
    drain(app)
    (entry,) = json.loads(cli("history", "ny", "--json"))
    assert entry["job_id"] == job_id and entry["kind"] == "manual" and entry["state"] == "SUCCESS"
    assert "manual" in cli("history", "ny")
    assert "no schedule named 'nope'" in cli("run", "nope", code=1)
    assert cli("rm", "health_check").strip().startswith("health_check paused")
    assert cli("rm", "ny").strip() == "ny removed"
    assert "no schedule named 'ny'" in cli("history", "ny", code=1)


# --- the scheduler follows the store ---------------------------------------------------------------


def test_the_scheduler_follows_created_paused_and_deleted_schedules(redis: Redis) -> None:
    """A pass after a change (the store's version moved) creates, removes or replaces the entry;
    a created schedule's first tick is enqueued by that same pass; a Redis that lost its data is
    seeded again."""
    scheduler = make_scheduler(redis)
    register_periodic(scheduler)
    every(redis, "fresh", 60)
    scheduler.enqueue_jobs()
    assert JsonQueue("default", connection=redis).get_job_ids() == [
        f"periodic-fresh-{store.load(redis, 'fresh').anchor}"
    ]
    assert (
        redis.zscore(scheduler.scheduled_jobs_key, "periodic-fresh") == store.load(redis, "fresh").anchor + 60
    )
    store.update(redis, "fresh", {"paused": True})
    scheduler.enqueue_jobs()
    assert redis.zscore(scheduler.scheduled_jobs_key, "periodic-fresh") is None
    store.update(redis, "fresh", {"paused": False, "cron": "0 9 * * *", "timezone": "Asia/Tokyo"})
    scheduler.enqueue_jobs()
    due = redis.zscore(scheduler.scheduled_jobs_key, "periodic-fresh")
    assert datetime.fromtimestamp(due, zone("Asia/Tokyo")).hour == 9
    store.delete(redis, "fresh")
    scheduler.enqueue_jobs()
    assert redis.zscore(scheduler.scheduled_jobs_key, "periodic-fresh") is None

    redis.flushall()
    scheduler.enqueue_jobs()
    assert sorted(store.load_all(redis)) == sorted(spec.name for spec in REGISTRY.periodic())
    assert redis.zscore(scheduler.scheduled_jobs_key, "periodic-health_check") is not None


def test_answers_match_the_openapi_schemas(client: FlaskClient, auth: dict[str, str], clock: Clock) -> None:
    """A schedule, its history (a run, a skipped tick, a missed range) and a 422 validate against the
    document's Schedule, ScheduleRun and Error schemas."""
    doc = client.get("/api/v1/openapi.json").get_json()

    def check(name: str, value: Any) -> None:
        jsonschema.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{name}"}).validate(value)

    created = create(client, auth, name="shape", task="add", args={"x": 1, "y": 2}, interval=10)
    check("Schedule", created.get_json())
    redis = client.application.extensions["tasklane"].redis
    store.fire_due(redis, "shape")
    clock.now += 10
    store.fire_due(redis, "shape")  # skipped: the first has not run
    clock.now += 500
    store.fire_due(redis, "shape")  # missed, then skipped
    history = client.get("/api/v1/schedules/shape/history", headers=auth).get_json()["history"]
    assert {h["kind"] for h in history} == {"scheduled", "skipped", "missed"}
    for entry in history:
        check("ScheduleRun", entry)
    for listed in client.get("/api/v1/schedules", headers=auth).get_json()["schedules"]:
        check("Schedule", listed)
    check("Error", create(client, auth, name="shape", task="add", cron="nope").get_json())


def test_a_sensitive_argument_is_never_shown(
    client: FlaskClient, auth: dict[str, str], tmp_path: Any
) -> None:
    """A schedule of a task with a sensitive field shows it as the mask, in the view and in the 422 of
    a validator that echoes the value; the job still gets the real value."""
    args = {"path": str(tmp_path / "key"), "api_key": "secret-key-123"}
    created = create(client, auth, name="secret", task="use_secret", args=args, interval=3600).get_json()
    assert created["args"]["api_key"] == MASK and created["args"]["path"] == args["path"]
    listed = client.get("/api/v1/schedules", headers=auth).get_data(as_text=True)
    assert "secret-key-123" not in listed
    refused = create(
        client, auth, name="s2", task="use_secret", args={**args, "api_key": "bad-key-456"}, interval=5
    )
    assert refused.status_code == 422 and "bad-key-456" not in refused.get_data(as_text=True)
    job_id = client.post("/api/v1/schedules/secret/run", headers=auth).get_json()["job_id"]
    drain(client.application)
    assert (tmp_path / "key").read_text() == "secret-key-123"
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json()["state"] == "SUCCESS"
