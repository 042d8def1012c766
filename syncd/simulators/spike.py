"""Spike.sh simulator: one seeded team behind the x-api-key/x-team-id API and a webhook intake.

Facts come from ../shared/vendor-notes/victorops-spike.md part B (labels [SP-S] official
OpenAPI 1.1.0, [SP-D] current docs, [SP-AE] third-party rebuild of the current docs, [SP-KB]
product docs, [SP-RC] Raycast extension). Where the sources are silent we had to choose; every
choice is listed here and in docs/vendors/spike.md:

- Auth: ``x-api-key`` on every call (401 ``{message, error}`` when missing or wrong);
  ``x-team-id`` on team-scoped calls (400 when missing, 401 for a team the key cannot see)
  [SP-D getting-started, SP-S info]. Overrides take no team header in [SP-AE]; it is optional there.
- Incident JSON: the observed field names [SP-RC]: ``_id``, ``counterId`` (string, team-prefixed
  like ``sre-101`` [SP-D]), ``message`` (the title), ``status`` NACK/ACK/RES, ``NACK_at``,
  ``ACK_at``, ``RES_at``, ``createdAt``, ``escalation{_id,name}``, ``integration{_id,customName}``,
  ``groupedIncident{priority,severity}``. [SP-AE]'s schema names ``title``, ``priority``,
  ``severity`` and ``updatedAt`` at the top level, so those are emitted too (same values).
- ``GET /incidents``: ``{incidents, totalIncidents, totalOpenIncidents, pagination}`` (the shape a
  third party describes, notes B2), newest first, ``page``/``perPage`` with perPage <= 100 like
  all-occurrences [SP-D]. ``/incidents/triggered`` and ``/incidents/acknowledged`` use the same
  envelope and paging (undocumented; our choice). ``/incidents/{counterId}`` is the bare incident
  ([SP-AE] ``$ref Incident``).
- ``/incidents/all-occurrences`` (start, end required; status, page, perPage <= 100 [SP-D]):
  "occurrences within a time range" is read as incidents whose open life
  ``[createdAt, RES_at or now]`` overlaps ``[start, end]``; so ``status=RES`` with ``start`` =
  last poll lists every resolve since then. Our reading; the docs do not say which timestamp.
- Actions take counter ids [SP-S, SP-D]. Their 200 body is undocumented ("No content" in the
  GitBook example): we answer ``{message, updated, unchanged, failed[{id,message,error}],
  incidents}`` so a batch can report per-record outcomes. Unknown ids and invalid transitions
  (ack/unack/escalate a resolved incident) are per-record failures, not a whole-batch error.
  At most ``max_batch_ids`` (default 100, ours; Spike documents none) ids per call, else 400.
  ``action_answer="empty"`` answers the documented example instead, a 200 with no content, so a
  client can be tested against both.
- Webhook intake ``POST /{token}/push-events`` (real host hooks.spike.sh, served here on the same
  app) [SP-KB integrating-with-webhooks]: 200 ``{"Ok": true}`` or 500 ``{}``; no new incident while
  one with the same title is open in that integration; ``status: "resolve"`` resolves it; the same
  title 20+ times in 60 s is suppressed for a minute [SP-KB rate-limiting-on-duplicate-incidents].
- ``POST /incidents/create`` requires title, escalation, integration [SP-S]; it goes through the
  same integration (same title dedupe) and answers ``{message, incident}`` (ours).
- Priority and severity are remembered per integration and title: a repeat after the incident
  resolved carries the values last set on it, unless its event sends its own, which overwrite
  them [SP-KB priority-and-severity].
- Acknowledge timeout: an ACK incident returns to NACK after its integration's ``ackTimeout``
  [SP-KB acknowledge-timeout], run from the sim clock.
- API rate limit: Spike publishes none (notes B8); we enforce ``rate_limit_per_minute`` per key
  (default 60, the number is ours) answering 429 ``{message, error}`` with ``Retry-After``.
- On-call: ``GET /on-calls`` ``{oncalls: [...]}``, ``GET /on-calls/{id}?from=`` (schedule with
  ``shifts`` for 7 days from ``from``), ``GET /oncalls/all-active-on-call-shifts`` ``{shifts}``,
  ``GET /oncalls/am-i-on-call?id=``, overrides under the mixed ``oncalls``/``on-calls`` prefixes
  exactly as documented [SP-D on-call-overrides]; the most recent override wins [SP-KB].
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.simulators.base import Simulator, parse_time
from syncd.simulators.oncall import EPOCH, Layer, Span, final
from syncd.simulators.validation import (
    Body,
    DateTime,
    Intake,
    Operation,
    Problem,
    Query,
    Text,
    TimeZone,
    Unmodelled,
)

DEFAULT_API_KEY = "spike-sim-api-key-0000000000000001"
TEAM_ID = "65a1f0c2e4b0a1b2c3d4e5f6"
OTHER_TEAM_ID = "65a1f0c2e4b0a1b2c3d4e5f7"
WEBHOOK_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
ESCALATION_ID = "65a1f0c2e4b0a1b2c3d4e600"
SERVICE_ID = "65a1f0c2e4b0a1b2c3d4e610"
ORG_ID = "65a1f0c2e4b0a1b2c3d4e5f0"

STATUSES = ("NACK", "ACK", "RES")
PRIORITIES = ("p1", "p2", "p3", "p4", "p5")
SEVERITIES = ("sev1", "sev2", "sev3")
CANONICAL_STATE = {"NACK": "triggered", "ACK": "acknowledged", "RES": "resolved"}
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25
DUPLICATE_THRESHOLD = 20  # same title 20+ times in 60 s ... [SP-KB]
DUPLICATE_WINDOW = 60.0
DUPLICATE_SUPPRESS = 60.0  # ... is suppressed for 1 minute
SHIFT_HORIZON = timedelta(days=7)


# What each operation accepts ([SP-S] spike-openapi-v1.1.0.yml, [SP-AE] for what it lacks).
Priority = Literal["p1", "p2", "p3", "p4", "p5"]
Sev = Literal["sev1", "sev2", "sev3"]


class CreateIncident(Body):
    title: Text
    escalation: Text
    integration: Text
    metadata: str | dict[str, Any] | None = None  # a string in [SP-S], an object in [SP-AE]
    priority: Priority | None = None
    severity: Sev | None = None


class Ids(Body):
    ids: list[str]


class SetPriority(Ids):
    priority: Priority


class SetSeverity(Ids):
    severity: Sev


class Sharing(Body):
    publicSharing: bool


class AddOverride(Body):
    user: Text
    start: DateTime
    end: DateTime
    desc: str | None = None
    timezone: TimeZone | None = None  # times carry their offset


class Paging(Query):
    page: int | None = None
    perPage: int | None = None


class OccurrencesQuery(Paging):
    start: DateTime | None = None
    end: DateTime | None = None
    status: str | None = None
    teams: Unmodelled = None  # documented filters the simulator does not apply [SP-D]
    service: Unmodelled = None
    integration: Unmodelled = None


class FromQuery(Query):
    from_: DateTime | None = Field(None, alias="from")


class WindowQuery(FromQuery):
    to: DateTime | None = None


class PushEvent(Intake):
    """A webhook event [SP-KB integrating-with-webhooks]: the fields Spike reads typed, the rest
    of the payload kept as the incident's metadata."""

    title: Text
    status: str | None = None
    severity: Sev | None = None
    priority: Priority | None = None


