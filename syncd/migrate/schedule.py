"""A vendor-neutral schedule and the one renderer that says who it pages, when.

Migration compares schedules across vendors by what they *do* (who would be paged in every
interval of a horizon), not by how they are configured: the peers' migrators compared configs and
shipped schedules that were an hour off after a daylight-saving change (grafana/oncall#3261,
#4197, #5455; see docs/migration.md). So every vendor's definition is read into this model, and
:func:`render` turns it into final on-call spans.

Time is wall-clock time in the schedule's own zone, as every vendor documents it: a hand-off at
09:00 America/New_York stays at 09:00 local across DST (PagerDuty restrictions "respect the
time_zone parameter"; incident.io working intervals and hand-overs are local ``HH:MM``; vendor
notes, migration.md §4). Turn arithmetic therefore runs on naive local datetimes and each
boundary is converted to UTC once.

Two ways of combining rotations, because the vendors differ (migration.md §4, R6/R7):
- ``precedence=True`` (PagerDuty layers, Spike.sh layers): the highest rotation that has someone
  on call hides the ones below; overrides replace the whole schedule's person.
- ``precedence=False`` (incident.io rotations): every rotation's person is on call at once;
  an override replaces the person of its own rotation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEK = timedelta(days=7)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Window:
    """A recurring local time window in which a rotation is active.

    ``weekday`` 0 (Monday) .. 6 (Sunday) makes it weekly; None repeats it every day. A window may
    run past midnight (PagerDuty restrictions do: ``duration`` up to a day or a week)."""

    weekday: int | None
    start: time
    duration: timedelta

    def __post_init__(self) -> None:
        limit = WEEK if self.weekday is not None else DAY
        if not timedelta(0) < self.duration <= limit:
            raise ValueError(f"window duration {self.duration} must be in (0, {limit}]")
        if self.weekday is not None and not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday {self.weekday} must be 0 (Monday) .. 6 (Sunday)")

    def week_intervals(self) -> list[tuple[timedelta, timedelta]]:
        """The window as offsets from Monday 00:00 local, split where it wraps the week."""
        starts = [self.weekday] if self.weekday is not None else list(range(7))
        tod = timedelta(hours=self.start.hour, minutes=self.start.minute,
                        seconds=self.start.second)
        out: list[tuple[timedelta, timedelta]] = []
        for day in starts:
            a = day * DAY + tod
            b = a + self.duration
            if b <= WEEK:
                out.append((a, b))
            else:
                out.extend([(a, WEEK), (timedelta(0), b - WEEK)])
        return normalize(out)


def normalize(spans: Iterable[tuple[timedelta, timedelta]]) -> list[tuple[timedelta, timedelta]]:
    """Sorted, merged, non-empty intervals."""
    merged: list[tuple[timedelta, timedelta]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


@dataclass(frozen=True, slots=True)
class Rotation:
    """People taking turns. ``users`` are person keys (emails after matching, vendor ids before);
    a None slot is "nobody" (incident.io ``NOBODY``, a Spike.sh gap). ``handovers`` are the turn
    lengths, used in order and cycled (incident.io allows alternating lengths; PagerDuty has one).
    ``anchor`` fixes the phase: the first user's turn starts there (PagerDuty
    ``rotation_virtual_start``, incident.io ``handover_start_at``); it may lie in the past."""

    id: str
    name: str
    users: tuple[str | None, ...]
    anchor: datetime
    handovers: tuple[timedelta, ...]
    windows: tuple[Window, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    # incident.io ``scheduling_mode: fair`` over alternating handovers: "balances workload by
    # considering handover duration", an undocumented order that :func:`render` (which takes
    # turns in order, incident.io's ``sequential``) does not model; conversion refuses it.
    fair: bool = False

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError(f"rotation {self.id}: no users")
        if not self.handovers or any(h <= timedelta(0) for h in self.handovers):
            raise ValueError(f"rotation {self.id}: turn lengths must be positive")
        if self.anchor.tzinfo is None:
            raise ValueError(f"rotation {self.id}: anchor must carry a time zone")

    @property
    def cycle(self) -> timedelta:
        return sum(self.handovers, timedelta(0))


@dataclass(frozen=True, slots=True)
class Override:
    """``user`` is on call in ``[start, end)``. ``rotation_id`` None: for the whole schedule
    (PagerDuty, Spike.sh); otherwise only in that rotation (incident.io). Later overrides win."""

    start: datetime
    end: datetime
    user: str
    rotation_id: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    name: str
    time_zone: str
    rotations: tuple[Rotation, ...]  # lowest precedence first where precedence applies
    precedence: bool = True
    overrides: tuple[Override, ...] = ()
    team: str | None = None
    # A schedule known only by its vendor's rendering (Splunk On-Call, Spike.sh: no rotation
    # definitions to read) is these spans, several people in one where shifts overlap; kept
    # as spans so that nobody is picked out of them (vendor-notes/migration.md §4-§5).
    rendered: tuple[Span, ...] = ()
    # (reason code, sentence) when the reader found something no target can be given and no
    # rendering can check (an incident.io rotation with several concurrent layers): this
    # schedule is refused, the account's other schedules are read and migrated as usual.
    unconvertible: tuple[str, str] | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def people(self) -> set[str]:
        found = {u for r in self.rotations for u in r.users if u is not None}
        found |= {u for s in self.rendered for u in s.users}
        return found | {o.user for o in self.overrides}


@dataclass(frozen=True, slots=True)
class Span:
    """Who the schedule pages in ``[start, end)`` (UTC); an empty set means nobody."""

    start: datetime
    end: datetime
    users: frozenset[str] = field(default_factory=frozenset)


# --------------------------------------------------------------------------- rendering


def _local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def _utc(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone).astimezone(UTC)


def turn_at(rotation: Rotation, at: datetime, zone: ZoneInfo) -> tuple[int, datetime, datetime]:
    """(turn number, local start, local end) of the turn containing ``at``."""
    origin = _local(rotation.anchor, zone)
    elapsed = _local(at, zone) - origin
    cycles = math.floor(elapsed / rotation.cycle)
    start = origin + cycles * rotation.cycle
    number = cycles * len(rotation.handovers)
    for length in rotation.handovers:
        if start + length > origin + elapsed:
            return number, start, start + length
        start += length
        number += 1
    raise AssertionError("unreachable: the cycle covers every instant")


def active(rotation: Rotation, at: datetime, zone: ZoneInfo) -> bool:
    if rotation.start is not None and at < rotation.start:
        return False
    if rotation.end is not None and at >= rotation.end:
        return False
    if not rotation.windows:
        return True
    local = _local(at, zone)
    offset = local - datetime.combine(local.date() - timedelta(days=local.weekday()), time())
    return any(a <= offset < b for w in rotation.windows for a, b in w.week_intervals())


def on_call(rotation: Rotation, at: datetime, zone: ZoneInfo) -> str | None:
    if not active(rotation, at, zone):
        return None
    number, _, _ = turn_at(rotation, at, zone)
    return rotation.users[number % len(rotation.users)]


def boundaries(schedule: Schedule, since: datetime, until: datetime) -> list[datetime]:
    zone = schedule.zone
    points = {since, until}
    for rot in schedule.rotations:
        for edge in (rot.start, rot.end):
            if edge is not None and since < edge < until:
                points.add(edge)
        _, start, _ = turn_at(rot, since, zone)
        end_local = _local(until, zone)
        while start < end_local:
            _, _, start = turn_at(rot, _utc(start, zone), zone)
            points.add(_utc(start, zone))
        if rot.windows:
            day = _local(since, zone).date() - timedelta(days=8)
            last = end_local.date() + timedelta(days=1)
            monday = day - timedelta(days=day.weekday())
            while monday <= last:
                base = datetime.combine(monday, time())
                for w in rot.windows:
                    for a, b in w.week_intervals():
                        points.add(_utc(base + a, zone))
                        points.add(_utc(base + b, zone))
                monday += timedelta(days=7)
    for o in schedule.overrides:
        points.update((o.start, o.end))
    for s in schedule.rendered:
        points.update((s.start, s.end))
    return sorted(p for p in points if since <= p <= until)


def who(schedule: Schedule, at: datetime) -> frozenset[str]:
    """Everyone the schedule pages at the instant ``at``, after precedence and overrides."""
    zone = schedule.zone
    people: dict[str, str | None] = {r.id: on_call(r, at, zone) for r in schedule.rotations}
    covering = [o for o in schedule.overrides if o.start <= at < o.end]
    for o in covering:
        if o.rotation_id is not None and o.rotation_id in people:
            people[o.rotation_id] = o.user
    whole = [o for o in covering if o.rotation_id is None]
    if whole:
        return frozenset({whole[-1].user})
    if schedule.rendered:
        return next((s.users for s in schedule.rendered if s.start <= at < s.end), frozenset())
    if schedule.precedence:
        for rot in reversed(schedule.rotations):
            if people[rot.id] is not None:
                return frozenset({people[rot.id]})  # type: ignore[arg-type]
        return frozenset()
    return frozenset(u for u in people.values() if u is not None)


def render(schedule: Schedule, since: datetime, until: datetime) -> list[Span]:
    """The final schedule over ``[since, until)`` as maximal spans of unchanged on-call."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("render needs aware datetimes")
    points = boundaries(schedule, since, until)
    spans: list[Span] = []
    for a, b in itertools.pairwise(points):
        if b <= a:
            continue
        users = who(schedule, a)
        if spans and spans[-1].users == users and spans[-1].end == a:
            spans[-1] = Span(spans[-1].start, b, users)
        else:
            spans.append(Span(a, b, users))
    return spans


