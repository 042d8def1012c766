"""On-call arithmetic every simulator shares: rotations, layers, restrictions, override merging.

A schedule is stored as definitions, the way vendors store them, and rendered on demand for any
window: a :class:`Layer` is a list of users handing over every ``turn`` from a ``start`` in a
time zone (handovers keep their wall-clock time across DST, as PagerDuty layers and incident.io
rotations do), optionally limited to :class:`Restriction` windows (daily or weekly, local time);
:func:`final` stacks layers (a later layer wins where it has someone on call), lays overrides on
top (the highest ranked override wins where several overlap) and cuts the result into
:class:`Span` records. The vendors differ only in how adjacent spans join (``joinable``) and how
overrides rank, so each simulator passes those and keeps its own JSON.

Every seeded rotation hands over relative to :data:`EPOCH`, so the four simulators and the docs
agree on who is on call when (docs/oncall.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

EPOCH = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
"""A Monday, 09:00 UTC: the first handover of every seeded rotation."""


def _aware(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in ``zone`` as an aware UTC datetime."""
    return local.replace(tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Restriction:
    """The layer is on call only inside these windows: every day (``weekday`` None) or every
    week on ``weekday`` (0 = Monday), from ``start`` local time for ``duration``."""

    start: time
    duration: timedelta
    weekday: int | None = None

    def windows(self, since: datetime, until: datetime, zone: ZoneInfo
                ) -> Iterator[tuple[datetime, datetime]]:
        """Windows overlapping [since, until), with their true bounds."""
        step = timedelta(days=1 if self.weekday is None else 7)
        day: date = since.astimezone(zone).date() - timedelta(days=7) - step
        if self.weekday is not None:
            day += timedelta(days=(self.weekday - day.weekday()) % 7)
        while True:
            local = datetime.combine(day, self.start)
            a, b = _aware(local, zone), _aware(local + self.duration, zone)
            if a >= until:
                return
            if b > since:
                yield a, b
            day += step


@dataclass(frozen=True, slots=True)
class Layer:
    """A rotation: ``users`` take turns of ``turn`` from ``start`` (wall clock in ``zone``).

    ``start`` only fixes the phase (PagerDuty's ``rotation_virtual_start``, which may lie before
    the layer exists); ``begins``/``ends`` bound when the layer puts anyone on call at all
    (PagerDuty's layer ``start`` and ``end``, incident.io's rotation versions
    ``effective_from``; None = unbounded). ``cycle`` (incident.io ``handovers`` with several
    entries) makes the turn lengths alternate in that order, repeating; it replaces ``turn``
    when set."""

    users: tuple[str, ...]
    turn: timedelta
    start: datetime = EPOCH
    zone: str = "UTC"
    restrictions: tuple[Restriction, ...] = ()
    begins: datetime | None = None
    ends: datetime | None = None
    cycle: tuple[timedelta, ...] = ()

    def shift_at(self, at: datetime) -> tuple[str, datetime, datetime]:
        """(user, handover, next handover) of the rotation turn holding ``at``."""
        zone = ZoneInfo(self.zone)
        anchor = self.start.astimezone(zone).replace(tzinfo=None)
        local = at.astimezone(zone).replace(tzinfo=None)
        lengths = self.cycle or (self.turn,)
        period = sum(lengths, timedelta(0))
        rounds = (local - anchor) // period
        begin = anchor + rounds * period
        index = rounds * len(lengths)
        for length in lengths:
            if begin + length > local:
                return (self.users[index % len(self.users)], _aware(begin, zone),
                        _aware(begin + length, zone))
            begin += length
            index += 1
        raise AssertionError("unreachable: a period covers every instant")

    def turns(self, since: datetime, until: datetime) -> Iterator[tuple[str, datetime, datetime]]:
        """Rotation turns overlapping [since, until), restrictions ignored, true bounds."""
        t = since
        while t < until:
            user, a, b = self.shift_at(t)
            yield user, a, b
            t = b

    def live(self, at: datetime) -> bool:
        """Inside the version's bounds (always, for a rotation without versions)."""
        return ((self.begins is None or at >= self.begins)
                and (self.ends is None or at < self.ends))

    def on_call(self, at: datetime) -> tuple[str, datetime] | None:
        """(user, start of their turn) when the layer has someone on call at ``at``."""
        if not self.live(at):
            return None
        user, start, _end = self.shift_at(at)
        if self.restrictions and not any(
                a <= at < b for r in self.restrictions
                for a, b in r.windows(at, at + timedelta(microseconds=1), ZoneInfo(self.zone))):
            return None
        return user, start

    def edges(self, since: datetime, until: datetime) -> set[datetime]:
        """Every handover, restriction edge and begin/end bound strictly inside (since, until)."""
        out = {b for _u, _a, b in self.turns(since, until)}
        out.update(t for t in (self.begins, self.ends) if t is not None)
        zone = ZoneInfo(self.zone)
        for r in self.restrictions:
            for a, b in r.windows(since, until, zone):
                out.update((a, b))
        return {t for t in out if since < t < until}


class OverrideLike(Protocol):
    """What :func:`final` reads from a simulator's own override record."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Span:
    """Who is on call from ``start`` to ``end``: ``override`` is the override record covering it
    (None for the rotation), ``handover`` says the span begins at a rotation handover."""

    user: str | None
    start: datetime
    end: datetime
    override: Any = None
    handover: bool = False


def same_source(prev: Span, nxt: Span) -> bool:
    """Join spans of one user from the same override, or both from the rotation."""
    return prev.user == nxt.user and prev.override is nxt.override


def final(layers: Sequence[Layer], overrides: Iterable[Any], since: datetime,
          until: datetime, *, user_of: Callable[[Any], str],
          rank: Callable[[Any], Any] = lambda o: 0,
          joinable: Callable[[Span, Span], bool] = same_source) -> list[Span]:
    """The final schedule over [since, until), clipped to it: the last layer with someone on call
    wins, an override covering a moment wins over the layers (the highest ``rank`` among
    overlapping overrides), and adjacent spans are joined where ``joinable`` says so."""
    covering = [o for o in overrides if o.end > since and o.start < until]
    cuts = {since, until}
    for layer in layers:
        cuts |= layer.edges(since, until)
    cuts.update(t for o in covering for t in (o.start, o.end) if since < t < until)
    spans: list[Span] = []
    for a, b in itertools.pairwise(sorted(cuts)):
        over = [o for o in covering if o.start <= a < o.end]
        if over:
            top = max(over, key=rank)
            span = Span(user_of(top), a, b, override=top)
        else:
            span = Span(None, a, b)
            for layer in reversed(layers):
                found = layer.on_call(a)
                if found is not None:
                    span = Span(found[0], a, b, handover=found[1] == a)
                    break
        if spans and spans[-1].end == a and joinable(spans[-1], span):
            spans[-1] = replace(spans[-1], end=b)
        else:
            spans.append(span)
    return spans
