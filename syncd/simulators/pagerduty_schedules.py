"""PagerDuty schedules and escalation policies as the simulator stores them: real definitions.

A schedule is what ``POST``/``PUT /schedules`` accept (rest-openapiv3.json ``Schedule``,
``ScheduleLayer``, ``Restriction``; vendor-notes/pagerduty.md §5.9, migration.md §4): a
``time_zone`` (IANA), ordered layers with ``start``/``end``, ``users``,
``rotation_virtual_start``, ``rotation_turn_length_seconds`` and ``restrictions`` read in the
schedule's zone, plus overrides. Rendering is :mod:`syncd.simulators.oncall`'s: a later layer hides
an earlier one where it has someone on call ("the lowest layer always takes precedence", the
layer listed last in a POST/PUT), overrides lie on top and the last created one wins.

Layer order (migration.md §1.7, PagerDuty/public-support-scripts ``schedule_layer_reorganizer``:
"GET requests for schedules show schedule layers in reverse order to PUT and POST requests"):
the simulator stores layers in request order, lowest precedence first, and every answer lists
them reversed, the highest first.

Restrictions "respect the ``time_zone`` parameter of the request" (spec ``ScheduleLayer``): a
schedule read with another zone shows its restrictions converted into that zone at today's
offset, which is why a reader must ask in the schedule's own zone (the peers' DST bug class).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field

from syncd.simulators.base import parse_time
from syncd.simulators.oncall import Layer, Restriction, Span, final
from syncd.simulators.validation import (
    Body,
    DateTime,
    Query,
    Ref,
    Text,
    TimeZone,
    Unmodelled,
)

API = "https://api.pagerduty.com"
WEB = "https://syncd-sim.pagerduty.com"

DAY = 86_400
WEEK = 7 * DAY
YEAR = 365 * DAY  # the longest turn (Okta's PagerDuty connector doc, migration.md §4)
MAX_LOOPS = 9  # num_loops 0..9 (syncd.migrate.policy.PAGERDUTY_MAX_LOOPS)
MAX_TARGETS = 10  # EscalationRule.targets maxItems
DEFAULT_RANGE = timedelta(weeks=2)  # since/until default to 2 weeks from the other (spec)


def _time_of_day(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?", value):
        raise ValueError("must be a time of day HH:mm:ss")
    return value


TimeOfDay = Annotated[str, AfterValidator(_time_of_day)]


class UserRef(Ref):
    id: str
    type: Literal["user_reference"]


class TeamRef(Ref):
    id: str
    type: Literal["team_reference"]


class LayerUser(Body):
    user: UserRef


class RestrictionBody(Body):
    """A daily or weekly window; ``start_day_of_week`` 1 (Monday) .. 7, weekly only (spec)."""

    type: Literal["daily_restriction", "weekly_restriction"]
    start_time_of_day: TimeOfDay
    duration_seconds: int = Field(gt=0)
    start_day_of_week: int | None = Field(None, ge=1, le=7)


class LayerBody(Body):
    id: str | None = None
    name: str | None = None
    start: DateTime
    end: DateTime | None = None
    users: list[LayerUser] = Field(min_length=1)
    rotation_virtual_start: DateTime
    rotation_turn_length_seconds: int = Field(gt=0, le=YEAR)
    restrictions: list[RestrictionBody] = []
    # Read-only fields of a GET answer, which clients send back when they edit one
    # (the public-support-scripts reorganizer PUTs what it GETs).
    rendered_schedule_entries: list[Any] | None = None
    rendered_coverage_percentage: float | None = None


class ScheduleBody(Ref):
    type: Literal["schedule"]
    id: str | None = None
    name: str | None = None
    time_zone: TimeZone
    description: str | None = None
    schedule_layers: list[LayerBody] = Field(min_length=1)
    teams: list[TeamRef] = []
    # read-only parts of an answer, tolerated and ignored
    users: list[Any] | None = None
    escalation_policies: list[Any] | None = None
    final_schedule: dict[str, Any] | None = None
    overrides_subschedule: dict[str, Any] | None = None


class ScheduleWrite(Body):
    """POST /schedules, PUT /schedules/{id}, POST /schedules/preview."""

    schedule: ScheduleBody


class TargetRef(Ref):
    id: str
    type: Literal["user_reference", "schedule_reference", "user", "schedule"]


STRATEGY = Literal["round_robin", "assign_to_everyone"]


class StrategyRef(Ref):
    type: STRATEGY


class RuleBody(Body):
    id: str | None = None
    escalation_delay_in_minutes: int = Field(ge=0)
    targets: list[TargetRef] = Field(min_length=1, max_length=MAX_TARGETS)
    # The spec's schema says a string, its request examples an object {"type": ...}, and the
    # EscalationPolicy example a list of one such object: all three.
    escalation_rule_assignment_strategy: (STRATEGY | StrategyRef
                                          | Annotated[list[StrategyRef],
                                                      Field(min_length=1, max_length=1)]
                                          | None) = None

    @property
    def strategy(self) -> str:
        """PagerDuty's default is everyone on the rule."""
        raw = self.escalation_rule_assignment_strategy
        if isinstance(raw, list):
            raw = raw[0]
        return (raw.type if isinstance(raw, StrategyRef) else raw) or "assign_to_everyone"


