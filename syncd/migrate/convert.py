"""Converting a schedule into what a target vendor can store, and saying what that costs.

Each conversion is classed the way docs/migration.md's table classes it (after the conversion
matrix in vendor-notes/migration.md §5): ``exact`` (the target pages the same people in every
interval), ``lossy`` (it does except for the listed losses), or ``refused`` with a reason code and
a sentence. The check is not a promise: :func:`check` renders source and converted schedule over
the horizon with :mod:`syncd.migrate.schedule` and lists every interval they disagree on, so a
conversion bug shows up as a difference, never as a silent wrong page.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from syncd.migrate.schedule import (
    Difference,
    Override,
    Rotation,
    Schedule,
    Window,
    active,
    boundaries,
    diff,
    normalize,
    render,
    subtract,
    week_windows,
    windows_from_week,
)


class Conversion(enum.Enum):
    EXACT = "exact"
    LOSSY = "lossy"
    MATERIALIZED = "materialized"  # written out as overrides over the horizon
    REFUSED = "refused"


MATERIALIZABLE = frozenset({
    "definition_not_readable", "turn_not_whole_hours", "turn_length_unsupported",
    "alternating_handovers",
    "nobody_slot_unsupported", "layer_dates_with_precedence", "rotation_dates_unsupported",
})
"""Refusals whose rendered on-call the target can still page through overrides (one person
at a time). Concurrent on-call is not among them: overrides would page one of the people."""

MATERIALIZED_ROTATION = "materialized"
MATERIALIZED_ANCHOR = datetime(2024, 1, 1, tzinfo=UTC)  # fixed: the shell's definition is stable


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an object cannot be converted; ``code`` is stable for scripts, ``sentence`` for
    people (it says what to change in the source to make it convertible)."""

    code: str
    sentence: str


@dataclass(frozen=True, slots=True)
class TargetModel:
    """What a vendor's schedule API can express (vendor-notes/migration.md §4)."""

    vendor: str
    precedence: bool  # higher rotations hide lower ones (PagerDuty) or all page at once
    alternating_handovers: bool  # several turn lengths in one rotation (incident.io)
    turn_unit: timedelta  # turn lengths must be whole multiples of this
    window_unit: timedelta  # window edges are kept to this precision
    nobody_slot: bool  # a "nobody" place in the turn order
    per_rotation_overrides: bool  # overrides name a rotation (incident.io) or the schedule
    dated_rotations: bool  # a rotation may start or end on a future date (PagerDuty layers)


PAGERDUTY = TargetModel(
    vendor="pagerduty", precedence=True, alternating_handovers=False,
    turn_unit=timedelta(seconds=1), window_unit=timedelta(seconds=1), nobody_slot=False,
    per_rotation_overrides=False, dated_rotations=True,
)
# incident.io's REST API documents no "nobody" slot (the NOBODY user belongs to its MCP tools,
# vendor-notes/migration.md §5 R12), so the client never writes one.
INCIDENTIO = TargetModel(
    vendor="incidentio", precedence=False, alternating_handovers=True,
    turn_unit=timedelta(hours=1), window_unit=timedelta(minutes=1), nobody_slot=False,
    per_rotation_overrides=True, dated_rotations=False,
)
TARGETS = {m.vendor: m for m in (PAGERDUTY, INCIDENTIO)}


@dataclass(frozen=True, slots=True)
class ScheduleConversion:
    source: Schedule
    klass: Conversion
    target: Schedule | None = None
    losses: tuple[str, ...] = ()
    refusal: Refusal | None = None
    notes: tuple[str, ...] = field(default=())


def refuse(source: Schedule, code: str, sentence: str) -> ScheduleConversion:
    return ScheduleConversion(source, Conversion.REFUSED, refusal=Refusal(code, sentence))


