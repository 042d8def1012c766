"""incident.io simulator, part 2: on-call. Schedules stored as definitions (time zone, rotations
with ordered users, ``handover_start_at``, cycled ``handovers``, per-weekday working intervals,
layers, ``effective_from`` versions), rendered on demand into ``schedule_entries``
(``scheduled``/``overrides``/``final``) and ``preview_entries``; overrides per rotation and layer;
escalation paths (level, repeat and if/else nodes) stored as posted.

Facts (openapi.json ``Schedules V2`` / ``Escalations V2``; vendor-notes incidentio.md §5,
migration.md §1.2, §4):

- ``timezone`` cannot change after creation (terraform-provider-incident ``schedule_beta.md``:
  "Changing this replaces the schedule"): a PUT naming another zone is a 422.
- Rotations have no precedence: entries "are returned for every rotation and layer on the
  schedule" (``GET /v2/schedule_entries``); every rotation's person is on call at once.
- A rotation's ``layers`` "control how many people are on-call concurrently" (spec
  ``ScheduleRotationV2.layers``; terraform-provider-incident ``schedule_rotation.md``:
  ``concurrent_shifts`` is "how many shifts run at the same time, which is how many people are
  on call at once"): each layer is one concurrent shift with its own person, and an override
  "applies to" one layer of one rotation (``ScheduleOverrideV2.layer_id``), so it replaces that
  layer's person only; the rotation's other layers page theirs as before.
- ``handover_start_at``: "the first user in ``users`` comes on shift at this time, handing over
  to the next user after each ``handovers`` interval"; several handovers "apply in turn".
- A PUT "replaces its entire configuration ... including any scheduled future versions"; a
  rotation may appear several times with one ``id``, each version applying "from its
  ``effective_from`` until the next version's"; the first version has none.
- ``preview_entries`` renders the posted payload without saving it, capped at 91 days from
  ``entry_window_start``; the window defaults to now .. four weeks later.
- Overrides belong to a rotation and layer and never overlap on one layer (notes §5: a new one
  over a neighbour deletes it and recreates its leftover time).

Ours (docs/vendors/incidentio.md lists them; the vendor does not document them):

- Hand-offs and working intervals are wall-clock times in the schedule's zone (a daily 09:00
  hand-off stays 09:00 across DST; an hourly interval counts local hours); turns advance in
  wall-clock time whether or not a working interval is open (the ``sequential`` reading). A
  rotation with alternating handover lengths and ``scheduling_mode`` ``fair`` (or none: the
  default is not documented) is stored and answered as posted, but the ``fair`` algorithm is
  not documented, so who is on call in its schedule is refused as not simulated.
- Who takes which concurrent shift: at each handover the layers take the next users of the
  list in order (layer 1 the first, layer 2 the next, ...), going round it ("``sequential``
  goes around the list in order, so the next person on call is always the one after the last",
  ``schedule_rotation.md``): with layers L and users u0..un-1, turn k puts
  ``u[(k * L + j) % n]`` on layer j. Entries carry no ``layer_id`` (dropped in [SPEC]), as the
  vendor's do.
- A round-robin level (``round_robin_config.enabled``) is stored and answered as posted, but
  whose turn it is depends on who was "paged longest ago" (docs.incident.io/on-call/round-robin),
  a history not kept here: an escalation through such a path is refused as not simulated.
- Working intervals are ``HH:MM`` .. ``HH:MM`` within one day, ``24:00`` allowed as an end.
- A PUT keeps the rotations and layers whose ids it names; overrides on rotations or layers it
  drops are deleted with them (the Terraform docs warn an inline rewrite "can drop overrides").
- The preview renders the posted time zone (nothing is saved, so nothing is "changed"), with the
  stored overrides of the rotations and layers whose ids it names.
- Escalation path nodes: ``level``, ``repeat`` (``to_node`` names an earlier node) and
  ``if_else`` (both branches stored; conditions are kept as posted); other node types and
  channel targets are refused as not simulated.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from syncd.simulators.base import parse_time
from syncd.simulators.incidentio_base import (
    ENTRY_PAGE_SPAN,
    ORG_SLUG,
    ApiError,
    ApiKey,
    IncidentIOBase,
    Override,
    UserRef,
    ts,
    ulid,
)
from syncd.simulators.oncall import EPOCH, Layer, Restriction, final
from syncd.simulators.validation import Body, DateTime, Operation, Query, Text, TimeZone

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
INTERVALS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1),
             "weekly": timedelta(weeks=1)}
PREVIEW_CAP = timedelta(days=91)  # spec: "capped to 91 days from entry_window_start"
PREVIEW_DEFAULT = timedelta(weeks=4)  # spec: "Defaults to four weeks after entry_window_start"
NODE_TYPES = Literal["if_else", "repeat", "level", "notify_channel", "delay", "voicemail",
                     "escalation_path"]
SIMULATED_NODES = ("level", "repeat", "if_else")


# --------------------------------------------------------------------------- request models


class Handover(Body):
    interval: int
    interval_type: Literal["hourly", "daily", "weekly"]


class WorkingInterval(Body):
    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                     "sunday"]
    start_time: str
    end_time: str


class LayerBody(Body):
    id: str | None = None
    name: str | None = None


class RotationBody(Body):
    id: str | None = None
    name: str | None = None
    users: list[UserRef] | None = None
    handover_start_at: DateTime | None = None
    handovers: list[Handover] | None = None
    working_intervals: list[WorkingInterval] | None = None
    layers: list[LayerBody] | None = None
    effective_from: DateTime | None = None
    scheduling_mode: Literal["fair", "sequential"] | None = None


class ConfigBody(Body):
    rotations: list[RotationBody] | None = None


class ScheduleBody(Body):
    name: str | None = None
    timezone: TimeZone | None = None
    config: ConfigBody | None = None
    annotations: dict[str, str] | None = None
    team_ids: list[str] | None = None


class ScheduleEnvelope(Body):
    schedule: ScheduleBody


class PreviewBody(ScheduleEnvelope):
    entry_window_start: DateTime | None = None
    entry_window_end: DateTime | None = None


class PathTarget(Body):
    type: Literal["schedule", "user", "slack_channel", "msteams_channel"]
    id: Text
    urgency: Literal["high", "low"]
    schedule_mode: Literal["currently_on_call", "all_users_for_rota", "all_users",
                           "currently_on_call_for_rota", "next_on_call_for_rota",
                           "next_on_call", ""] | None = None
    selected_rota_id: str | None = None


class RetryConfig(Body):
    """openapi.json ``EscalationPathRetryConfigV2``: ``attempts`` 2..10 pages in all,
    ``interval_seconds`` a whole number of minutes."""

    attempts: int
    interval_seconds: int


class RoundRobinConfig(Body):
    """openapi.json ``EscalationPathRoundRobinConfigV2``: ``enabled`` required;
    ``rotate_after_seconds`` unset = "stick with a single target per level" (no minimum in
    the spec: stored as posted). Stored and answered as posted, but who is paged is not
    simulated: incident.io starts "with the user who was paged longest ago for this escalation
    path" (docs.incident.io/on-call/round-robin), a history this simulator does not keep. So
    ``current_responders`` is left out when the first level is round robin, and an escalation
    through a path with a round-robin level is refused 400 ``not_simulated`` (ours): the
    simulator's escalations notify whoever is on call in its first schedule, not the path's
    targets, and through a round-robin level that would pass for an answer to whose turn it
    is (``check_pageable``)."""

    enabled: bool
    rotate_after_seconds: int | None = None


class LevelNode(Body):
    targets: list[PathTarget]
    time_to_ack_seconds: int | None = None
    ack_mode: Literal["all", "first"] | None = None
    retry_config: RetryConfig | None = None
    round_robin_config: RoundRobinConfig | None = None


class RepeatNode(Body):
    repeat_times: int
    to_node: Text


class BindingValue(Body):
    literal: str | None = None
    reference: str | None = None


class Binding(Body):
    value: BindingValue | None = None
    array_value: list[BindingValue] | None = None


class ConditionBody(Body):
    subject: Text
    operation: Text
    param_bindings: list[Binding]


class IfElseNode(Body):
    conditions: list[ConditionBody] | None = None
    then_path: list[PathNode]
    else_path: list[PathNode]


class PathNode(Body):
    id: Text
    type: NODE_TYPES
    level: LevelNode | None = None
    repeat: RepeatNode | None = None
    if_else: IfElseNode | None = None


IfElseNode.model_rebuild()


class PathBody(Body):
    name: Text
    path: list[PathNode]
    team_ids: list[str] | None = None
    kind: Literal["standalone"] | None = None


class EntriesQuery(Query):
    schedule_id: str | None = None
    entry_window_start: DateTime | None = None
    entry_window_end: DateTime | None = None


class Paged(Query):
    page_size: int | None = None
    after: str | None = None


class OverridesQuery(Paged):
    schedule_id: str | None = None
    rotation_id: str | None = None
    layer_id: str | None = None


class UpdateOverrideBody(Body):
    rotation_id: Text
    layer_id: Text
    start_at: DateTime
    end_at: DateTime
    user: UserRef


class CreateOverrideBody(UpdateOverrideBody):
    schedule_id: Text


ONCALL_OPERATIONS: dict[str, Operation] = {
    "GET /v2/schedules": Operation(query=Paged),
    "POST /v2/schedules": Operation(body=ScheduleEnvelope),
    "PUT /v2/schedules/{id}": Operation(body=ScheduleEnvelope),
    "POST /v2/schedules/{id}/actions/preview_entries": Operation(body=PreviewBody),
    "GET /v2/schedule_entries": Operation(query=EntriesQuery),
    "GET /v2/schedule_overrides": Operation(query=OverridesQuery),
    "POST /v2/schedule_overrides": Operation(body=CreateOverrideBody),
    "PUT /v2/schedule_overrides/{id}": Operation(body=UpdateOverrideBody),
    "GET /v2/escalation_paths": Operation(query=Paged),
    "POST /v2/escalation_paths": Operation(body=PathBody),
    "PUT /v2/escalation_paths/{id}": Operation(body=PathBody),
}


# --------------------------------------------------------------------------- records


@dataclass
class Rotation:
    """One version of a rotation (a rotation id appears once per version)."""

    id: str
    name: str
    layers: list[tuple[str, str]]  # (id, name): one concurrent shift each
    users: list[str]
    handover_start: datetime
    handovers: list[tuple[str, int]]  # (interval_type, interval)
    working: list[tuple[str, str, str]]  # (weekday, HH:MM, HH:MM)
    effective_from: datetime | None = None
    scheduling_mode: str | None = None

    @property
    def fair(self) -> bool:
        """Alternating handovers under anything but ``sequential``: the ``fair`` algorithm
        ("balances workload by considering handover duration"), which is not documented; an
        absent mode counts too, since its default is not documented either."""
        lengths = {INTERVALS[kind] * n for kind, n in self.handovers}
        return len(lengths) > 1 and self.scheduling_mode != "sequential"


@dataclass
class Schedule:
    id: str
    name: str
    timezone: str
    rotations: list[Rotation]  # every version, in the order stored
    created: datetime
    updated: datetime
    annotations: dict[str, str] = field(default_factory=dict)
    team_ids: list[str] = field(default_factory=list)

    @property
    def rotation_id(self) -> str:
        """The first rotation (what a single-rotation schedule's overrides name)."""
        return self.rotations[0].id

    @property
    def layer_id(self) -> str:
        return self.rotations[0].layers[0][0]

    def rotation_ids(self) -> list[str]:
        return list(dict.fromkeys(r.id for r in self.rotations))

    @property
    def renderable(self) -> bool:
        """Who is on call can be simulated: no rotation has alternating handovers scheduled
        ``fair`` (undocumented)."""
        return not any(r.fair for r in self.rotations)

    def layer_ids(self, rotation_id: str) -> set[str]:
        return set(self.layer_order(rotation_id))

    def layer_order(self, rotation_id: str) -> list[str]:
        """The rotation's layer ids over all its versions, in the order they are listed."""
        return list(dict.fromkeys(lid for r in self.rotations if r.id == rotation_id
                                  for lid, _ in r.layers))

    def versions(self, rotation_id: str, layer_id: str) -> list[Layer]:
        """One layer (concurrent shift) of the rotation, per version that has it, as shared
        on-call layers bounded by the versions' effective dates (a version without the layer
        schedules nobody on it)."""
        mine = sorted((r for r in self.rotations if r.id == rotation_id),
                      key=lambda r: r.effective_from or datetime.min.replace(tzinfo=UTC))
        if not self.renderable:
            raise ApiError(400, "not_simulated", "not simulated: who is on call in a rotation "
                           "with alternating handovers scheduled 'fair' (undocumented)")
        out = []
        for i, r in enumerate(mine):
            until = mine[i + 1].effective_from if i + 1 < len(mine) else None
            ids = [lid for lid, _ in r.layers]
            if layer_id in ids:
                out.append(_layer(r, ids.index(layer_id), self.timezone, r.effective_from,
                                  until))
        return out


def _layer(r: Rotation, position: int, zone: str, since: datetime | None,
           until: datetime | None) -> Layer:
    """Layer ``position`` of the rotation: at turn k its person is ``users[(k * L + position)
    % n]`` with L layers and n users (the layers take the next users in order, module
    docstring), a list that repeats after n turns."""
    cycle = tuple(INTERVALS[kind] * n for kind, n in r.handovers)
    restrictions = tuple(
        Restriction(_hhmm(a), _minutes(b) - _minutes(a), WEEKDAYS.index(day))
        for day, a, b in r.working)
    n, count = len(r.users), len(r.layers)
    users = tuple(r.users[(k * count + position) % n] for k in range(n))
    return Layer(users, cycle[0], r.handover_start, zone, restrictions,
                 begins=since, ends=until, cycle=cycle if len(cycle) > 1 else ())


def _layers_of(s: Schedule) -> list[tuple[str, str]]:
    """(rotation id, layer id) of every concurrent shift of the schedule, in listed order."""
    return [(rid, lid) for rid in s.rotation_ids() for lid in s.layer_order(rid)]


def _hhmm(text: str) -> time:
    return time(int(text[:2]), int(text[3:5]))


def _minutes(text: str) -> timedelta:
    return timedelta(hours=int(text[:2]), minutes=int(text[3:5]))


def _valid_hhmm(text: str, *, end: bool) -> bool:
    if len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        return False
    h, m = int(text[:2]), int(text[3:])
    return (h < 24 and m < 60) or (end and text == "24:00")


@dataclass
class Path:
    id: str
    name: str
    nodes: list[dict[str, Any]]  # as posted (None fields dropped)
    created: datetime
    updated: datetime
    team_ids: list[str] = field(default_factory=list)


class IncidentIOOnCall(IncidentIOBase):
    """Schedules, their entries and previews, overrides and escalation paths."""

    operations = {**IncidentIOBase.operations, **ONCALL_OPERATIONS}

    def reset(self) -> None:
        super().reset()
        self.overrides: dict[str, Override] = {}
        self.schedules: dict[str, Schedule] = {}
        self.paths: dict[str, Path] = {}
        self._seed_oncall()

    # ------------------------------------------------------------------ seeds

    def _seed_oncall(self) -> None:
        """Every seeded rotation hands over relative to the shared EPOCH (docs/oncall.md). The
        first two are the UTC rotations the on-call tests map across vendors; the New York
        ones are the migration hard cases (DST, working hours, 12-hour turns, overrides)."""
        uid = list(self.users)
        alice, bob, carol, dave, erin = uid[:5]
        made = self.created_at
        ny = ZoneInfo("America/New_York")
        monday_9 = datetime(2024, 1, 1, 9, tzinfo=ny)

        def rot(n: int, name: str, users: list[str], start: datetime,
                handovers: list[tuple[str, int]], working: Sequence[tuple[str, str, str]] = (),
                ) -> Rotation:
            return Rotation(ulid("O", n), name, [(ulid("L", n), "Layer 1")], users,
                            start.astimezone(UTC), handovers, list(working))

        def sched(n: int, name: str, zone: str, rotations: list[Rotation]) -> None:
            self.schedules[ulid("C", n)] = Schedule(ulid("C", n), name, zone, rotations,
                                                    made, made)

        sched(1, "Primary on-call", "UTC",
              [rot(1, "Rotation", [bob, carol, dave], EPOCH, [("daily", 1)])])
        sched(2, "Secondary on-call", "UTC",
              [rot(2, "Rotation", [dave, erin], EPOCH, [("weekly", 1)])])
        business = [(day, "09:00", "17:00") for day in WEEKDAYS[:5]]
        sched(3, "Platform (New York)", "America/New_York", [
            rot(3, "Weekly", [alice, bob], monday_9, [("weekly", 1)]),
            rot(4, "Business hours", [carol, dave, erin], monday_9, [("daily", 1)], business),
        ])
        sched(4, "Follow the sun (New York)", "America/New_York", [
            rot(5, "Twelve hours", [erin, alice], monday_9 - timedelta(hours=1),
                [("hourly", 12)]),
        ])
        # An override a few days ahead on the business-hours rotation and one on the 12-hour
        # rotation: whole hours, so every vendor can carry them.
        now = self.clock.now().replace(minute=0, second=0, microsecond=0)
        for n, (sid, rid, who, at) in enumerate((
                (ulid("C", 3), ulid("O", 4), bob, now + timedelta(days=2, hours=3)),
                (ulid("C", 4), ulid("O", 5), carol, now + timedelta(days=3)))):
            o = Override(ulid("V", n + 1), sid, rid, self.schedules[sid].layer_ids(rid).pop(),
                         who, at, at + timedelta(hours=4), made, made)
            self.overrides[o.id] = o
        self.path_id = ulid("P", 1)
        self.paths[self.path_id] = Path(self.path_id, "Primary escalation", [
            {"id": "01HSIMNODE0000000000000001", "type": "level", "level": {
                "targets": [{"type": "schedule", "id": ulid("C", 1), "urgency": "high",
                             "schedule_mode": "currently_on_call"}],
                "time_to_ack_seconds": 300, "ack_mode": "all"}}], made, made)
        platform = ulid("P", 2)

        def level(node: int, target: dict[str, Any], seconds: int) -> dict[str, Any]:
            return {"id": f"01HSIMNODE000000000000000{node}", "type": "level", "level": {
                "targets": [{**target, "urgency": "high"}], "time_to_ack_seconds": seconds,
                "ack_mode": "all"}}

        on_call = {"type": "schedule", "schedule_mode": "currently_on_call"}
        self.paths[platform] = Path(platform, "Platform escalation", [
            level(2, {**on_call, "id": ulid("C", 3)}, 300),
            level(3, {**on_call, "id": ulid("C", 4)}, 600),
            level(4, {"type": "user", "id": alice}, 900),
            {"id": "01HSIMNODE0000000000000005", "type": "repeat",
             "repeat": {"repeat_times": 2, "to_node": "01HSIMNODE0000000000000002"}},
        ], made, made)

    # ------------------------------------------------------------------ rendering

    def on_call_users(self, s: Schedule, at: datetime) -> list[str]:
        return [u for u, *_ in self.final_segments(s, at, at + timedelta(seconds=1))]

    def final_segments(self, s: Schedule, start: datetime, end: datetime,
                       overrides: Iterable[Override] | None = None,
                       ) -> list[tuple[str, datetime, datetime, str | None, str, str]]:
        """(user, start, end, override id or None, rotation id, layer id) for every layer of every
        rotation: no precedence between rotations or layers, each layer's overrides replace
        its person only (they never overlap on one layer, notes 5)."""
        pool = list(self.overrides.values() if overrides is None else overrides)
        out = []
        for rid, lid in _layers_of(s):
            mine = [o for o in pool if o.schedule_id == s.id and o.rotation_id == rid
                    and o.layer_id == lid]
            spans = final(s.versions(rid, lid), mine, start, end, user_of=lambda o: o.user_id,
                          rank=lambda o: o.created)
            out += [(sp.user, sp.start, sp.end, sp.override.id if sp.override else None, rid,
                     lid) for sp in spans if sp.user is not None]
        return sorted(out, key=lambda e: (e[1], e[4]))

    def scheduled_segments(self, s: Schedule, start: datetime, end: datetime
                           ) -> list[tuple[str, datetime, datetime, str, str]]:
        """Shifts from the rotation rules alone, one entry per shift, cut to working hours."""
        out = []
        for rid, lid in _layers_of(s):
            spans = final(s.versions(rid, lid), [], start, end, user_of=lambda o: "",
                          joinable=lambda a, b: a.user == b.user and not b.handover)
            out += [(sp.user, sp.start, sp.end, rid, lid) for sp in spans
                    if sp.user is not None]
        return sorted(out, key=lambda e: (e[1], e[3]))

    def _entry(self, rid: str, lid: str, user: str, a: datetime, b: datetime, oid: str | None
               ) -> dict[str, Any]:
        """One entry; no ``layer_id`` ([SPEC] dropped it), but the fingerprint tells two
        layers' shifts apart, even with one person on both."""
        out: dict[str, Any] = {"start_at": ts(a), "end_at": ts(b),
                               "user": self.users[user].slim(), "rotation_id": rid,
                               "fingerprint": f"{rid}-{lid}-{user}-{int(a.timestamp())}"}
        if oid:
            out["entry_id"] = oid
        return out

    def entries_json(self, s: Schedule, start: datetime, end: datetime,
                     overrides: Iterable[Override] | None = None) -> dict[str, Any]:
        pool = [o for o in (self.overrides.values() if overrides is None else overrides)
                if o.schedule_id == s.id and o.rotation_id in s.rotation_ids()]
        return {
            "scheduled": [self._entry(r, lid, u, a, b, None)
                          for u, a, b, r, lid in self.scheduled_segments(s, start, end)],
            "overrides": [self._entry(o.rotation_id, o.layer_id, o.user_id, max(o.start, start),
                                      min(o.end, end), o.id)
                          for o in sorted(pool, key=lambda o: o.start)
                          if o.end > start and o.start < end],
            "final": [self._entry(r, lid, u, a, b, o)
                      for u, a, b, o, r, lid in self.final_segments(s, start, end, pool)],
        }

    def schedule_json(self, s: Schedule) -> dict[str, Any]:
        out = {
            "id": s.id, "name": s.name, "timezone": s.timezone, "team_ids": list(s.team_ids),
            "annotations": dict(s.annotations),
            "permalink": f"https://app.incident.io/{ORG_SLUG}/on-call/schedules/{s.id}",
            "created_at": ts(s.created), "updated_at": ts(s.updated),
            "config": {"rotations": [self.rotation_json(r) for r in s.rotations]},
        }
        if s.renderable:  # ``current_shifts`` is optional (not in ScheduleV2.required)
            now = self.clock.now()
            out["current_shifts"] = [self._entry(r, lid, u, a, b, o) for u, a, b, o, r, lid in
                                     self.final_segments(s, now, now + timedelta(seconds=1))]
        return out

    def rotation_json(self, r: Rotation) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": r.id, "name": r.name, "handover_start_at": ts(r.handover_start),
            "handovers": [{"interval_type": k, "interval": n} for k, n in r.handovers],
            "layers": [{"id": i, "name": n} for i, n in r.layers],
            "users": [self.users[u].slim() for u in r.users],
            "working_intervals": [{"weekday": d, "start_time": a, "end_time": b}
                                  for d, a, b in r.working],
        }
        if r.effective_from is not None:
            out["effective_from"] = ts(r.effective_from)
        if r.scheduling_mode is not None:
            out["scheduling_mode"] = r.scheduling_mode
        return out

    def override_json(self, o: Override) -> dict[str, Any]:
        return {"id": o.id, "schedule_id": o.schedule_id, "rotation_id": o.rotation_id,
                "layer_id": o.layer_id, "start_at": ts(o.start), "end_at": ts(o.end),
                "user": self.users[o.user_id].slim(), "created_at": ts(o.created),
                "updated_at": ts(o.updated)}

    # ------------------------------------------------------------------ definitions

    def _user_id(self, ref: UserRef, where: str) -> str:
        user = next((u for u in self.users.values()
                     if (ref.id and ref.id == u.id)
                     or (ref.email and ref.email.strip().lower() == u.email)
                     or (ref.slack_user_id and ref.slack_user_id == u.slack_user_id)), None)
        if user is None:
            raise ApiError(422, "invalid_value", "User not found", field=where)
        return user.id

    def _definition(self, body: ScheduleBody, current: Schedule | None) -> list[Rotation]:
        """The posted rotations, checked in full before any id is issued, so a refused
        request leaves the organisation exactly as it was."""
        self._rotations(body, current, _draft_ids())
        return self._rotations(body, current, self._next)

    def _rotations(self, body: ScheduleBody, current: Schedule | None,
                   fresh: Callable[[str], str]) -> list[Rotation]:
        rows = body.config.rotations if body.config and body.config.rotations else None
        if not rows:
            raise ApiError(422, "is_required", "A schedule needs at least one rotation",
                           field="schedule.config.rotations")
        taken = {r.id for s in self.schedules.values() if s is not current for r in s.rotations}
        known_layers: dict[str, list[tuple[str, str]]] = {}
        out: list[Rotation] = []
        for i, row in enumerate(rows):
            where = f"schedule.config.rotations[{i}]"
            rid = row.id or fresh("O")
            if rid in taken:
                raise ApiError(422, "invalid_value", "Rotation belongs to another schedule",
                               field=f"{where}.id")
            if not row.name:
                raise ApiError(422, "is_required", "name is required", field=f"{where}.name")
            if not row.users:
                raise ApiError(422, "is_required", "A rotation needs at least one user",
                               field=f"{where}.users")
            if row.handover_start_at is None:
                raise ApiError(422, "is_required", "handover_start_at is required",
                               field=f"{where}.handover_start_at")
            if not row.handovers:
                raise ApiError(422, "is_required", "handovers is required",
                               field=f"{where}.handovers")
            for j, h in enumerate(row.handovers):
                if h.interval < 1:
                    raise ApiError(422, "invalid_value", "interval must be at least 1",
                                   field=f"{where}.handovers[{j}].interval")
            layers = self._layers(row, rid, known_layers, where, fresh)
            working = []
            for j, w in enumerate(row.working_intervals or []):
                if not (_valid_hhmm(w.start_time, end=False) and _valid_hhmm(w.end_time, end=True)
                        and _minutes(w.end_time) > _minutes(w.start_time)):
                    raise ApiError(422, "invalid_value", "Working intervals are HH:MM to a "
                                   "later HH:MM on the same day",
                                   field=f"{where}.working_intervals[{j}]")
                working.append((w.weekday, w.start_time, w.end_time))
            out.append(Rotation(
                rid, row.name, layers,
                [self._user_id(u, f"{where}.users[{j}]") for j, u in enumerate(row.users)],
                parse_time(row.handover_start_at).astimezone(UTC),
                [(h.interval_type, h.interval) for h in row.handovers], working,
                parse_time(row.effective_from).astimezone(UTC) if row.effective_from else None,
                row.scheduling_mode))
        self._check_versions(out)
        return out

    @staticmethod
    def _layers(row: RotationBody, rid: str, known: dict[str, list[tuple[str, str]]],
                where: str, fresh: Callable[[str], str]) -> list[tuple[str, str]]:
        """The rotation's concurrent layers; a later version that names no layer ids takes the
        first version's, position by position."""
        if not row.layers:
            raise ApiError(422, "is_required", "A rotation needs a layer", field=f"{where}.layers")
        earlier = known.get(rid, [])
        layers = []
        for j, layer in enumerate(row.layers):
            prior = earlier[j] if j < len(earlier) else None
            layers.append((layer.id or (prior[0] if prior else fresh("L")),
                           layer.name or (prior[1] if prior else f"Layer {j + 1}")))
        if len({lid for lid, _ in layers}) != len(layers):
            raise ApiError(422, "invalid_value", "A layer is listed twice",
                           field=f"{where}.layers")
        known.setdefault(rid, layers)
        return layers

    @staticmethod
    def _check_versions(rotations: list[Rotation]) -> None:
        seen: dict[str, list[Rotation]] = {}
        for r in rotations:
            seen.setdefault(r.id, []).append(r)
        for versions in seen.values():
            firsts = [r for r in versions if r.effective_from is None]
            if len(firsts) != 1:
                raise ApiError(422, "invalid_value", "Exactly one version of a rotation has no "
                               "effective_from", field="schedule.config.rotations")
            dates = [r.effective_from for r in versions if r.effective_from is not None]
            if len(set(dates)) != len(dates):
                raise ApiError(422, "invalid_value", "Two versions of a rotation take effect "
                               "at the same time", field="schedule.config.rotations")

    async def _schedule_body(self, request: Request) -> ScheduleBody:
        return ScheduleEnvelope.model_validate(await self._json_body(request)).schedule

    async def h_create_schedule(self, request: Request, key: ApiKey) -> Response:
        body = await self._schedule_body(request)
        if not body.name:
            raise ApiError(422, "is_required", "name is required", field="schedule.name")
        if not body.timezone:
            raise ApiError(422, "is_required", "timezone is required", field="schedule.timezone")
        rotations = self._definition(body, None)
        now = self.clock.now()
        s = Schedule(self._next("C"), body.name, body.timezone, rotations, now, now,
                     dict(body.annotations or {}), list(body.team_ids or []))
        self.schedules[s.id] = s
        return JSONResponse({"schedule": self.schedule_json(s)}, status_code=201)

    async def h_update_schedule(self, request: Request, key: ApiKey) -> Response:
        s = self._schedule(request.path_params["id"])
        body = await self._schedule_body(request)
        if body.timezone is not None and body.timezone != s.timezone:
            raise ApiError(422, "invalid_value", "A schedule's timezone cannot be changed",
                           field="schedule.timezone")
        if body.config is not None:
            s.rotations = self._definition(body, s)
            for o in list(self.overrides.values()):
                if o.schedule_id == s.id and o.layer_id not in s.layer_ids(o.rotation_id):
                    del self.overrides[o.id]
        if body.name is not None:
            s.name = body.name
        if body.annotations is not None:
            s.annotations = dict(body.annotations)
        if body.team_ids is not None:
            s.team_ids = list(body.team_ids)
        s.updated = self.clock.now()
        return JSONResponse({"schedule": self.schedule_json(s)})

    async def h_preview(self, request: Request, key: ApiKey) -> Response:
        stored = self._schedule(request.path_params["id"])
        body = PreviewBody.model_validate(await self._json_body(request))
        now = self.clock.now()
        start = parse_time(body.entry_window_start) if body.entry_window_start else now
        end = (parse_time(body.entry_window_end) if body.entry_window_end
               else start + PREVIEW_DEFAULT)
        if end <= start:
            raise ApiError(422, "invalid_value", "entry_window_end must be after the start",
                           field="entry_window_end")
        end = min(end, start + PREVIEW_CAP)
        draft = Schedule(stored.id, body.schedule.name or stored.name,
                         body.schedule.timezone or stored.timezone,
                         self._rotations(body.schedule, stored, _draft_ids()), stored.created,
                         now)
        kept = [o for o in self.overrides.values() if o.schedule_id == stored.id
                and o.layer_id in draft.layer_ids(o.rotation_id)]
        return JSONResponse({"schedule_entries": self.entries_json(draft, start, end, kept)})

    async def h_list_schedules(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "schedules")
        rows = list(self.schedules.values())
        return self.page(request, "schedules", rows, size, lambda s: s.id, self.schedule_json,
                         total=True)

    def _schedule(self, sid: str | None, *, status: int = 404) -> Schedule:
        s = self.schedules.get(sid or "")
        if s is None:
            raise ApiError(status, "not_found", "Schedule not found", field="schedule_id")
        return s

    async def h_show_schedule(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"schedule": self.schedule_json(
            self._schedule(request.path_params["id"]))})

    async def h_entries(self, request: Request, key: ApiKey) -> Response:
        q = request.query_params
        if not q.get("schedule_id"):
            raise ApiError(422, "is_required", "schedule_id is required", field="schedule_id")
        s = self._schedule(q.get("schedule_id"))
        now = self.clock.now()
        try:
            start = parse_time(q["entry_window_start"]) if q.get("entry_window_start") else now
            end = (parse_time(q["entry_window_end"]) if q.get("entry_window_end")
                   else start + ENTRY_PAGE_SPAN)
        except ValueError:
            raise ApiError(422, "invalid_value", "entry window must be RFC 3339 times") from None
        if end <= start:
            raise ApiError(422, "invalid_value", "entry_window_end must be after the start",
                           field="entry_window_end")
        page_end = min(end, start + ENTRY_PAGE_SPAN)
        body: dict[str, Any] = {"schedule_entries": self.entries_json(s, start, page_end)}
        if page_end < end:
            after = ts(page_end)
            query = urlencode({"schedule_id": s.id, "entry_window_start": after,
                               "entry_window_end": ts(end)})
            body["pagination_meta"] = {"after": after,
                                       "after_url": f"/v2/schedule_entries?{query}"}
        return JSONResponse(body)

    # ------------------------------------------------------------------ overrides

    async def h_list_overrides(self, request: Request, key: ApiKey) -> Response:
        q = request.query_params
        size = self.page_size(request, "schedule_overrides")
        if not q.get("schedule_id"):
            raise ApiError(422, "is_required", "schedule_id is required", field="schedule_id")
        s = self._schedule(q.get("schedule_id"))
        rows = sorted((o for o in self.overrides.values() if o.schedule_id == s.id
                       and (not q.get("rotation_id") or o.rotation_id == q["rotation_id"])
                       and (not q.get("layer_id") or o.layer_id == q["layer_id"])),
                      key=lambda o: o.start)
        return self.page(request, "overrides", rows, size, lambda o: o.id, self.override_json)

    def _override_fields(self, body: dict[str, Any], schedule: Schedule
                         ) -> tuple[str, str, str, datetime, datetime]:
        rid, lid = body["rotation_id"], body["layer_id"]
        if rid not in schedule.rotation_ids():
            raise ApiError(422, "invalid_value", "Rotation not found on this schedule",
                           field="rotation_id")
        if lid not in schedule.layer_ids(rid):
            raise ApiError(422, "invalid_value", "Layer not found on this rotation",
                           field="layer_id")
        uid = self._user_id(UserRef.model_validate(body["user"]), "user")
        start, end = parse_time(str(body["start_at"])), parse_time(str(body["end_at"]))
        if end <= start:
            raise ApiError(422, "invalid_value", "end_at must be after start_at", field="end_at")
        return rid, lid, uid, start, end

    def _carve(self, keep: Override) -> None:
        """Overrides on one layer never overlap: neighbours covered by ``keep`` are deleted,
        and their leftover time is recreated as new overrides with new ids (notes 5)."""
        now = self.clock.now()
        for o in list(self.overrides.values()):
            if o.id == keep.id or o.layer_id != keep.layer_id:
                continue
            if o.end <= keep.start or o.start >= keep.end:
                continue
            del self.overrides[o.id]
            for a, b in ((o.start, keep.start), (keep.end, o.end)):
                if a < b:
                    piece = Override(self._next("V"), o.schedule_id, o.rotation_id, o.layer_id,
                                     o.user_id, a, b, now, now)
                    self.overrides[piece.id] = piece

    async def h_create_override(self, request: Request, key: ApiKey) -> Response:
        body = await self._json_body(request)
        s = self._schedule(body.get("schedule_id"), status=422)
        rid, lid, uid, start, end = self._override_fields(body, s)
        now = self.clock.now()
        o = Override(self._next("V"), s.id, rid, lid, uid, start, end, now, now)
        self.overrides[o.id] = o
        self._carve(o)
        return JSONResponse({"override": self.override_json(o)}, status_code=201)

    def _override(self, oid: str) -> Override:
        o = self.overrides.get(oid)
        if o is None:
            raise ApiError(404, "not_found", "Override not found")
        return o

    async def h_show_override(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"override": self.override_json(
            self._override(request.path_params["id"]))})

    async def h_update_override(self, request: Request, key: ApiKey) -> Response:
        o = self._override(request.path_params["id"])
        body = await self._json_body(request)
        rid, lid, uid, start, end = self._override_fields(body, self.schedules[o.schedule_id])
        if uid != o.user_id:
            raise ApiError(422, "invalid_value", "An override's user cannot be changed: delete "
                           "it and create a new one", field="user")
        o.rotation_id, o.layer_id = rid, lid
        o.start, o.end, o.updated = start, end, self.clock.now()
        self._carve(o)
        return JSONResponse({"override": self.override_json(o)})

    async def h_delete_override(self, request: Request, key: ApiKey) -> Response:
        oid = request.path_params["id"]
        if oid not in self.overrides and not self._was_override(oid):
            raise ApiError(404, "not_found", "Override not found")
        self.overrides.pop(oid, None)
        return Response(status_code=204)

    @staticmethod
    def _was_override(oid: str) -> bool:
        # Deletes are idempotent (notes 5): any id this sim could have issued counts.
        return oid.startswith("01HV") and len(oid) == 26

    # ------------------------------------------------------------------ escalation paths

    def path_json(self, p: Path) -> dict[str, Any]:
        out = {"id": p.id, "name": p.name, "kind": "standalone", "team_ids": list(p.team_ids),
               "path": [_node_json(n) for n in p.nodes]}
        responders = self.responders(p)
        if responders is not None:  # optional: not in EscalationPathV2.required
            out["current_responders"] = [self.users[u].slim() for u in responders]
        return out

    def responders(self, p: Path) -> list[str] | None:
        """Who the path's first level pages right now ("currently on-call", spec); None
        when it pages a schedule whose on-call is not simulated (alternating handovers
        scheduled ``fair``): the path is still stored and listed, without
        ``current_responders``, as a schedule is without ``current_shifts``."""
        first = next((n for n in p.nodes if n["type"] == "level"), None)
        if first is None:
            return []
        if (first["level"].get("round_robin_config") or {}).get("enabled"):
            return None  # whose turn it is: not simulated (RoundRobinConfig)
        targets = first["level"]["targets"]
        if any(t["type"] == "schedule" and t["id"] in self.schedules
               and not self.schedules[t["id"]].renderable for t in targets):
            return None
        now = self.clock.now()
        out: list[str] = []
        for t in targets:
            found = ([t["id"]] if t["type"] == "user" else
                     self.on_call_users(self.schedules[t["id"]], now)
                     if t["id"] in self.schedules else [])
            out += [u for u in found if u not in out]
        return out

    def check_pageable(self, path_id: str) -> None:
        """An escalation through the path that the simulator cannot stand in for is refused
        400 ``not_simulated`` (ours) before anything is created (alert, incident,
        escalation). The simulator's escalations notify whoever is on call in its first
        schedule, not the path's targets (ours): through a round-robin level that answer
        would pass for whose turn it is (RoundRobinConfig), and when the first schedule is
        ``fair`` nobody can be named at all."""
        if any((lvl.get("round_robin_config") or {}).get("enabled")
               for lvl in _levels(self.paths[path_id].nodes)):
            raise ApiError(400, "not_simulated", "not simulated: paging through a round-robin "
                           "level (whose turn it is)", field="escalation_path_id")
        first = next(iter(self.schedules.values()), None)
        if first is not None and not first.renderable:
            raise ApiError(400, "not_simulated", "not simulated: who is on call in "
                           f"{first.name!r}, whom the simulator's escalations notify "
                           "(alternating handovers scheduled 'fair')",
                           field="escalation_path_id")

    def _path_nodes(self, body: PathBody) -> list[dict[str, Any]]:
        seen: set[str] = set()

        def walk(nodes: list[PathNode], where: str) -> list[dict[str, Any]]:
            out = []
            for i, node in enumerate(nodes):
                here = f"{where}[{i}]"
                if node.type not in SIMULATED_NODES:
                    raise ApiError(400, "not_simulated", f"not simulated: {node.type} nodes",
                                   field=f"{here}.type")
                if node.id in seen:
                    raise ApiError(422, "invalid_value", "Node ids must be unique",
                                   field=f"{here}.id")
                seen.add(node.id)
                data = getattr(node, node.type)
                if data is None:
                    raise ApiError(422, "is_required", f"a {node.type} node needs {node.type}",
                                   field=f"{here}.{node.type}")
                if isinstance(data, LevelNode):
                    self._check_targets(data, f"{here}.level")
                if isinstance(data, RepeatNode):
                    if data.to_node not in seen or data.to_node == node.id:
                        raise ApiError(422, "invalid_value", "to_node must name an earlier node",
                                       field=f"{here}.repeat.to_node")
                    if data.repeat_times < 1:
                        raise ApiError(422, "invalid_value", "repeat_times must be at least 1",
                                       field=f"{here}.repeat.repeat_times")
                row: dict[str, Any] = {"id": node.id, "type": node.type}
                if isinstance(data, IfElseNode):
                    row["if_else"] = {
                        "conditions": [c.model_dump(exclude_none=True)
                                       for c in data.conditions or []],
                        "then_path": walk(data.then_path, f"{here}.if_else.then_path"),
                        "else_path": walk(data.else_path, f"{here}.if_else.else_path")}
                else:
                    row[node.type] = data.model_dump(exclude_none=True)
                out.append(row)
            return out

        if not body.path:
            raise ApiError(422, "is_required", "A path needs at least one node", field="path")
        return walk(body.path, "path")

    def _check_targets(self, level: LevelNode, where: str) -> None:
        if not level.targets:
            raise ApiError(422, "is_required", "A level needs a target", field=f"{where}.targets")
        for j, t in enumerate(level.targets):
            spot = f"{where}.targets[{j}]"
            if t.type in ("slack_channel", "msteams_channel"):
                raise ApiError(400, "not_simulated", f"not simulated: {t.type} targets",
                               field=f"{spot}.type")
            if t.type == "schedule" and t.id not in self.schedules:
                raise ApiError(422, "invalid_value", "Schedule not found", field=f"{spot}.id")
            if t.type == "user" and t.id not in self.users:
                raise ApiError(422, "invalid_value", "User not found", field=f"{spot}.id")
        if level.time_to_ack_seconds is not None and level.time_to_ack_seconds < 0:
            raise ApiError(422, "invalid_value", "time_to_ack_seconds must not be negative",
                           field=f"{where}.time_to_ack_seconds")
        retry = level.retry_config
        if retry is not None and not 2 <= retry.attempts <= 10:
            raise ApiError(422, "invalid_value", "attempts must be between 2 and 10",
                           field=f"{where}.retry_config.attempts")
        if retry is not None and (retry.interval_seconds <= 0 or retry.interval_seconds % 60):
            raise ApiError(422, "invalid_value", "interval_seconds must be a whole number of "
                           "minutes", field=f"{where}.retry_config.interval_seconds")

    async def h_create_path(self, request: Request, key: ApiKey) -> Response:
        body = PathBody.model_validate(await self._json_body(request))
        now = self.clock.now()
        p = Path(self._next("P"), body.name, self._path_nodes(body), now, now,
                 list(body.team_ids or []))
        self.paths[p.id] = p
        return JSONResponse({"escalation_path": self.path_json(p)}, status_code=201)

    def _path(self, pid: str) -> Path:
        p = self.paths.get(pid)
        if p is None:
            raise ApiError(404, "not_found", "Escalation path not found")
        return p

    async def h_update_path(self, request: Request, key: ApiKey) -> Response:
        p = self._path(request.path_params["id"])
        body = PathBody.model_validate(await self._json_body(request))
        p.nodes, p.name, p.updated = self._path_nodes(body), body.name, self.clock.now()
        if body.team_ids is not None:
            p.team_ids = list(body.team_ids)
        return JSONResponse({"escalation_path": self.path_json(p)})

    async def h_list_paths(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "escalation_paths")
        return self.page(request, "escalation_paths", list(self.paths.values()), size,
                         lambda p: p.id, self.path_json)

    async def h_show_path(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"escalation_path": self.path_json(
            self._path(request.path_params["id"]))})