class PolicyBody(Ref):
    type: Literal["escalation_policy"]
    id: str | None = None
    name: Text
    description: str | None = None
    num_loops: int = Field(0, ge=0, le=MAX_LOOPS)
    on_call_handoff_notifications: Literal["if_has_services", "always"] | None = None
    escalation_rules: list[RuleBody] = Field(min_length=1)
    teams: list[TeamRef] = Field([], max_length=1)
    services: list[Any] | None = None  # read-only


class PolicyWrite(Body):
    """POST /escalation_policies, PUT /escalation_policies/{id}."""

    escalation_policy: PolicyBody


class ScheduleQuery(Query):
    """GET /schedules/{id}: ``time_zone`` defaults to the schedule's own (spec)."""

    time_zone: TimeZone | None = None
    since: DateTime | None = None
    until: DateTime | None = None
    overflow: bool | None = None
    include_next_oncall_for_user: Unmodelled = None


class SchedulesQuery(Query):
    limit: int | None = None
    offset: int | None = None
    total: bool | None = None
    query: str | None = None
    time_zone: TimeZone | None = None
    include: list[Literal["schedule_layers", "overrides_subschedule", "final_schedule"]] = []
    team_ids: list[str] = []
    since: DateTime | None = None
    until: DateTime | None = None
    include_next_oncall_for_user: Unmodelled = None


class PreviewQuery(Query):
    since: DateTime | None = None
    until: DateTime | None = None
    overflow: bool | None = None


class PolicyQuery(Query):
    include: list[Literal["services", "teams", "targets",
                          "escalation_rule_assignment_strategies"]] = []


# ---------------------------------------------------------------------------------------------
# stored definitions
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Override:
    id: str
    user_id: str
    start: datetime
    end: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class ScheduleLayer:
    """One layer as PagerDuty stores it; ``restrictions`` are local to the schedule's zone."""

    id: str
    name: str
    start: datetime
    users: tuple[str, ...]
    virtual_start: datetime
    turn_seconds: int
    restrictions: tuple[Restriction, ...] = ()
    end: datetime | None = None

    def rotation(self, zone: str) -> Layer:
        return Layer(self.users, timedelta(seconds=self.turn_seconds), self.virtual_start, zone,
                     self.restrictions, begins=self.start, ends=self.end)


def _pd_joinable(prev: Span, nxt: Span) -> bool:
    """PagerDuty's final schedule joins one user's adjacent spans except at a rotation handover
    that no override covers (each turn is its own entry, notes §5.9)."""
    return prev.user == nxt.user and not (nxt.override is None and nxt.handover)