def convert(source: Schedule, target: TargetModel, *, now: datetime) -> ScheduleConversion:
    """The source schedule as the target vendor would store it from ``now`` on, or why it
    cannot be. Layers that ended before ``now`` are left out (they page nobody any more), and a
    start date in the past is only a phase, which the rotation's anchor already keeps."""
    if source.unconvertible is not None:
        return refuse(source, *source.unconvertible)
    ended = [r.name for r in source.rotations if r.end is not None and r.end <= now]
    live = tuple(
        replace(r, start=None) if r.start is not None and r.start <= now else r
        for r in source.rotations if r.end is None or r.end > now
    )
    source = replace(source, rotations=live)
    if ended and not live:
        return refuse(source, "all_layers_ended",
                      f"every layer of {source.name!r} has ended, so it pages nobody; there is "
                      "nothing to migrate")
    if not source.rotations:
        return refuse(source, "definition_not_readable",
                      f"{source.name!r} is known only by who it has on call (the source's API "
                      "documents no rotation definitions)")
    # Before any refusal that materializes: that renders in syncd's (sequential) order.
    for rot in source.rotations:
        if rot.fair:
            return refuse(source, "fair_scheduling_unsupported",
                          f"rotation {rot.name!r} alternates turn lengths "
                          f"({', '.join(str(h) for h in rot.handovers)}) scheduled 'fair', "
                          "an order incident.io does not document, so syncd can neither "
                          "render it nor check a copy; set its scheduling mode to "
                          "'sequential' in the source, or migrate it by hand")
    for rot in source.rotations:
        if not target.dated_rotations and (rot.start is not None or rot.end is not None):
            return refuse(source, "rotation_dates_unsupported",
                          f"rotation {rot.name!r} starts or ends on a future date, which "
                          f"{target.vendor}'s schedule API cannot express; migrate after "
                          "that date or remove the date in the source")
        for turn in rot.handovers:
            if turn % target.turn_unit:
                return refuse(source, "turn_not_whole_hours" if target.turn_unit
                              == timedelta(hours=1) else "turn_length_unsupported",
                              f"rotation {rot.name!r} hands over every {turn}, and "
                              f"{target.vendor} only takes turns in whole "
                              f"{_unit(target.turn_unit)}; change the turn length in the source")
        if len(set(rot.handovers)) > 1 and not target.alternating_handovers:
            return refuse(source, "alternating_handovers",
                          f"rotation {rot.name!r} alternates turn lengths "
                          f"({', '.join(str(h) for h in rot.handovers)}); {target.vendor} "
                          "has one turn length per layer")
        if None in rot.users and not target.nobody_slot:
            return refuse(source, "nobody_slot_unsupported",
                          f"rotation {rot.name!r} has a 'nobody' place in its turn order, "
                          f"which {target.vendor} cannot express")
    losses: list[str] = []
    rotations = [_single_handover(r) for r in source.rotations]
    if source.precedence and not target.precedence:
        flattened = _flatten(source, rotations)
        if isinstance(flattened, ScheduleConversion):
            return flattened
        rotations, dropped = flattened
        notes = tuple(f"layer {name!r} is hidden by higher layers at all times; not created"
                      for name in dropped)
    elif not source.precedence and target.precedence:
        overlap = _overlap(rotations)
        if overlap:
            return refuse(source, "concurrent_oncall_into_single_schedule",
                          f"rotations {overlap[0]!r} and {overlap[1]!r} are on call at the "
                          f"same time; {target.vendor} pages one person per schedule (split "
                          "the source into one schedule per rotation, or make their working "
                          "hours disjoint)")
        notes = ()
    else:
        notes = ()
    notes += tuple(f"layer {name!r} ended before now; not migrated" for name in ended)
    rotations, rounded = _round_windows(rotations, target.window_unit)
    if rounded:
        losses.append(f"window edges rounded to whole {_unit(target.window_unit)}: "
                      + ", ".join(rounded))
    overrides = _overrides(source, rotations, target, losses)
    converted = Schedule(
        id=source.id, name=source.name, time_zone=source.time_zone,
        rotations=tuple(rotations), precedence=target.precedence, overrides=tuple(overrides),
        team=source.team,
    )
    klass = Conversion.LOSSY if losses else Conversion.EXACT
    return ScheduleConversion(source, klass, converted, tuple(losses), notes=notes)


