"""Pins what Tasklane relies on below the public API of RQ, rq-scheduler and rq-dashboard.

An upgrade that changes any of it fails here, loudly, instead of misbehaving quietly.
"""

from __future__ import annotations

import inspect
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from typing import Any

import pytest
import rq.serializers
import rq.utils
import rq_dashboard.web
from redis import Redis
from rq import SimpleWorker, Worker
from rq import scheduler as rq_scheduler_module
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import current_timestamp
from rq.worker import BaseWorker
from rq_scheduler import Scheduler

from app.core import compat
from app.core.queues import JsonJob, JsonQueue
from app.processes.workers import JsonInlineWorker, JsonThreadWorker, JsonWorker


def test_the_pinned_versions_are_installed() -> None:
    """It runs against the library versions whose internals compat.py was written for."""
    for package, pinned in compat.PINNED.items():
        assert version(package) == pinned, (
            f"{package} {version(package)} is not {pinned}: review app/core/compat.py"
        )


# (class, method, the parameters Tasklane's override and calls rely on)
OVERRIDES = [
    (Worker, "execute_job", ["self", "job", "queue"]),
    (Worker, "perform_job", ["self", "job", "queue", "execution"]),
    (Worker, "prepare_job_execution", ["self", "job", "remove_from_intermediate_queue"]),
    (Worker, "prepare_execution", ["self", "job"]),
    (
        Worker,
        "handle_job_failure",
        ["self", "job", "queue", "started_job_registry", "exc_string", "execution"],
    ),
    (Worker, "handle_job_success", ["self", "job", "queue", "started_job_registry", "execution"]),
    (Worker, "handle_execution_ended", ["self", "job", "queue", "heartbeat_ttl"]),
    (Worker, "handle_work_horse_killed", ["self", "job", "retpid", "ret_val", "rusage"]),
    (Worker, "heartbeat", ["self", "timeout", "pipeline"]),
    (Worker, "set_state", ["self", "state", "pipeline"]),
    (Worker, "check_for_suspension", ["self", "burst"]),
    (Worker, "dequeue_job_and_maintain_ttl", ["self", "timeout", "max_idle_time"]),
    (Worker, "clean_registries", ["self"]),
    (Worker, "get_heartbeat_ttl", ["self", "job"]),
    (Worker, "cleanup_execution", ["self", "job", "pipeline", "execution"]),
    (Worker, "maintain_heartbeats", ["self", "job", "execution"]),
    (Worker, "fork_work_horse", ["self", "job", "queue"]),
    (Worker, "wait_for_horse", ["self"]),
    (Worker, "setup_work_horse_signals", ["self"]),
    (Worker, "kill_horse", ["self", "sig"]),
    (Worker, "teardown", ["self"]),
    (Worker, "increment_successful_job_count", ["self", "pipeline"]),
    (Worker, "increment_total_working_time", ["self", "job_execution_time", "pipeline"]),
    (Worker, "register_birth", ["self"]),
    (Worker, "register_death", ["self"]),
    (Worker, "subscribe", ["self"]),
    (Worker, "unsubscribe", ["self"]),
    (Worker, "set_shutdown_requested_date", ["self"]),
    (Worker, "request_stop", ["self", "signum", "frame"]),
    (Worker, "run_maintenance_tasks", ["self"]),
    (Worker, "handle_exception", ["self", "job"]),
    (Execution, "create", ["cls", "job", "ttl", "pipeline", "worker_name"]),
    (Job, "heartbeat", ["self", "timestamp", "ttl", "pipeline"]),
    (Queue, "push_job_id", ["self", "job_id", "pipeline", "at_front"]),
    (
        Queue,
        "dequeue_any",
        ["queues", "timeout", "connection", "job_class", "serializer", "death_penalty_class"],
    ),
    (Job, "retry", ["self", "queue", "pipeline"]),
    (Job, "_execute", ["self"]),
    (
        Job,
        "_handle_success",
        [
            "self",
            "result_ttl",
            "pipeline",
            "worker_name",
            "execution_id",
            "execution_started_at",
            "execution_ended_at",
        ],
    ),
    (Job, "prepare_for_execution", ["self", "worker_name", "pipeline"]),
    (Job, "cleanup", ["self", "ttl", "pipeline", "remove_from_queue"]),
    (Job, "restore", ["self", "raw_data"]),
    (Scheduler, "get_jobs_to_queue", ["self", "with_times"]),
    (Scheduler, "get_jobs", ["self", "until", "with_times"]),
]