@dataclass(slots=True)
class Schedule:
    id: str
    name: str
    layers: list[ScheduleLayer]  # lowest precedence first, as POST/PUT send them
    team_id: str | None
    overrides: list[Override] = field(default_factory=list)
    time_zone: str = "Etc/UTC"
    description: str = ""

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "type": "schedule_reference", "summary": self.name,
                "self": f"{API}/schedules/{self.id}", "html_url": f"{WEB}/schedules/{self.id}"}

    @property
    def rotations(self) -> list[Layer]:
        return [layer.rotation(self.time_zone) for layer in self.layers]

    @property
    def users(self) -> list[str]:
        return list(dict.fromkeys(u for layer in self.layers for u in layer.users))

    def spans(self, since: datetime, until: datetime, *, layers: list[Layer] | None = None,
              overrides: list[Override] | None = None) -> list[Span]:
        """Final-schedule spans over [since, until) with their true bounds (a turn that began
        before ``since`` keeps its start): the layers with overrides on top, the latest created
        override winning (notes §5.9)."""
        layers = self.rotations if layers is None else layers
        overrides = self.overrides if overrides is None else overrides
        lo = min([since, *(layer.shift_at(since)[1] for layer in layers),
                  *(o.start for o in overrides if o.start <= since < o.end)])
        hi = max([until, *(layer.shift_at(until)[2] for layer in layers),
                  *(o.end for o in overrides if o.start < until <= o.end)])
        spans = final(layers, overrides, lo, hi, user_of=lambda o: o.user_id,
                      rank=lambda o: o.seq, joinable=_pd_joinable)
        return [s for s in spans if s.user is not None and s.start < until and s.end > since]

    def entries(self, since: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
        """Final-schedule shifts overlapping [since, until) with their true bounds, as /oncalls
        reports them."""
        return [(s.user, s.start, s.end) for s in self.spans(since, until)
                if s.user is not None]


@dataclass(slots=True)
class EscalationPolicy:
    id: str
    name: str
    team_id: str | None
    levels: list[list[tuple[str, str]]]  # per level: (kind "user"|"schedule", id)
    delays: list[int] = field(default_factory=list)  # minutes per level (default 30)
    num_loops: int = 0
    description: str = ""
    round_robin: set[int] = field(default_factory=set)  # levels (1-based) assigned in turn
    # level -> incidents assigned so far; reset by every write (ours, see _apply_policy)
    turns: dict[int, int] = field(default_factory=dict)

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "type": "escalation_policy_reference", "summary": self.name,
                "self": f"{API}/escalation_policies/{self.id}",
                "html_url": f"{WEB}/escalation_policies/{self.id}"}

    def delay(self, level: int) -> int:
        """Minutes before level ``level`` (1-based) escalates."""
        return self.delays[level - 1] if level <= len(self.delays) else 30


# ---------------------------------------------------------------------------------------------
# definitions from request bodies, and back to JSON
# ---------------------------------------------------------------------------------------------


