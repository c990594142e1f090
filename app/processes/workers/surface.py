"""What the worker mixins are written against: RQ's worker (for mypy), and the state of one run.

The mixins (redis_outages.py, grace.py, recording.py, base.py) are mixed into RQ's worker
classes by the mode modules. For mypy they subclass RQ's typed ``BaseWorker`` (at run time,
``object``), so that their ``super()`` calls and their use of RQ's attributes are checked
against RQ's own signatures rather than silenced.

:class:`RunState` is everything a worker learns about the run of the job in hand while it
runs (was its start claimed here, did its horse die, was its outcome lost to an outage, was
it stopped at the end of a warm shutdown's grace...): one object per job in hand, fresh for
each, instead of a flag attribute per fact keyed by job id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rq.executions import Execution

if TYPE_CHECKING:
    from rq.worker import BaseWorker as RQWorker
else:
    RQWorker = object


@dataclass
class RunState:
    """What one run of the job ``job_id`` has met so far, in the process that holds it."""

    job_id: str | None = None
    #: The run this process started (its execution: the run's lease).
    execution: Execution | None = None
    #: Its start was written with this process's claim (a work horse then skips RQ's start).
    claimed: bool = False
    #: Its outcome could not be written (Redis went away): RQ's failure path must not record one.
    outcome_lost: bool = False
    #: Its work horse died under it: how (fork mode), and whether it exited for a lost outcome.
    horse_death: str | None = None
    horse_died: bool = False
    horse_outcome_lost: bool = False
    #: Its work horse was killed past the hard time limit (fork mode).
    hard_killed: bool = False
    #: It was stopped because a warm shutdown's grace ran out: put back, no retry spent.
    shutdown_stopped: bool = False
    #: Its task body returned (in-process modes): a grace timer no longer interrupts it.
    body_done: bool = False
    #: A heartbeat of it failed; when (time.monotonic()) the last one landed.
    missed_beat: bool = False
    beat_at: float | None = None