@pytest.mark.parametrize(
    ("cls", "method", "params"), OVERRIDES, ids=[f"{c.__name__}.{m}" for c, m, _ in OVERRIDES]
)
def test_overridden_methods_keep_their_signatures(cls: type, method: str, params: list[str]) -> None:
    """Each RQ method Tasklane overrides or calls past its public API still takes these parameters."""
    found = list(inspect.signature(getattr(cls, method)).parameters)
    if found and found[0] == "cls":
        found = found[1:]
    assert found[: len(params)] == [p for p in params if p != "cls"], f"{cls.__name__}.{method}: {found}"


def test_private_attributes_read_through_compat_exist(fake_redis: Redis) -> None:
    """The private attributes compat.py reads are still where it reads them."""
    worker = JsonInlineWorker([JsonQueue("default", connection=fake_redis)], connection=fake_redis)
    assert compat.stopped_job_id(worker) is None and hasattr(worker, "_stopped_job_id")
    assert not compat.stop_requested(worker) and hasattr(worker, "_stop_requested")
    compat.request_stop(worker)
    assert compat.stop_requested(worker)
    worker.set_state("busy")
    assert compat.worker_state(worker) == "busy"
    job = JsonJob.create("tests.jobs.noop", connection=fake_redis)
    assert hasattr(job, "_status")
    penalty = BaseDeathPenalty(7)
    assert compat.death_penalty_timeout(penalty) == 7.0
    pipe = fake_redis.pipeline()
    pipe.set("a", 1)
    assert compat.pipeline_commands(pipe) == [3, "SET", "a", 1]
    job.meta["k"] = "v"
    job.save_meta()
    assert fake_redis.hget(job.key, "meta") == compat.serialized_meta(job)
    job.save()
    assert not compat.meta_unreadable(JsonJob.fetch(job.id, connection=fake_redis))
    fake_redis.hset(job.key, "meta", b"\x80\x04not json")
    assert compat.meta_unreadable(JsonJob.fetch(job.id, connection=fake_redis))
    forking = JsonWorker([JsonQueue("default", connection=fake_redis)], connection=fake_redis)
    assert hasattr(forking, "_horse_pid")
    compat.forget_horse(forking)
    assert forking.horse_pid == 0


def test_what_the_outage_handling_relies_on() -> None:
    """RQ's loop retries only redis-py's own errors around a dequeue (so RedisUnavailable reaches
    the worker); it hands the horse's raw wait status to handle_work_horse_killed; compat.subscribe
    repeats RQ's subscribe with another error handler for the reader thread."""
    dequeue = inspect.getsource(BaseWorker.dequeue_job_and_maintain_ttl)
    assert "except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)" in dequeue
    assert "except DequeueTimeout" in dequeue
    assert "handle_work_horse_killed(job, retpid, ret_val, rusage)" in inspect.getsource(
        Worker.monitor_work_horse
    )
    subscribe = inspect.getsource(BaseWorker.subscribe)
    for piece in ("self.connection.pubsub()", "pubsub_channel_name", "handle_payload", "run_in_thread(",
                  "sleep_time=60", "exception_handler="):  # fmt: skip
        assert piece in subscribe, piece