def materialize(source: Schedule, target: TargetModel, refusal: Refusal, *, now: datetime,
                horizon: timedelta) -> ScheduleConversion:
    """The source's rendered on-call over the horizon as overrides on a one-person shell
    schedule (vendor-notes/migration.md §5: "exact for the horizon, but it stops being a
    rotation and needs a daemon to extend it"). The dual-run ``[[oncall]]`` mapping that
    ``syncd migrate verify`` writes is what keeps it extended: the daemon repairs drift on the
    target with overrides as time passes."""
    placeholder = next(iter([u for r in source.rotations for u in r.users if u is not None]
                            + [o.user for o in source.overrides]
                            + [u for s in source.rendered for u in sorted(s.users)]), None)
    if placeholder is None:
        return refuse(source, refusal.code, refusal.sentence + "; and nobody is on call in it "
                      "to materialize")
    anchor = source.rotations[0].anchor if source.rotations else MATERIALIZED_ANCHOR
    shell = Rotation(id=MATERIALIZED_ROTATION, name=f"{source.name} (materialized by syncd)",
                     users=(placeholder,), anchor=anchor, handovers=(timedelta(days=7),))
    overrides: list[Override] = []
    nobody = crowded = timedelta(0)
    for span in render(source, now, now + horizon):
        if len(span.users) == 1:
            overrides.append(Override(
                span.start, span.end, next(iter(span.users)),
                MATERIALIZED_ROTATION if target.per_rotation_overrides else None))
        elif not span.users:
            nobody += span.end - span.start
        else:
            crowded += span.end - span.start
    # What the source shows past the horizon counts too: the dual run extends the materialized
    # schedule, and a second shift starting on day 40 of a 28-day plan would page one person.
    crowded += sum((s.end - max(s.start, now + horizon) for s in source.rendered
                    if len(s.users) > 1 and s.end > now + horizon), timedelta(0))
    if crowded:
        return refuse(source, "concurrent_oncall_into_single_schedule",
                      f"{source.name!r} pages several people at once for {crowded} of what "
                      f"the source shows ({refusal.code} as well); overrides page one "
                      "person, and the shell's own person where none is written, so it is not "
                      "materialized (split the source into one schedule per rotation)")
    losses: list[str] = []
    if nobody:
        losses.append(f"the source pages nobody for {nobody} of the next {horizon.days} days; "
                      f"the materialized schedule pages {placeholder} then")
    target_schedule = Schedule(
        id=source.id, name=source.name, time_zone=source.time_zone, rotations=(shell,),
        precedence=target.precedence, overrides=tuple(overrides), team=source.team)
    notes = (f"materialized because {refusal.code}: {refusal.sentence}",
             f"written out as {len(overrides)} override(s) for the next {horizon.days} days; "
             "the dual-run [[oncall]] mapping (syncd migrate verify --write-config) keeps "
             "them extended")
    return ScheduleConversion(source, Conversion.MATERIALIZED, target_schedule, tuple(losses),
                              notes=notes)


def check(conversion: ScheduleConversion, since: datetime, until: datetime
          ) -> list[Difference]:
    """Render source and converted schedule over the horizon; every interval they disagree."""
    if conversion.target is None:
        return []
    return diff(render(conversion.source, since, until),
                render(conversion.target, since, until))


def _unit(unit: timedelta) -> str:
    if unit >= timedelta(hours=1):
        return "hours"
    if unit >= timedelta(minutes=1):
        return "minutes"
    return "seconds"


def _single_handover(rot: Rotation) -> Rotation:
    """One repeated turn length is one handover (``(24h, 24h)`` == ``(24h,)``)."""
    if len(set(rot.handovers)) == 1 and len(rot.handovers) > 1:
        return replace(rot, handovers=rot.handovers[:1])
    return rot


def _flatten(source: Schedule, rotations: list[Rotation]
             ) -> tuple[list[Rotation], list[str]] | ScheduleConversion:
    """Precedence -> concurrent rotations: a lower layer keeps only the hours no higher layer
    covers (vendor-notes/migration.md §5 R6). Exact only while every higher layer always has
    someone on call in its windows and its dates do not cut the horizon."""
    out: list[Rotation] = []
    dropped: list[str] = []
    for i, rot in enumerate(rotations):
        higher = rotations[i + 1:]
        for h in higher:
            if h.end is not None or h.start is not None:
                return refuse(source, "layer_dates_with_precedence",
                              f"layer {h.name!r} starts or ends on a date and hides layer "
                              f"{rot.name!r} only from then on; the target has no layer "
                              "precedence to express that (end the layer in the source or "
                              "migrate after its end)")
        holes = normalize(iv for h in higher for iv in week_windows(h))
        kept = subtract(week_windows(rot), holes)
        if not kept:
            dropped.append(rot.name)
            continue
        if kept == week_windows(rot):
            out.append(rot)
        else:
            out.append(replace(rot, windows=tuple(windows_from_week(kept))))
    return out, dropped


def _overlap(rotations: list[Rotation]) -> tuple[str, str] | None:
    """Two rotations on call at the same time. Dated ones (incident.io rotation versions:
    one ends where the next ``effective_from`` begins) overlap only where their dates do."""
    for i, a in enumerate(rotations):
        for b in rotations[i + 1:]:
            if _dates_apart(a, b):
                continue
            if subtract(week_windows(a), subtract(week_windows(a), week_windows(b))):
                return a.name, b.name
    return None


def _dates_apart(a: Rotation, b: Rotation) -> bool:
    return ((a.end is not None and b.start is not None and a.end <= b.start)
            or (b.end is not None and a.start is not None and b.end <= a.start))


