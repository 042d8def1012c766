"""Splunk On-Call (VictorOps) simulator: the public API, reporting v2 and the REST endpoint.

Facts come from ../shared/vendor-notes/victorops-spike.md part A (cited as A1..A8) and the
Swagger specs in ../shared/vendor-specs/victorops/. What it enforces, in the vendor's words:

- ``X-VO-Api-Id`` + ``X-VO-Api-Key`` on every public/reporting call: 401 when missing, 403 when
  wrong; a read-only key may only GET (A1, spec ``responses``).
- Per-endpoint, per-minute limits from the 2018 spec (default) or the 2020 spec, answered with
  403 "Authentication failed or rate-limit reached" (spec), or 429 + Retry-After as an option
  (``rate_limit_status=429``, the newer behaviour the official Go client handles, A7). The notes
  record no rate-limit body (part D), so the 403 body is the same as an auth 403.
- Ack/resolve only work on open incidents, answered per incident with ``cmdAccepted`` in an
  HTTP 200; an unknown ``userName`` is a 404 (A2). There is no un-acknowledge, no reopen and no
  severity field (A8), so :meth:`act` refuses those.
- ``GET /api-public/v1/incidents`` is unpaginated: open, acknowledged and recently resolved
  (``resolved_retention`` seconds, a simulator choice: the vendor states no figure).
- Reporting v2: offset/limit (limit <= 100), filters, resolved-only by default (A3).
- REST endpoint intake keyed by ``entity_id``; WARNING opens an incident only when the org
  setting allows it; INFO never does (A6).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.simulators.base import Simulator, iso, parse_time
from syncd.simulators.oncall import Layer
from syncd.simulators.validation import (
    Body,
    DateTime,
    Intake,
    Operation,
    Problem,
    Query,
    Text,
)

V1 = "/api-public/v1"
V2 = "/api-public/v2"
REPORTING = "/api-reporting/v2/incidents"
REST_ALERT = "/integrations/generic/20131114/alert/{api_key}/{routing_key}"

# Per-endpoint limits per minute. 2020 = spec 0.0.3, 2018 = spec 0.0.2 (A7). Endpoints the
# 2018 spec does not list (incident by number, reroute, overrides, v2 users) take the 2020
# figure. Keys are "METHOD route-template", the same strings the client budgets by.
LIMITS_2020: dict[str, int] = {
    f"GET {V1}/incidents": 60,
    f"GET {V1}/incidents/{{incidentNumber}}": 60,
    f"POST {V1}/incidents": 60,
    f"PATCH {V1}/incidents/ack": 60,
    f"PATCH {V1}/incidents/resolve": 60,
    f"PATCH {V1}/incidents/byUser/ack": 60,
    f"PATCH {V1}/incidents/byUser/resolve": 60,
    f"POST {V1}/incidents/reroute": 60,
    f"GET {REPORTING}": 1,
    f"GET {V1}/oncall/current": 60,
    f"GET {V2}/team/{{team}}/oncall/schedule": 60,
    f"GET {V2}/user/{{user}}/oncall/schedule": 60,
    f"PATCH {V1}/policies/{{policy}}/oncall/user": 60,
    f"GET {V1}/overrides": 60,
    f"POST {V1}/overrides": 60,
    f"GET {V1}/overrides/{{publicId}}": 60,
    f"DELETE {V1}/overrides/{{publicId}}": 60,
    f"GET {V1}/overrides/{{publicId}}/assignments": 60,
    f"GET {V1}/overrides/{{publicId}}/assignments/{{policySlug}}": 60,
    f"PUT {V1}/overrides/{{publicId}}/assignments/{{policySlug}}": 60,
    f"DELETE {V1}/overrides/{{publicId}}/assignments/{{policySlug}}": 60,
    f"GET {V1}/user": 60,
    f"GET {V2}/user": 60,
    f"GET {V1}/team": 60,
    f"GET {V1}/team/{{team}}/members": 60,
    f"GET {V1}/policies": 60,
    f"GET {V1}/org/routing-keys": 60,
}
LIMITS_2018: dict[str, int] = {
    **LIMITS_2020,
    f"GET {V1}/incidents": 6,
    f"POST {V1}/incidents": 6,
    f"PATCH {V1}/incidents/ack": 6,
    f"PATCH {V1}/incidents/resolve": 6,
    f"PATCH {V1}/incidents/byUser/ack": 6,
    f"PATCH {V1}/incidents/byUser/resolve": 6,
    f"GET {V1}/oncall/current": 1,
    f"GET {V2}/team/{{team}}/oncall/schedule": 15,
    f"GET {V2}/user/{{user}}/oncall/schedule": 15,
    f"PATCH {V1}/policies/{{policy}}/oncall/user": 6,
    f"GET {V1}/user": 15,
    f"GET {V2}/user": 15,
    f"GET {V1}/team": 15,
    f"GET {V1}/team/{{team}}/members": 15,
    f"GET {V1}/policies": 1,
    f"GET {V1}/org/routing-keys": 1,
}
LIMIT_TABLES = {"2018": LIMITS_2018, "2020": LIMITS_2020}

MESSAGE_TYPES = ("CRITICAL", "WARNING", "INFO", "ACKNOWLEDGEMENT", "RECOVERY")
PHASES = {"UNACKED": "triggered", "ACKED": "acknowledged", "RESOLVED": "resolved"}
REPORTING_PHASES = {"triggered": "UNACKED", "acknowledged": "ACKED", "resolved": "RESOLVED"}
SEVERITY_OF_STATE = {"CRITICAL": "sev1", "WARNING": "sev2", "INFO": "sev3"}  # A8


# What each operation accepts (victorops-api-v1.yaml request schemas, notes A2..A5).


def _single_responder(value: bool) -> bool:
    if value:
        raise ValueError("not simulated: isMultiResponder (every incident is single-responder)")
    return value


class Target(Body):
    type: Literal["User", "EscalationPolicy"]
    slug: Text


class CreateIncident(Body):
    summary: Text
    details: Text
    userName: Text
    targets: list[Target]
    isMultiResponder: Annotated[bool, AfterValidator(_single_responder)] | None = None


class AckResolve(Body):
    userName: Text
    incidentNames: list[str]
    message: str | None = None


class ByUser(Body):
    userName: Text
    message: str | None = None


class Reroute(Body):
    incidentNumber: str
    targets: list[Target]
    addTargets: bool | None = None


class Reroutes(Body):
    userName: Text
    reroutes: list[Reroute]


class TakeOnCall(Body):
    fromUser: Text
    toUser: Text


class NewOverride(Body):
    username: Text
    timezone: str | None = None
    start: DateTime
    end: DateTime


class Assign(Body):
    policy: Text
    username: str | None = None


class ReportingQuery(Query):
    offset: int | None = None
    limit: int | None = None
    entityId: str | None = None
    incidentNumber: str | None = None
    startedAfter: DateTime | None = None
    startedBefore: DateTime | None = None
    host: str | None = None
    service: str | None = None
    currentPhase: str | None = None
    routingKey: str | None = None


class ScheduleQuery(Query):
    daysForward: int | None = None
    daysSkip: int | None = None
    step: int | None = None


class UsersQuery(Query):
    email: str | None = None


class RestAlert(Intake):
    """A REST endpoint alert (A6): the documented fields typed, any other field kept on the
    alert as the vendor does. A missing or unknown message_type is ingest's own failure."""

    message_type: str | None = None
    entity_id: str | None = None
    entity_display_name: str | None = None
    state_message: str | None = None
    monitoring_tool: str | None = None
    host_name: str | None = None
    ack_author: str | None = None
    ack_msg: str | None = None
    state_start_time: int | None = None