def test_a_run_is_a_started_registry_entry_scored_by_its_heartbeat_expiry(fake_redis: Redis) -> None:
    """The lease (app/core/leases.py) is the execution's entry ``<job id>:<execution id>`` in the started
    registry, scored with the time its heartbeat expires."""
    job = JsonJob.create("tests.jobs.noop", connection=fake_redis)
    pipe = fake_redis.pipeline()
    execution = Execution.create(job, 20, pipeline=pipe, worker_name="w")
    pipe.execute()
    registry = StartedJobRegistry(job.origin, connection=fake_redis)
    assert job.started_job_registry.key == registry.key
    assert execution.composite_key == f"{job.id}:{execution.id}"
    score = fake_redis.zscore(registry.key, execution.composite_key)
    assert score is not None and abs(score - (current_timestamp() + 20)) <= 2


def test_module_globals_patched_by_compat_exist() -> None:
    """rq's scheduler builds queues from a module global, RQScheduler keeps its client privately,
    and rq-dashboard fetches through module-level names: all still there."""
    assert hasattr(rq_scheduler_module, "Queue")
    # use_clock_in_rq_scheduler: the scheduler takes "now" from this global, once per registry
    assert "current_timestamp()" in inspect.getsource(RQScheduler.enqueue_scheduled_jobs)
    assert hasattr(rq_scheduler_module, "current_timestamp")
    assert "_connection" in inspect.getsource(RQScheduler.__init__)
    names = ("Job", "Queue", "Worker", "requeue_job", "serialize_date", "format_job_description")
    for name in (*names, "serialize_current_job"):
        assert hasattr(rq_dashboard.web, name), name
    assert hasattr(rq_dashboard.web.config, "serializer")


def test_worker_modes_are_rq_workers() -> None:
    """Every mode subclasses the RQ worker whose loop it relies on."""
    assert issubclass(JsonWorker, Worker)
    assert issubclass(JsonInlineWorker, SimpleWorker)
    assert issubclass(JsonThreadWorker, JsonInlineWorker)


def test_register_queues_adds_to_the_set_rq_lists(fake_redis: Any) -> None:
    """RQ lists queues from the set named by Queue.redis_queues_keys; compat adds declared ones there."""
    from app.core.queues import JsonQueue

    queues = [JsonQueue(name, connection=fake_redis) for name in ("high", "low")]
    compat.register_queues(fake_redis, queues)
    assert JsonQueue.redis_queues_keys == "rq:queues"
    assert sorted(q.name for q in JsonQueue.all(connection=fake_redis)) == ["high", "low"]


def test_fast_paths_are_installed_in_every_module_that_resolves_a_serializer() -> None:
    """compat replaces RQ's ``resolve_serializer`` in each module that imported it by name, and its
    ``utcparse``; a module RQ adds or renames fails here instead of keeping the slow path silently."""
    import importlib

    for name in compat.SERIALIZER_USERS:
        module = importlib.import_module(name)
        assert module.resolve_serializer is compat.resolve_serializer, name
    assert rq.utils.utcparse is compat.utcparse
    assert rq_scheduler_module.utcparse is compat.utcparse
    assert rq.utils.utcformat is compat.utcformat
    for name in compat.UTCFORMAT_USERS:
        assert importlib.import_module(name).utcformat is compat.utcformat, name
    formatters = {
        m.__name__
        for m in list(sys.modules.values())
        if getattr(m, "__name__", "").startswith("rq.") and hasattr(m, "utcformat")
    }
    assert formatters - {"rq.utils"} - {n for n in formatters if n.startswith("rq.cli.")} <= set(
        compat.UTCFORMAT_USERS
    )
    users = {
        m.__name__
        for m in list(sys.modules.values())
        if getattr(m, "__name__", "").startswith("rq.") and hasattr(m, "resolve_serializer")
    }
    # rq's command line (rq.cli.*, imported here only when a test reads its commands) runs in a
    # process of its own, where none of Tasklane's classes build jobs: its slow path costs nothing.
    cli = {name for name in users if name.startswith("rq.cli.")}
    assert users - {"rq.serializers"} - cli <= set(compat.SERIALIZER_USERS)


