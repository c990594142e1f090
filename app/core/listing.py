"""The paged job listing behind ``GET /api/v1/jobs`` (``state=FAILURE`` is the dead-letter view).

A page costs O(page size x sources) Redis work, however many jobs there are.

Sources. A state's jobs live in a few places per queue (``_STATE_SOURCES``): the queue's
list and RQ's registries; with no state asked for, all of them. Each source is read in
batches from where the cursor left it:

* a registry is a sorted set scored in whole seconds (when the entry expires, or for the
  scheduled and deferred registries when the job is due or was made). It is read highest
  score first with ``ZREVRANGEBYSCORE ... LIMIT``, or ``ZREVRANGE`` from the rank of the
  cursor's member. Entries that share a score (jobs that failed in the same second) are
  listed by the job's own latest timestamp, to the microsecond, newest first, when there
  are at most ``TIME_ORDERED_TIES`` of them (the run of equal scores is then read whole to
  sort it); a longer run is listed in Redis's own order for ties, by member, descending.
* a queue's list is read from its tail (the newest job) with ``LRANGE`` slices.

Merge. The sources' heads are merged newest first (``heapq``) by the job's latest
timestamp (ended, else started, else enqueued, else created), which is also how jobs of
different sources compare. Within a source that key is clamped never to rise, so the merge
keeps each source's own order. The result is exactly newest first where a source's order
follows time; the scheduled registry is ordered by when jobs are due, and a finished or
failed registry by expiry, which follows the end time while the TTL is the same.

Cursor. ``next_cursor`` is base64url JSON of the position of the last job taken from each
source: ``[score, member, timestamp or null]`` for a registry (null: its run of equal
scores is ordered by member), ``[offset from the tail, job id, id of the next older job or
null]`` for a queue. The next page starts each source right after that position, so no job
is skipped or repeated, also across runs of equal scores and when entries come or go (a
registry member that left is placed by binary search among its run's ranks). A queue
position is checked against the job id at that offset; if jobs were pushed meanwhile, the
id is found again with ``LPOS`` (a scan from the tail, in Redis); if it left the queue, the
listing goes on at the next older job, and if that left too, workers took both from the
head and nothing older is left.

Filters. Jobs are fetched and their state and task (and a JobFilter's argument and time
terms) checked a batch at a time; jobs that do
not match are skipped, and further batches are read until the page is full or
``SCAN_FACTOR x limit`` jobs have been looked at. A page can therefore be shorter than the
limit (even empty) while ``next_cursor`` still leads on; ``next_cursor`` is null only once
every source is exhausted. Jobs not stored as JSON are left out.

A job that moves between sources while a client pages (queued, then started, then finished)
can be listed twice or not at all; within one page a job is listed once.
"""

from __future__ import annotations

import base64
import functools
import heapq
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job, parse_job_id

from app.catalogue.registry import QueueName
from app.core.filtering import JobFilter
from app.core.queues import JsonJob, JsonQueue, get_queue, lane_queue_name, listed_lanes
from app.core.states import State, describe, set_aside_views, state_of, task_name

_STATE_SOURCES: dict[State, tuple[str, ...]] = {
    State.PENDING: ("queue", "scheduled", "deferred"),
    State.RETRY: ("scheduled",),
    State.STARTED: ("started",),
    State.PROGRESS: ("started",),
    State.SUCCESS: ("finished",),
    State.FAILURE: ("failed",),
    State.REVOKED: ("canceled", "failed"),
}
#: The source that is a queue's list; every other source is one of the queue's registries.
QUEUE_SOURCE = "queue"
REGISTRY_SOURCES = ("scheduled", "deferred", "started", "finished", "failed", "canceled")

#: Longest run of equal registry scores that is listed by the jobs' own timestamps.
TIME_ORDERED_TIES = 100
#: A page looks at no more than SCAN_FACTOR x limit jobs (at least MIN_SCAN) when filters skip jobs.
SCAN_FACTOR = 10
MIN_SCAN = 200
#: Longest cursor accepted (an unfiltered listing of three queues has 21 sources).
CURSOR_MAX_CHARS = 8192

_TIME_FIELDS = ("ended_at", "started_at", "enqueued_at", "created_at")
#: Above every timestamp: the merge key of a job that is gone (it is then skipped first).
_NEWEST = "\uffff"

#: Where a source's listing stands: after (offset from the tail, job id, id of the job after it
#: or None) in a queue's list, after (score, member, timestamp or None) in a registry.
Position = tuple[int, str, str | None] | tuple[float, str, str | None]
#: Positions by source name (``"<queue>/<source>"``).
Cursor = dict[str, Position]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bound(score: float, exclusive: bool = False) -> str:
    text = "+inf" if score == math.inf else "-inf" if score == -math.inf else repr(score)
    return f"({text}" if exclusive else text