def _levels(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every stored level body of a path, inside if/else branches too."""
    for node in nodes:
        if node["type"] == "level":
            yield node["level"]
        elif node["type"] == "if_else":
            yield from _levels(node["if_else"]["then_path"])
            yield from _levels(node["if_else"]["else_path"])


def _draft_ids() -> Callable[[str], str]:
    """Ids for a previewed definition: nothing is saved, so no id is issued."""
    counter = itertools.count(1)
    return lambda kind: ulid("Z" + kind, next(counter))


def _node_json(node: dict[str, Any]) -> dict[str, Any]:
    """A stored node in the response shape: conditions carry labelled subject/operation
    objects (``ConditionV2``), bindings labelled values (``EngineParamBindingValueV2``)."""
    if node["type"] != "if_else":
        return node
    branch = node["if_else"]
    return {"id": node["id"], "type": "if_else", "if_else": {
        "conditions": [{
            "subject": {"label": c["subject"], "reference": c["subject"]},
            "operation": {"label": c["operation"], "value": c["operation"]},
            "param_bindings": [_binding(b) for b in c["param_bindings"]]}
            for c in branch["conditions"]],
        "then_path": [_node_json(n) for n in branch["then_path"]],
        "else_path": [_node_json(n) for n in branch["else_path"]]}}


def _binding(binding: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        v = v if isinstance(v, dict) else {}
        label = v.get("literal") or v.get("reference") or ""
        return {"label": str(label), **{k: str(v[k]) for k in ("literal", "reference")
                                         if k in v}}

    out: dict[str, Any] = {}
    if "value" in binding:
        out["value"] = value(binding["value"])
    if isinstance(binding.get("array_value"), list):
        out["array_value"] = [value(v) for v in binding["array_value"]]
    return out