@pytest.mark.parametrize(
    "given",
    [JSONSerializer, None, "json", "rq.serializers.JSONSerializer", rq.serializers.DefaultSerializer],
)
def test_resolve_serializer_answers_as_rq_does(given: Any) -> None:
    assert compat.resolve_serializer(given) is compat._resolve_serializer(given)


def test_resolve_serializer_still_refuses_what_rq_refuses() -> None:
    with pytest.raises(NotImplementedError):
        compat.resolve_serializer(object())


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T21:00:03.112141Z",  # RQ's own format
        "2026-01-02T03:04:05.000001Z",
        "2026-11-27T21:00:03Z",  # the older format RQ still reads
        "2026-11-27T21:00:03.1Z",  # fewer digits: strptime's %f accepts them
    ],
)
def test_utcparse_answers_as_rq_does(text: str) -> None:
    parsed = compat.utcparse(text)
    assert parsed == compat._utcparse(text)
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["not a date", "2026-13-27T21:00:03.112141Z", "2026-11-27 21:00:03.112141Z"])
def test_utcparse_refuses_what_rq_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        compat._utcparse(text)
    with pytest.raises(ValueError):
        compat.utcparse(text)


def test_a_job_read_back_keeps_its_timestamps(fake_redis: Redis) -> None:
    """A job's dates go through the fast parse on every fetch: they read back to the microsecond."""
    job = JsonJob.create("app.tasks.platform.add", args=(1, 2), connection=fake_redis)
    job.save()
    again = JsonJob.fetch(job.id, connection=fake_redis)
    assert again.created_at == job.created_at.replace(tzinfo=again.created_at.tzinfo)
    assert again.created_at.tzinfo is not None


# --- utcparse, fuzzed against RQ's own ---------------------------------------------------------

#: Characters a mutation puts into a timestamp: its own, the ones ``fromisoformat`` reads and
#: ``strptime`` does not (offsets, a comma, lower case, a space), and digits that are not ASCII.
_FUZZ_ALPHABET = "0123456789-:.TZ+,tz _\u0663\uff11\n"


def _fuzz_timestamps(seed: int, count: int) -> Iterator[str]:
    """``count`` strings near RQ's timestamp shape, the same ones for the same seed: RQ's own
    output, its older whole-second form, other ISO 8601 spellings, and random edits of all of them."""
    rng = random.Random(seed)
    for _ in range(count):
        when = datetime(2000, 1, 1) + timedelta(seconds=rng.uniform(-9e8, 3e9))
        base = rq.utils.utcformat(when)
        kind = rng.randrange(6)
        if kind == 0:
            yield base
        elif kind == 1:  # a spelling fromisoformat reads: offset, comma, fewer or more digits, no Z
            head, fraction = base[:19], base[20:26]
            digits = fraction[: rng.randrange(0, 10)] + "".join(rng.choice("0123456789") for _ in range(3))
            sep = rng.choice(".,")
            offset = rng.choice(["", "+01", "+01:00", "-0530", "+00:00", "Z", "z", "+01Z", "Z+01"])
            tail = rng.choice(["Z", "", "z"])
            yield head + (sep + digits[: rng.randrange(0, 10)] if rng.random() < 0.8 else "") + offset + tail
        else:  # one to three edits (replace, insert, delete) of RQ's own or its older form
            text = list(base if kind != 2 else base[:19] + "Z")
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(text) + 1)
                edit = rng.randrange(3)
                if edit == 0 and at < len(text):
                    text[at] = rng.choice(_FUZZ_ALPHABET)
                elif edit == 1:
                    text.insert(at, rng.choice(_FUZZ_ALPHABET))
                elif at < len(text):
                    del text[at]
            yield "".join(text)


def _parse_outcome(parse: Any, text: str) -> tuple[Any, ...]:
    """What ``parse`` makes of ``text``: the wall time and UTC offset it read, or the error's type."""
    try:
        value = parse(text)
    except Exception as exc:  # the comparison is of whatever each raises
        return ("error", type(exc))
    return ("value", value.replace(tzinfo=None), value.utcoffset())


