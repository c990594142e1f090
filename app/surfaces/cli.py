"""``flask`` commands for operators: enqueue, show, wait for, list, requeue and purge.

Run them with the service's environment (at least ``REDIS_URL``)::

    flask --app app.factory:create_app tasks enqueue add x=2 y=3
    flask --app app.factory:create_app jobs wait <job_id>

They go through the same modules as the HTTP API (dispatch, states, listing, outcomes),
so a job enqueued here is validated, routed and recorded exactly as one sent over HTTP.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from pydantic import ValidationError
from rq.exceptions import DeserializationError, NoSuchJobError

from app.catalogue.registry import REGISTRY, QueueName
from app.core import queues as queue_store
from app.core import schedules
from app.core.dispatch import (
    EnqueueOptions,
    JobExistsError,
    OptionRefused,
    RateKeyRefused,
    deduplicated,
    enqueue,
)
from app.core.listing import decode_cursor, list_jobs
from app.core.outcomes import JobNotFailed, retry_failed
from app.core.queues import JsonJob, all_queues, fetch_job, get_queue
from app.core.rotation import rotate_jobs
from app.core.sealing import EncryptionUnavailable, keyring
from app.core.states import State, describe
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso
from app.processes.workers import JsonWorker
from app.services import services
from app.services.search import search_chunks
from app.surfaces.api.search import presented

tasks_cli = AppGroup("tasks", help="The task catalogue: list tasks, enqueue one.")
jobs_cli = AppGroup("jobs", help="Jobs: show, wait for, list failed ones, requeue.")
queues_cli = AppGroup("queues", help="Queues: counts, purge.")
workers_cli = AppGroup("workers", help="Workers: who runs, on which queues.")
documents_cli = AppGroup("documents", help="Ingested documents: search their chunks.")
schedules_cli = AppGroup(
    "schedules", help="Schedules: list, add, edit, pause, resume, run now, remove, history."
)
keys_cli = AppGroup("keys", help="ENCRYPTION_KEYS: re-encrypt stored values under the first key.")

#: States after which a job changes no more.
FINAL = frozenset({State.SUCCESS.value, State.FAILURE.value, State.REVOKED.value})
_QUEUES = click.Choice([q.value for q in QueueName])


def init_app(app: Flask) -> None:
    """Attach the command groups to ``app.cli``."""
    for group in (tasks_cli, jobs_cli, queues_cli, workers_cli, documents_cli, schedules_cli, keys_cli):
        app.cli.add_command(group)
    app.cli.add_command(seed_command)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def parse_arguments(words: tuple[str, ...]) -> dict[str, Any]:
    """``x=2 name=Ada`` (each value read as JSON when it is JSON, else as text) or one JSON object."""
    if len(words) == 1 and words[0].lstrip().startswith("{"):
        try:
            value = json.loads(words[0])
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="ARGS") from None
        if not isinstance(value, dict):
            raise click.BadParameter("a JSON argument must be an object", param_hint="ARGS")
        return value
    out: dict[str, Any] = {}
    for word in words:
        name, sep, raw = word.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{word!r} is not name=value (or give one JSON object)", param_hint="ARGS"
            )
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def _job(job_id: str) -> JsonJob:
    try:
        return fetch_job(job_id, runtime().redis)
    except NoSuchJobError:
        raise click.ClickException(f"no job with id {job_id!r}") from None
    except DeserializationError:
        raise click.ClickException(
            f"job {job_id!r} is not stored as JSON; it was not written by this service"
        ) from None


@tasks_cli.command("list")
def list_tasks() -> None:
    """The catalogue: each task's queue, limits and retries (in force, after TASK_OVERRIDES)."""
    for spec in REGISTRY:
        flags = f" overridden: {', '.join(spec.overridden)}" if spec.overridden else ""
        rate = f" rate {spec.rate_limit.text}" if spec.rate_limit else ""
        rate += f" per {spec.rate_key}" if spec.rate_limit and spec.rate_key else ""
        rate += f" burst {spec.burst}" if spec.rate_limit and spec.burst else ""
        click.echo(
            f"{spec.name:<28} queue {spec.queue.value:<8} time limit {spec.time_limit:>5} s"
            f"  retries {spec.retry.max_retries}{rate}{flags}"
        )