@dataclass(frozen=True, slots=True)
class Difference:
    """An interval in which two renderings page different people (or one pages nobody)."""

    start: datetime
    end: datetime
    source: frozenset[str]
    target: frozenset[str]

    def as_dict(self) -> dict[str, object]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "source": sorted(self.source), "target": sorted(self.target)}


def diff(source: Sequence[Span], target: Sequence[Span]) -> list[Difference]:
    """Every maximal interval where the two renderings disagree; empty when they page alike."""
    points = sorted({s.start for s in (*source, *target)} | {s.end for s in (*source, *target)})
    out: list[Difference] = []
    for a, b in itertools.pairwise(points):
        left, right = _at(source, a), _at(target, a)
        if left == right:
            continue
        if out and out[-1].end == a and (out[-1].source, out[-1].target) == (left, right):
            out[-1] = Difference(out[-1].start, b, left, right)
        else:
            out.append(Difference(a, b, left, right))
    return out


def _at(spans: Sequence[Span], at: datetime) -> frozenset[str]:
    for s in spans:
        if s.start <= at < s.end:
            return s.users
    return frozenset()


def week_windows(rotation: Rotation) -> list[tuple[timedelta, timedelta]]:
    """The rotation's active windows as offsets from Monday 00:00 local (all week if none)."""
    if not rotation.windows:
        return [(timedelta(0), WEEK)]
    return normalize(iv for w in rotation.windows for iv in w.week_intervals())


def subtract(spans: Sequence[tuple[timedelta, timedelta]],
             holes: Sequence[tuple[timedelta, timedelta]]) -> list[tuple[timedelta, timedelta]]:
    out: list[tuple[timedelta, timedelta]] = []
    for a, b in spans:
        pieces = [(a, b)]
        for h0, h1 in holes:
            pieces = [p for x, y in pieces for p in ((x, min(y, h0)), (max(x, h1), y))
                      if p[1] > p[0]]
        out.extend(pieces)
    return normalize(out)


def windows_from_week(spans: Sequence[tuple[timedelta, timedelta]]) -> Iterator[Window]:
    """Weekly windows for week offsets, split at local midnight (incident.io working intervals
    are per weekday ``HH:MM``-``HH:MM``)."""
    for a, b in normalize(spans):
        cursor = a
        while cursor < b:
            day = int(cursor // DAY)
            day_end = (day + 1) * DAY
            piece_end = min(b, day_end)
            tod = cursor - day * DAY
            seconds = int(tod.total_seconds())
            yield Window(day, time(seconds // 3600, seconds % 3600 // 60, seconds % 60),
                         piece_end - cursor)
            cursor = piece_end
