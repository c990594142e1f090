"""The pooled worker's trimmed writes leave in Redis what RQ's own worker leaves.

The same job is run by RQ's plain SimpleWorker and by the pooled worker (in this process,
against a real redis-server of its own); the job hash (fields and the values that are not times,
ids or names), the registries, the queue lists and the result stream must match, and so
must what ``rq`` and the job API read from them. Each run is also counted: the pooled
worker's start and finish take fewer commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from app.catalogue.registry import REGISTRY
from app.core import dispatch
from app.core.execution import ExecutingJob
from app.core.queues import JsonJob, JsonQueue
from app.factory import create_app
from app.processes.workers.pooled import JsonPooledWorker
from tests.conftest import make_env
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

#: Fields whose values differ between any two runs (times, ids, names), compared by presence only.
VARYING = {b"created_at", b"enqueued_at", b"started_at", b"ended_at", b"last_heartbeat", b"worker_name",
           b"data", b"description"}  # fmt: skip


def _run(
    app: Flask, rconn: redis.Redis, worker_class: type[Any], jobs: int = 2
) -> tuple[list[str], int, int]:
    """Enqueue add(2, 3) ``jobs`` times, run them with ``worker_class`` (burst); the job ids and the
    commands it took (the worker's counters, batched by the pooled worker, are checked here). The
    pooled worker claims the second job with the first one's success (claimed ahead)."""
    spec = REGISTRY.get("add")
    assert spec is not None
    with app.app_context():
        enqueued = [dispatch.enqueue(spec, spec.validate({"x": 2, "y": 3}), rconn, default_result_ttl=500,
                                     failure_ttl=3600) for _ in range(jobs)]  # fmt: skip
        queue = JsonQueue("default", connection=rconn)
        options: dict[str, Any] = {"serializer": JSONSerializer, "job_class": ExecutingJob}
        if worker_class is JsonPooledWorker:
            options = {}
        worker = worker_class([queue], connection=rconn, **options)
        rconn.config_resetstat()
        worker.work(burst=True, with_scheduler=False)
    counters = rconn.hmget(worker.key, ["successful_job_count", "failed_job_count"])
    assert counters == [str(jobs).encode(), None], counters
    assert float(rconn.hget(worker.key, "total_working_time")) > 0
    stats = rconn.info("commandstats")
    total = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))
    return [job.id for job in enqueued], total, stats.get("cmdstat_zrange", {}).get("calls", 0)


def _state(rconn: redis.Redis, job_id: str) -> dict[str, Any]:
    job_key = f"rq:job:{job_id}"
    fields = rconn.hgetall(job_key)
    results = rconn.xrange(f"rq:results:{job_id}")
    assert len(results) == 1
    entry = results[0][1]
    return {
        "job fields": sorted(fields),
        "job values": {k: v for k, v in fields.items() if k not in VARYING},
        "job ttl": rconn.ttl(job_key) > 0,
        "result fields": sorted(entry),
        "result value": (entry[b"type"], entry[b"return_value"]),
        "result ttl": rconn.ttl(f"rq:results:{job_id}") > 0,
        "finished": rconn.zscore("rq:finished:default", job_id) is not None,
        "started": rconn.zcard("rq:wip:default"),
        "queue": rconn.llen("rq:queue:default"),
        "intermediate": rconn.llen("rq:queue:default:intermediate"),
        "failed": rconn.zcard("rq:failed:default"),
        "status (RQ)": JsonJob.fetch(job_id, connection=rconn).get_status(),
        "result (RQ)": JsonJob.fetch(job_id, connection=rconn).latest_result().return_value,
    }


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[Flask, redis.Redis]]:
    """An app on a redis-server of its own: the commands are counted server-wide (INFO
    commandstats), and a thread an earlier test left behind on the session's Redis once added
    its own commands to the count."""
    server = RedisServer(tmp_path / "own").start()
    try:
        conn = redis.Redis.from_url(server.url, socket_timeout=5)
        yield create_app(make_env(tmp_path / "env", server.url)), conn
        conn.close()
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_the_pooled_fast_path_writes_what_rqs_own_path_writes(own: tuple[Flask, redis.Redis]) -> None:
    app, rconn = own
    rq_ids, rq_commands, rq_zranges = _run(app, rconn, SimpleWorker)
    our_ids, our_commands, our_zranges = _run(app, rconn, JsonPooledWorker)
    # The first job is started by the usual claim; the second was claimed with the first's success.
    for rq_id, ours_id in zip(rq_ids, our_ids, strict=True):
        theirs, ours = _state(rconn, rq_id), _state(rconn, ours_id)
        assert ours == theirs
        assert theirs["finished"] and theirs["result (RQ)"] == 5
        assert (theirs["started"], theirs["queue"], theirs["intermediate"]) == (0, 0, 0)
    # Each run includes the worker's birth and death; the pooled one still sends fewer commands, and
    # its dequeue looks at no queue's priorities while no queue has any (docs/FLOW_CONTROL.md).
    assert our_zranges <= rq_zranges, (our_zranges, rq_zranges)
    assert our_commands < rq_commands, (our_commands, rq_commands)