def _stamps(redis: Any, job_ids: list[str]) -> dict[str, str]:
    """Each job's latest timestamp (RQ's fixed-width ISO text, so it sorts as text); "" if gone."""
    if not job_ids:
        return {}
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), *_TIME_FIELDS)
        rows = pipe.execute()
    return {job_id: next((_text(v) for v in row if v), "") for job_id, row in zip(job_ids, rows, strict=True)}


@dataclass
class _Entry:
    job_id: str
    stamp: str
    #: The source's position once this entry is taken.
    position: Position
    #: The merge key: ``stamp``, clamped so that it never rises within a source.
    key: str = ""


class _Source:
    """One list or registry of one queue, read in batches after a position."""

    def __init__(self, redis: Any, name: str, key: str, position: Position | None) -> None:
        self.redis = redis
        self.name = name
        self.key = key
        #: The position after the last entry taken (None: nothing taken yet).
        self.position = position
        self._read_to = position
        self._last_key = _NEWEST
        self.buffer: deque[_Entry] = deque()
        self.more = True

    def fill(self, count: int) -> None:
        """Read at least ``count`` more entries (fewer at the end) into the buffer."""
        entries, self.more = self._read(self._read_to, count)
        for entry in entries:
            if entry.stamp and entry.stamp < self._last_key:
                self._last_key = entry.stamp
            entry.key = self._last_key
            self.buffer.append(entry)
        if entries:
            self._read_to = entries[-1].position

    def take(self) -> _Entry:
        entry = self.buffer.popleft()
        self.position = entry.position
        return entry

    def _read(self, after: Any, count: int) -> tuple[list[_Entry], bool]:
        raise NotImplementedError


