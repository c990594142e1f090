"""When a schedule fires: cron (5 fields, or 6 with seconds first) in an IANA time zone, or intervals.

Pure functions of explicit times: nothing here reads the clock, so a test states ``after``
and gets the same answer on any host, in any season.

A cron expression is evaluated on the zone's wall clock (croniter over naive local times),
then each wall-clock time is placed on the UTC time line:

- a time the zone skips (spring forward: 02:30 on 2026-03-08 in America/New_York) fires once,
  at the first valid instant after the gap (03:00 EDT), however many of its times fell in it;
- a time the zone repeats (fall back: 01:30 on 2026-11-01 in New York) fires once, at its first
  occurrence, unless the hour field is a wildcard (``*`` or ``*/n``): such a schedule fires
  in every real hour, the repeated one included (Vixie cron's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

#: Wall-clock times a cron search looks at before giving up (a cron that never fires, say).
_SEARCH_LIMIT = 100_000


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError naming it when there is no such zone."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as 'America/New_York'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}: give an IANA name such as 'America/New_York'"
        ) from None


#: Cron's nicknames, stored as the 5 fields they stand for (``@reboot`` has no meaning here).
CRON_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def check_cron(expr: str) -> str:
    """``expr`` normalised (single spaces; a nickname such as ``@daily`` as its 5 fields) if it is a
    cron expression of 5 fields, or 6 with seconds first, that fires at least once; ValueError saying
    what is wrong otherwise."""
    if not isinstance(expr, str):
        raise ValueError("a cron expression is a string")
    nickname = expr.strip().lower()
    if nickname.startswith("@"):
        if nickname not in CRON_NICKNAMES:
            raise ValueError(
                f"unknown cron nickname {expr!r}: give one of {', '.join(sorted(CRON_NICKNAMES))} or 5 fields"
            )
        return CRON_NICKNAMES[nickname]
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r} has {len(fields)} fields: give 5 (minute hour day month weekday) "
            "or 6 (second first)"
        )
    text = " ".join(fields)
    if not croniter.is_valid(text, second_at_beginning=len(fields) == 6):
        raise ValueError(f"invalid cron expression {expr!r}")
    try:
        _iter(text, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterError, StopIteration):
        raise ValueError(f"cron expression {expr!r} never fires") from None
    return text


def _iter(expr: str, base: datetime) -> croniter:
    return croniter(expr, base, second_at_beginning=len(expr.split()) == 6)


def _hour_is_wildcard(expr: str) -> bool:
    fields = expr.split()
    hour = fields[2] if len(fields) == 6 else fields[1]
    return hour == "*" or hour.startswith("*/")


def _offset(tz: ZoneInfo, when: datetime) -> timedelta:
    return when.astimezone(tz).utcoffset() or timedelta(0)


def _gap_end(tz: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first instant in (low, high] (UTC, whole seconds) whose offset is ``high``'s: where a gap ends."""
    target = _offset(tz, high)
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(tz, datetime.fromtimestamp(mid, UTC)) == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def instants(expr: str, tz: ZoneInfo, wall: datetime) -> list[datetime]:
    """The UTC instants at which the naive wall-clock time ``wall`` of ``tz`` fires ``expr``."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    u0, u1 = first.astimezone(UTC), second.astimezone(UTC)
    if u0 == u1:
        return [u0]
    if u0.astimezone(tz).replace(tzinfo=None) != wall:
        # Skipped by the zone: fold=1 reads it with the later offset (an earlier instant), fold=0
        # with the earlier one; the gap ends between the two.
        low, high = min(u0, u1), max(u0, u1)
        return [_gap_end(tz, low, high)]
    # Repeated: once at the first occurrence, or in both real hours for an hourly wildcard.
    return sorted({u0, u1}) if _hour_is_wildcard(expr) else [min(u0, u1)]


def next_fire(expr: str, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first instant (aware UTC) strictly after ``after`` at which ``expr`` fires in ``tz``;
    None if it never fires again."""
    after = after.astimezone(UTC)
    # Clocks going back within the next hours: wall times before ``after``'s can fire after it.
    back = _offset(tz, after) - _offset(tz, after + timedelta(hours=3))
    back = max(back, timedelta(0))
    local = after.astimezone(tz).replace(tzinfo=None)
    it = _iter(expr, local - back)
    best: datetime | None = None
    for _ in range(_SEARCH_LIMIT):
        try:
            wall = it.get_next(datetime)
        except (CroniterError, StopIteration):
            return best
        for instant in instants(expr, tz, wall):
            if instant > after and (best is None or instant < best):
                best = instant
        if best is not None and wall >= local + back:
            return best
    return best


def fires(expr: str, tz: ZoneInfo, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """The instants in (``after``, ``until``] at which ``expr`` fires in ``tz``, at most ``limit``
    (the earliest ones)."""
    out: list[datetime] = []
    current = after
    while len(out) < limit:
        nxt = next_fire(expr, tz, current)
        if nxt is None or nxt > until:
            break
        out.append(nxt)
        current = nxt
    return out


@dataclass(frozen=True)
class Cadence:
    """When a schedule fires: ``cron`` in ``timezone``, or every ``interval`` seconds from ``anchor``.

    Ticks are whole UNIX seconds. An interval's ticks are ``anchor + k * interval``.
    """

    cron: str | None = None
    interval: int | None = None
    timezone: str = "UTC"
    anchor: int = 0

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a schedule needs exactly one of cron or interval")
        if self.interval is not None and (isinstance(self.interval, bool) or self.interval < 1):
            raise ValueError("interval must be a whole number of seconds, at least 1")
        zone(self.timezone)
        if self.cron is not None:
            check_cron(self.cron)

    def next_after(self, after: int) -> int | None:
        """The first tick strictly after the UNIX second ``after``."""
        if self.interval is not None:
            if after < self.anchor:
                return self.anchor
            return self.anchor + ((after - self.anchor) // self.interval + 1) * self.interval
        assert self.cron is not None
        found = next_fire(self.cron, zone(self.timezone), datetime.fromtimestamp(after, UTC))
        return int(found.timestamp()) if found else None

    def ticks(self, after: int, until: int, limit: int) -> list[int]:
        """The ticks in (``after``, ``until``], the earliest ``limit`` of them."""
        out: list[int] = []
        current = after
        while len(out) < limit:
            nxt = self.next_after(current)
            if nxt is None or nxt > until:
                break
            out.append(nxt)
            current = nxt
        return out

    def count(self, after: int, until: int, limit: int) -> int:
        """How many ticks fall in (``after``, ``until``], counting at most ``limit``."""
        if self.interval is not None:
            first = self.next_after(after)
            if first is None or first > until:
                return 0
            return min(limit, (until - first) // self.interval + 1)
        return len(self.ticks(after, until, limit))