def _assert_utcparse_agrees_with_rq(seed: int, count: int) -> None:
    accepted = refused = 0
    for text in _fuzz_timestamps(seed, count):
        ours, theirs = _parse_outcome(compat.utcparse, text), _parse_outcome(compat._utcparse, text)
        assert ours == theirs, f"utcparse({text!r}): ours {ours}, RQ's {theirs}"
        accepted += ours[0] == "value"
        refused += ours[0] == "error"
    # the fuzz is worth something only if it exercises both answers in quantity
    assert accepted > count // 5 and refused > count // 5, (accepted, refused)


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00.123+01Z",  # an offset fromisoformat read and then dropped
        "2024-01-01T00:00:00,123456Z",  # a comma strptime refuses
        "2024-01-01T00:00:00.12345\u0663Z",  # a digit that is not ASCII
    ],
)
def test_utcparse_refuses_what_only_fromisoformat_reads(text: str) -> None:
    """Defect 5 of issue 18: the fast path read these (one of them wrongly); RQ refuses them."""
    with pytest.raises(ValueError):
        compat._utcparse(text)
    with pytest.raises(ValueError):
        compat.utcparse(text)


def test_utcformat_writes_what_rq_writes() -> None:
    """Seeded datetimes (naive and aware, any offset, whole seconds, years 1 to 9999): the same text
    as RQ's ``strftime``, which utcparse reads back to the same instant's wall-clock fields."""
    rng = random.Random(23)
    zones = [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    samples = [datetime(1, 1, 1), datetime(999, 12, 31, 23, 59, 59), datetime(1000, 1, 1),
               datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(2026, 12, 8, 0, 0, 0, 0)]  # fmt: skip
    for _ in range(5_000):
        stamp = rng.uniform(-62_135_596_800, 253_402_300_799)
        moment = datetime(1970, 1, 1) + timedelta(seconds=stamp)
        if rng.random() < 0.2:
            moment = moment.replace(microsecond=0)
        samples.append(moment.replace(tzinfo=rng.choice(zones)))
    for moment in samples:
        assert compat.utcformat(moment) == compat._utcformat(moment), moment
    now = datetime.now(UTC)
    assert compat.utcparse(compat.utcformat(now)) == now


def test_utcparse_agrees_with_rq_on_fuzzed_strings() -> None:
    """5,000 seeded strings near RQ's timestamp shape: ours accepts, refuses and reads each as RQ's does."""
    _assert_utcparse_agrees_with_rq(seed=18, count=5_000)


@pytest.mark.long
def test_utcparse_agrees_with_rq_on_300k_fuzzed_strings() -> None:
    """The full-size fuzz that found defect 5 (300,000 strings, about ten seconds)."""
    _assert_utcparse_agrees_with_rq(seed=1805, count=300_000)


def test_a_final_failure_goes_through_job_handle_failure_in_a_transaction() -> None:
    """JsonJob._handle_failure hands a sequence on in the failure's own MULTI: RQ's worker calls
    ``job._handle_failure(exc_string, pipeline=pipeline, ...)`` inside ``handle_job_failure``'s
    transaction for a final failure (not for a retry), and ``record_job_failure`` after the status."""
    from rq.job_lifecycle import record_job_failure

    source = inspect.getsource(BaseWorker.handle_job_failure)
    assert "with self.connection.pipeline() as pipeline:" in source
    assert "job._handle_failure(" in source and "not retry" in source
    assert "job._handle_failure(exc_string, pipeline)" in inspect.getsource(record_job_failure)
    assert list(inspect.signature(Job._handle_failure).parameters)[:3] == ["self", "exc_string", "pipeline"]


def test_rq_leaves_deferred_jobs_alone() -> None:
    """A job waiting for its turn in a sequence is DEFERRED with no dependency: RQ's cleanup of the
    deferred registry must stay a no-op (it does not fail or enqueue them)."""
    from rq.registry import DeferredJobRegistry

    body = inspect.getsource(DeferredJobRegistry.cleanup).split('"""')[-1]
    assert body.strip() == "pass"