@tasks_cli.command("enqueue")
@click.argument("task")
@click.argument("args", nargs=-1)
@click.option("--queue", type=_QUEUES, help="Another queue than the task's.")
@click.option("--countdown", type=float, help="Seconds to wait before it runs.")
@click.option(
    "--expires", help="Seconds, or an ISO 8601 time with a zone: not started by then, it never runs."
)
@click.option("--job-id", help="Choose the job's id.")
@click.option("--rate-key", help="Start in this key's own bucket of the task's rate limit.")
@click.option("--sequence", help="A key: jobs with the same key run one at a time, in enqueue order.")
@click.option("--priority", type=click.IntRange(0, 9), help="0 (first) .. 9 (last) in its queue; default 5.")
@click.option("--group", help="A fairness key: jobs of different groups in a queue take turns.")
@click.option("--encrypt", is_flag=True, default=None, help="Store the args and result encrypted.")
@click.option("--unique-period", type=float, help="Seconds: while a job of the same key lives, return it.")
@click.option("--unique-key", help="With --unique-period: the key (default: the task and its args).")
@click.option(
    "--unique-until",
    type=click.Choice(["end", "period"]),
    help="With --unique-period: free the key when the job ends (end, the default) or only after the period.",
)
@click.option("--debounce", type=float, help="Seconds after the last enqueue of the key that the job starts.")
@click.option("--debounce-key", help="With --debounce: the key (default: one window for the task).")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job to end, with a progress bar.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
def enqueue_task(
    task: str,
    args: tuple[str, ...],
    queue: str | None,
    countdown: float | None,
    expires: str | None,
    job_id: str | None,
    rate_key: str | None,
    sequence: str | None,
    priority: int | None,
    group: str | None,
    encrypt: bool | None,
    unique_period: float | None,
    unique_key: str | None,
    unique_until: str | None,
    debounce: float | None,
    debounce_key: str | None,
    wait_: bool,
    timeout: float | None,
) -> None:
    """Validate ARGS (x=2 y=3, or '{"x": 2, "y": 3}') as the API does and enqueue TASK; print the job id."""
    spec = REGISTRY.get(task)
    if spec is None:
        raise click.ClickException(f"no task named {task!r}; `flask tasks list` lists them")
    if ((unique_key or unique_until) and unique_period is None) or (debounce_key and debounce is None):
        raise click.ClickException(
            "--unique-key and --unique-until go with --unique-period, --debounce-key with --debounce"
        )
    try:
        model = spec.validate(parse_arguments(args))
        options = EnqueueOptions.model_validate(
            {
                k: v
                for k, v in {
                    "queue": queue,
                    "countdown": countdown,
                    "job_id": job_id,
                    "expires": expires,
                    "encrypt": encrypt,
                    # --- unique and debounce (issue 19) ---
                    "unique": None
                    if unique_period is None
                    else {"period": unique_period, "key": unique_key, "until": unique_until or "end"},
                    "debounce": None if debounce is None else {"delay": debounce, "key": debounce_key},
                    "rate_key": rate_key,
                    "sequence": sequence,
                    "priority": priority,
                    "group": group,
                }.items()
                if v is not None
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise click.ClickException(f"invalid input for task {task!r}: {problems}") from None
    rt = runtime()
    try:
        job = enqueue(
            spec,
            model,
            rt.redis,
            options,
            default_result_ttl=rt.settings.result_ttl,
            failure_ttl=rt.settings.failed_job_ttl,
        )
    except (JobExistsError, EncryptionUnavailable, OptionRefused, RateKeyRefused) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(job.id)
    if deduplicated(job):
        click.echo("(deduplicated: an earlier job of the same key)", err=True)
    if wait_:
        _wait(job.id, timeout, interval=0.2)


@jobs_cli.command("show")
@click.argument("job_id")
def show_job(job_id: str) -> None:
    """A job as GET /api/v1/jobs/<id> shows it (JSON)."""
    _echo_json(describe(_job(job_id)))


@jobs_cli.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds (exit status 2).")
@click.option("--interval", type=float, default=0.2, show_default=True, help="Seconds between looks.")
def wait_job(job_id: str, timeout: float | None, interval: float) -> None:
    """Show a live progress bar until the job ends; exit 0 on SUCCESS, 1 on FAILURE or REVOKED."""
    _wait(job_id, timeout, interval)


def _wait(job_id: str, timeout: float | None, interval: float) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    job = _job(job_id)
    view = describe(job)
    with click.progressbar(length=100, label=f"{view['task']} {job_id}", show_percent=True) as bar:
        done = 0
        while True:
            job.refresh()
            view = describe(job)
            progress = view.get("progress") or {}
            percent = int(progress.get("percent") or 0) if view["state"] not in FINAL else 100
            if view["state"] == State.SUCCESS.value or percent > done:
                bar.update(max(0, min(100, percent) - done))
                done = max(done, min(100, percent))
            bar.label = _label(view, job_id, progress)
            if view["state"] in FINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                click.echo(f"\ntimed out after {timeout} s; the job is {view['state']}", err=True)
                raise SystemExit(2)
            time.sleep(interval)
    click.echo(f"{view['state']}")
    if view["state"] == State.SUCCESS.value:
        _echo_json(view["result"])
        return
    error = view.get("error") or {}
    if error:
        click.echo(f"{error.get('type')}: {error.get('message')}", err=True)
    raise SystemExit(1)


def _label(view: dict[str, Any], job_id: str, progress: dict[str, Any]) -> str:
    """The bar's label: task, job, state, and the stage and message the task last reported."""
    parts = [str(view["task"]), job_id, str(view["state"])]
    if progress.get("stage") and view["state"] not in FINAL:
        parts.append(str(progress["stage"]))
    if progress.get("message") and view["state"] not in FINAL:
        parts.append(str(progress["message"])[:60])
    return " ".join(parts)


def _failed_jobs(task: str | None, queue: str | None) -> list[dict[str, Any]]:
    redis = runtime().redis
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, next_cursor = list_jobs(redis, State.FAILURE, task, queue, cursor, 500)
        out.extend(page)
        if next_cursor is None:
            return out
        cursor = decode_cursor(next_cursor)


@documents_cli.command("search")
@click.argument("query")
@click.option("--limit", type=click.IntRange(1, 50), default=5, show_default=True, help="How many chunks.")
def search_documents(query: str, limit: int) -> None:
    """The ingested chunks nearest to QUERY, with their scores (as GET /api/v1/search)."""
    embedder = services().embedder
    results = presented(search_chunks(runtime().engine, embedder, query, limit))
    if not results:
        click.echo(f"no chunk embedded by {embedder.name} is related to the query", err=True)
        raise SystemExit(1)
    for hit in results:
        text = " ".join(hit["text"].split())
        click.echo(f"{hit['score']:.4f}  {hit['path']} #{hit['position']}  {text[:100]}")


@jobs_cli.command("failed")
@click.option("--task", help="Only jobs of this task.")
@click.option("--queue", type=_QUEUES, help="Only jobs of this queue.")
def failed_jobs(task: str | None, queue: str | None) -> None:
    """Failed jobs (the dead-letter view), newest first: id, task, queue, when, error."""
    jobs = _failed_jobs(task, queue)
    for view in jobs:
        error = view.get("error") or {}
        click.echo(
            f"{view['job_id']}  {view['task'] or '(unreadable)'}  {view['queue']}  {view['ended_at']}  "
            f"{error.get('type', '')}: {error.get('message', '')}"
        )
    click.echo(f"{len(jobs)} failed job(s)", err=True)


@jobs_cli.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failed job (of --task / --queue, if given).")
@click.option("--task", help="With --all: only jobs of this task.")
@click.option("--queue", type=_QUEUES, help="With --all: only jobs of this queue.")
def requeue(job_ids: tuple[str, ...], all_: bool, task: str | None, queue: str | None) -> None:
    """Put failed jobs back on their queues for a fresh run: JOB_IDS, or --all [--task T] [--queue Q]."""
    if bool(job_ids) == all_:
        raise click.UsageError("give job ids, or --all (with --task / --queue to narrow it)")
    if not all_ and (task or queue):
        raise click.UsageError("--task and --queue go with --all")
    # A job set aside unread (no task) cannot run again: --all leaves it out (DELETE removes it).
    ids = list(job_ids) if job_ids else [view["job_id"] for view in _failed_jobs(task, queue) if view["task"]]
    requeued = 0
    for job_id in ids:
        try:
            retry_failed(_job(job_id))
        except JobNotFailed as exc:
            if not all_:
                raise click.ClickException(str(exc)) from None
            continue  # retried meanwhile by someone else
        click.echo(f"requeued {job_id}")
        requeued += 1
    click.echo(f"{requeued} job(s) requeued", err=True)


@queues_cli.command("show")
def show_queues() -> None:
    """Per queue: waiting, started, scheduled, deferred, failed, finished counts, and whether it is paused."""
    click.echo(
        f"{'queue':<10}{'waiting':>9}{'started':>9}{'scheduled':>11}{'deferred':>10}{'failed':>8}{'finished':>10}"
    )
    redis = runtime().redis
    paused = queue_store.paused_queues(redis)
    for queue in all_queues(redis):
        click.echo(
            f"{queue.name:<10}{queue_store.waiting(redis, queue.name)['total']:>9}"
            f"{queue.started_job_registry.count:>9}"
            f"{queue.scheduled_job_registry.count:>11}{queue.deferred_job_registry.count:>10}"
            f"{queue.failed_job_registry.count:>8}{queue.finished_job_registry.count:>10}"
            + ("  paused" if queue.name in paused else "")
        )


@queues_cli.command("pause")
@click.argument("queue", type=_QUEUES)
def pause_queue(queue: str) -> None:
    """Stop every worker on every host taking jobs from QUEUE (jobs in hand finish; enqueues still land)."""
    queue_store.pause(runtime().redis, queue)
    click.echo(f"paused {queue}")


@queues_cli.command("resume")
@click.argument("queue", type=_QUEUES)
def resume_queue(queue: str) -> None:
    """Let workers take jobs from QUEUE again."""
    queue_store.resume(runtime().redis, queue)
    click.echo(f"resumed {queue}")


@queues_cli.command("purge")
@click.argument("queue", type=_QUEUES)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_queue(queue: str, yes: bool) -> None:
    """Delete every job waiting in QUEUE (running, failed and finished jobs are left alone)."""
    redis = runtime().redis
    target = get_queue(queue, redis)
    count = queue_store.waiting(redis, queue)["total"]  # its priorities' and groups' too
    if not yes:
        click.confirm(f"delete the {count} job(s) waiting in {queue!r}?", abort=True)
    removed = target.empty()
    for key, _ in queue_store.lane_lists(redis, queue):
        removed += get_queue(key.removeprefix(target.redis_queue_namespace_prefix), redis).empty()
    click.echo(f"purged {removed} job(s) from {queue}")


@workers_cli.command("show")
def show_workers() -> None:
    """Every registered worker: name, host, pid, state, queues, current job, counts, last heartbeat."""
    workers = sorted(JsonWorker.all(connection=runtime().redis), key=lambda w: w.name)
    for worker in workers:
        state = worker.get_state()
        click.echo(
            f"{worker.name}  {worker.hostname}:{worker.pid}  {getattr(state, 'value', state)}  "
            f"queues {','.join(worker.queue_names())}  job {worker.get_current_job_id() or '-'}  "
            f"ok {worker.successful_job_count} failed {worker.failed_job_count}  "
            f"heartbeat {iso(worker.last_heartbeat)}"
        )
    click.echo(f"{len(workers)} worker(s)", err=True)


# --- development data (issue 9) --------------------------------------------------------------------


@click.command("seed")
@with_appcontext
@click.option("--users", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--hours", default=48, show_default=True, type=click.IntRange(0, 24 * 366))
def seed_command(users: int, hours: int) -> None:
    """Fill the database (DATABASE_URL, migrated) with realistic development data for the data tasks."""
    from app.surfaces.seed import seed

    started = time.monotonic()
    counts = seed(runtime().engine, users=users, hours=hours)
    _echo_json({"added": counts.as_dict(), "seconds": round(time.monotonic() - started, 2)})


# --- schedules ---------------------------------------------------------------------------------


def _schedule_call(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(...)`` with the store's errors as one line each (exit status 1)."""
    try:
        return call(*args, **kwargs)
    except schedules.ScheduleNotFound as exc:
        raise click.ClickException(str(exc.args[0])) from None
    except schedules.ScheduleExists as exc:
        raise click.ClickException(str(exc)) from None
    except schedules.InvalidSchedule as exc:
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors)
        raise click.ClickException(f"invalid schedule: {problems}") from None


def _cadence_fields(
    cron: str | None, interval: int | None, timezone: str | None, overlap: str | None, catchup: int | None
) -> dict[str, Any]:
    fields = {
        "cron": cron,
        "interval": interval,
        "timezone": timezone,
        "overlap": overlap,
        "catchup_window": catchup,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _schedule_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--cron", help="Cron: 5 fields, or 6 with seconds first, in --timezone."),
            click.option(
                "--interval", type=click.IntRange(min=1), help="Every N seconds (instead of --cron)."
            ),
            click.option(
                "--timezone", help="IANA time zone of the cron (default UTC), e.g. America/New_York."
            ),
            click.option(
                "--overlap",
                type=click.Choice(["skip", "allow"]),
                help="skip (default): no new run while the previous has not ended; allow.",
            ),
            click.option(
                "--catchup-window",
                "catchup",
                type=click.IntRange(min=0),
                help="Seconds: ticks missed while no scheduler ran are run if this recent (default 60).",
            ),
        ]
    ):
        command = option(command)
    return command


@schedules_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_schedules(as_json: bool) -> None:
    """Every schedule: cadence, time zone, paused, next and last run; * marks the operator's fields."""
    views = schedules.list_views(runtime().redis)
    if as_json:
        _echo_json(views)
        return
    rows = []
    for v in views:
        mine = set(v["operator_fields"])

        def mark(field: str, text: str, mine: set[str] = mine) -> str:
            return f"{text}*" if field in mine else text

        cadence = mark("cron", v["cron"]) if v["cron"] else mark("interval", f"every {v['interval']} s")
        state = "paused" if v["paused"] else f"next {v['next_run']}"
        rows.append([v["name"], v["task"], cadence, mark("timezone", v["timezone"]), state,
                     f"last {v['last_run'] or '-'}", v["origin"]])  # fmt: skip
    # Columns as wide as their longest cell, so a long name never shifts the others.
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]) - 1)] if rows else []
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo(" ".join([*padded, row[-1]]))