OPERATIONS: dict[str, Operation] = {
    # The webhook's one documented failure answer is 500 {} (module docstring).
    "POST /{token}/push-events": Operation(
        body=PushEvent, answer=lambda _problems: JSONResponse({}, status_code=500)),
    "GET /incidents": Operation(query=Paging),
    "GET /incidents/triggered": Operation(query=Paging),
    "GET /incidents/acknowledged": Operation(query=Paging),
    "GET /incidents/all-occurrences": Operation(query=OccurrencesQuery),
    "POST /incidents/create": Operation(body=CreateIncident),
    "POST /incidents/acknowledge": Operation(body=Ids),
    "POST /incidents/unacknowledge": Operation(body=Ids),
    "POST /incidents/resolve": Operation(body=Ids),
    "POST /incidents/escalate": Operation(body=Ids),
    "POST /incidents/priority": Operation(body=SetPriority),
    "POST /incidents/severity": Operation(body=SetSeverity),
    "DELETE /incidents/priority/remove": Operation(body=Ids),
    "DELETE /incidents/severity/remove": Operation(body=Ids),
    "PATCH /incidents/{counterId}/public-sharing": Operation(body=Sharing),
    "GET /on-calls/{oncallId}": Operation(query=FromQuery),
    "GET /oncalls/{oncall_id}/overrides": Operation(query=WindowQuery),
    "POST /on-calls/{oncall_id}/overrides/add": Operation(body=AddOverride),
}


def stamp(dt: datetime | None) -> str | None:
    """Mongo/JS style ISO 8601 with milliseconds and Z, as Spike renders dates."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _oid(n: int, prefix: str = "66") -> str:
    return f"{prefix}{n:022x}"


def spike_error(status: int, message: str, error: str) -> JSONResponse:
    """Spike's documented error body: ``Error{message, error}`` [SP-D, SP-AE]."""
    return JSONResponse({"message": message, "error": error}, status_code=status)


@dataclass
class User:
    id: str
    name: str
    email: str
    role: str = "member"

    def to_json(self) -> dict[str, Any]:
        return {"_id": self.id, "name": self.name, "email": self.email, "role": self.role}


@dataclass
class Integration:
    token: str
    id: str
    custom_name: str
    escalation: str
    service: str
    ack_timeout: float  # seconds (the UI sets minutes)
    slug: str = "webhook"


@dataclass
class Override:
    id: str
    user: str
    start: datetime
    end: datetime
    desc: str
    created: int  # sequence: the most recent override wins

    def to_json(self, users: dict[str, User]) -> dict[str, Any]:
        return {
            "_id": self.id,
            "user": users[self.user].to_json(),
            "start": stamp(self.start),
            "end": stamp(self.end),
            "desc": self.desc,
        }


def _spike_joinable(prev: Span, nxt: Span) -> bool:
    """One user's adjacent spans join unless one is an override and the other is not."""
    return prev.user == nxt.user and (prev.override is None) == (nxt.override is None)


@dataclass
class Schedule:
    id: str
    name: str
    layers: list[Layer]
    overrides: list[Override] = field(default_factory=list)
    description: str = ""

    def layer_id(self) -> str:
        return self.id[:-4] + "aa" + self.id[-2:]

    def shifts(self, start: datetime, end: datetime) -> list[tuple[str, datetime, datetime, bool]]:
        """(user, start, end, is_override) covering [start, end); the most recent override wins
        where overrides overlap [SP-KB]."""
        spans = final(self.layers, self.overrides, start, end, user_of=lambda o: o.user,
                      rank=lambda o: o.created, joinable=_spike_joinable)
        return [(s.user, s.start, s.end, s.override is not None) for s in spans
                if s.user is not None]