def parse_layers(body: ScheduleBody, known_users: set[str], new_id: Any,
                 existing: list[ScheduleLayer], now: datetime) -> list[ScheduleLayer]:
    """The layers a validated body defines, in precedence order (lowest first). Raises
    ValueError with every problem the checks that need state or several fields find."""
    problems: list[str] = []
    by_id = {layer.id: layer for layer in existing}
    out: list[ScheduleLayer] = []
    for n, raw in enumerate(body.schedule_layers):
        where = f"schedule_layers[{n}]"
        start, virtual = parse_time(raw.start), parse_time(raw.rotation_virtual_start)
        end = parse_time(raw.end) if raw.end else None
        if end is not None and end <= start:
            problems.append(f"{where}: end must be after start")
        unknown = [u.user.id for u in raw.users if u.user.id not in known_users]
        if unknown:
            problems.append(f"{where}: unknown user {', '.join(unknown)}")
        if raw.id is not None and raw.id not in by_id:
            problems.append(f"{where}: no layer {raw.id} on this schedule")
        restrictions = []
        for r in raw.restrictions:
            weekly = r.type == "weekly_restriction"
            if weekly and r.start_day_of_week is None:
                problems.append(f"{where}: a weekly_restriction needs start_day_of_week")
                continue
            if r.duration_seconds > (WEEK if weekly else DAY):
                problems.append(f"{where}: a {r.type} lasts at most "
                                f"{WEEK if weekly else DAY} seconds")
                continue
            restrictions.append(Restriction(
                time.fromisoformat(r.start_time_of_day), timedelta(seconds=r.duration_seconds),
                (r.start_day_of_week - 1) if weekly and r.start_day_of_week else None))
        out.append(ScheduleLayer(
            raw.id or "", raw.name or f"Layer {n + 1}", start,
            tuple(u.user.id for u in raw.users), virtual, raw.rotation_turn_length_seconds,
            tuple(restrictions), end))
    if problems:
        raise ValueError(problems)
    out = [replace(layer, id=layer.id or new_id()) for layer in out]  # ids once all is valid
    sent = {layer.id for layer in out}
    # PagerDuty never removes a layer (salto-io/salto pagerduty-adapter
    # schedule_layers_removal.ts): one left out of a PUT is ended now and kept, lowest first.
    kept = [(layer if layer.end is not None and layer.end <= now else
             ScheduleLayer(layer.id, layer.name, layer.start, layer.users, layer.virtual_start,
                           layer.turn_seconds, layer.restrictions, max(now, layer.start)))
            for layer in existing if layer.id not in sent]
    return kept + out


def stamp_in(dt: datetime | None, zone: ZoneInfo) -> str | None:
    """ISO 8601 with the zone's offset, seconds precision (the spec's examples: ``-05:00``)."""
    if dt is None:
        return None
    return dt.astimezone(zone).replace(microsecond=0).isoformat()


def restriction_json(r: Restriction, schedule_zone: ZoneInfo, zone: ZoneInfo,
                     today: date) -> dict[str, Any]:
    """A restriction as a request in ``zone`` sees it: converted at today's offset (spec:
    restrictions "respect the time_zone parameter of the request")."""
    day = today
    if r.weekday is not None:
        day = today + timedelta(days=(r.weekday - today.weekday()) % 7)
    local = datetime.combine(day, r.start).replace(tzinfo=schedule_zone).astimezone(zone)
    out: dict[str, Any] = {"type": "daily_restriction" if r.weekday is None
                           else "weekly_restriction",
                           "start_time_of_day": local.strftime("%H:%M:%S"),
                           "duration_seconds": int(r.duration.total_seconds())}
    if r.weekday is not None:
        out["start_day_of_week"] = local.isoweekday()
    return out


def coverage(spans: list[Span], since: datetime, until: datetime) -> float:
    covered = sum(((min(s.end, until) - max(s.start, since)) for s in spans
                   if s.user is not None), timedelta(0))
    return round(100 * covered / (until - since), 2) if until > since else 0.0


def render_range(since: str | None, until: str | None) -> tuple[datetime, datetime] | None:
    """since/until as the spec defaults them (each 2 weeks from the other); None when neither
    is given, in which case no entries are rendered."""
    lo = parse_time(since) if since else None
    hi = parse_time(until) if until else None
    if lo is None and hi is None:
        return None
    lo = lo or hi - DEFAULT_RANGE  # type: ignore[operator]
    hi = hi or lo + DEFAULT_RANGE
    return lo, hi


def clip(spans: list[Span], since: datetime, until: datetime, overflow: bool) -> list[Span]:
    """``overflow=false`` (the default) truncates entries at the range's bounds (spec)."""
    if overflow:
        return spans
    return [Span(s.user, max(s.start, since), min(s.end, until), s.override, s.handover)
            for s in spans]


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)