class _ListSource(_Source):
    """A queue's list, newest (tail) first, by offset from the tail."""

    def _read(self, after: Any, count: int) -> tuple[list[_Entry], bool]:
        redis, key = self.redis, self.key
        offset = 0
        if after is None:
            raw = redis.lrange(key, -(count + 1), -1)
        else:
            offset, last_id, next_id = after
            with redis.pipeline(transaction=False) as pipe:
                pipe.lindex(key, -offset)
                pipe.lrange(key, -(offset + count + 1), -(offset + 1))
                at_offset, raw = pipe.execute()
            if at_offset is None or _text(at_offset) != last_id:
                found = self._offset_of(last_id, next_id)
                if found is None:
                    return [], False
                offset = found
                raw = redis.lrange(key, -(offset + count + 1), -(offset + 1))
        # One more than asked for, to know each entry's successor.
        ids = [_text(i) for i in reversed(raw)]
        stamps = _stamps(redis, ids[:count])
        entries = [
            _Entry(job_id, stamps[job_id], (offset + n + 1, job_id, ids[n + 1] if n + 1 < len(ids) else None))
            for n, job_id in enumerate(ids[:count])
        ]
        return entries, len(ids) > count

    def _offset_of(self, last_id: str, next_id: str | None) -> int | None:
        """The offset after ``last_id`` now that jobs came or went at the tail; None if none is left.

        Found again with LPOS from the tail; if that job has left the queue, the listing goes
        on at its successor. If both have left, workers took them from the head, and every job
        older than them went first: nothing is left to list.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpos(self.key, last_id, rank=-1)
            pipe.lpos(self.key, next_id or last_id, rank=-1)
            pipe.llen(self.key)
            last_at, next_at, length = pipe.execute()
        if last_at is not None:
            return int(length - last_at)
        if next_id is not None and next_at is not None:
            return int(length - next_at - 1)
        return None


class _RegistrySource(_Source):
    """One of a queue's registries (sorted sets), highest score first."""

    def _read(self, after: Any, count: int) -> tuple[list[_Entry], bool]:
        redis, key = self.redis, self.key
        by_member_at: float | None = None  # a run of equal scores continued in member order
        rest_of_run: list[str] = []  # a time-ordered run continued: all its members
        if after is None:
            raw = redis.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
        else:
            score, member, stamp = after
            if stamp is not None:
                with redis.pipeline(transaction=False) as pipe:
                    pipe.zrangebyscore(key, _bound(score), _bound(score))
                    pipe.zrevrangebyscore(
                        key, _bound(score, True), "-inf", start=0, num=count, withscores=True
                    )
                    run, raw = pipe.execute()
                rest_of_run = [_text(m) for m in run]
            else:
                by_member_at = score
                with redis.pipeline(transaction=False) as pipe:
                    pipe.zrevrank(key, member)
                    pipe.zscore(key, member)
                    rank, now = pipe.execute()
                start = rank + 1 if rank is not None and now == score else self._rank_after(score, member)
                raw = redis.zrevrange(key, start, start + count - 1, withscores=True)
        more = len(raw) == count
        runs: list[tuple[float, list[str]]] = []
        for m, s in raw:
            if runs and runs[-1][0] == s:
                runs[-1][1].append(_text(m))
            else:
                runs.append((s, [_text(m)]))
        by_time = [len(members) <= TIME_ORDERED_TIES and s != by_member_at for s, members in runs]
        if more and by_time[-1]:
            # The last run may go on past this batch: sort it whole, or list it by member.
            s = runs[-1][0]
            if redis.zcount(key, _bound(s), _bound(s)) > TIME_ORDERED_TIES:
                by_time[-1] = False
            else:
                runs[-1] = (s, [_text(m) for m in redis.zrangebyscore(key, _bound(s), _bound(s))])
        wanted = rest_of_run + [m for _, members in runs for m in members]
        stamps = _stamps(redis, list(dict.fromkeys(parse_job_id(m) for m in wanted)))
        entries: list[_Entry] = []

        def order(m: str) -> tuple[str, str]:
            return stamps[parse_job_id(m)], m

        def add(s: float, members: list[str], timed: bool, before: tuple[str, str] | None = None) -> None:
            for m in sorted(members, key=order, reverse=True) if timed else members:
                if before is None or order(m) < before:
                    job_id = parse_job_id(m)
                    entries.append(_Entry(job_id, stamps[job_id], (s, m, stamps[job_id] if timed else None)))

        if rest_of_run:
            add(after[0], rest_of_run, True, before=(after[2], after[1]))
        for (s, members), timed in zip(runs, by_time, strict=True):
            add(s, members, timed)
        return entries, more

    def _rank_after(self, score: float, member: str) -> int:
        """Rank of the first entry after (score, member), which has left the registry."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self.key, _bound(score, True), "+inf")
            pipe.zcount(self.key, _bound(score), _bound(score))
            above, ties = pipe.execute()
        low, high = above, above + ties  # the run of equal scores, members descending
        while low < high:
            middle = (low + high) // 2
            found = self.redis.zrevrange(self.key, middle, middle)
            if not found or _text(found[0]) < member:
                high = middle
            else:
                low = middle + 1
        return int(low)


def _registry_key(queue: JsonQueue, source: str) -> str:
    registry = {
        "scheduled": queue.scheduled_job_registry,
        "deferred": queue.deferred_job_registry,
        "started": queue.started_job_registry,
        "finished": queue.finished_job_registry,
        "failed": queue.failed_job_registry,
        "canceled": queue.canceled_job_registry,
    }[source]
    return str(registry.key)


def _sources(redis: Any, state: State | None, queue_name: str | None, cursor: Cursor) -> list[_Source]:
    names = [queue_name] if queue_name else [q.value for q in QueueName]
    states = [state] if state else list(_STATE_SOURCES)
    kinds = sorted({s for st in states for s in _STATE_SOURCES[st]})
    out: list[_Source] = []
    for name in names:
        queue = get_queue(name, redis)
        for kind in kinds:
            source = f"{name}/{kind}"
            if kind == QUEUE_SOURCE:
                out.append(_ListSource(redis, source, queue.key, cursor.get(source)))
                for key, lane in listed_lanes(redis, name):  # its priorities' and groups' lists
                    lane_source = f"{source}:{lane_queue_name(name, lane)}"
                    out.append(_ListSource(redis, lane_source, key, cursor.get(lane_source)))
            else:
                out.append(_RegistrySource(redis, source, _registry_key(queue, kind), cursor.get(source)))
    return out


@dataclass(frozen=True)
class _Head:
    """A source's next entry in the merge heap: the newest first, then the first source."""

    key: str
    source: int

    def __lt__(self, other: _Head) -> bool:
        return (self.key, -self.source) > (other.key, -other.source)