@dataclass
class SpikeIncident:
    oid: str
    counter: str
    seq: int
    title: str
    team: str
    integration: Integration
    status: str
    created: datetime
    nack_at: datetime
    updated: datetime
    body: Any = None
    ack_at: datetime | None = None
    res_at: datetime | None = None
    priority: str | None = None
    severity: str | None = None
    public_sharing: bool = False
    escalation_level: int = 1
    ack_generation: int = 0
    suppressed: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, escalation_name: str) -> dict[str, Any]:
        return {
            "_id": self.oid,
            "counterId": self.counter,
            "message": self.title,
            "title": self.title,
            "status": self.status,
            "NACK_at": stamp(self.nack_at),
            "ACK_at": stamp(self.ack_at),
            "RES_at": stamp(self.res_at),
            "createdAt": stamp(self.created),
            "updatedAt": stamp(self.updated),
            "metadata": self.body if isinstance(self.body, dict) else {"body": self.body or ""},
            "priority": self.priority,
            "severity": self.severity,
            "groupedIncident": {"priority": self.priority, "severity": self.severity, "notes": []},
            "escalation": {"_id": self.integration.escalation, "name": escalation_name},
            "integration": {
                "_id": self.integration.id,
                "customName": self.integration.custom_name,
            },
            "team": self.team,
            "publicSharing": self.public_sharing,
            "suppressedCount": self.suppressed,
            "links": [],
        }


class TeamStore:
    """One team's incidents, indexed so open lists never scan resolved ones."""

    def __init__(self, team_id: str, prefix: str) -> None:
        self.team_id = team_id
        self.prefix = prefix
        self.next_seq = 101
        self.by_counter: dict[str, SpikeIncident] = {}
        self.order: list[str] = []  # creation order
        self.open: dict[str, dict[str, SpikeIncident]] = {"NACK": {}, "ACK": {}}
        self.resolved: list[tuple[datetime, int, str]] = []  # sorted by RES_at
        self.open_by_title: dict[tuple[str, str], str] = {}