def _rest_refused(problems: list[Problem]) -> Response:
    return JSONResponse({"result": "failure",
                         "message": "; ".join(p.message for p in problems)}, status_code=400)


OPERATIONS: dict[str, Operation] = {
    f"POST {REST_ALERT}": Operation(body=RestAlert, answer=_rest_refused),
    f"POST {V1}/incidents": Operation(body=CreateIncident),
    f"PATCH {V1}/incidents/ack": Operation(body=AckResolve),
    f"PATCH {V1}/incidents/resolve": Operation(body=AckResolve),
    f"PATCH {V1}/incidents/byUser/ack": Operation(body=ByUser),
    f"PATCH {V1}/incidents/byUser/resolve": Operation(body=ByUser),
    f"POST {V1}/incidents/reroute": Operation(body=Reroutes),
    f"GET {REPORTING}": Operation(query=ReportingQuery),
    f"GET {V2}/team/{{team}}/oncall/schedule": Operation(query=ScheduleQuery),
    f"GET {V2}/user/{{user}}/oncall/schedule": Operation(query=ScheduleQuery),
    f"PATCH {V1}/policies/{{policy}}/oncall/user": Operation(body=TakeOnCall),
    f"POST {V1}/overrides": Operation(body=NewOverride),
    f"PUT {V1}/overrides/{{publicId}}/assignments/{{policySlug}}": Operation(body=Assign),
    f"GET {V2}/user": Operation(query=UsersQuery),
}


@dataclass(slots=True)
class _Incident:
    number: int
    entity_id: str
    display_name: str
    entity_state: str
    phase: str
    start: datetime
    last_alert: datetime
    first_alert: str
    last_alert_id: str
    routing_key: str
    monitor_name: str
    monitor_type: str
    paged_users: list[str]
    paged_policies: list[str]
    alert_count: int = 1
    host: str | None = None
    service: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    resolved_at: float | None = None
    updated: datetime | None = None


@dataclass(slots=True)
class _Rotation:
    """A rotation group and its shifts. Several shifts can be on duty at once, and a policy
    step pages "the on duty users in rotation" (vendor-notes/migration.md §4, Splunk On-Call
    rotations-and-shifts docs): ``more`` holds the shifts beside the first one."""

    slug: str
    label: str
    shift_name: str
    layer: Layer
    more: list[tuple[str, Layer]] = field(default_factory=list)

    @property
    def shifts(self) -> list[tuple[str, Layer]]:
        return [(self.shift_name, self.layer), *self.more]

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u for _n, layer in self.shifts for u in layer.users))