def _views(
    redis: Any,
    job_ids: list[str],
    state: State | None,
    task: str | None,
    rest: Callable[[Job], bool] | None = None,
    view: Callable[[Job], Any] = describe,
) -> list[Any]:
    """The jobs that still exist and match the filters, as the API shows them (or ``view``), in order.

    In the API's own view, a job set aside unread (app/core/outcomes.py: set_aside) is listed as a
    failure with its recorded cause, from its raw fields; it has no task, so a task filter (or any
    other) leaves it out.
    """
    found: list[tuple[str, Any]] = []
    for job_id, job in zip(job_ids, JsonJob.fetch_many(job_ids, connection=redis), strict=True):
        if job is None:
            found.append((job_id, None))  # gone, or set aside unread: looked up below
            continue
        try:
            if state is not None and state_of(job) is not state:
                continue
            if task is not None and task_name(job) != task:
                continue
            if rest is not None and not rest(job):
                continue
            found.append((job_id, view(job)))
        except DeserializationError:  # not JSON: not written by this service
            found.append((job_id, None))
    if view is not describe or rest is not None or task is not None or state not in (None, State.FAILURE):
        return [v for _, v in found if v is not None]
    doubtful = [
        i for i, v in found if v is None or (v["state"] == State.FAILURE.value and v["error"] is None)
    ]
    set_aside = set_aside_views(redis, doubtful) if doubtful else {}
    views = [set_aside.get(job_id, v) for job_id, v in found]
    return [v for v in views if v is not None]


def list_jobs(
    redis: Any,
    state: State | None,
    task: str | None,
    queue_name: str | None,
    cursor: Cursor | None,
    limit: int,
    *,
    job_filter: JobFilter | None = None,
    view: Callable[[Job], Any] = describe,
    now: float | None = None,
) -> tuple[list[Any], str | None]:
    """One page of jobs, newest first, and the cursor of the next page (None at the end).

    ``job_filter`` adds its argument and time terms (app.core.filtering) to state, task and
    queue; ``view`` is what a matching job is listed as (the API's view by default).
    """
    rest = None
    if job_filter is not None and (job_filter.args or job_filter.since is not None):
        cutoff = job_filter.cutoff(now)
        rest = functools.partial(job_filter.matches_rest, cutoff=cutoff)
    sources = _sources(redis, state, queue_name, cursor or {})
    heap: list[_Head] = []
    for index, source in enumerate(sources):
        source.fill(limit)
        if source.buffer:
            heap.append(_Head(source.buffer[0].key, index))
    heapq.heapify(heap)
    page: list[Any] = []
    listed: set[str] = set()
    budget = max(SCAN_FACTOR * limit, MIN_SCAN)
    while heap and len(page) < limit and budget > 0:
        batch: list[str] = []
        while heap and len(batch) < min(limit - len(page), budget):
            index = heapq.heappop(heap).source
            source = sources[index]
            batch.append(source.take().job_id)
            if not source.buffer and source.more:
                source.fill(limit)
            if source.buffer:
                heapq.heappush(heap, _Head(source.buffer[0].key, index))
        budget -= len(batch)
        fresh = [job_id for job_id in dict.fromkeys(batch) if job_id not in listed]
        listed.update(fresh)
        page.extend(_views(redis, fresh, state, task, rest, view))
    if not heap:
        return page, None
    return page, encode_cursor({s.name: s.position for s in sources if s.position is not None})


def encode_cursor(cursor: Cursor) -> str:
    """The opaque cursor: base64url (unpadded) JSON of each source's position."""
    positions: dict[str, list[Any]] = {}
    for name, (first, member, after) in cursor.items():
        if isinstance(first, float) and not math.isfinite(first):
            positions[name] = [repr(first), member, after]
        else:
            positions[name] = [first, member, after]
    text = json.dumps({"v": 1, "p": positions}, separators=(",", ":"), allow_nan=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> Cursor:
    """The positions in a cursor this module made; ValueError for anything else."""
    if len(raw) > CURSOR_MAX_CHARS:
        raise ValueError("cursor too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
    except RecursionError:  # deeply nested JSON
        raise ValueError("not a listing cursor") from None
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("p"), dict):
        raise ValueError("not a listing cursor")
    queues = {q.value for q in QueueName}
    cursor: Cursor = {}
    for name, position in data["p"].items():
        queue, _, kind = name.partition("/")
        if queue not in queues or not isinstance(position, list) or len(position) != 3:
            raise ValueError(f"unknown source {name!r}")
        first, member, after = position
        if not isinstance(member, str) or not (after is None or isinstance(after, str)):
            raise ValueError(f"bad position of {name}")
        if kind == QUEUE_SOURCE:
            if type(first) is not int or first < 1:
                raise ValueError(f"bad position of {name}")
            cursor[name] = (first, member, after)
        elif kind in REGISTRY_SOURCES:
            if first in ("inf", "-inf"):
                first = float(first)
            if type(first) not in (int, float) or math.isnan(first):
                raise ValueError(f"bad position of {name}")
            cursor[name] = (float(first), member, after)
        else:
            raise ValueError(f"unknown source {name!r}")
    return cursor