@schedules_cli.command("add")
@click.argument("name")
@click.argument("task")
@click.argument("args", nargs=-1)
@_schedule_options
@click.option("--paused", is_flag=True, help="Create it paused.")
def add_schedule(
    name: str,
    task: str,
    args: tuple[str, ...],
    cron: str | None,
    interval: int | None,
    timezone: str | None,
    overlap: str | None,
    catchup: int | None,
    paused: bool,
) -> None:
    """Create schedule NAME of TASK with ARGS (x=2 y=3, or one JSON object); print it."""
    fields = {"name": name, "task": task, "args": parse_arguments(args), "paused": paused}
    fields |= _cadence_fields(cron, interval, timezone, overlap, catchup)
    redis = runtime().redis
    _schedule_call(schedules.create, redis, fields)
    _echo_json(schedules.get_view(redis, name))


@schedules_cli.command("edit")
@click.argument("name")
@click.argument("args", nargs=-1)
@_schedule_options
def edit_schedule(
    name: str,
    args: tuple[str, ...],
    cron: str | None,
    interval: int | None,
    timezone: str | None,
    overlap: str | None,
    catchup: int | None,
) -> None:
    """Change schedule NAME: the options given, and its args if ARGS are given; print it."""
    fields = _cadence_fields(cron, interval, timezone, overlap, catchup)
    if args:
        fields["args"] = parse_arguments(args)
    if not fields:
        raise click.UsageError("nothing to change: give ARGS or an option")
    redis = runtime().redis
    _schedule_call(schedules.update, redis, name, fields)
    _echo_json(schedules.get_view(redis, name))