class VictorOpsSimulator(Simulator):
    """One Splunk On-Call org with two teams, rotations, policies and routing keys."""

    vendor: ClassVar[str] = "victorops"
    operations = OPERATIONS

    API_ID = "vo-sim-api-id"
    API_KEY = "vo-sim-api-key-0001"
    READ_ONLY_KEY = "vo-sim-readonly-key-0002"
    REST_KEY = "vo-sim-rest-endpoint-key-0003"

    def __init__(
        self,
        *,
        seed: int = 0,
        rate_limits: bool = True,
        limit_table: str = "2018",
        rate_limit_status: int = 403,
        warning_creates_incidents: bool = False,
        resolved_retention: float = 3600.0,
    ) -> None:
        if limit_table not in LIMIT_TABLES:
            raise ValueError("limit_table must be '2018' or '2020'")
        if rate_limit_status not in (403, 429):
            raise ValueError("rate_limit_status must be 403 or 429")
        self.limit_table = limit_table
        self.rate_limit_status = rate_limit_status
        self.warning_creates_incidents = warning_creates_incidents
        self.resolved_retention = resolved_retention
        super().__init__(seed=seed, rate_limits=rate_limits)

    # ------------------------------------------------------------------ seeded org

    def reset(self) -> None:
        self.incidents: dict[int, _Incident] = {}
        self.open: dict[int, None] = {}  # ordered set of UNACKED/ACKED numbers
        self.recent: dict[int, float] = {}  # resolved numbers -> resolved-at, in resolve order
        self.open_by_entity: dict[str, int] = {}
        self.next_number = 1
        self.alerts: dict[str, dict[str, Any]] = {}
        self.timeline: list[dict[str, Any]] = []  # INFO / non-incident alerts
        created = "2023-06-01T12:00:00Z"
        people = [
            ("alice", "Alice", "Archer"), ("bob", "Bob", "Baker"), ("carol", "Carol", "Cole"),
            ("dave", "Dave", "Dunn"), ("erin", "Erin", "Eames"), ("frank", "Frank", "Ford"),
            ("syncd-bot", "syncd", "Service"),
        ]
        self.users: dict[str, dict[str, Any]] = {
            u: {"firstName": f, "lastName": last, "username": u, "email": f"{u}@example.com",
                "createdAt": created, "passwordLastUpdated": created, "verified": False}
            for u, f, last in people
        }
        self.teams: dict[str, dict[str, Any]] = {
            "team-pl4tf0rm00000001": {"name": "Platform", "members": ["alice", "bob", "carol"]},
            "team-d4t4b4se00000002": {"name": "Database", "members": ["dave", "erin", "frank"]},
        }
        self.rotations: dict[str, _Rotation] = {
            "rtg-pl4tf0rm0prim01": _Rotation("rtg-pl4tf0rm0prim01", "Platform primary",
                                             "weekly", Layer(
                                                 ("alice", "bob", "carol"), timedelta(days=7))),
            "rtg-pl4tf0rm0seco02": _Rotation("rtg-pl4tf0rm0seco02", "Platform secondary",
                                             "weekly", Layer(
                                                 ("bob", "carol", "alice"), timedelta(days=7))),
            "rtg-d4t4b4se0dail03": _Rotation("rtg-d4t4b4se0dail03", "Database daily",
                                             "daily", Layer(
                                                 ("dave", "erin", "frank"), timedelta(days=1))),
            "rtg-d4t4b4se0back04": _Rotation("rtg-d4t4b4se0back04", "Database backup",
                                             "12h", Layer(
                                                 ("frank", "dave"), timedelta(hours=12))),
        }
        self.policies: dict[str, dict[str, Any]] = {
            "pol-pl4tf0rm0000prim": {"name": "Platform on-call", "team": "team-pl4tf0rm00000001",
                                     "steps": ["rtg-pl4tf0rm0prim01", "rtg-pl4tf0rm0seco02"]},
            "pol-d4t4b4se0000prim": {"name": "Database on-call", "team": "team-d4t4b4se00000002",
                                     "steps": ["rtg-d4t4b4se0dail03", "rtg-d4t4b4se0back04"]},
        }
        self.routing_keys: dict[str, list[str]] = {
            "default": ["pol-pl4tf0rm0000prim"],
            "syncd": ["pol-pl4tf0rm0000prim"],
            "database": ["pol-d4t4b4se0000prim"],
        }
        self.default_routing_key = "default"
        self.overrides: dict[str, dict[str, Any]] = {}
        self.takes: list[dict[str, Any]] = []

    @classmethod
    def account_table(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """Config keys for one of this simulator's describe() lines (docs/vendors/victorops.md)."""
        creds = desc["credentials"]
        return {"vendor": cls.vendor, "base_url": desc["base_url"], "api_id": creds["api_id"],
                "api_key": creds["api_key"], "rest_api_key": creds["rest_api_key"],
                # Budget for the table this simulator enforces: another one earns 403s.
                "rate_limit_table": desc.get("options", {}).get("limit_table", "2018")}

    def describe(self, base_url: str) -> dict[str, Any]:
        base = base_url.rstrip("/")
        return {
            "vendor": self.vendor,
            "base_url": base,
            "credentials": {
                "api_id": self.API_ID,
                "api_key": self.API_KEY,
                "read_only_api_key": self.READ_ONLY_KEY,
                "rest_api_key": self.REST_KEY,
            },
            "users": list(self.users),
            "intake": {
                "rest_endpoint": f"{base}/integrations/generic/20131114/alert/"
                f"{self.REST_KEY}/{{routing_key}}",
                "rest_api_key": self.REST_KEY,
                "routing_keys": list(self.routing_keys),
                "default_routing_key": self.default_routing_key,
            },
            "options": {
                "limit_table": self.limit_table,
                "rate_limit_status": self.rate_limit_status,
                "warning_creates_incidents": self.warning_creates_incidents,
            },
        }

    # ------------------------------------------------------------------ on-call model

    def _policy_overrides(self, policy: str) -> list[dict[str, Any]]:
        """Scheduled override assignments and take-on-call entries for one policy."""
        found = []
        for ov in self.overrides.values():
            covering = ov["assignments"].get(policy)
            if covering:
                found.append({"orig": ov["user"], "user": covering,
                              "start": ov["start"], "end": ov["end"]})
        found.extend(t for t in self.takes if t["policy"] == policy)
        return found

    def add_shift(self, rotation: str, name: str, layer: Layer) -> None:
        """Put another shift in a rotation, on duty beside its others (the vendor documents
        several shifts of a rotation on duty at once: vendor-notes/migration.md §4)."""
        self.rotations[rotation].more.append((name, layer))

    def _overridden(self, policy: str, user: str, at: datetime) -> str:
        for ov in self._policy_overrides(policy):
            if ov["orig"] == user and ov["start"] <= at < ov["end"]:
                user = ov["user"]
        return user

    def oncall_all(self, policy: str, step: int, at: datetime) -> list[str]:
        """Everyone the policy pages at ``step`` at ``at`` (one per shift on duty), overrides
        applied, in shift order without repeats."""
        steps = self.policies[policy]["steps"]
        if step >= len(steps):
            return []
        found = [self._overridden(policy, layer.shift_at(at)[0], at)
                 for _n, layer in self.rotations[steps[step]].shifts]
        return list(dict.fromkeys(found))

    def oncall_at(self, policy: str, step: int, at: datetime) -> str | None:
        """Who the policy's first shift at ``step`` pages at ``at``, overrides applied."""
        users = self.oncall_all(policy, step, at)
        return users[0] if users else None

    # ------------------------------------------------------------------ incidents

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def _render(self, inc: _Incident, *, reporting: bool = False) -> dict[str, Any]:
        policies = []
        for slug in inc.paged_policies:
            pol = self.policies[slug]
            team = self.teams[pol["team"]]
            policies.append({
                "policy": {"name": pol["name"], "slug": slug,
                           "_selfUrl": f"{V1}/policies/{slug}"},
                "team": {"name": team["name"], "slug": pol["team"]},
            })
        out: dict[str, Any] = {
            "incidentNumber": str(inc.number),
            "startTime": iso(inc.start),
            "currentPhase": inc.phase,
            "alertCount": inc.alert_count,
            "lastAlertTime": iso(inc.last_alert),
            "lastAlertId": inc.last_alert_id,
            "entityId": inc.entity_id,
            "entityState": inc.entity_state,
            "entityType": "SERVICE",
            "entityDisplayName": inc.display_name,
            "routingKey": inc.routing_key,
            "pagedUsers": list(inc.paged_users),
            "pagedTeams": sorted({self.policies[p]["team"] for p in inc.paged_policies}),
            "pagedPolicies": policies,
            "transitions": [dict(t) for t in inc.transitions],
        }
        if inc.host is not None:
            out["host"] = inc.host
        if inc.service is not None:
            out["service"] = inc.service
        if not reporting:
            out["firstAlertUuid"] = inc.first_alert
            out["monitorName"] = inc.monitor_name
            out["monitorType"] = inc.monitor_type
        return out

    def _open_incident(
        self, *, entity_id: str, display_name: str, entity_state: str, routing_key: str,
        monitor_name: str, monitor_type: str, alert_id: str, host: str | None = None,
        service: str | None = None, policies: list[str] | None = None,
        users: list[str] | None = None, by: str | None = None,
    ) -> _Incident:
        now = self.clock.now()
        if policies is None:
            policies = self.routing_keys.get(routing_key) or self.routing_keys[
                self.default_routing_key]
        paged = list(users or [])
        for pol in policies:
            user = self.oncall_at(pol, 0, now)
            if user and user not in paged:
                paged.append(user)
        number = self.next_number
        self.next_number += 1
        inc = _Incident(
            number=number, entity_id=entity_id, display_name=display_name,
            entity_state=entity_state, phase="UNACKED", start=now, last_alert=now,
            first_alert=alert_id, last_alert_id=alert_id, routing_key=routing_key,
            monitor_name=monitor_name, monitor_type=monitor_type, paged_users=paged,
            paged_policies=list(policies), host=host, service=service, updated=now,
        )
        inc.transitions.append(self._transition("triggered", now, by=by, alert_id=alert_id))
        self.incidents[number] = inc
        self.open[number] = None
        self.open_by_entity[entity_id] = number
        return inc

    def _transition(self, name: str, at: datetime, *, by: str | None = None,
                    message: str | None = None, alert_id: str | None = None) -> dict[str, Any]:
        t: dict[str, Any] = {"name": name, "at": iso(at), "manually": alert_id is None}
        if by:
            t["by"] = by
        if message:
            t["message"] = message
        if alert_id:
            t["alertId"] = alert_id
            t["alertUrl"] = f"{V1}/alerts/{alert_id}"
        return t

    def _move(self, inc: _Incident, phase: str, *, by: str | None, message: str | None = None,
              alert_id: str | None = None) -> None:
        now = self.clock.now()
        inc.phase = phase
        inc.updated = now
        inc.transitions.append(self._transition(
            PHASES[phase], now, by=by, message=message, alert_id=alert_id))
        if phase == "RESOLVED":
            self.open.pop(inc.number, None)
            if self.open_by_entity.get(inc.entity_id) == inc.number:
                del self.open_by_entity[inc.entity_id]
            inc.resolved_at = now.timestamp()
            self.recent[inc.number] = inc.resolved_at

    def _command(self, number: str, phase: str, user: str, message: str | None
                 ) -> dict[str, Any]:
        """One ack/resolve by the API for one incident name: the vendor's per-incident result."""
        result: dict[str, Any] = {"incidentNumber": number}
        inc = self.incidents.get(int(number)) if number.isdigit() else None
        if inc is None:
            return {**result, "cmdAccepted": False, "message": "Incident not found"}
        result["entityId"] = inc.entity_id
        if inc.phase == "RESOLVED":
            return {**result, "cmdAccepted": False, "message": "Incident is not open"}
        if phase == "ACKED" and inc.phase == "ACKED":
            return {**result, "cmdAccepted": False, "message": "Incident is already acknowledged"}
        self._move(inc, phase, by=user, message=message)
        return {**result, "cmdAccepted": True, "message": ""}

    def _prune_recent(self) -> None:
        cutoff = self.clock.now().timestamp() - self.resolved_retention
        while self.recent:
            number, at = next(iter(self.recent.items()))
            if at >= cutoff:
                break
            del self.recent[number]

    def tick(self) -> None:
        self._prune_recent()

    def seed_incidents(self, count: int, *, state: str = "triggered",
                       age_days: float = 0.0) -> list[str]:
        phase = REPORTING_PHASES.get(state)
        if phase is None:
            raise ValueError(f"unknown state {state!r}")
        ids = []
        now = self.clock.now() - timedelta(days=age_days)
        old = now.timestamp() - self.resolved_retention - 1
        pol = self.routing_keys[self.default_routing_key]
        for _ in range(count):
            number = self.next_number
            self.next_number += 1
            alert = f"seed-alert-{number}"
            inc = _Incident(
                number=number, entity_id=f"seed-entity-{number}",
                display_name=f"Seeded incident {number}", entity_state="CRITICAL",
                phase=phase, start=now, last_alert=now, first_alert=alert, last_alert_id=alert,
                routing_key=self.default_routing_key, monitor_name="seed", monitor_type="API",
                paged_users=[], paged_policies=list(pol), updated=now,
                transitions=[{"name": "triggered", "at": iso(now), "manually": False}],
            )
            if phase != "UNACKED":
                inc.transitions.append({"name": state, "at": iso(now), "manually": True,
                                        "by": "alice"})
            self.incidents[number] = inc
            if phase == "RESOLVED":
                inc.resolved_at = old  # seeded history: only reporting v2 shows it
            else:
                self.open[number] = None
                self.open_by_entity[inc.entity_id] = number
            ids.append(str(number))
        return ids

    def canonical_incidents(self) -> list[dict[str, Any]]:
        return [
            {"id": str(i.number), "state": PHASES[i.phase],
             "severity": SEVERITY_OF_STATE.get(i.entity_state), "dedup": i.entity_id,
             "title": i.display_name, "updated_at": iso(i.updated)}
            for i in self.incidents.values()
        ]

    def act(self, incident_id: str, action: str, *, user: str | None = None,
            severity: str | None = None, **_: Any) -> dict[str, Any]:
        inc = self.incidents[int(incident_id)] if incident_id.isdigit() else None
        if inc is None:
            raise KeyError(incident_id)
        who = user or "alice"
        if action == "acknowledge":
            if inc.phase != "UNACKED":
                raise ValueError(f"incident {incident_id} is {inc.phase}; only UNACKED acks")
            self._move(inc, "ACKED", by=who)
        elif action == "resolve":
            if inc.phase == "RESOLVED":
                raise ValueError(f"incident {incident_id} is already resolved")
            self._move(inc, "RESOLVED", by=who)
        elif action in ("unacknowledge", "reopen", "severity"):
            raise ValueError(f"Splunk On-Call has no {action} for incidents")
        else:
            raise ValueError(f"unknown action {action!r}")
        return self._render(inc)

    def alert(self, *, dedup: str, title: str, action: str = "trigger",
              severity: str | None = None) -> dict[str, Any]:
        if action == "trigger":
            kind = {"sev1": "CRITICAL", "sev2": "WARNING"}.get(severity or "sev1", "INFO")
        elif action == "acknowledge":
            kind = "ACKNOWLEDGEMENT"
        elif action == "resolve":
            kind = "RECOVERY"
        else:
            raise ValueError(f"unknown alert action {action!r}")
        body = {"message_type": kind, "entity_id": dedup, "entity_display_name": title,
                "monitoring_tool": "sim"}
        return self.ingest(self.default_routing_key, body)

    def ingest(self, routing_key: str, body: dict[str, Any]) -> dict[str, Any]:
        """The REST endpoint's behaviour for one alert (A6)."""
        kind = body.get("message_type")
        if not isinstance(kind, str) or kind.upper() not in MESSAGE_TYPES:
            return {"result": "failure", "message": "Missing or invalid field: message_type"}
        kind = kind.upper()
        entity = body.get("entity_id")
        if entity is not None and not isinstance(entity, str):
            return {"result": "failure", "message": "Invalid field: entity_id"}
        entity = entity or self._uuid()
        alert_id = self._uuid()
        now = self.clock.now()
        tool = body.get("monitoring_tool")
        self.alerts[alert_id] = {"entityId": entity, "messageType": kind,
                                 "timestamp": int(now.timestamp())}
        number = self.open_by_entity.get(entity)
        inc = self.incidents.get(number) if number is not None else None
        display = body.get("entity_display_name")
        opens = kind == "CRITICAL" or (kind == "WARNING" and self.warning_creates_incidents)
        if inc is not None and kind in ("CRITICAL", "WARNING", "INFO"):
            inc.alert_count += 1
            inc.last_alert, inc.last_alert_id, inc.updated = now, alert_id, now
            inc.entity_state = kind
        elif inc is not None and kind == "ACKNOWLEDGEMENT":
            inc.alert_count += 1
            inc.last_alert, inc.last_alert_id = now, alert_id
            if inc.phase == "UNACKED":
                self._move(inc, "ACKED", by=str(body.get("ack_author") or "") or None,
                           message=body.get("ack_msg"), alert_id=alert_id)
        elif inc is not None and kind == "RECOVERY":
            inc.alert_count += 1
            inc.last_alert, inc.last_alert_id = now, alert_id
            self._move(inc, "RESOLVED", by=None, alert_id=alert_id)
        elif inc is None and opens:
            self._open_incident(
                entity_id=entity, display_name=str(display or entity), entity_state=kind,
                routing_key=routing_key, monitor_name=str(tool or "REST"), monitor_type="API",
                alert_id=alert_id, host=body.get("host_name") if isinstance(
                    body.get("host_name"), str) else None,
            )
        else:
            # INFO, a WARNING the org does not page on, or ACK/RECOVERY for an entity with no
            # open incident: the alert lands on the timeline only.
            self.timeline.append({"entity_id": entity, "message_type": kind, "at": iso(now)})
        return {"result": "success", "entity_id": entity}

    # ------------------------------------------------------------------ HTTP plumbing

    def routes(self) -> Iterable[BaseRoute]:
        r = Route
        return [
            r(f"{V1}/incidents", self._incidents, methods=["GET", "POST"]),
            r(f"{V1}/incidents/ack", self._ack_resolve, methods=["PATCH"]),
            r(f"{V1}/incidents/resolve", self._ack_resolve, methods=["PATCH"]),
            r(f"{V1}/incidents/byUser/ack", self._by_user, methods=["PATCH"]),
            r(f"{V1}/incidents/byUser/resolve", self._by_user, methods=["PATCH"]),
            r(f"{V1}/incidents/reroute", self._reroute, methods=["POST"]),
            r(f"{V1}/incidents/{{incidentNumber}}", self._incident, methods=["GET"]),
            r(REPORTING, self._reporting, methods=["GET"]),
            r(f"{V1}/oncall/current", self._oncall_current, methods=["GET"]),
            r(f"{V2}/team/{{team}}/oncall/schedule", self._team_schedule, methods=["GET"]),
            r(f"{V2}/user/{{user}}/oncall/schedule", self._user_schedule, methods=["GET"]),
            r(f"{V1}/policies/{{policy}}/oncall/user", self._take, methods=["PATCH"]),
            r(f"{V1}/overrides", self._overrides, methods=["GET", "POST"]),
            r(f"{V1}/overrides/{{publicId}}", self._override, methods=["GET", "DELETE"]),
            r(f"{V1}/overrides/{{publicId}}/assignments", self._assignments, methods=["GET"]),
            r(f"{V1}/overrides/{{publicId}}/assignments/{{policySlug}}", self._assignment,
              methods=["GET", "PUT", "DELETE"]),
            r(f"{V1}/user", self._users_v1, methods=["GET"]),
            r(f"{V2}/user", self._users_v2, methods=["GET"]),
            r(f"{V1}/team", self._teams, methods=["GET"]),
            r(f"{V1}/team/{{team}}/members", self._members, methods=["GET"]),
            r(f"{V1}/policies", self._policies, methods=["GET"]),
            r(f"{V1}/org/routing-keys", self._routing_keys, methods=["GET"]),
            r(REST_ALERT, self._rest_alert, methods=["POST"]),
        ]

    def rate_limited(self, request: Request, retry_after: float) -> Response:
        if self.rate_limit_status == 429:
            return JSONResponse({"message": "Too Many Requests"}, status_code=429,
                                headers={"Retry-After": str(max(1, round(retry_after)))})
        return _forbidden()

    async def _gate(self, request: Request) -> Response | None:
        """Auth, read-only keys, the per-endpoint limit, then the operation's schema."""
        api_id = request.headers.get("x-vo-api-id")
        api_key = request.headers.get("x-vo-api-key")
        if not api_id or not api_key:
            return JSONResponse({"message": "Authentication parameters missing"},
                                status_code=401)
        if api_id != self.API_ID or api_key not in (self.API_KEY, self.READ_ONLY_KEY):
            return _forbidden()
        if api_key == self.READ_ONLY_KEY and request.method != "GET":
            return _forbidden()
        route = self.route_template(request.scope) or request.url.path
        endpoint = f"{request.method} {route}"
        per_minute = LIMIT_TABLES[self.limit_table].get(endpoint)
        if per_minute is not None:
            wait = self.limit(api_id, endpoint, per_minute, 60.0)
            if wait is not None:
                return self.rate_limited(request, wait)
        return await self.validate(request)

    def invalid(self, problems: list[Problem]) -> Response:
        """The public API's 400 ``{message}`` (spec ``responses``), all problems in one line."""
        return _bad("; ".join(p.message for p in problems))

    async def _json_body(self, request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return _Invalid

    # ------------------------------------------------------------------ incident routes

    async def _incidents(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        if request.method == "GET":
            self._prune_recent()
            rows = [self._render(self.incidents[n]) for n in self.open]
            rows += [self._render(self.incidents[n]) for n in self.recent]
            return JSONResponse({"incidents": rows})
        body = await self._json_body(request)
        if not isinstance(body, dict):
            return _bad("Request body must be a JSON object")
        for name in ("summary", "details", "userName"):
            if not isinstance(body.get(name), str) or not body[name]:
                return _bad(f"Missing required field: {name}")
        targets = body.get("targets")
        if not isinstance(targets, list) or not targets:
            return _bad("Missing required field: targets")
        if body["userName"] not in self.users:
            return _not_found("User not found")
        policies, users = [], []
        for t in targets:
            kind, slug = (t.get("type"), t.get("slug")) if isinstance(t, dict) else (None, None)
            if kind == "EscalationPolicy" and slug in self.policies:
                policies.append(slug)
            elif kind == "User" and slug in self.users:
                users.append(slug)
            else:
                return _bad(f"Invalid target: {json.dumps(t)}")
        inc = self._open_incident(
            entity_id=self._uuid(), display_name=body["summary"], entity_state="CRITICAL",
            routing_key=self.default_routing_key, monitor_name=f"vouser-{body['userName']}",
            monitor_type="Manual", alert_id=self._uuid(), policies=policies, users=users,
            by=body["userName"],
        )
        return JSONResponse({"incidentNumber": str(inc.number)})

    async def _incident(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        raw = request.path_params["incidentNumber"]
        if not raw.isdigit():
            return _bad("incidentNumber must be an integer")
        inc = self.incidents.get(int(raw))
        if inc is None:
            return _not_found("Incident not found")
        return JSONResponse(self._render(inc))

    async def _ack_resolve(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        body = await self._json_body(request)
        if not isinstance(body, dict):
            return _bad("Request body must be a JSON object")
        user, names = body.get("userName"), body.get("incidentNames")
        if not isinstance(user, str) or not user:
            return _bad("Missing required field: userName")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return _bad("incidentNames must be a list of incident numbers as strings")
        message = body.get("message") if isinstance(body.get("message"), str) else None
        if user not in self.users:
            return _not_found("User not found")
        phase = "ACKED" if request.url.path.endswith("/ack") else "RESOLVED"
        results = [self._command(n, phase, user, message) for n in names]
        return JSONResponse({"results": results})

    async def _by_user(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        body = await self._json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("userName"), str):
            return _bad("Missing required field: userName")
        user = body["userName"]
        if user not in self.users:
            return _not_found("User not found")
        phase = "ACKED" if request.url.path.endswith("/ack") else "RESOLVED"
        message = body.get("message") if isinstance(body.get("message"), str) else None
        numbers = [n for n in list(self.open) if user in self.incidents[n].paged_users]
        results = [self._command(str(n), phase, user, message) for n in numbers]
        return JSONResponse({"results": results})

    async def _reroute(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        body = await self._json_body(request)
        if (not isinstance(body, dict) or not isinstance(body.get("userName"), str)
                or not isinstance(body.get("reroutes"), list)):
            return _bad("Missing required fields: userName, reroutes")
        if body["userName"] not in self.users:
            return _not_found("User not found")
        statuses = []
        for rr in body["reroutes"]:
            if not isinstance(rr, dict) or not isinstance(rr.get("targets"), list):
                return _bad("Each reroute needs incidentNumber and targets")
            number = str(rr.get("incidentNumber", ""))
            inc = self.incidents.get(int(number)) if number.isdigit() else None
            status: dict[str, Any] = {"incidentNumber": number, "success": False,
                                      "targetStatus": []}
            if inc is None or inc.phase == "RESOLVED":
                status["message"] = "Incident not found" if inc is None else "Incident is not open"
                statuses.append(status)
                continue
            policies, users = [], []
            for t in rr["targets"]:
                slug = t.get("slug") if isinstance(t, dict) else None
                ok = (t.get("type") == "EscalationPolicy" and slug in self.policies) or (
                    t.get("type") == "User" and slug in self.users) if slug else False
                status["targetStatus"].append({"slug": str(slug), "success": bool(ok)})
                if ok:
                    (policies if t["type"] == "EscalationPolicy" else users).append(slug)
            if policies or users:
                if not rr.get("addTargets"):
                    inc.paged_policies, inc.paged_users = [], []
                inc.paged_policies += [p for p in policies if p not in inc.paged_policies]
                for pol in policies:
                    who = self.oncall_at(pol, 0, self.clock.now())
                    if who and who not in users:
                        users.append(who)
                inc.paged_users += [u for u in users if u not in inc.paged_users]
                inc.updated = self.clock.now()
                status["success"] = True
            statuses.append(status)
        return JSONResponse({"statuses": statuses})

    async def _reporting(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        q = request.query_params
        try:
            offset = int(q.get("offset", "0"))
            limit = int(q.get("limit", "20"))
        except ValueError:
            return _bad("offset and limit must be integers")
        if offset < 0 or not 0 < limit <= 100:
            return _bad("limit must be between 1 and 100 and offset must not be negative")
        try:
            phases = {REPORTING_PHASES[p.strip().lower()]
                      for p in q.get("currentPhase", "resolved").split(",") if p.strip()}
            after = parse_time(q["startedAfter"]) if "startedAfter" in q else None
            before = parse_time(q["startedBefore"]) if "startedBefore" in q else None
            numbers = _number_filter(q["incidentNumber"]) if "incidentNumber" in q else None
        except (KeyError, ValueError) as exc:
            return _bad(f"Invalid query parameter: {exc}")
        hosts = set(q["host"].split(",")) if "host" in q else None
        services = set(q["service"].split(",")) if "service" in q else None
        entity, routing = q.get("entityId"), q.get("routingKey")
        if numbers is not None and not isinstance(numbers, range):
            pool: Iterable[_Incident] = (self.incidents[n] for n in sorted(numbers)
                                         if n in self.incidents)
        else:
            pool = self.incidents.values()
        matches = [
            i for i in pool
            if i.phase in phases
            and (numbers is None or i.number in numbers)
            and (entity is None or i.entity_id == entity)
            and (routing is None or i.routing_key == routing)
            and (after is None or i.start > after)
            and (before is None or i.start < before)
            and (hosts is None or i.host in hosts)
            and (services is None or i.service in services)
        ]
        page = matches[offset:offset + limit]
        return JSONResponse({"offset": offset, "limit": limit, "total": len(matches),
                             "incidents": [self._render(i, reporting=True) for i in page]})

    async def _rest_alert(self, request: Request) -> Response:
        # No VictorOps headers: the REST endpoint key is in the URL (A6).
        if request.path_params["api_key"] != self.REST_KEY:
            return JSONResponse({"result": "failure", "message": "Invalid API key"},
                                status_code=403)
        refused = await self.validate(request)
        if refused is not None:
            return refused
        body = await self._json_body(request)
        return JSONResponse(self.ingest(request.path_params["routing_key"], body))

    # ------------------------------------------------------------------ on-call routes

    async def _oncall_current(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        now = self.clock.now()
        teams = []
        for slug, team in self.teams.items():
            now_list = []
            for pslug, pol in self.policies.items():
                if pol["team"] != slug:
                    continue
                users = []
                for step in range(len(pol["steps"])):
                    for who in self.oncall_all(pslug, step, now):
                        if {"onCallUser": {"username": who}} not in users:
                            users.append({"onCallUser": {"username": who}})
                now_list.append({"escalationPolicy": {"name": pol["name"], "slug": pslug},
                                 "users": users})
            teams.append({"team": {"name": team["name"], "slug": slug}, "onCallNow": now_list})
        return JSONResponse({"teamsOnCall": teams})

    def _schedule_window(self, request: Request) -> tuple[datetime, datetime, int] | Response:
        q = request.query_params
        try:
            forward = int(q.get("daysForward", "14"))
            skip = int(q.get("daysSkip", "0"))
            step = int(q.get("step", "0"))
        except ValueError:
            return _bad("daysForward, daysSkip and step must be integers")
        if not 0 <= forward <= 30 or not 0 <= skip <= 90 or not 0 <= step <= 3:
            return _bad("daysForward must be 0..30, daysSkip 0..90 and step 0..3")
        start = self.clock.now() + timedelta(days=skip)
        return start, start + timedelta(days=forward), step

    def _team_schedule_body(self, team: str, start: datetime, end: datetime, step: int
                            ) -> dict[str, Any]:
        schedules = []
        for pslug, pol in self.policies.items():
            if pol["team"] != team:
                continue
            entries = []
            if step < len(pol["steps"]):
                # One OnCallEntry per shift: PolicySchedule.schedule is an array of them, each
                # with its own shiftName and rolls (spec TeamSchedule > PolicySchedule >
                # OnCallEntry), so shifts on duty at once are entries side by side.
                rtg = self.rotations[pol["steps"][step]]
                now = self.clock.now()
                for shift_name, layer in rtg.shifts:
                    user, _s, shift_end = layer.shift_at(now)
                    rolls, at = [], start
                    while at < end:
                        who, s, e = layer.shift_at(at)
                        rolls.append({"start": iso(s), "end": iso(e),
                                      "onCallUser": {"username": who}, "isRoll": s > start})
                        at = e
                    entry: dict[str, Any] = {
                        "onCallUser": {"username": user}, "onCallType": "rotation_group",
                        "rotationName": rtg.label, "shiftName": shift_name,
                        "shiftRoll": iso(shift_end), "rolls": rolls,
                    }
                    current = self._overridden(pslug, user, now)
                    if current != user:
                        entry["overrideOnCallUser"] = {"username": current}
                    entries.append(entry)
            overrides = [
                {"origOnCallUser": {"username": o["orig"]},
                 "overrideOnCallUser": {"username": o["user"]},
                 "start": iso(o["start"]), "end": iso(o["end"])}
                for o in self._policy_overrides(pslug) if o["start"] < end and o["end"] > start
            ]
            schedules.append({
                "policy": {"name": pol["name"], "slug": pslug,
                           "_selfUrl": f"{V1}/policies/{pslug}"},
                "schedule": entries, "overrides": overrides,
            })
        return {"team": {"name": self.teams[team]["name"], "slug": team},
                "schedules": schedules}

    async def _team_schedule(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        team = request.path_params["team"]
        if team not in self.teams:
            return _not_found("Team not found")
        window = self._schedule_window(request)
        if isinstance(window, Response):
            return window
        return JSONResponse(self._team_schedule_body(team, *window))

    async def _user_schedule(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        user = request.path_params["user"]
        if user not in self.users:
            return _not_found("User not found")
        window = self._schedule_window(request)
        if isinstance(window, Response):
            return window
        teams = [self._team_schedule_body(slug, *window) for slug, t in self.teams.items()
                 if user in t["members"]]
        return JSONResponse({"teamSchedules": teams})

    async def _take(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        policy = request.path_params["policy"]
        body = await self._json_body(request)
        if not isinstance(body, dict) or not all(
                isinstance(body.get(k), str) for k in ("fromUser", "toUser")):
            return _bad("Missing required fields: fromUser, toUser")
        if policy not in self.policies or body["fromUser"] not in self.users or (
                body["toUser"] not in self.users):
            return _not_found("Team or user(s) not found")
        now = self.clock.now()
        pol = self.policies[policy]
        for step in range(len(pol["steps"])):
            for _n, layer in self.rotations[pol["steps"][step]].shifts:
                user, _s, shift_end = layer.shift_at(now)
                if self._overridden(policy, user, now) == body["fromUser"]:
                    self.takes.append({"policy": policy, "orig": body["fromUser"],
                                       "user": body["toUser"], "start": now, "end": shift_end})
                    return JSONResponse({"result": "Success"})
        return _bad(f"{body['fromUser']} is not on call for {policy}")

    def _override_json(self, pid: str) -> dict[str, Any]:
        ov = self.overrides[pid]
        user = self.users[ov["user"]]
        return {
            "publicId": pid,
            "user": {"username": ov["user"], "firstName": user["firstName"],
                     "lastName": user["lastName"]},
            "timezone": ov["timezone"], "start": iso(ov["start"]), "end": iso(ov["end"]),
            "assignments": [self._assignment_json(pid, p) for p in ov["assignments"]],
        }

    def _assignment_json(self, pid: str, policy: str) -> dict[str, Any]:
        covering = self.overrides[pid]["assignments"][policy]
        out: dict[str, Any] = {
            "_selfUrl": f"{V1}/overrides/{pid}/assignments/{policy}",
            "team": self.policies[policy]["team"], "policy": policy,
            "assigned": covering is not None,
        }
        if covering:
            out["user"] = covering
        return out

    async def _overrides(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        if request.method == "GET":
            return JSONResponse({"overrides": [self._override_json(p) for p in self.overrides],
                                 "_selfUrl": f"{V1}/overrides"})
        body = await self._json_body(request)
        if not isinstance(body, dict) or not all(
                isinstance(body.get(k), str) for k in ("username", "start", "end")):
            return _bad("Missing required fields: username, start, end")
        if body["username"] not in self.users:
            return _not_found("User not found")
        try:
            start, end = parse_time(body["start"]), parse_time(body["end"])
        except ValueError:
            return _bad("start and end must be ISO 8601 timestamps")
        if end <= start:
            return _bad("end must be after start")
        pid = self._uuid()
        # Created unassigned, one assignment slot per policy the user rotates in (A4).
        policies = {p: None for p, pol in self.policies.items()
                    if any(body["username"] in self.rotations[r].users for r in pol["steps"])}
        self.overrides[pid] = {"user": body["username"], "timezone": str(
            body.get("timezone") or "Etc/UTC"), "start": start, "end": end,
            "assignments": policies}
        return JSONResponse({"schedule": self._override_json(pid),
                             "_selfUrl": f"{V1}/overrides/{pid}"})

    async def _override(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        pid = request.path_params["publicId"]
        if pid not in self.overrides:
            return _not_found("Scheduled override not found")
        if request.method == "DELETE":
            del self.overrides[pid]
            return JSONResponse({})
        return JSONResponse({"override": self._override_json(pid),
                             "_selfUrl": f"{V1}/overrides/{pid}"})

    async def _assignments(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        pid = request.path_params["publicId"]
        if pid not in self.overrides:
            return _not_found("Scheduled override not found")
        return JSONResponse([self._assignment_json(pid, p)
                             for p in self.overrides[pid]["assignments"]])

    async def _assignment(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        pid, policy = request.path_params["publicId"], request.path_params["policySlug"]
        if pid not in self.overrides or policy not in self.policies:
            return _not_found("Scheduled override or policy not found")
        slots = self.overrides[pid]["assignments"]
        if request.method == "PUT":
            body = await self._json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("policy"), str):
                return _bad("Missing required field: policy")
            if body["policy"] != policy:
                return _bad("policy in the body does not match the path")
            who = body.get("username")
            if who is not None and who not in self.users:
                return _not_found("User not found")
            slots[policy] = who
        elif policy not in slots:
            return _not_found("Assignment not found")
        out = self._assignment_json(pid, policy)
        if request.method == "DELETE":
            slots[policy] = None
        return JSONResponse(out)

    # ------------------------------------------------------------------ directory routes

    def _user_json(self, name: str) -> dict[str, Any]:
        return {**self.users[name], "_selfUrl": f"{V1}/user/{name}"}

    async def _users_v1(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        return JSONResponse({"users": [self._user_json(u) for u in self.users],
                             "_selfUrl": f"{V1}/user"})

    async def _users_v2(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        email = request.query_params.get("email")
        users = [self._user_json(u) for u, d in self.users.items()
                 if email is None or d["email"].lower() == email.lower()]
        return JSONResponse({"users": users})

    async def _teams(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        return JSONResponse([
            {"_selfUrl": f"{V1}/team/{s}", "_membersUrl": f"{V1}/team/{s}/members",
             "_policiesUrl": f"{V1}/team/{s}/policies", "_adminsUrl": f"{V1}/team/{s}/admins",
             "name": t["name"], "slug": s, "memberCount": len(t["members"]), "version": 1,
             "isDefaultTeam": i == 0}
            for i, (s, t) in enumerate(self.teams.items())
        ])

    async def _members(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        slug = request.path_params["team"]
        if slug not in self.teams:
            return _not_found("Team not found")
        members = [{"username": u, "firstName": self.users[u]["firstName"],
                    "lastName": self.users[u]["lastName"], "version": 1, "verified": "false"}
                   for u in self.teams[slug]["members"]]
        return JSONResponse({"_selfUrl": f"{V1}/team/{slug}/members",
                             "_teamUrl": f"{V1}/team/{slug}", "members": members})

    async def _policies(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        return JSONResponse({"policies": [
            {"policy": {"name": p["name"], "slug": s, "_selfUrl": f"{V1}/policies/{s}"},
             "team": {"name": self.teams[p["team"]]["name"], "slug": p["team"]}}
            for s, p in self.policies.items()
        ]})

    async def _routing_keys(self, request: Request) -> Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        keys = [
            {"routingKey": k, "isDefault": k == self.default_routing_key, "targets": [
                {"policyName": self.policies[p]["name"], "policySlug": p,
                 "_teamUrl": f"{V1}/team/{self.policies[p]['team']}"} for p in pols]}
            for k, pols in self.routing_keys.items()
        ]
        return JSONResponse({"routingKeys": keys, "_selfUrl": f"{V1}/org/routing-keys"})


class _InvalidBody:
    """Marker for a request body that is not JSON."""


_Invalid = _InvalidBody()


def _number_filter(text: str) -> set[int] | range:
    """Reporting's ``incidentNumber`` filter: "4,5,20:50" (lists and inclusive ranges)."""
    out: set[int] = set()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1 and ":" in parts[0]:
        lo, hi = parts[0].split(":", 1)
        return range(int(lo), int(hi) + 1)
    for part in parts:
        if ":" in part:
            lo, hi = part.split(":", 1)
            out.update(range(int(lo), int(hi) + 1))
        else:
            out.add(int(part))
    return out


def _forbidden() -> Response:
    # The spec's one 403 covers both bad credentials and rate limiting; the notes record no
    # distinguishing body (part D), so both answers are the same.
    return JSONResponse({"message": "Authentication failed or rate-limit reached"},
                        status_code=403)


def _bad(message: str) -> Response:
    return JSONResponse({"message": message}, status_code=400)


def _not_found(message: str) -> Response:
    return JSONResponse({"message": message}, status_code=404)