class SpikeSimulator(Simulator):
    """Spike.sh API + webhook intake for one organisation with one seeded team (SRE)."""

    vendor = "spike"
    operations = OPERATIONS

    def __init__(
        self,
        *,
        seed: int = 0,
        rate_limits: bool = True,
        api_key: str = DEFAULT_API_KEY,
        rate_limit_per_minute: float = 60.0,
        ack_timeout: float = 1800.0,
        max_batch_ids: int = 100,
        action_answer: str = "detailed",
    ) -> None:
        if action_answer not in ("detailed", "empty"):
            raise ValueError("action_answer must be 'detailed' or 'empty'")
        self.action_answer = action_answer
        self.api_key = api_key
        self.rate_limit_per_minute = rate_limit_per_minute
        self.ack_timeout = ack_timeout
        self.max_batch_ids = max_batch_ids
        super().__init__(seed=seed, rate_limits=rate_limits)

    # ------------------------------------------------------------------ seeded account

    def reset(self) -> None:
        self.users = {
            u.id: u
            for u in [
                User(_oid(1), "Alice Admin", "alice@example.com", "owner"),
                User(_oid(2), "Bob Builder", "bob@example.com"),
                User(_oid(3), "Carol Chen", "carol@example.com"),
                User(_oid(4), "Dave Diaz", "dave@example.com"),
                User(_oid(5), "Erin Evans", "erin@example.com"),
                User(_oid(6), "syncd-bot", "syncd-bot@example.com", "admin"),
            ]
        }
        self.teams = {
            TEAM_ID: {"_id": TEAM_ID, "name": "SRE", "slug": "sre"},
            OTHER_TEAM_ID: {"_id": OTHER_TEAM_ID, "name": "Data", "slug": "data"},
        }
        self.stores = {TEAM_ID: TeamStore(TEAM_ID, "sre"), OTHER_TEAM_ID: TeamStore(
            OTHER_TEAM_ID, "data")}
        self.escalations = {ESCALATION_ID: "SRE default escalation"}
        self.integrations = {
            WEBHOOK_TOKEN: Integration(
                WEBHOOK_TOKEN, _oid(40), "Monitoring webhook", ESCALATION_ID, SERVICE_ID,
                self.ack_timeout,
            )
        }
        self.integration_team = {WEBHOOK_TOKEN: TEAM_ID}
        self.schedules = {
            s.id: s
            for s in [
                Schedule(_oid(20), "SRE primary", [Layer(
                    (_oid(1), _oid(2), _oid(3)), timedelta(hours=24))],
                         description="Daily handover at 09:00 UTC"),
                Schedule(_oid(21), "SRE secondary", [Layer(
                    (_oid(4), _oid(5)), timedelta(hours=24 * 7))],
                         description="Weekly backup rotation"),
            ]
        }
        self.schedule_team = {sid: TEAM_ID for sid in self.schedules}
        self.override_seq = 0
        self.oid_seq = 1000
        self.ack_heap: list[tuple[datetime, int, str, int]] = []
        self.flood: dict[tuple[str, str], deque[float]] = {}
        self.flood_until: dict[tuple[str, str], float] = {}
        # (integration token, title) -> the priority/severity last set on that incident:
        # "Once set, we will remember the severity and priority when the incident occurs in
        # the future" (SP-KB incidents/priority-and-severity.md, notes B5).
        self.remembered: dict[tuple[str, str], dict[str, str | None]] = {}

    @classmethod
    def account_table(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """Config keys for one of this simulator's describe() lines (docs/vendors/spike.md)."""
        creds, intake = desc["credentials"], desc["intake"]
        return {"vendor": cls.vendor, "base_url": desc["base_url"],
                "api_key": creds["api_key"], "team_id": creds["team_id"],
                "escalation_id": intake["escalation_id"],
                "integration_token": intake["integration_token"],
                "webhook_token": intake["webhook_token"]}

    def describe(self, base_url: str) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "base_url": base_url,
            "credentials": {"api_key": self.api_key, "team_id": TEAM_ID},
            "users": [u.email for u in self.users.values()],
            "intake": {
                "webhook_url": f"{base_url}/{WEBHOOK_TOKEN}/push-events",
                "webhook_token": WEBHOOK_TOKEN,
                "integration_token": WEBHOOK_TOKEN,
                "escalation_id": ESCALATION_ID,
            },
            "schedules": {s.name: s.id for s in self.schedules.values()},
        }

    # ------------------------------------------------------------------ incident core

    def _next_oid(self) -> str:
        self.oid_seq += 1
        return _oid(self.oid_seq, "67")

    def _new_incident(self, store: TeamStore, integ: Integration, title: str, *,
                      body: Any = None, severity: str | None = None,
                      priority: str | None = None, status: str = "NACK",
                      at: datetime | None = None, history: bool = True) -> SpikeIncident:
        now = at or self.clock.now()
        seq = store.next_seq
        store.next_seq += 1
        counter = f"{store.prefix}-{seq}"
        inc = SpikeIncident(
            oid=self._next_oid(), counter=counter, seq=seq, title=title, team=store.team_id,
            integration=integ, status="NACK", created=now, nack_at=now, updated=now, body=body,
            priority=priority, severity=severity,
        )
        if history:
            inc.history.append({"action": "triggered", "at": stamp(now), "by": integ.custom_name})
        store.by_counter[counter] = inc
        store.order.append(counter)
        store.open["NACK"][counter] = inc
        store.open_by_title[(integ.token, title)] = counter
        if status != "NACK":
            self._transition(store, inc, status, by="seed", at=now, history=history)
        return inc

    def _transition(self, store: TeamStore, inc: SpikeIncident, status: str, *, by: str,
                    at: datetime | None = None, history: bool = True) -> None:
        now = at or self.clock.now()
        old = inc.status
        if old == status:
            return
        if old in store.open:
            store.open[old].pop(inc.counter, None)
        inc.status = status
        inc.updated = now
        if status == "ACK":
            inc.ack_at = now
            inc.ack_generation += 1
            store.open["ACK"][inc.counter] = inc
            timeout = inc.integration.ack_timeout
            if timeout > 0:
                heapq.heappush(self.ack_heap, (now + timedelta(seconds=timeout), inc.seq,
                                               store.team_id, inc.ack_generation))
        elif status == "NACK":
            inc.nack_at = now
            store.open["NACK"][inc.counter] = inc
        else:
            inc.res_at = now
            key = (inc.integration.token, inc.title)
            if store.open_by_title.get(key) == inc.counter:
                del store.open_by_title[key]
            entry = (now, inc.seq, inc.counter)
            if not store.resolved or store.resolved[-1] <= entry:
                store.resolved.append(entry)
            else:
                bisect.insort(store.resolved, entry)
        if history:
            verb = {"ACK": "acknowledged", "NACK": "unacknowledged", "RES": "resolved"}[status]
            inc.history.append({"action": verb, "at": stamp(now), "by": by})

    def _apply(self, store: TeamStore, inc: SpikeIncident, action: str, *, by: str,
               value: str | None = None) -> str:
        """One action on one incident: "updated", "unchanged", or raise ValueError (refused)."""
        status = inc.status
        if action == "acknowledge":
            if status == "RES":
                raise ValueError("Incident is already resolved and cannot be acknowledged")
            if status == "ACK":
                return "unchanged"
            self._transition(store, inc, "ACK", by=by)
        elif action == "unacknowledge":
            if status == "RES":
                raise ValueError("Incident is resolved and cannot be unacknowledged")
            if status == "NACK":
                return "unchanged"
            self._transition(store, inc, "NACK", by=by)
        elif action == "resolve":
            if status == "RES":
                return "unchanged"
            self._transition(store, inc, "RES", by=by)
        elif action == "escalate":
            if status == "RES":
                raise ValueError("Incident is resolved and cannot be escalated")
            inc.escalation_level += 1
            inc.updated = self.clock.now()
            inc.history.append({"action": "escalated", "at": stamp(inc.updated), "by": by,
                                "level": inc.escalation_level})
        elif action in ("priority", "severity"):
            if getattr(inc, action) == value:
                return "unchanged"
            setattr(inc, action, value)
            self.remembered.setdefault((inc.integration.token, inc.title), {})[action] = value
            inc.updated = self.clock.now()
            inc.history.append({"action": f"{action} changed" if value else f"{action} removed",
                                "at": stamp(inc.updated), "by": by, "value": value})
        else:  # pragma: no cover - routes only pass known actions
            raise ValueError(f"unknown action {action}")
        return "updated"

    def tick(self) -> None:
        """Acknowledge timeouts: ACK goes back to NACK once the integration's timeout passes."""
        now = self.clock.now()
        while self.ack_heap and self.ack_heap[0][0] <= now:
            due, seq, team, generation = heapq.heappop(self.ack_heap)
            store = self.stores[team]
            inc = store.by_counter.get(f"{store.prefix}-{seq}")
            if inc is None or inc.status != "ACK" or inc.ack_generation != generation:
                continue
            self._transition(store, inc, "NACK", by="Acknowledge timeout", at=due)

    def _intake(self, token: str, payload: dict[str, Any]) -> SpikeIncident | None:
        """The webhook integration: title dedupe, auto-resolve, duplicate flood suppression."""
        integ = self.integrations.get(token)
        if integ is None:
            raise LookupError("unknown integration token")
        title = payload.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ValueError("title is required")
        store = self.stores[self.integration_team[token]]
        key = (token, title)
        open_counter = store.open_by_title.get(key)
        if payload.get("status") == "resolve":
            if open_counter is None:
                return None
            inc = store.by_counter[open_counter]
            self._transition(store, inc, "RES", by=integ.custom_name)
            return inc
        severity = payload.get("severity")
        priority = payload.get("priority")
        if severity is not None and severity not in SEVERITIES:
            raise ValueError("severity must be sev1..sev3")
        if priority is not None and priority not in PRIORITIES:
            raise ValueError("priority must be p1..p5")
        now = self.clock.monotonic()
        hits = self.flood.setdefault(key, deque())
        while hits and hits[0] <= now - DUPLICATE_WINDOW:
            hits.popleft()
        hits.append(now)
        suppressed = self.flood_until.get(key, 0.0) > now
        if not suppressed and len(hits) >= DUPLICATE_THRESHOLD:
            self.flood_until[key] = now + DUPLICATE_SUPPRESS
            suppressed = True
        if open_counter is not None:
            inc = store.by_counter[open_counter]
            inc.suppressed += 1
            return inc
        if suppressed:
            return None
        # A repeat takes the values remembered for it; values the event sends overwrite them
        # (SP-KB incidents/priority-and-severity.md: integrations "overwrite your incident's
        # priority and severity").
        memory = self.remembered.setdefault(key, {})
        for field_, sent in (("severity", severity), ("priority", priority)):
            if sent is not None:
                memory[field_] = sent
        return self._new_incident(store, integ, title, body=payload.get("body"),
                                  severity=memory.get("severity"),
                                  priority=memory.get("priority"))

    # ------------------------------------------------------------------ simulator hooks

    def seed_incidents(self, count: int, *, state: str = "triggered",
                       age_days: float = 0.0) -> list[str]:
        status = {"triggered": "NACK", "acknowledged": "ACK", "resolved": "RES"}.get(state)
        if status is None:
            raise ValueError(f"unknown state {state!r}")
        store = self.stores[TEAM_ID]
        integ = self.integrations[WEBHOOK_TOKEN]
        start = self.clock.now() - timedelta(days=30 + age_days)
        ids = []
        for i in range(count):
            at = start + timedelta(seconds=i)
            inc = self._new_incident(store, integ, f"Seeded incident {store.next_seq}",
                                     severity=SEVERITIES[i % 3], at=at, history=False)
            if status != "NACK":
                # acknowledged "now", so the ack timeout does not fire on the next request
                when = self.clock.now() if status == "ACK" else at
                self._transition(store, inc, status, by="seed", at=when, history=False)
            ids.append(inc.counter)
        return ids

    def canonical_incidents(self) -> list[dict[str, Any]]:
        out = []
        for store in self.stores.values():
            for counter in store.order:
                inc = store.by_counter[counter]
                out.append({
                    "id": inc.counter,
                    "state": CANONICAL_STATE[inc.status],
                    "severity": inc.severity,
                    "dedup": inc.title,
                    "title": inc.title,
                    "updated_at": stamp(inc.updated),
                })
        return out

    def act(self, incident_id: str, action: str, *, user: str | None = None,
            severity: str | None = None) -> dict[str, Any]:
        store = self.stores[TEAM_ID]
        inc = store.by_counter[incident_id]  # KeyError for an unknown id
        by = user or "alice@example.com"
        if action == "reopen":
            raise ValueError("Spike has no reopen: a resolved incident stays resolved")
        if action == "severity":
            if severity in SEVERITIES:
                self._apply(store, inc, "severity", by=by, value=severity)
            elif severity in PRIORITIES:
                self._apply(store, inc, "priority", by=by, value=severity)
            else:
                raise ValueError("Spike severities are sev1..sev3 (priorities p1..p5)")
        elif action in ("acknowledge", "unacknowledge", "resolve"):
            self._apply(store, inc, action, by=by)
        else:
            raise ValueError(f"unknown action {action!r}")
        return self._incident_json(inc)

    def alert(self, *, dedup: str, title: str, action: str = "trigger",
              severity: str | None = None) -> dict[str, Any]:
        """Spike's title is the dedupe key, so ``dedup`` becomes the webhook title."""
        if action == "acknowledge":
            raise ValueError("Spike webhooks cannot acknowledge (no webhook ack is documented)")
        payload: dict[str, Any] = {"title": dedup, "body": title}
        if action == "resolve":
            payload["status"] = "resolve"
        elif action != "trigger":
            raise ValueError(f"unknown alert action {action!r}")
        if severity is not None:
            payload["severity"] = severity
        inc = self._intake(WEBHOOK_TOKEN, payload)
        return {"Ok": True, "incident": self._incident_json(inc) if inc else None}

    def rate_limited(self, request: Request, retry_after: float) -> Response:
        response = spike_error(429, "Too many requests, please slow down", "Too Many Requests")
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return response

    # ------------------------------------------------------------------ request plumbing

    def _incident_json(self, inc: SpikeIncident) -> dict[str, Any]:
        return inc.to_json(self.escalations.get(inc.integration.escalation, ""))

    async def _auth(self, request: Request, *, team: str = "required"
                    ) -> Response | TeamStore | None:
        """Check headers, then the operation's schema; returns an error Response, the team's
        store, or None (no team)."""
        key = request.headers.get("x-api-key")
        if not key or key != self.api_key:
            return spike_error(401, "Invalid or missing API key", "Unauthorized")
        wait = self.limit(key, "api", self.rate_limit_per_minute, 60.0)
        if wait is not None:
            return self.rate_limited(request, wait)
        team_id = request.headers.get("x-team-id")
        if not team_id:
            if team == "required":
                return spike_error(400, "x-team-id header is required", "Bad Request")
            return await self.validate(request)
        store = self.stores.get(team_id)
        if store is None:
            return spike_error(401, "You do not have access to this team", "Unauthorized")
        return await self.validate(request) or store

    def invalid(self, problems: list[Problem]) -> Response:
        """Spike's documented 400 ``Error{message, error}`` [SP-D, SP-AE]."""
        return spike_error(400, "; ".join(p.message for p in problems), "Bad Request")

    async def _json_body(self, request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            return spike_error(400, "Request body is not valid JSON", "Bad Request")
        if not isinstance(data, dict):
            return spike_error(400, "Request body must be a JSON object", "Bad Request")
        return data

    def _paging(self, request: Request) -> tuple[int, int] | Response:
        try:
            page = int(request.query_params.get("page", 1))
            per_page = int(request.query_params.get("perPage", DEFAULT_PER_PAGE))
        except ValueError:
            return spike_error(400, "page and perPage must be integers", "Bad Request")
        if page < 1 or per_page < 1:
            return spike_error(400, "page and perPage must be positive", "Bad Request")
        if per_page > MAX_PER_PAGE:
            return spike_error(400, f"perPage cannot exceed {MAX_PER_PAGE}", "Bad Request")
        return page, per_page

    def _page(self, items: list[SpikeIncident], total: int, page: int, per_page: int,
              **extra: Any) -> JSONResponse:
        return JSONResponse({
            "incidents": [self._incident_json(i) for i in items],
            **extra,
            "pagination": {
                "page": page,
                "perPage": per_page,
                "total": total,
                "totalPages": max(1, math.ceil(total / per_page)),
            },
        })

    # ------------------------------------------------------------------ routes

    def routes(self) -> Iterable[BaseRoute]:
        return [
            Route("/orgs/members", self.r_members, methods=["GET"]),
            Route("/users", self.r_users, methods=["GET"]),
            Route("/teams", self.r_teams, methods=["GET"]),
            Route("/teams/get-all-teams", self.r_teams, methods=["GET"]),
            Route("/escalations", self.r_escalations, methods=["GET"]),
            Route("/integrations", self.r_integrations, methods=["GET"]),
            Route("/incidents", self.r_incidents, methods=["GET"]),
            Route("/incidents/triggered", self.r_open_list, methods=["GET"]),
            Route("/incidents/acknowledged", self.r_open_list, methods=["GET"]),
            Route("/incidents/all-occurrences", self.r_occurrences, methods=["GET"]),
            Route("/incidents/create", self.r_create, methods=["POST"]),
            Route("/incidents/acknowledge", self.r_action, methods=["POST"]),
            Route("/incidents/unacknowledge", self.r_action, methods=["POST"]),
            Route("/incidents/resolve", self.r_action, methods=["POST"]),
            Route("/incidents/escalate", self.r_action, methods=["POST"]),
            Route("/incidents/priority", self.r_action, methods=["POST"]),
            Route("/incidents/severity", self.r_action, methods=["POST"]),
            Route("/incidents/priority/remove", self.r_action, methods=["DELETE"]),
            Route("/incidents/severity/remove", self.r_action, methods=["DELETE"]),
            Route("/incidents/{counterId}", self.r_incident, methods=["GET"]),
            Route("/incidents/{counter_id}/activity-log", self.r_activity, methods=["GET"]),
            Route("/incidents/{counterId}/public-sharing", self.r_sharing, methods=["PATCH"]),
            Route("/on-calls", self.r_oncalls, methods=["GET"]),
            Route("/on-calls/{oncallId}", self.r_oncall, methods=["GET"]),
            Route("/oncalls/all-active-on-call-shifts", self.r_active, methods=["GET"]),
            Route("/oncalls/am-i-on-call", self.r_am_i, methods=["GET"]),
            Route("/oncalls/{oncall_id}/overrides", self.r_overrides, methods=["GET"]),
            Route("/on-calls/{oncall_id}/overrides/add", self.r_override_add, methods=["POST"]),
            Route("/on-calls/{oncall_id}/overrides/{override_id}/remove",
                  self.r_override_remove, methods=["DELETE"]),
            Route("/{token}/push-events", self.r_push_events, methods=["POST"]),
        ]

    async def r_members(self, request: Request) -> Response:
        auth = await self._auth(request, team="none")
        if isinstance(auth, Response):
            return auth
        return JSONResponse({"members": [u.to_json() for u in self.users.values()]})

    async def r_users(self, request: Request) -> Response:
        auth = await self._auth(request)
        if isinstance(auth, Response):
            return auth
        return JSONResponse({"users": [u.to_json() for u in self.users.values()]})

    async def r_teams(self, request: Request) -> Response:
        auth = await self._auth(request, team="none")
        if isinstance(auth, Response):
            return auth
        return JSONResponse({"teams": list(self.teams.values())})

    async def r_escalations(self, request: Request) -> Response:
        auth = await self._auth(request)
        if isinstance(auth, Response):
            return auth
        items = [{"_id": k, "name": v} for k, v in self.escalations.items()
                 if auth.team_id == TEAM_ID]
        return JSONResponse({"escalations": items})

    async def r_integrations(self, request: Request) -> Response:
        auth = await self._auth(request)
        if isinstance(auth, Response):
            return auth
        items = [
            {"token": i.token, "_id": i.id, "customName": i.custom_name, "slug": i.slug,
             "escalation": i.escalation, "service": i.service,
             "ackTimeout": int(i.ack_timeout // 60)}
            for t, i in self.integrations.items() if self.integration_team[t] == auth.team_id
        ]
        return JSONResponse({"integrations": items})

    async def r_incidents(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        paging = self._paging(request)
        if isinstance(paging, Response):
            return paging
        page, per_page = paging
        total = len(store.order)
        hi = total - (page - 1) * per_page
        counters = store.order[max(0, hi - per_page):max(0, hi)][::-1]
        items = [store.by_counter[c] for c in counters]
        open_total = len(store.open["NACK"]) + len(store.open["ACK"])
        return self._page(items, total, page, per_page, totalIncidents=total,
                          totalOpenIncidents=open_total)

    async def r_open_list(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        paging = self._paging(request)
        if isinstance(paging, Response):
            return paging
        page, per_page = paging
        status = "NACK" if request.url.path.endswith("/triggered") else "ACK"
        bucket = store.open[status]
        items = list(reversed(bucket.values()))[(page - 1) * per_page:page * per_page]
        return self._page(items, len(bucket), page, per_page)

    async def r_occurrences(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        q = request.query_params
        if "start" not in q or "end" not in q:
            return spike_error(400, "start and end are required (ISO 8601)", "Bad Request")
        try:
            start, end = parse_time(q["start"]), parse_time(q["end"])
        except ValueError:
            return spike_error(400, "start and end must be ISO 8601 dates", "Bad Request")
        if end < start:
            return spike_error(400, "end must not be before start", "Bad Request")
        wanted = set(STATUSES)
        if q.get("status"):
            wanted = {s.strip() for s in q["status"].split(",") if s.strip()}
            if not wanted <= set(STATUSES):
                return spike_error(400, "status must be a comma list of ACK,RES,NACK",
                                   "Bad Request")
        paging = self._paging(request)
        if isinstance(paging, Response):
            return paging
        page, per_page = paging
        found: list[SpikeIncident] = []
        for status in ("NACK", "ACK"):
            if status in wanted:
                found.extend(i for i in store.open[status].values() if i.created <= end)
        if "RES" in wanted:
            lo = bisect.bisect_left(store.resolved, (start, -1, ""))
            for _at, _seq, counter in store.resolved[lo:]:
                inc = store.by_counter[counter]
                if inc.created <= end:
                    found.append(inc)
        found.sort(key=lambda i: i.seq, reverse=True)
        return self._page(found[(page - 1) * per_page:page * per_page], len(found), page,
                          per_page)

    async def r_incident(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        inc = store.by_counter.get(request.path_params["counterId"])
        if inc is None:
            return spike_error(404, "Incident not found", "Not Found")
        return JSONResponse(self._incident_json(inc))

    async def r_activity(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        inc = store.by_counter.get(request.path_params["counter_id"])
        if inc is None:
            return spike_error(404, "Incident not found", "Not Found")
        return JSONResponse({"activityLog": list(inc.history)})

    async def r_sharing(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        inc = store.by_counter.get(request.path_params["counterId"])
        if inc is None:
            return spike_error(404, "Incident not found", "Not Found")
        if not isinstance(body.get("publicSharing"), bool):
            return spike_error(400, "publicSharing must be a boolean", "Bad Request")
        inc.public_sharing = body["publicSharing"]
        return JSONResponse({"message": "Public sharing updated",
                             "publicSharing": inc.public_sharing})

    async def r_create(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        missing = [k for k in ("title", "escalation", "integration")
                   if not isinstance(body.get(k), str) or not body[k]]
        if missing:
            return spike_error(400, f"Missing required field(s): {', '.join(missing)}",
                               "Bad Request")
        integ = self.integrations.get(body["integration"])
        if integ is None or self.integration_team[integ.token] != store.team_id:
            return spike_error(400, "Integration not found in this team", "Bad Request")
        if body["escalation"] not in self.escalations:
            return spike_error(400, "Escalation not found in this team", "Bad Request")
        payload = {"title": body["title"], "body": body.get("metadata"),
                   "severity": body.get("severity"), "priority": body.get("priority")}
        try:
            inc = self._intake(integ.token, payload)
        except ValueError as exc:
            return spike_error(400, str(exc), "Bad Request")
        if inc is None:
            return spike_error(400, "Incident suppressed: duplicate-incident rate limit",
                               "Bad Request")
        return JSONResponse({"message": "Incident created", "incident": self._incident_json(inc)})

    async def r_action(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(
            isinstance(i, str) and i for i in ids
        ):
            return spike_error(400, "ids must be a non-empty array of incident counter IDs",
                               "Bad Request")
        if len(ids) > self.max_batch_ids:
            return spike_error(400, f"ids cannot hold more than {self.max_batch_ids} incidents",
                               "Bad Request")
        path = request.url.path
        action = path.rsplit("/", 2)[-2] if path.endswith("/remove") else path.rsplit("/", 1)[-1]
        value: str | None = None
        if action in ("priority", "severity") and not path.endswith("/remove"):
            value = body.get(action)
            allowed = PRIORITIES if action == "priority" else SEVERITIES
            if value not in allowed:
                return spike_error(400, f"{action} must be one of {', '.join(allowed)}",
                                   "Bad Request")
        updated, unchanged, failed, touched = [], [], [], []
        for counter in dict.fromkeys(ids):
            inc = store.by_counter.get(counter)
            if inc is None:
                failed.append({"id": counter, "message": "Incident not found",
                               "error": "Not Found"})
                continue
            try:
                result = self._apply(store, inc, action, by="API", value=value)
            except ValueError as exc:
                failed.append({"id": counter, "message": str(exc), "error": "Bad Request"})
                continue
            (updated if result == "updated" else unchanged).append(counter)
            touched.append(self._incident_json(inc))
        if self.action_answer == "empty":
            return Response(status_code=200)  # Spike's documented example: "No content" [SP-D]
        verb = {"acknowledge": "acknowledged", "unacknowledge": "unacknowledged",
                "resolve": "resolved", "escalate": "escalated"}.get(action, f"{action} updated")
        return JSONResponse({
            "message": f"Incidents {verb}",
            "updated": updated,
            "unchanged": unchanged,
            "failed": failed,
            "incidents": touched,
        })

    async def r_push_events(self, request: Request) -> Response:
        if request.path_params["token"] not in self.integrations:
            return JSONResponse({}, status_code=500)
        refused = await self.validate(request)
        if refused is not None:
            return refused
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else None
            if not isinstance(payload, dict):
                raise ValueError("body must be an object")
            self._intake(request.path_params["token"], payload)
        except (ValueError, LookupError):
            return JSONResponse({}, status_code=500)  # the documented failure answer
        return JSONResponse({"Ok": True})

    # ------------------------------------------------------------------ on-call

    def _schedule(self, request: Request, key: str, store: TeamStore | None
                  ) -> Schedule | Response:
        sched = self.schedules.get(request.path_params[key])
        if sched is None or (store is not None and self.schedule_team[sched.id] != store.team_id):
            return spike_error(404, "On-call schedule not found", "Not Found")
        return sched

    def _schedule_json(self, sched: Schedule) -> dict[str, Any]:
        return {
            "_id": sched.id,
            "name": sched.name,
            "description": sched.description,
            "timezone": "UTC",
            "layers": [{
                "_id": sched.layer_id(),
                "name": "Layer 1",
                "users": [self.users[u].to_json() for u in layer.users],
                "rotation": {"length": int(layer.turn / timedelta(hours=1)), "unit": "hours"},
                "start": stamp(layer.start),
            } for layer in sched.layers[:1]],
            "createdAt": stamp(EPOCH - timedelta(days=30)),
        }

    def _shift_json(self, sched: Schedule, who: str, a: datetime, b: datetime,
                    is_override: bool) -> dict[str, Any]:
        return {
            "oncall": {"_id": sched.id, "name": sched.name},
            "layer": {"_id": sched.layer_id(), "name": "Layer 1"},
            "user": self.users[who].to_json(),
            "start": stamp(a),
            "end": stamp(b),
            "isOverride": is_override,
        }

    def _active(self, store: TeamStore) -> list[dict[str, Any]]:
        now = self.clock.now()
        out = []
        for sched in self.schedules.values():
            if self.schedule_team[sched.id] != store.team_id:
                continue
            # the whole shift the user is in, not just the instant
            shift = next(s for s in sched.shifts(now - SHIFT_HORIZON, now + SHIFT_HORIZON)
                         if s[1] <= now < s[2])
            out.append(self._shift_json(sched, *shift))
        return out

    async def r_oncalls(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        return JSONResponse({"oncalls": [
            self._schedule_json(s) for s in self.schedules.values()
            if self.schedule_team[s.id] == store.team_id
        ]})

    async def r_oncall(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        sched = self._schedule(request, "oncallId", store)
        if isinstance(sched, Response):
            return sched
        try:
            start = parse_time(request.query_params["from"])
        except KeyError:
            return spike_error(400, "from is required (ISO 8601)", "Bad Request")
        except ValueError:
            return spike_error(400, "from must be an ISO 8601 date", "Bad Request")
        shifts = sched.shifts(start, start + SHIFT_HORIZON)
        return JSONResponse({
            **self._schedule_json(sched),
            "from": stamp(start),
            "to": stamp(start + SHIFT_HORIZON),
            "shifts": [self._shift_json(sched, *s) for s in shifts],
        })

    async def r_active(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        return JSONResponse({"shifts": self._active(store)})

    async def r_am_i(self, request: Request) -> Response:
        store = await self._auth(request)
        if isinstance(store, Response):
            return store
        user = request.query_params.get("id")
        if not user:
            return spike_error(400, "id (user id) is required", "Bad Request")
        if user not in self.users:
            return spike_error(404, "User not found", "Not Found")
        shifts = [s for s in self._active(store) if s["user"]["_id"] == user]
        return JSONResponse({"isOnCall": bool(shifts), "shifts": shifts})

    async def r_overrides(self, request: Request) -> Response:
        store = await self._auth(request, team="optional")
        if isinstance(store, Response):
            return store
        sched = self._schedule(request, "oncall_id", store)
        if isinstance(sched, Response):
            return sched
        q = request.query_params
        try:
            start, end = parse_time(q["from"]), parse_time(q["to"])
        except KeyError:
            return spike_error(400, "from and to are required (ISO 8601)", "Bad Request")
        except ValueError:
            return spike_error(400, "from and to must be ISO 8601 dates", "Bad Request")
        items = [o.to_json(self.users) for o in sched.overrides if o.start < end and o.end > start]
        return JSONResponse({"overrides": items})

    async def r_override_add(self, request: Request) -> Response:
        store = await self._auth(request, team="optional")
        if isinstance(store, Response):
            return store
        sched = self._schedule(request, "oncall_id", store)
        if isinstance(sched, Response):
            return sched
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        user = body.get("user")
        if not isinstance(user, str) or user not in self.users:
            return spike_error(400, "user must be the id of a member of this organisation",
                               "Bad Request")
        try:
            start, end = parse_time(str(body["start"])), parse_time(str(body["end"]))
        except KeyError:
            return spike_error(400, "start and end are required (ISO 8601)", "Bad Request")
        except ValueError:
            return spike_error(400, "start and end must be ISO 8601 dates", "Bad Request")
        if end <= start:
            return spike_error(400, "end must be after start", "Bad Request")
        self.override_seq += 1
        override = Override(_oid(self.override_seq, "68"), user, start, end,
                            str(body.get("desc") or ""), self.override_seq)
        sched.overrides.append(override)
        return JSONResponse({"message": "Override added", "override": override.to_json(
            self.users)})

    async def r_override_remove(self, request: Request) -> Response:
        store = await self._auth(request, team="optional")
        if isinstance(store, Response):
            return store
        sched = self._schedule(request, "oncall_id", store)
        if isinstance(sched, Response):
            return sched
        oid = request.path_params["override_id"]
        for o in sched.overrides:
            if o.id == oid:
                sched.overrides.remove(o)
                return JSONResponse({"message": "Override removed"})
        return spike_error(404, "Override not found", "Not Found")