def _round_windows(rotations: list[Rotation], unit: timedelta
                   ) -> tuple[list[Rotation], list[str]]:
    out: list[Rotation] = []
    rounded: list[str] = []
    for rot in rotations:
        windows: list[Window] = []
        for w in rot.windows:
            start = w.start.replace(second=0) if unit >= timedelta(minutes=1) else w.start
            duration = (w.duration // unit) * unit
            if (start, duration) != (w.start, w.duration):
                rounded.append(rot.name)
            if duration > timedelta(0):
                windows.append(Window(w.weekday, start, duration))
        out.append(replace(rot, windows=tuple(windows)))
    return out, sorted(set(rounded))


def _overrides(source: Schedule, rotations: list[Rotation], target: TargetModel,
               losses: list[str]) -> list[Override]:
    """Overrides in the target's form. Whole-schedule overrides onto per-rotation targets go to
    the rotation active at that time (after flattening at most one is), flattened first so none
    overlap: incident.io overrides "never overlap within a layer" (vendor-notes/migration.md §5
    R13) and a new one carves its neighbours, so overlapping ones written as they are would,
    on the next re-run, recreate the earlier override over the later one that must win."""
    out: list[Override] = []
    overrides = list(source.overrides)
    if target.per_rotation_overrides:
        overrides = [o for o in overrides if o.rotation_id is not None] + _last_wins(
            [o for o in overrides if o.rotation_id is None])
    for o in overrides:
        if target.per_rotation_overrides and o.rotation_id is None:
            pieces = _split_by_rotation(source, rotations, o)
            covered = sum((p.end - p.start for p in pieces), timedelta(0))
            if covered < o.end - o.start:
                losses.append(f"override {o.start.isoformat()}..{o.end.isoformat()} for "
                              f"{o.user}: {o.end - o.start - covered} of it falls outside "
                              "every rotation's hours, where the target has no rotation to "
                              "put it on")
            out.extend(pieces)
        elif not target.per_rotation_overrides and o.rotation_id is not None:
            shared = _shared(source, rotations, o)
            if shared:
                losses.append(f"override {o.start.isoformat()}..{o.end.isoformat()} for "
                              f"{o.user}: {shared} of it falls in another rotation's hours, "
                              f"where the source pages both and {target.vendor} pages only "
                              "the override's person (one person per schedule)")
            out.append(replace(o, rotation_id=None))
        else:
            out.append(o)
    return out


def _last_wins(overrides: list[Override]) -> list[Override]:
    """Whole-schedule overrides as disjoint pieces, the later one winning where they overlap
    (PagerDuty and Spike.sh: the last created / most recent override wins, migration.md §4)."""
    points = sorted({t for o in overrides for t in (o.start, o.end)})
    pieces: list[Override] = []
    for a, b in itertools.pairwise(points):
        top = next((o for o in reversed(overrides) if o.start <= a < o.end), None)
        if top is None:
            continue
        if pieces and pieces[-1].end == a and pieces[-1].user == top.user:
            pieces[-1] = replace(pieces[-1], end=b)
        else:
            pieces.append(replace(top, start=a, end=b))
    return pieces


def _shared(source: Schedule, rotations: list[Rotation], o: Override) -> timedelta:
    """How long a per-rotation override runs while another rotation is on call. incident.io
    overrides replace the person of their own rotation only ("entries are returned for every
    rotation", migration.md §4), so there both people are paged; a whole-schedule override
    (PagerDuty) pages its person alone."""
    shadow = replace(source, rotations=tuple(rotations), overrides=())
    total = timedelta(0)
    for a, b in itertools.pairwise(boundaries(shadow, o.start, o.end)):
        if b > a and any(r.id != o.rotation_id and active(r, a, shadow.zone)
                         for r in rotations):
            total += b - a
    return total


def _split_by_rotation(source: Schedule, rotations: list[Rotation], o: Override
                       ) -> list[Override]:
    shadow = replace(source, rotations=tuple(rotations), overrides=())
    points = boundaries(shadow, o.start, o.end)
    pieces: list[Override] = []
    for a, b in itertools.pairwise(points):
        owner = next((r for r in reversed(rotations) if active(r, a, shadow.zone)), None)
        if owner is None or b <= a:
            continue
        if pieces and pieces[-1].rotation_id == owner.id and pieces[-1].end == a:
            pieces[-1] = replace(pieces[-1], end=b)
        else:
            pieces.append(Override(a, b, o.user, owner.id, o.id))
    return pieces
