"""Riding out Redis outages: every step of RQ's loop that keeps the worker's own records.

RQ's loop retries a failed dequeue but quits on any other Redis error (a heartbeat, a state
write, maintenance, a job's bookkeeping). Here every step of the loop that only keeps the
worker's own records (registration, heartbeats, state, suspension check, maintenance,
dequeue) waits for Redis (backoff, one log line per outage) and is made again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.utils import now
from rq.worker_registration import register

from app.core import compat, leases
from app.core.leases import Lease
from app.core.queues import JsonQueue
from app.foundation import defaults, outages
from app.processes import maintenance
from app.processes.workers.surface import RQWorker, RunState

log = logging.getLogger("tasklane.worker")

_T = TypeVar("_T")

REDIS_GONE: tuple[type[Exception], ...] = (*outages.REDIS_DOWN, outages.RedisUnavailable)


class OutageMixin(RQWorker):
    """RQ's worker records, through any Redis outage; and the state of the run in hand."""

    #: Set by a stop request (signal or thread pool), to tell a requested exit from an unexpected one.
    asked_to_stop: bool = False
    #: The state of the run of the job in hand (see :meth:`run_of`).
    _in_hand: RunState | None = None

    def run_of(self, job_id: str | None) -> RunState:
        """The state of the run of ``job_id`` if it is the job in hand, else a blank one (not kept)."""
        state = self._in_hand
        return state if state is not None and state.job_id == job_id else RunState(job_id)

    # --- riding out a Redis outage ---------------------------------------------------------------

    def _stop_asked(self) -> bool:
        return self.asked_to_stop or compat.stop_requested(self)

    def _wait_for_redis(self, error: BaseException | None) -> None:
        """Wait until Redis answers again, then make sure this worker is still registered.

        Raises StopRequested when the worker is asked to stop meanwhile: it leaves, and
        the job in hand (if any) is settled by the sweeps once Redis is back.
        """
        while True:
            if not outages.wait_until_reachable(self.connection, error=error, stop=self._stop_asked):
                raise StopRequested()
            try:
                self._register_again()
                return
            except outages.REDIS_DOWN as exc:
                error = exc

    def _register_again(self) -> None:
        """Write the worker's registration again: a long outage may have let it expire."""
        if self.birth_date is None or self.is_horse:
            return
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def _ride_out(self, call: Callable[[], _T]) -> _T:
        """``call()``, waited out and made again through any Redis outage (it must be safe to repeat)."""
        while True:
            try:
                return call()
            except REDIS_GONE as exc:
                self._wait_for_redis(exc)

    # --- the worker's own records: each waits out an outage and is made again -----------------

    def register_birth(self) -> None:
        """RQ's registration, through an outage (a repeat recognises this process's own record)."""
        retried = False
        while True:
            try:
                super().register_birth()
                return
            except ValueError:
                if retried and self._registered_here():
                    return
                raise
            except outages.REDIS_DOWN as exc:
                retried = True
                self._wait_for_redis(exc)

    def _registered_here(self) -> bool:
        pid, host = self.connection.hmget(self.key, ["pid", "hostname"])
        return pid is not None and int(pid) == os.getpid() and host == socket.gethostname().encode()

    def register_death(self) -> None:
        """RQ's deregistration; with Redis unreachable the registration simply expires."""
        try:
            super().register_death()
        except outages.REDIS_DOWN as exc:
            log.warning("Worker %s: Redis unreachable at exit (%s); its registration expires by itself",
                        self.name, type(exc).__name__)  # fmt: skip

    def subscribe(self) -> None:
        """RQ's command channel, subscribed through an outage; its reader thread logs outages once."""
        self._ride_out(lambda: compat.subscribe(self, self._pubsub_error))

    def _pubsub_error(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        """The command channel's reader lost Redis: note it (logged once per outage) and retry later."""
        if not isinstance(exc, outages.REDIS_DOWN):
            raise exc
        outages.OUTAGE.failed(exc)
        time.sleep(defaults.RECONNECT_MAX_DELAY / 4)

    def unsubscribe(self) -> None:
        """RQ's unsubscribe; with Redis unreachable there is nothing to tell it."""
        try:
            super().unsubscribe()
        except outages.REDIS_DOWN:
            if self.pubsub_thread is not None:
                with contextlib.suppress(Exception):
                    self.pubsub_thread.stop()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat; written directly, it waits out an outage."""
        beat = super().heartbeat
        if pipeline is not None:
            beat(timeout, pipeline=pipeline)
            return
        self._ride_out(lambda: beat(timeout))

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's state write; written directly, it waits out an outage."""
        write = super().set_state
        if pipeline is not None:
            write(state, pipeline=pipeline)
            return
        self._ride_out(lambda: write(state))

    def set_shutdown_requested_date(self) -> None:
        """Noted in Redis if it answers: a stop request is never lost to an outage."""
        with contextlib.suppress(*outages.REDIS_DOWN):
            super().set_shutdown_requested_date()

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's `rq suspend` check, through an outage."""
        check = super().check_for_suspension
        self._ride_out(lambda: check(burst))

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, through an outage."""
        self._ride_out(super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, through an outage (JsonQueue raises RedisUnavailable, which RQ lets through)."""
        dequeue = super().dequeue_job_and_maintain_ttl
        return self._ride_out(lambda: dequeue(timeout, max_idle_time))

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """RQ's heartbeats of the job in hand; one missed in an outage is made up by the next.

        After a missed or late beat (the worker was cut off from Redis, or stalled), the
        sweep may have handed the job to another run: the first beat that lands checks the
        run's lease, and a run that lost it is stopped (:meth:`_drop_lost_run`).
        """
        try:
            super().maintain_heartbeats(job, execution)
            # Judged once the beat landed: a beat that hung through a cut (a connection without a
            # read timeout, delivered when the link came back) is a late one.
            doubtful = self._beat_missed(job)
            lease_held = not doubtful or leases.held(self.connection, Lease.of(job, execution))
        except outages.REDIS_DOWN as exc:
            self.run_of(job.id).missed_beat = True
            outages.OUTAGE.failed(exc)
            return
        outages.OUTAGE.recovered()
        state = self.run_of(job.id)
        state.missed_beat = False
        state.beat_at = time.monotonic()
        if not lease_held and job.ended_at is None:  # the body still runs (inline: it has not returned)
            self._drop_lost_run(job)

    def _beat_missed(self, job: Job) -> bool:
        """True when a beat of this run failed, or the last one (or the run's start) is older than its TTL."""
        state = self.run_of(job.id)
        if state.missed_beat:
            return True
        if state.beat_at is not None:
            since = time.monotonic() - state.beat_at
        else:
            since = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        return since > self.get_heartbeat_ttl(job)

    def _drop_lost_run(self, job: Job) -> None:
        """The run's lease is gone: this worker was cut off from Redis past its heartbeat and a
        sweep handed the job to another run (or settled it). Stop this run; its outcome would be
        dropped anyway (every outcome write is fenced by the lease), and the worker carries on."""
        log.warning("Worker %s: job %s lost its lease while this worker was cut off; stopping this run "
                    "(the job is re-run or settled elsewhere)", self.name, job.id)  # fmt: skip
        self.kill_horse()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's end of a run (a last heartbeat); missed in an outage, the outcome's writes meet it next."""
        try:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        except outages.REDIS_DOWN as exc:
            job.ended_at = job.ended_at or now()
            outages.OUTAGE.failed(exc)
            return
        outages.OUTAGE.recovered()

    def clean_registries(self) -> None:
        """RQ's maintenance, except that orphans are requeued, not failed (app/processes/maintenance.py)."""
        for queue in self.queues:
            assert isinstance(queue, JsonQueue)  # RQ's init checked them against JsonQueue
            maintenance.sweep_queue(queue)
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ declares it None, then sets it so too