@schedules_cli.command("pause")
@click.argument("name")
def pause_schedule(name: str) -> None:
    """Pause schedule NAME: no run until resumed."""
    _schedule_call(schedules.update, runtime().redis, name, {"paused": True})
    click.echo(f"{name} paused")


@schedules_cli.command("resume")
@click.argument("name")
def resume_schedule(name: str) -> None:
    """Resume schedule NAME from its next tick (the ticks of the pause are not run)."""
    _schedule_call(schedules.update, runtime().redis, name, {"paused": False})
    click.echo(f"{name} resumed")


@schedules_cli.command("run")
@click.argument("name")
def run_schedule(name: str) -> None:
    """Enqueue schedule NAME now; print the job id."""
    rt = runtime()
    ttls = schedules.Ttls(result_ttl=rt.settings.result_ttl, failed_job_ttl=rt.settings.failed_job_ttl)
    click.echo(_schedule_call(schedules.run_now, rt.redis, name, ttls=ttls))


@schedules_cli.command("rm")
@click.argument("name")
def remove_schedule(name: str) -> None:
    """Remove created schedule NAME (a catalogue schedule is paused instead)."""
    removed = _schedule_call(schedules.delete, runtime().redis, name)
    click.echo(
        f"{name} removed" if removed else f"{name} paused (a catalogue schedule is paused, not removed)"
    )


@schedules_cli.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, schedules.HISTORY_LENGTH), default=schedules.HISTORY_LENGTH)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def schedule_history(name: str, limit: int, as_json: bool) -> None:
    """The last runs of NAME, newest first: tick, kind, job, state, run time."""
    entries = _schedule_call(schedules.history, runtime().redis, name, limit)
    if as_json:
        _echo_json(entries)
        return
    for e in entries:
        extra = f" ({e['count']} ticks to {e['until']})" if e["kind"] == "missed" else ""
        duration = f"{e['duration']:.3f} s" if e.get("duration") is not None else "-"
        click.echo(
            f"{e['tick']}  {e['kind']:<9} {e['state'] or '-':<8} {duration:>10}  {e['job_id'] or '-'}{extra}"
        )


@keys_cli.command("rotate")
def rotate_keys() -> None:
    """Re-encrypt every encrypted job's args and results, and every stored schedule's args, under
    the first of ENCRYPTION_KEYS (put the new key first, run this, then drop the old key)."""
    ring = keyring()
    if ring is None:
        raise click.ClickException("ENCRYPTION_KEYS is not set: there is no key to rotate to")
    report = rotate_jobs(runtime().redis, ring)
    click.echo(
        f"{report.jobs} encrypted job(s): {report.resealed} re-encrypted under key {ring.current_id}, "
        f"{report.current} already under it, {len(report.unreadable)} under a key that is gone; "
        f"{report.schedules} schedule(s) re-encrypted"
    )
    for line in report.unreadable:
        click.echo(f"  {line}", err=True)
    if report.unreadable:
        raise SystemExit(1)
