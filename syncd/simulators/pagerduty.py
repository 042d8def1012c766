"""PagerDuty simulator: REST API v2 and Events API v2 for one seeded account.

It follows the vendor's documentation (../shared/vendor-notes/pagerduty.md, cited as "notes §n",
and the official OpenAPI spec) closely enough that PagerDuty's own Python client works against it
unchanged. What it holds clients to:

- ``Authorization: Token token=<key>`` (or ``Bearer <key>``), 401 code 2006 otherwise; the
  read-only key gets 403 code 2010 on writes (notes §1, §3);
- ``From`` (a user's email) on incident writes, 400 with the documented message (notes §1);
- offset pagination: ``limit`` 1..100, ``offset+limit`` <= 10000 else 400 code 2002 (notes §2);
- GET /incidents' one-month creation window unless ``date_range=all`` (notes §5.1);
- bulk PUT /incidents: at most 250 else 413; resolving a resolved incident is 400 code 1001;
  setting ``triggered``/``acknowledged`` on a resolved incident reopens it (notes §5.3);
- POST /incidents: ``incident_key`` unique per service among open incidents, else 400 (§5.5);
- 960 requests per minute per key with ``ratelimit-*`` headers and 429 code 2020 (notes §4);
- Events API v2 at ``POST /v2/enqueue`` on the same app (the real one is
  events.pagerduty.com): dedup per routing key, acks/resolves only through the routing key that
  triggered (notes §7), 120 events per minute per routing key; asynchronous when
  ``event_delay`` is set (a 202 first, the incident later on the sim clock);
- its own timers: acknowledgement timeout (acknowledged -> triggered) and auto-resolve (§5.6);
- schedules and escalation policies stored as definitions (any IANA zone, layers, restrictions,
  overrides) and rendered on demand: create/update/show/preview with PagerDuty's checks
  (:mod:`syncd.simulators.pagerduty_schedules`).

Every state change, whoever makes it (API, a person via ``/_sim``, a timer, an event), appends
the log entry PagerDuty would record, with its agent and channel. A priority change appends none:
the LogEntry type enum has no priority type (notes §5.6, SPEC ``LogEntry.type``). Each change
also emits the v3 webhook event PagerDuty would send (notes §6: ``incident.triggered``,
``.acknowledged``, ``.unacknowledged``, ``.resolved``, ``.reopened``, ``.escalated``,
``.reassigned``, ``.priority_updated``; urgency has no event type), kept in ``webhook_events``
and handed to ``webhook_sink`` when a test or benchmark sets one (:meth:`webhook_event` builds
the documented payload). Subscriptions over HTTP (``POST /webhook_subscriptions``) are not
simulated.
"""

from __future__ import annotations

import bisect
import collections
import gc
import heapq
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.simulators.base import Simulator, iso, parse_time
from syncd.simulators.oncall import EPOCH, Restriction
from syncd.simulators.pagerduty_schedules import (
    API,
    WEB,
    EscalationPolicy,
    Override,
    PolicyQuery,
    PolicyWrite,
    PreviewQuery,
    Schedule,
    ScheduleBody,
    ScheduleLayer,
    ScheduleQuery,
    SchedulesQuery,
    ScheduleWrite,
    clip,
    coverage,
    parse_layers,
    render_range,
    restriction_json,
    stamp_in,
)
from syncd.simulators.validation import (
    Body,
    DateTime,
    Operation,
    Problem,
    Query,
    Ref,
    Text,
    TimeZone,
    UnmodelledList,
    UtcZone,
)

TOKEN = "pdsim_u+syncd_api_key_0001"
READ_ONLY_TOKEN = "pdsim_readonly_key_0002"
FROM_EMAIL = "syncd-bot@example.com"
ROUTING_KEY = "e93c5a2f0b7d4c1e8a6f3b9d2c7e1a04"  # Web service, "Prometheus" integration
ROUTING_KEY_2 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # Web service, "Datadog" integration
ROUTING_KEY_DB = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"  # Database service
SERVICE_WEB = "PSVCWEB"
SERVICE_DB = "PSVCDBA"
EP_SRE = "PEPSRE1"
EP_DBA = "PEPDBA1"
SCHED_PRIMARY = "PSCHED1"
SCHED_SECONDARY = "PSCHED2"
SCHED_DBA = "PSCHED3"
SCHED_BUSINESS = "PSCHNY1"
SCHED_HALF_DAY = "PSCH12H"
EP_PLATFORM = "PEPPLT1"
TEAM_SRE = "PTEAMSR"
TEAM_DB = "PTEAMDB"

RATE_LIMIT = 960  # per minute per key (notes §4)
EVENTS_RATE_LIMIT = 120  # per minute per routing key (notes §7)
MAX_LIMIT = 100
MAX_OFFSET = 10_000
BULK_MAX = 250
MONTH = timedelta(days=30)
MAX_RANGE = timedelta(days=183)
SEVERITIES = ("critical", "error", "warning", "info")

FROM_MISSING = ('You must specify a user\'s email address in the "From" header to perform '
                "this action")
OPEN = ("triggered", "acknowledged")
WEBHOOK_EVENTS = {  # log entry type -> the v3 webhook event PagerDuty sends (notes §6)
    "trigger_log_entry": "incident.triggered", "acknowledge_log_entry": "incident.acknowledged",
    "unacknowledge_log_entry": "incident.unacknowledged",
    "resolve_log_entry": "incident.resolved", "escalate_log_entry": "incident.escalated",
    "assign_log_entry": "incident.reassigned",
}
OVERVIEW_TYPES = {"trigger_log_entry", "acknowledge_log_entry", "unacknowledge_log_entry",
                  "resolve_log_entry", "escalate_log_entry"}


# ---------------------------------------------------------------------------------------------
# What each operation accepts (rest-openapiv3.json request schemas, notes §5). Fields a model does
# not declare are refused as "not simulated: FIELD" (incident_type, conference_bridge, service
# moves); the read-only decorations of reference objects are tolerated.
# ---------------------------------------------------------------------------------------------




class UserRef(Ref):
    id: str
    type: Literal["user_reference"]


class ServiceRef(Ref):
    id: str
    type: Literal["service_reference"]


class PolicyRef(Ref):
    id: str
    type: Literal["escalation_policy_reference"]


class PriorityRef(Ref):
    id: str
    type: Literal["priority", "priority_reference"]


class Assignment(Body):
    assignee: UserRef


class IncidentChange(Body):
    """One incident in PUT /incidents/{id} or bulk PUT /incidents (notes §5.3, §5.4)."""

    type: Literal["incident", "incident_reference"]
    id: str | None = None  # the reference's own id; PUT /incidents/{id} checks it matches
    status: Literal["triggered", "acknowledged", "resolved"] | None = None
    resolution: str | None = None
    title: str | None = None
    priority: PriorityRef | str | None = None  # a reference, a name, or null to clear it
    escalation_level: int | None = None
    assignments: list[Assignment] | None = None
    escalation_policy: PolicyRef | None = None
    urgency: Literal["high", "low"] | None = None


class UpdateIncident(Body):
    incident: IncidentChange


class BulkChange(IncidentChange):
    id: str  # type: ignore[assignment]  # required in the bulk form


class BulkUpdate(Body):
    incidents: list[BulkChange]


class IncidentBody(Body):
    type: Literal["incident_body"] | None = None
    details: str  # "string only" (notes §5.5)


class NewIncidentItem(Body):
    type: Literal["incident"]
    title: Text
    service: ServiceRef
    priority: PriorityRef | None = None
    urgency: Literal["high", "low"] | None = None
    body: IncidentBody | None = None
    incident_key: str | None = None
    assignments: list[Assignment] | None = None
    escalation_policy: PolicyRef | None = None


class CreateIncident(Body):
    incident: NewIncidentItem


class OverrideItem(Body):
    start: str  # a bad date is a per-override 400 inside the multi-status answer (notes §5.9)
    end: str
    user: UserRef
    time_zone: TimeZone | None = None


class CreateOverrides(Body):
    overrides: list[OverrideItem] | None = None
    override: OverrideItem | None = None  # the deprecated single form


class Paged(Query):
    limit: int | None = None
    offset: int | None = None
    total: bool | None = None


class IncidentsQuery(Paged):
    date_range: Literal["all"] | None = None
    incident_key: str | None = None
    service_ids: list[str] = []
    team_ids: list[str] = []
    user_ids: list[str] = []
    urgencies: list[Literal["high", "low"]] = []
    statuses: list[Literal["triggered", "acknowledged", "resolved"]] = []
    sort_by: list[str] = []
    include: list[Literal["acknowledgers", "agents", "assignees", "conference_bridge",
                          "escalation_policies", "first_trigger_log_entries", "priorities",
                          "services", "teams", "users"]] = []
    time_zone: UtcZone | None = None
    since: DateTime | None = None
    until: DateTime | None = None


class IncidentQuery(Query):
    include: list[Literal["acknowledgers", "agents", "assignees", "conference_bridge",
                          "custom_fields", "escalation_policies", "first_trigger_log_entries",
                          "priorities", "services", "teams", "users"]] = []


class IncidentLogQuery(Paged):
    """listIncidentLogEntries' query: the spec lists no team_ids here, so it is ignored like
    any other unknown parameter rather than refused as a documented one not simulated."""

    time_zone: UtcZone | None = None
    since: DateTime | None = None
    until: DateTime | None = None
    is_overview: bool | None = None
    include: list[Literal["incidents", "services", "channels", "teams"]] = []


class LogQuery(IncidentLogQuery):
    """listLogEntries' query: as the per-incident one plus team_ids (documented, not applied)."""

    team_ids: UnmodelledList = []


class UsersQuery(Paged):
    query: str | None = None
    team_ids: UnmodelledList = []
    include: list[Literal["contact_methods", "notification_rules", "teams", "subdomains"]] = []


class UserQuery(Query):
    include: list[Literal["contact_methods", "notification_rules", "teams", "subdomains",
                          "calendar_urls"]] = []


class ServicesQuery(Paged):
    query: str | None = None
    name: str | None = None
    team_ids: list[str] = []
    time_zone: UtcZone | None = None
    sort_by: Literal["name", "name:asc", "name:desc"] | None = None
    include: list[Literal["escalation_policies", "teams", "integrations",
                          "auto_pause_notifications_parameters"]] = []


class PoliciesQuery(Paged):
    query: str | None = None
    user_ids: list[str] = []
    team_ids: list[str] = []
    include: list[Literal["services", "teams", "targets",
                          "escalation_rule_assignment_strategies"]] = []
    sort_by: Literal["name", "name:asc", "name:desc"] | None = None


class OverridesQuery(Query):
    since: DateTime | None = None
    until: DateTime | None = None
    editable: bool | None = None
    overflow: bool | None = None


class OncallsQuery(Paged):
    time_zone: UtcZone | None = None
    include: list[Literal["escalation_policies", "users", "schedules"]] = []
    user_ids: list[str] = []
    escalation_policy_ids: list[str] = []
    schedule_ids: list[str] = []
    since: DateTime | None = None
    until: DateTime | None = None
    earliest: bool | None = None


class EventPayload(Body):
    summary: Text
    source: Text
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: DateTime | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(None, alias="class")
    custom_details: dict[str, Any] | None = None


class EventLink(Body):
    href: str
    text: str | None = None


class EventImage(Body):
    src: str
    href: str | None = None
    alt: str | None = None


class Event(Body):
    """An Events API v2 event (events-v2-openapiv3.json ``/enqueue``, notes §7)."""

    routing_key: str
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = None
    payload: EventPayload | None = None
    client: str | None = None
    client_url: str | None = None
    links: list[EventLink] | None = None
    images: list[EventImage] | None = None


def _event_refused(problems: list[Problem]) -> Response:
    """The Events API's own 400 (notes §7), not the REST error object."""
    if any(p.kind == "json" for p in problems):
        return JSONResponse({"status": "Unrecognized object",
                             "message": "Event object format is unrecognized",
                             "errors": ["JSON parse error"]}, status_code=400)
    return JSONResponse({"status": "invalid event", "message": "Event object is invalid",
                         "errors": [p.message for p in problems]}, status_code=400)


OPERATIONS: dict[str, Operation] = {
    "POST /v2/enqueue": Operation(body=Event, answer=_event_refused),
    "GET /incidents": Operation(query=IncidentsQuery),
    "POST /incidents": Operation(body=CreateIncident),
    "PUT /incidents": Operation(body=BulkUpdate, query=Paged),
    "GET /incidents/{id}": Operation(query=IncidentQuery),
    "PUT /incidents/{id}": Operation(body=UpdateIncident),
    "GET /incidents/{id}/log_entries": Operation(query=IncidentLogQuery),
    "GET /log_entries": Operation(query=LogQuery),
    "GET /priorities": Operation(query=Paged),
    "GET /users": Operation(query=UsersQuery),
    "GET /users/me": Operation(query=UserQuery),
    "GET /users/{id}": Operation(query=UserQuery),
    "GET /services": Operation(query=ServicesQuery),
    "GET /escalation_policies": Operation(query=PoliciesQuery),
    "GET /schedules": Operation(query=SchedulesQuery),
    "POST /schedules": Operation(body=ScheduleWrite),
    "GET /schedules/{id}": Operation(query=ScheduleQuery),
    "PUT /schedules/{id}": Operation(body=ScheduleWrite),
    "POST /schedules/preview": Operation(body=ScheduleWrite, query=PreviewQuery),
    "POST /escalation_policies": Operation(body=PolicyWrite),
    "GET /escalation_policies/{id}": Operation(query=PolicyQuery),
    "PUT /escalation_policies/{id}": Operation(body=PolicyWrite),
    "GET /schedules/{id}/overrides": Operation(query=OverridesQuery),
    "POST /schedules/{id}/overrides": Operation(body=CreateOverrides),
    "GET /oncalls": Operation(query=OncallsQuery),
}


def _has_body(request: Request) -> bool:
    """Whether the request carries a body (a non-zero Content-Length or a chunked one)."""
    if "transfer-encoding" in request.headers:
        return True
    return request.headers.get("content-length", "0").strip() not in ("", "0")


def pd_error(status: int, code: int, message: str, errors: list[str] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    """PagerDuty's error envelope (notes §3)."""
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _pid(prefix: str, n: int) -> str:
    """PagerDuty-looking ids: uppercase alphanumerics, fixed width, deterministic."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return prefix + out.rjust(12, "0")


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class BadRequest(Exception):
    """A request the vendor answers with an error body; carries that response."""

    def __init__(self, response: Response) -> None:
        self.response = response


def bad(code: int, message: str, *errors: str, status: int = 400) -> BadRequest:
    return BadRequest(pd_error(status, code, message, list(errors)))


@dataclass(slots=True)
class User:
    id: str
    name: str
    email: str
    role: str = "user"

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "type": "user_reference", "summary": self.name,
                "self": f"{API}/users/{self.id}", "html_url": f"{WEB}/users/{self.id}"}

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "user", "summary": self.name, "name": self.name,
                "email": self.email, "time_zone": "Etc/UTC", "color": "purple", "role": self.role,
                "description": None, "invitation_sent": False, "job_title": "",
                "self": f"{API}/users/{self.id}", "html_url": f"{WEB}/users/{self.id}",
                "teams": [], "contact_methods": [], "notification_rules": []}


@dataclass(slots=True)
class Service:
    id: str
    name: str
    ep_id: str
    team_id: str
    ack_timeout: int | None
    auto_resolve: int | None
    integrations: dict[str, str] = field(default_factory=dict)  # routing key -> name

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "type": "service_reference", "summary": self.name,
                "self": f"{API}/services/{self.id}", "html_url": f"{WEB}/services/{self.id}"}


@dataclass(slots=True)
class LogEntry:
    id: str
    type: str
    at: datetime
    incident_id: str
    service_id: str
    agent: tuple[str, str]  # ("user"|"service", id)
    channel: dict[str, Any]
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PDIncident:
    id: str
    number: int
    title: str
    service_id: str
    ep_id: str
    status: str
    urgency: str
    created_at: datetime
    updated_at: datetime
    incident_key: str | None
    priority_id: str | None = None
    routing_key: str | None = None
    last_status_change_at: datetime | None = None
    last_change_by: tuple[str, str] = ("service", "")
    resolved_at: datetime | None = None
    assignees: list[tuple[datetime, str]] = field(default_factory=list)
    acks: list[tuple[datetime, str]] = field(default_factory=list)
    assigned_via: str = "escalation_policy"
    escalation_level: int = 1
    generation: int = 0
    first_log: str | None = None
    log_ids: list[str] = field(default_factory=list)
    details: str | None = None
    alert_severity: str | None = None


def _rotation(sid: str, name: str, users: tuple[str, ...], turn: timedelta,
              team: str) -> Schedule:
    """A one-layer UTC rotation handing over at :data:`EPOCH` (docs/oncall.md)."""
    return Schedule(sid, name, [ScheduleLayer(f"{sid}L1", "Layer 1", EPOCH, users, EPOCH,
                                              int(turn.total_seconds()))], team,
                    description=f"{turn} rotation")


def _hard_cases() -> list[Schedule]:
    """The schedules migration must get right (issue 13): two layers in a DST zone where the
    higher one, a daily rotation, is restricted to weekdays 09:00-17:00 and hides a weekly
    rotation below it; and 12-hour turns in another DST zone."""
    ny, london = "America/New_York", "Europe/London"
    monday_ny = datetime(2024, 1, 1, 9, tzinfo=ZoneInfo(ny))  # a Monday, 09:00 local
    weekdays = tuple(Restriction(time(9), timedelta(hours=8), day) for day in range(5))
    business = Schedule(SCHED_BUSINESS, "Platform business hours", [
        ScheduleLayer(f"{SCHED_BUSINESS}L1", "Weekly", monday_ny,
                      ("PUSR002", "PUSR003", "PUSR004"), monday_ny, 7 * 86_400),
        ScheduleLayer(f"{SCHED_BUSINESS}L2", "Business hours", monday_ny,
                      ("PUSR001", "PUSR005"), monday_ny, 86_400, weekdays),
    ], TEAM_SRE, time_zone=ny, description="Weekly cover; weekday business hours on top")
    eight_london = datetime(2024, 1, 1, 8, tzinfo=ZoneInfo(london))
    half_day = Schedule(SCHED_HALF_DAY, "Follow the sun", [
        ScheduleLayer(f"{SCHED_HALF_DAY}L1", "12 hours", eight_london,
                      ("PUSR006", "PUSR002"), eight_london, 12 * 3600),
    ], TEAM_SRE, time_zone=london, description="12-hour turns at 08:00 and 20:00 London")
    return [business, half_day]


class PagerDutySimulator(Simulator):
    """One PagerDuty account: two services, three schedules, two escalation policies."""

    vendor = "pagerduty"
    operations = OPERATIONS

    def __init__(self, *, seed: int = 0, rate_limits: bool = True,
                 ack_timeout: int | None = 1800, auto_resolve_timeout: int | None = 14400,
                 token: str = TOKEN, event_delay: float = 0.0) -> None:
        """``ack_timeout`` is the Web service's acknowledgement timeout (seconds);
        ``auto_resolve_timeout`` the Database service's auto-resolve (None disables it);
        ``event_delay``: seconds between an Events API 202 and the event taking effect (the API
        is asynchronous, notes §7; 0 applies it at once)."""
        self.ack_timeout = ack_timeout
        self.event_delay = event_delay
        self.auto_resolve_timeout = auto_resolve_timeout
        self.token = token
        super().__init__(seed=seed, rate_limits=rate_limits)

    # ------------------------------------------------------------------ account

    def reset(self) -> None:
        people = [("alice", "Alice Archer", "owner"), ("bob", "Bob Baker", "user"),
                  ("carol", "Carol Cole", "user"), ("dave", "Dave Dunn", "user"),
                  ("erin", "Erin Eames", "user"), ("frank", "Frank Ford", "admin"),
                  ("syncd-bot", "syncd bot", "admin")]
        self.users = {
            f"PUSR{i:03d}": User(f"PUSR{i:03d}", name, f"{login}@example.com", role)
            for i, (login, name, role) in enumerate(people, 1)
        }
        self.user_by_email = {u.email: u for u in self.users.values()}
        self.teams = {TEAM_SRE: "SRE", TEAM_DB: "Database"}
        self.priorities = [
            ("PPRIO01", "P1", "Critical: customer-facing outage"),
            ("PPRIO02", "P2", "High: degraded service"),
            ("PPRIO03", "P3", "Moderate: partial impact"),
            ("PPRIO04", "P4", "Low: minor issue"),
            ("PPRIO05", "P5", "Informational"),
        ]
        self.priority_by_id = {p[0]: p for p in self.priorities}
        now = self.clock.now()
        self.schedules = {s.id: s for s in [
            _rotation(SCHED_PRIMARY, "SRE primary", ("PUSR001", "PUSR002", "PUSR003"),
                      timedelta(days=1), TEAM_SRE),
            _rotation(SCHED_SECONDARY, "SRE secondary", ("PUSR004", "PUSR005"),
                      timedelta(days=7), TEAM_SRE),
            _rotation(SCHED_DBA, "Database on-call", ("PUSR004", "PUSR005", "PUSR006"),
                      timedelta(hours=12), TEAM_DB),
            *_hard_cases(),
        ]}
        self.policies = {
            EP_SRE: EscalationPolicy(EP_SRE, "SRE escalation", TEAM_SRE, [
                [("schedule", SCHED_PRIMARY)], [("schedule", SCHED_SECONDARY)],
                [("user", "PUSR006")]]),
            EP_DBA: EscalationPolicy(EP_DBA, "Database escalation", TEAM_DB, [
                [("schedule", SCHED_DBA)], [("user", "PUSR001")]]),
            # The migration hard case: three levels, looping twice (issue 13).
            EP_PLATFORM: EscalationPolicy(EP_PLATFORM, "Platform escalation", TEAM_SRE, [
                [("schedule", SCHED_BUSINESS)], [("schedule", SCHED_HALF_DAY)],
                [("user", "PUSR006")]], delays=[15, 20, 10], num_loops=2,
                description="Platform: business hours, then follow-the-sun, then Frank"),
        }
        self.services = {
            SERVICE_WEB: Service(SERVICE_WEB, "Web", EP_SRE, TEAM_SRE, self.ack_timeout, None,
                                 {ROUTING_KEY: "Prometheus", ROUTING_KEY_2: "Datadog"}),
            SERVICE_DB: Service(SERVICE_DB, "Database", EP_DBA, TEAM_DB, self.ack_timeout,
                                self.auto_resolve_timeout, {ROUTING_KEY_DB: "Prometheus"}),
        }
        self.routing = {key: s.id for s in self.services.values() for key in s.integrations}
        self.incidents: dict[str, PDIncident] = {}
        self.by_number: dict[int, str] = {}
        self.open_ids: dict[str, None] = {}  # insertion-ordered set of open incidents
        self.open_key: dict[tuple[str, str], str] = {}  # (service, incident_key) -> open id
        self.by_key: dict[str, list[str]] = {}  # incident_key -> every incident with it
        self.logs: list[LogEntry] = []  # sorted by (at, id)
        self.log_times: list[float] = []
        self.log_by_id: dict[str, LogEntry] = {}
        # (event type, incident id, at, agent) of the last v3 webhook events, newest last.
        self.webhook_events: collections.deque[tuple[str, str, datetime, tuple[str, str]]] = \
            collections.deque(maxlen=1000)
        self.webhook_sink: Callable[[dict[str, Any]], None] | None = None
        self.timers: list[tuple[datetime, int, str, str, int]] = []
        # Accepted Events API events not applied yet (due, event), in arrival order.
        self.late_events: collections.deque[tuple[datetime, dict[str, Any]]] = (
            collections.deque())
        self.seq = itertools.count(1)
        self.number_seq = itertools.count(1)
        self.override_seq = itertools.count(1)
        self.object_seq = itertools.count(1)  # schedules, layers, policies created by clients
        self._seed_override(now)
        self.version = 0
        self._list_cache: dict[Any, tuple[int, list[str]]] = {}

    @classmethod
    def account_table(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """Config keys for one of this simulator's describe() lines (docs/vendors/pagerduty.md)."""
        creds = desc["credentials"]
        return {"vendor": cls.vendor, "base_url": desc["base_url"],
                **{k: creds[k] for k in ("token", "from_email", "service_id") if k in creds}}

    def describe(self, base_url: str) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "base_url": base_url,
            "credentials": {"token": self.token, "from_email": FROM_EMAIL,
                            "service_id": SERVICE_WEB, "read_only_token": READ_ONLY_TOKEN},
            "users": [u.email for u in self.users.values()],
            "intake": {"events_url": f"{base_url}/v2/enqueue", "routing_key": ROUTING_KEY,
                       "routing_keys": {f"{self.services[sid].name}/{name}": key
                                        for key, sid in self.routing.items()
                                        for name in [self.services[sid].integrations[key]]}},
            "schedules": {s.name: s.id for s in self.schedules.values()},
            "escalation_policies": {p.name: p.id for p in self.policies.values()},
        }

    # ------------------------------------------------------------------ incident core

    def _touch(self) -> None:
        self.version += 1

    def _log(self, inc: PDIncident, kind: str, agent: tuple[str, str], channel: dict[str, Any],
             *, at: datetime | None = None, note: str | None = None, **extra: Any) -> LogEntry:
        at = at or self.clock.now()
        entry = LogEntry(_pid("R", next(self.seq)), kind, at, inc.id, inc.service_id, agent,
                         channel, note, extra)
        stamp = at.timestamp()
        if not self.log_times or stamp >= self.log_times[-1]:
            self.logs.append(entry)
            self.log_times.append(stamp)
        else:  # a timer firing at its due time, earlier than the newest entry
            i = bisect.bisect_right(self.log_times, stamp)
            self.logs.insert(i, entry)
            self.log_times.insert(i, stamp)
        self.log_by_id[entry.id] = entry
        inc.log_ids.append(entry.id)
        event = WEBHOOK_EVENTS.get(kind)
        if event is not None:
            if kind == "trigger_log_entry" and inc.first_log is not None:
                event = "incident.reopened"
            self._emit(inc, event, agent, at)
        if kind == "trigger_log_entry" and inc.first_log is None:
            inc.first_log = entry.id
        return entry

    def _emit(self, inc: PDIncident, event_type: str, agent: tuple[str, str],
              at: datetime | None = None) -> None:
        at = at or self.clock.now()
        self.webhook_events.append((event_type, inc.id, at, agent))
        if self.webhook_sink is not None:
            self.webhook_sink(self.webhook_event(inc.id, event_type, at=at, agent=agent))

    def webhook_event(self, incident_id: str, event_type: str, *, at: datetime | None = None,
                      agent: tuple[str, str] | None = None) -> dict[str, Any]:
        """The v3 delivery body for ``event_type`` on an incident as it is now (notes §6):
        ``number`` and ``assignees`` where the REST incident has ``incident_number`` and
        ``assignments``."""
        inc = self._find(incident_id)
        rest = self.incident_json(inc)
        data = {k: rest[k] for k in ("id", "self", "html_url", "status", "incident_key",
                                     "created_at", "title", "service", "escalation_policy",
                                     "teams", "priority", "urgency", "resolve_reason")}
        data.update({"type": "incident", "number": inc.number, "conference_bridge": None,
                     "assignees": [self.users[u].ref() for _at, u in inc.assignees]})
        who = self._agent_ref(agent) if agent and agent[0] == "user" else None
        return {"event": {"id": f"{inc.id}-{len(inc.log_ids)}-{event_type}",
                          "event_type": event_type, "resource_type": "incident",
                          "occurred_at": iso(at or self.clock.now()), "agent": who,
                          "client": None, "data": data}}

    def _new_incident(self, service: Service, title: str, *, key: str | None, urgency: str,
                      agent: tuple[str, str], channel: dict[str, Any], at: datetime | None = None,
                      priority_id: str | None = None, routing_key: str | None = None,
                      details: str | None = None, log: bool = True,
                      assignees: list[str] | None = None, ep_id: str | None = None
                      ) -> PDIncident:
        now = at or self.clock.now()
        number = next(self.number_seq)
        inc = PDIncident(
            id=_pid("Q", number * 7919 + 104729), number=number, title=title,
            service_id=service.id, ep_id=ep_id or service.ep_id, status="triggered",
            urgency=urgency,
            created_at=now, updated_at=now, incident_key=key, priority_id=priority_id,
            routing_key=routing_key, last_status_change_at=now, last_change_by=agent,
            details=details,
        )
        if assignees is None:
            assignees = self._level_users(inc.ep_id, 1, now)
        inc.assignees = [(now, u) for u in assignees]
        self.incidents[inc.id] = inc
        self.by_number[number] = inc.id
        self.open_ids[inc.id] = None
        if key:
            self.open_key[(service.id, key)] = inc.id
            self.by_key.setdefault(key, []).append(inc.id)
        if log:
            self._log(inc, "trigger_log_entry", agent, channel, at=now)
            if service.auto_resolve:
                self._timer(now + timedelta(seconds=service.auto_resolve), "auto_resolve", inc)
        self._touch()
        return inc

    def _level_users(self, ep_id: str, level: int, at: datetime) -> list[str]:
        """Who a new assignment at ``level`` goes to: every target, or on a round-robin rule
        the next target in turn. Documented: "users are placed in a ring and assigned to
        incidents sequentially", the ring being the rule's "users and/or schedules", and "when
        it's a schedule's turn ..., whoever is currently on call for the schedule will be
        assigned" (support.pagerduty.com/docs/round-robin-scheduling). Ours, not documented:
        the ring starts at the rule's first target, and a turn that falls on a schedule with
        nobody on call is used up (that assignment pages no one at this level) rather than
        passed to the next target (docs/vendors/pagerduty.md)."""
        ep = self.policies[ep_id]
        level = min(level, len(ep.levels))
        targets = ep.levels[level - 1]
        if level in ep.round_robin:
            turn = ep.turns.get(level, 0)
            ep.turns[level] = turn + 1
            targets = [targets[turn % len(targets)]]
        out = []
        for kind, tid in targets:
            if kind == "user":
                out.append(tid)
            else:
                # A schedule with nobody on call (a restricted layer's gap) pages no one.
                out += [who for who, _s, _e in self.schedules[tid].entries(
                    at, at + timedelta(seconds=1))][:1]
        return out

    def _timer(self, due: datetime, kind: str, inc: PDIncident) -> None:
        heapq.heappush(self.timers, (due, next(self.seq), kind, inc.id, inc.generation))

    def _set_status(self, inc: PDIncident, status: str, agent: tuple[str, str],
                    channel: dict[str, Any], *, at: datetime | None = None,
                    note: str | None = None) -> None:
        """The one state machine every path goes through; appends the log entry."""
        now = at or self.clock.now()
        old = inc.status
        service = self.services[inc.service_id]
        inc.generation += 1
        if status == "resolved":
            inc.status = "resolved"
            inc.resolved_at = now
            inc.assignees = []
            inc.acks = []
            self.open_ids.pop(inc.id, None)
            if inc.incident_key:
                self.open_key.pop((inc.service_id, inc.incident_key), None)
            self._log(inc, "resolve_log_entry", agent, channel, at=now, note=note)
        else:
            if old == "resolved":  # reopen (notes §5.3)
                if inc.incident_key:
                    holder = self.open_key.get((inc.service_id, inc.incident_key))
                    if holder and holder != inc.id:
                        raise bad(2001, "Invalid Input Provided", "An open incident with this "
                                  "incident key already exists on the service")
                    self.open_key[(inc.service_id, inc.incident_key)] = inc.id
                self.open_ids[inc.id] = None
                inc.resolved_at = None
                inc.status = "triggered"
                inc.escalation_level = 1
                inc.assignees = [(now, u) for u in self._level_users(inc.ep_id, 1, now)]
                self._log(inc, "trigger_log_entry", agent, channel, at=now,
                          note="Incident reopened")
            if status == "acknowledged":
                inc.status = "acknowledged"
                if agent[0] == "user":
                    inc.acks = [*[(a, u) for a, u in inc.acks if u != agent[1]], (now, agent[1])]
                    inc.assignees = [(now, agent[1])]  # acking assigns to the acting user
                self._log(inc, "acknowledge_log_entry", agent, channel, at=now,
                          acknowledgement_timeout=service.ack_timeout)
                if service.ack_timeout:
                    self._timer(now + timedelta(seconds=service.ack_timeout), "ack_timeout", inc)
            elif status == "triggered" and old == "acknowledged":
                inc.status = "triggered"
                inc.acks = []
                self._log(inc, "unacknowledge_log_entry", agent, channel, at=now)
        inc.last_status_change_at = now
        inc.last_change_by = agent
        inc.updated_at = now
        self._touch()

    def tick(self) -> None:
        """Late events, ack timeouts and auto-resolve, at their due time on the sim clock."""
        now = self.clock.now()
        while self.late_events and self.late_events[0][0] <= now:
            _due, event = self.late_events.popleft()
            self._apply_event(event, event["dedup_key"])
        while self.timers and self.timers[0][0] <= now:
            due, _seq, kind, inc_id, generation = heapq.heappop(self.timers)
            inc = self.incidents.get(inc_id)
            if inc is None or inc.status == "resolved":
                continue
            agent = ("service", inc.service_id)
            if kind == "ack_timeout" and inc.status == "acknowledged" \
                    and inc.generation == generation:
                self._set_status(inc, "triggered", agent, {"type": "timeout"}, at=due)
            elif kind == "auto_resolve":
                self._set_status(inc, "resolved", agent, {"type": "auto"}, at=due,
                                 note="Automatically resolved by the service's timeout")

    def seed_incidents(self, count: int, *, state: str = "triggered",
                       age_days: float = 0.0) -> list[str]:
        """Incidents created one minute apart going back in time, so they span months like a
        real account's backlog; one trigger log entry each. No timers (they are historic)."""
        if state not in ("triggered", "acknowledged", "resolved"):
            raise ValueError(f"unknown state {state!r}")
        # Generational GC rescans the growing heap on every few hundred new objects; pausing
        # it makes 100k incidents take about a second instead of four.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._seed(count, state, timedelta(days=age_days))
        finally:
            if was_enabled:
                gc.enable()

    def _seed(self, count: int, state: str, age: timedelta) -> list[str]:
        service = self.services[SERVICE_WEB]
        now = self.clock.now()
        ids = []
        new_logs = []
        bot = self.user_by_email[FROM_EMAIL].id
        on_call = self._level_users(service.ep_id, 1, now)  # one lookup, not one per incident
        for i in range(count):
            at = now - age - timedelta(minutes=count - i)
            inc = self._new_incident(service, f"Seeded incident {i + 1}", key=f"seed-{i + 1}-"
                                     f"{self.version}", urgency="high", at=at,
                                     agent=("service", service.id), channel={"type": "api"},
                                     priority_id=self.priorities[i % 5][0], log=False,
                                     assignees=on_call)
            entry = LogEntry(_pid("R", next(self.seq)), "trigger_log_entry", at, inc.id,
                             service.id, ("service", service.id), {"type": "api"})
            new_logs.append(entry)
            inc.first_log = entry.id
            inc.log_ids.append(entry.id)
            if state != "triggered":
                inc.status = state
                if state == "acknowledged":
                    inc.acks = [(at, bot)]
                    inc.assignees = [(at, bot)]
                else:
                    inc.resolved_at = at
                    inc.assignees = []
                    self.open_ids.pop(inc.id, None)
                    self.open_key.pop((service.id, inc.incident_key or ""), None)
            ids.append(inc.id)
        for entry in new_logs:
            self.log_by_id[entry.id] = entry
        self.logs.extend(new_logs)
        self.logs.sort(key=lambda e: (e.at, e.id))
        self.log_times = [e.at.timestamp() for e in self.logs]
        self._touch()
        return ids

    def canonical_incidents(self) -> list[dict[str, Any]]:
        return [self.canonical_of(inc) for inc in self.incidents.values()]

    def canonical_of(self, inc: PDIncident) -> dict[str, Any]:
        """P1..P5 read as sev1..sev5 (the client's default map); other names have none."""
        name = self.priority_by_id[inc.priority_id][1] if inc.priority_id else None
        severity = f"sev{name[1:]}" if name and re.fullmatch(r"P[1-5]", name) else None
        return {"id": inc.id, "state": inc.status, "severity": severity,
                "dedup": inc.incident_key, "title": inc.title,
                "updated_at": iso(inc.updated_at), "urgency": inc.urgency, "number": inc.number}

    def _find(self, incident_id: str, *, by_number: bool = True) -> PDIncident:
        """An incident by ID or, where the vendor allows it (``by_number``), by its number.
        Only GET /incidents/{id} "accepts either an incident id, or an incident number" (SPEC
        getIncident); the writes (updateIncident, updateIncidents) say nothing of numbers, and
        refusing one there is ours, a stricter reading (docs/vendors/pagerduty.md)."""
        inc = self.incidents.get(incident_id)
        if inc is None and by_number and incident_id.isdigit():
            inc = self.incidents.get(self.by_number.get(int(incident_id), ""))
        if inc is None:
            raise KeyError(incident_id)
        return inc

    def act(self, incident_id: str, action: str, *, user: str | None = None,
            severity: str | None = None) -> dict[str, Any]:
        """A person in the web UI. PagerDuty's UI has no un-acknowledge (only the ack timeout
        does that), and resolving a resolved incident is refused like the API refuses it."""
        inc = self._find(incident_id)
        who = self.user_by_email.get(user or "alice@example.com") or self.users.get(user or "")
        if who is None:
            raise ValueError(f"unknown user {user!r}")
        agent, channel = ("user", who.id), {"type": "website"}
        if action == "acknowledge":
            if inc.status == "resolved":
                raise ValueError("a resolved incident cannot be acknowledged in the UI")
            self._set_status(inc, "acknowledged", agent, channel)
        elif action == "resolve":
            if inc.status == "resolved":
                raise ValueError("Incident Already Resolved")
            self._set_status(inc, "resolved", agent, channel)
        elif action == "reopen":
            if inc.status != "resolved":
                raise ValueError("only a resolved incident can be reopened")
            try:
                self._set_status(inc, "triggered", agent, channel)
            except BadRequest:
                raise ValueError("an open incident with this incident key exists") from None
        elif action == "severity":
            if severity is None:
                raise ValueError("severity needs a value")
            name = f"P{severity[-1]}" if severity.lower().startswith("sev") else severity
            match = [p for p in self.priorities if p[1] == name]
            if not match:
                raise ValueError(f"no priority named {name!r}")
            changed = inc.priority_id != match[0][0]
            inc.priority_id = match[0][0]
            inc.updated_at = self.clock.now()
            if changed:  # no log entry: PagerDuty records none for priorities (notes §5.6)
                self._emit(inc, "incident.priority_updated", agent)
            self._touch()
        elif action == "unacknowledge":
            raise ValueError("PagerDuty has no un-acknowledge action")
        else:
            raise ValueError(f"unknown action {action!r}")
        return self.canonical_of(inc)

    def alert(self, *, dedup: str, title: str, action: str = "trigger",
              severity: str | None = None) -> dict[str, Any]:
        sev = severity or "critical"
        if sev.startswith("sev"):
            sev = {"sev1": "critical", "sev2": "error", "sev3": "warning"}.get(sev, "info")
        status, body = self._enqueue({
            "routing_key": ROUTING_KEY, "event_action": action, "dedup_key": dedup,
            "payload": {"summary": title, "source": "syncd-sim", "severity": sev},
        })
        if status != 202:
            raise ValueError(body.get("message", "event rejected"))
        inc_id = self.open_key.get((SERVICE_WEB, dedup))
        if inc_id is None:
            matches = self.by_key.get(dedup, [])
            inc_id = matches[-1] if matches else None
        return {**body, "incident_id": inc_id}

    # ------------------------------------------------------------------ events API v2

    def _enqueue(self, event: Any, *, delay: float = 0.0) -> tuple[int, dict[str, Any]]:
        """Events API v2 (notes §7). Returns (status, body); the REST route and alert() share it.
        A valid event is answered 202 at once and applied ``delay`` seconds later on the sim
        clock: "the API is asynchronous: a 202 does not mean the incident exists yet"."""
        def invalid(*errors: str) -> tuple[int, dict[str, Any]]:
            return 400, {"status": "invalid event", "message": "Event object is invalid",
                         "errors": list(errors)}

        if not isinstance(event, dict):
            return 400, {"status": "Unrecognized object",
                         "message": "Event object format is unrecognized",
                         "errors": ["JSON parse error"]}
        key = event.get("routing_key")
        if not isinstance(key, str) or key not in self.routing:
            return invalid("'routing_key' is missing or does not match an integration key")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            return invalid("'event_action' must be one of trigger, acknowledge, resolve")
        dedup = event.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            return invalid("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            payload = event.get("payload")
            if not isinstance(payload, dict):
                return invalid("'payload' is missing")
            summary, source, sev = (payload.get(k) for k in ("summary", "source", "severity"))
            problems = []
            if not isinstance(summary, str) or not summary or len(summary) > 1024:
                problems.append("'payload.summary' is missing or longer than 1024 characters")
            if not isinstance(source, str) or not source:
                problems.append("'payload.source' is missing")
            if sev not in SEVERITIES:
                problems.append("'payload.severity' must be one of critical, error, warning, "
                                "info")
            if problems:
                return invalid(*problems)
            if dedup is None:
                dedup = f"{self.random.getrandbits(128):032x}"
        elif not dedup:
            return invalid("'dedup_key' is required for acknowledge and resolve")
        if delay > 0:
            self.late_events.append((self.clock.now() + timedelta(seconds=delay),
                                     {**event, "dedup_key": dedup}))
        else:
            self._apply_event(event, dedup)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup}

    def _apply_event(self, event: dict[str, Any], dedup: str) -> None:
        """A checked event taking effect: dedup per service open alert, acks and resolves only
        through the routing key that triggered (notes §7)."""
        key, action = event["routing_key"], event["event_action"]
        service = self.services[self.routing[key]]
        agent = ("service", service.id)
        if action == "trigger":
            summary, sev = event["payload"]["summary"], event["payload"]["severity"]
            existing = self.open_key.get((service.id, dedup))
            if existing is None:
                urgency = "high" if sev in ("critical", "error") else "low"
                inc = self._new_incident(service, summary, key=dedup, urgency=urgency,
                                         agent=agent, channel={"type": "api", "summary": summary},
                                         routing_key=key)
                inc.alert_severity = sev
            # An existing open alert absorbs the trigger; acknowledged stays quiet (notes §7).
        else:
            inc_id = self.open_key.get((service.id, dedup))
            inc = self.incidents.get(inc_id or "")
            # Dropped unless the open alert came through this same routing key (notes §7).
            if inc is not None and inc.routing_key == key:
                if action == "resolve":
                    self._set_status(inc, "resolved", agent, {"type": "api"})
                elif inc.status == "triggered":
                    self._set_status(inc, "acknowledged", agent, {"type": "api"})

    async def r_enqueue(self, request: Request) -> Response:
        raw = await request.body()
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        key = event.get("routing_key") if isinstance(event, dict) else None
        if isinstance(key, str) and key in self.routing:
            wait = self.limit(key, "events", EVENTS_RATE_LIMIT, 60.0)
            if wait is not None:
                return JSONResponse({"status": "throttle event",
                                     "message": "Request Limit Exceeded", "errors": []},
                                    status_code=429)
        refused = await self.validate(request)
        if refused is not None:
            return refused
        status, body = self._enqueue(event, delay=self.event_delay)
        return JSONResponse(body, status_code=status)

    # ------------------------------------------------------------------ REST plumbing

    def rate_limited(self, request: Request, retry_after: float) -> Response:
        reset = max(1, math.ceil(retry_after))
        return pd_error(429, 2020, "Rate Limit Exceeded", headers={
            "ratelimit-limit": str(max(1, math.floor(RATE_LIMIT * self.rate_scale))),
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(reset)})

    def invalid(self, problems: list[Problem]) -> Response:
        """PagerDuty's 400: 2003 Missing Arguments when only required fields are missing, else
        2001 Invalid Input Provided, each problem in ``errors`` (notes §3)."""
        if all(p.kind == "missing" for p in problems):
            return pd_error(400, 2003, "Missing Arguments", [p.message for p in problems])
        return pd_error(400, 2001, "Invalid Input Provided", [p.message for p in problems])

    def _auth(self, request: Request) -> str | Response:
        header = request.headers.get("authorization", "")
        token = None
        if header.startswith("Token token="):
            token = header[len("Token token="):]
        elif header.startswith("Bearer "):
            token = header[len("Bearer "):]
        if not token or token not in (self.token, READ_ONLY_TOKEN):
            return pd_error(401, 2006, "Authentication failed")
        if token == READ_ONLY_TOKEN and request.method != "GET":
            return pd_error(403, 2010, "Access Denied",
                            ["This API key is read-only and cannot make changes"])
        return token

    def rest(self, handler: Any) -> Any:
        """Wrap a REST handler: auth, the per-key limit with its headers, BadRequest bodies."""
        async def endpoint(request: Request) -> Response:
            token = self._auth(request)
            if isinstance(token, Response):
                return token
            wait = self.limit(token, "rest", RATE_LIMIT, 60.0)
            if wait is not None:
                return self.rate_limited(request, wait)
            try:
                response = (self._content_type(request) or await self.validate(request)
                            or await handler(request))
            except BadRequest as exc:
                response = exc.response
            response.headers.update(self._limit_headers(token))
            return response
        return endpoint

    @staticmethod
    def _content_type(request: Request) -> Response | None:
        """Writes must say ``Content-Type: application/json``: the spec's header_Content-Type
        parameter is required on every operation with that one enum value. GETs and any
        request without a body (a DELETE) are exempt: the official client sends the header on
        POST/PUT/PATCH only (PYPD ``prepare_headers``), so PagerDuty takes its bodiless calls
        without one (notes §1, §8); a bodiless write is refused by its body check instead."""
        if request.method in ("GET", "HEAD") or not _has_body(request):
            return None
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json":
            return None
        return pd_error(400, 2001, "Invalid Input Provided",
                        ["Content-Type must be application/json"])

    def _limit_headers(self, token: str) -> dict[str, str]:
        """ratelimit-limit/-remaining/-reset (notes §4), for the limit as currently scaled."""
        limit = max(1, math.floor(RATE_LIMIT * self.rate_scale))
        if not self.rate_limits_enabled:
            return {"ratelimit-limit": str(RATE_LIMIT), "ratelimit-remaining": str(RATE_LIMIT),
                    "ratelimit-reset": "60"}
        hits = self.window._hits.get((token, "rest"))
        reset = 60.0 - (self.clock.monotonic() - hits[0]) if hits else 60.0
        return {"ratelimit-limit": str(limit),
                "ratelimit-remaining": str(self.window.remaining(token, "rest",
                                                                 RATE_LIMIT * self.rate_scale,
                                                                 60.0)),
                "ratelimit-reset": str(max(1, math.ceil(reset)))}

    async def _json(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            raise bad(2001, "Invalid Input Provided", "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise bad(2001, "Invalid Input Provided", "Request body must be a JSON object")
        return body

    def _from(self, request: Request) -> User:
        """The From header on incident writes (notes §1): missing, malformed or unknown -> 400."""
        value = request.headers.get("from", "").strip()
        if not value:
            raise bad(2016, FROM_MISSING)
        if "@" not in value:
            raise bad(1028, 'Malformed "From" header')
        user = self.user_by_email.get(value.lower())
        if user is None:
            raise bad(1008, "Requester User Not Found", FROM_MISSING)
        return user

    def _paging(self, request: Request) -> tuple[int, int, bool]:
        q = request.query_params
        try:
            limit = int(q.get("limit", "25"))
            offset = int(q.get("offset", "0"))
        except ValueError:
            raise bad(2001, "Invalid Input Provided", "limit and offset must be integers") \
                from None
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            raise bad(2001, "Invalid Input Provided",
                      f"Limit must be between 1 and {MAX_LIMIT}; offset must not be negative")
        if offset + limit > MAX_OFFSET:
            raise bad(2002, "Arguments Caused Error",
                      "Offset+limit exceeds maximum allowed value of 10000. Please try to refine "
                      "your search to reduce the returned set of records below this number, "
                      "like adding a date range.")
        return limit, offset, _bool(q.get("total"))

    def _page(self, key: str, items: list[Any], request: Request, render: Any) -> JSONResponse:
        limit, offset, total = self._paging(request)
        chunk = items[offset:offset + limit]
        return JSONResponse({key: [render(x) for x in chunk], "limit": limit, "offset": offset,
                             "more": offset + len(chunk) < len(items) and bool(chunk),
                             "total": len(items) if total else None})

    def _time(self, request: Request, name: str) -> datetime | None:
        value = request.query_params.get(name)
        if not value:
            return None
        try:
            return parse_time(value)
        except ValueError:
            raise bad(2004, "Invalid Input Provided", f"{name} is not a valid ISO 8601 date") \
                from None

    def _list_param(self, request: Request, name: str, allowed: Iterable[str] | None = None
                    ) -> list[str]:
        values = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)
        if allowed is not None:
            ok = set(allowed)
            wrong = [v for v in values if v not in ok]
            if wrong:
                raise bad(2001, "Invalid Input Provided",
                          f"{name} must be a list of {', '.join(sorted(ok))}.")
        return values

    # ------------------------------------------------------------------ JSON renderers

    def _agent_ref(self, agent: tuple[str, str]) -> dict[str, Any]:
        kind, aid = agent
        if kind == "user":
            return self.users[aid].ref()
        return self.services[aid].ref()

    def _priority_json(self, pid: str, *, full: bool = True) -> dict[str, Any]:
        _id, name, desc = self.priority_by_id[pid]
        out = {"id": pid, "type": "priority" if full else "priority_reference", "summary": name,
               "self": f"{API}/priorities/{pid}", "html_url": None}
        if full:
            out.update(name=name, description=desc)
        return out

    def incident_json(self, inc: PDIncident) -> dict[str, Any]:
        service = self.services[inc.service_id]
        ep = self.policies[inc.ep_id]
        pending = []
        for due, _s, kind, iid, gen in self.timers:
            if iid == inc.id and inc.status != "resolved":
                if kind == "ack_timeout" and gen == inc.generation \
                        and inc.status == "acknowledged":
                    pending.append({"type": "unacknowledge", "at": iso(due)})
                elif kind == "auto_resolve":
                    pending.append({"type": "resolve", "at": iso(due)})
        return {
            "id": inc.id, "type": "incident", "summary": f"[#{inc.number}] {inc.title}",
            "self": f"{API}/incidents/{inc.id}", "html_url": f"{WEB}/incidents/{inc.id}",
            "incident_number": inc.number, "title": inc.title, "description": inc.title,
            "created_at": iso(inc.created_at), "updated_at": iso(inc.updated_at),
            "status": inc.status, "incident_key": inc.incident_key,
            "service": service.ref(),
            "assignments": [{"at": iso(at), "assignee": self.users[u].ref()}
                            for at, u in inc.assignees],
            "assigned_via": inc.assigned_via,
            "last_status_change_at": iso(inc.last_status_change_at),
            "last_status_change_by": self._agent_ref(inc.last_change_by),
            "resolved_at": iso(inc.resolved_at),
            "first_trigger_log_entry": {
                "id": inc.first_log, "type": "trigger_log_entry_reference",
                "self": f"{API}/log_entries/{inc.first_log}",
                "html_url": f"{WEB}/incidents/{inc.id}/log_entries/{inc.first_log}"}
            if inc.first_log else None,
            "alert_counts": {"all": 1 if inc.routing_key else 0,
                             "triggered": 1 if inc.routing_key and inc.status != "resolved"
                             else 0,
                             "resolved": 1 if inc.routing_key and inc.status == "resolved"
                             else 0},
            "is_mergeable": True,
            "incident_type": {"name": "incident_default"},
            "escalation_policy": ep.ref(),
            "teams": self._team_refs(ep.team_id),  # none for a policy without a team
            "pending_actions": pending,
            "acknowledgements": [{"at": iso(at), "acknowledger": self.users[u].ref()}
                                 for at, u in inc.acks],
            "alert_grouping": None,
            "priority": self._priority_json(inc.priority_id) if inc.priority_id else None,
            "resolve_reason": None,
            "urgency": inc.urgency,
        }

    def log_json(self, entry: LogEntry, *, include_incident: bool = False) -> dict[str, Any]:
        inc = self.incidents[entry.incident_id]
        summary = {
            "trigger_log_entry": "Triggered through the API",
            "acknowledge_log_entry": "Acknowledged",
            "unacknowledge_log_entry": "Unacknowledged due to timeout",
            "resolve_log_entry": "Resolved",
            "escalate_log_entry": "Escalated",
            "urgency_change_log_entry": "Urgency changed",
        }.get(entry.type, entry.type)
        who = self._agent_ref(entry.agent)["summary"]
        ref = {"id": inc.id, "type": "incident_reference", "summary": f"[#{inc.number}] "
               f"{inc.title}", "self": f"{API}/incidents/{inc.id}",
               "html_url": f"{WEB}/incidents/{inc.id}"}
        out: dict[str, Any] = {
            "id": entry.id, "type": entry.type, "summary": f"{summary} by {who}",
            "self": f"{API}/log_entries/{entry.id}",
            "html_url": f"{WEB}/incidents/{inc.id}/log_entries/{entry.id}",
            "created_at": iso(entry.at), "agent": self._agent_ref(entry.agent),
            "channel": entry.channel, "service": self.services[entry.service_id].ref(),
            "incident": self.incident_json(inc) if include_incident else ref,
            "teams": [], "contexts": [], "event_details": {},
        }
        if entry.note:
            out["note"] = entry.note
        out.update(entry.extra)
        return out

    # ------------------------------------------------------------------ routes

    def routes(self) -> Iterable[BaseRoute]:
        r = self.rest
        return [
            Route("/incidents", r(self.r_incidents), methods=["GET", "PUT", "POST"]),
            Route("/incidents/{id}", r(self.r_incident), methods=["GET", "PUT"]),
            Route("/incidents/{id}/log_entries", r(self.r_incident_logs), methods=["GET"]),
            Route("/log_entries", r(self.r_logs), methods=["GET"]),
            Route("/priorities", r(self.r_priorities), methods=["GET"]),
            Route("/users", r(self.r_users), methods=["GET"]),
            Route("/users/me", r(self.r_me), methods=["GET"]),
            Route("/users/{id}", r(self.r_user), methods=["GET"]),
            Route("/services", r(self.r_services), methods=["GET"]),
            Route("/escalation_policies", r(self.r_policies), methods=["GET", "POST"]),
            Route("/escalation_policies/{id}", r(self.r_policy), methods=["GET", "PUT"]),
            Route("/schedules", r(self.r_schedules), methods=["GET", "POST"]),
            Route("/schedules/preview", r(self.r_preview), methods=["POST"]),
            Route("/schedules/{id}", r(self.r_schedule), methods=["GET", "PUT"]),
            Route("/schedules/{id}/overrides", r(self.r_overrides), methods=["GET", "POST"]),
            Route("/oncalls", r(self.r_oncalls), methods=["GET"]),
            Route("/v2/enqueue", self.r_enqueue, methods=["POST"]),
        ]

    # incidents --------------------------------------------------------------

    def _incident_ids(self, request: Request) -> list[str]:
        """Filtered, sorted incident ids for GET /incidents, cached per query and state version
        so paging through 10k open incidents does not re-filter on every page."""
        q = request.query_params
        statuses = self._list_param(request, "statuses", ("triggered", "acknowledged",
                                                          "resolved"))
        urgencies = self._list_param(request, "urgencies", ("high", "low"))
        services = self._list_param(request, "service_ids")
        teams = self._list_param(request, "team_ids")
        users = self._list_param(request, "user_ids")
        self._list_param(request, "include", ("acknowledgers", "agents", "assignees",
                                              "conference_bridge", "escalation_policies",
                                              "first_trigger_log_entries", "priorities",
                                              "services", "teams", "users"))
        key = q.get("incident_key")
        since, until = self._time(request, "since"), self._time(request, "until")
        if q.get("date_range") not in (None, "", "all"):
            raise bad(2001, "Invalid Input Provided", "date_range must be 'all'")
        if q.get("date_range") == "all":
            since = until = None
        else:
            if since is None and until is None:
                until = self.clock.now()
                since = until - MONTH
            elif since is None:
                since = until - MONTH  # type: ignore[operator]
            elif until is None:
                until = since + MONTH
            if until <= since:  # type: ignore[operator]
                raise bad(2004, "Invalid Input Provided", "until must be after since")
            if until - since > MAX_RANGE:  # type: ignore[operator]
                raise bad(2001, "Invalid Input Provided", "Date range cannot exceed 6 months")
        sort = []
        for part in filter(None, (q.get("sort_by") or "").split(",")):
            name, _, direction = part.partition(":")
            if name not in ("incident_number", "created_at", "resolved_at", "urgency") or \
                    direction not in ("", "asc", "desc"):
                raise bad(2001, "Invalid Input Provided", f"Invalid sort_by value {part!r}")
            sort.append((name, direction == "desc"))
        if len(sort) > 2:
            raise bad(2001, "Invalid Input Provided", "sort_by takes at most two fields")
        cache_key = (tuple(statuses), tuple(urgencies), tuple(services), tuple(teams),
                     tuple(users), key, since, until, tuple(sort))
        hit = self._list_cache.get(cache_key)
        if hit and hit[0] == self.version:
            return hit[1]
        if key is not None:
            pool: Iterable[str] = self.by_key.get(key, [])
        elif (statuses and "resolved" not in statuses) or users:
            pool = self.open_ids
        else:
            pool = self.incidents
        wanted = set(statuses) if statuses else None
        out = []
        for iid in pool:
            inc = self.incidents[iid]
            if wanted and inc.status not in wanted:
                continue
            if since is not None and not since <= inc.created_at < until:  # type: ignore
                continue
            if urgencies and inc.urgency not in urgencies:
                continue
            if services and inc.service_id not in services:
                continue
            if teams and self.policies[inc.ep_id].team_id not in teams:
                continue
            if users and not any(u in users for _a, u in inc.assignees):
                continue
            out.append(inc)
        out.sort(key=lambda i: i.number)
        for name, desc in reversed(sort):
            def sort_key(i: PDIncident, name: str = name) -> Any:
                if name == "urgency":
                    return 0 if i.urgency == "high" else 1
                value = getattr(i, name if name != "incident_number" else "number")
                return value.timestamp() if isinstance(value, datetime) else (value or 0)
            out.sort(key=sort_key, reverse=desc)
        ids = [i.id for i in out]
        if len(self._list_cache) > 16:
            self._list_cache.clear()
        self._list_cache[cache_key] = (self.version, ids)
        return ids

    async def r_incidents(self, request: Request) -> Response:
        if request.method == "GET":
            ids = self._incident_ids(request)
            return self._page("incidents", ids, request,
                              lambda iid: self.incident_json(self.incidents[iid]))
        if request.method == "POST":
            return await self._create(request)
        return await self._bulk_update(request)

    async def r_incident(self, request: Request) -> Response:
        try:
            inc = self._find(request.path_params["id"], by_number=request.method == "GET")
        except KeyError:
            return pd_error(404, 2100, "Not Found")
        if request.method == "GET":
            return JSONResponse({"incident": self.incident_json(inc)})
        user = self._from(request)
        body = await self._json(request)
        item = body["incident"]
        if item.get("id") not in (None, inc.id):
            raise bad(2001, "Invalid Input Provided", "incident.id does not match the path")
        self._check_update(inc, item)
        self._apply_update(inc, item, user)
        return JSONResponse({"incident": self.incident_json(inc)})

    async def _bulk_update(self, request: Request) -> Response:
        user = self._from(request)
        body = await self._json(request)
        items = body.get("incidents")
        if not isinstance(items, list) or not items:
            raise bad(2001, "Invalid Input Provided", "incidents must be a non-empty array")
        if len(items) > BULK_MAX:
            return pd_error(413, 2001, "Request Entity Too Large",
                            [f"A maximum of {BULK_MAX} incidents may be updated at a time"])
        targets = []
        for item in items:  # validate everything first: the bulk update is all or nothing
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise bad(2001, "Invalid Input Provided", "each incident needs an id")
            if item.get("type") not in ("incident", "incident_reference"):
                raise bad(2001, "Invalid Input Provided",
                          "type must be incident or incident_reference")
            try:
                inc = self._find(item["id"], by_number=False)
            except KeyError:
                raise bad(1004, "Invalid ID Provided", f"Incident {item['id']} not found") \
                    from None
            self._check_update(inc, item)
            targets.append((inc, item))
        for inc, item in targets:
            self._apply_update(inc, item, user)
        return JSONResponse({"incidents": [self.incident_json(inc) for inc, _ in targets]})

    def _priority_for(self, value: Any) -> str:
        """A priority given as a reference object or by name (the highest with that name)."""
        if isinstance(value, str):
            for pid, name, _d in self.priorities:
                if name == value:
                    return pid
        elif isinstance(value, dict) and value.get("type") in (
                "priority", "priority_reference") and value.get("id") in self.priority_by_id:
            return value["id"]
        raise bad(1020, "Invalid Priority", f"Unknown priority {value!r}")

    def _check_update(self, inc: PDIncident, item: dict[str, Any]) -> None:
        status = item.get("status")
        if status is not None:
            if status not in ("triggered", "acknowledged", "resolved"):
                raise bad(1003, "Invalid Status Provided",
                          "Status must be a list of triggered, acknowledged, or resolved.")
            if status == "resolved" and inc.status == "resolved":
                raise bad(1001, "Incident Already Resolved", f"Incident {inc.id} is resolved")
            if status == "triggered" and inc.status != "resolved":
                # Only reopening sets triggered; an open incident cannot be un-acknowledged.
                raise bad(1003, "Invalid Status Provided",
                          f"Incident {inc.id} is {inc.status}; only a resolved incident can be "
                          "set to triggered")
            if status != "resolved" and inc.status == "resolved" and inc.incident_key:
                holder = self.open_key.get((inc.service_id, inc.incident_key))
                if holder and holder != inc.id:
                    raise bad(2001, "Invalid Input Provided", f"Incident {inc.id} cannot be "
                              "reopened: an open incident with its incident key exists")
        if "priority" in item and item["priority"] is not None:
            self._priority_for(item["priority"])
        if "urgency" in item and item["urgency"] not in ("high", "low"):
            raise bad(2001, "Invalid Input Provided", "urgency must be high or low")
        if "escalation_level" in item:
            level = item["escalation_level"]
            if not isinstance(level, int) or not 1 <= level <= len(
                    self.policies[inc.ep_id].levels):
                raise bad(2001, "Invalid Input Provided", "escalation_level is out of range")
        if "title" in item and (not isinstance(item["title"], str) or not item["title"]):
            raise bad(2001, "Invalid Input Provided", "title must be a non-empty string")
        users, policy = self._assignees_of(item), self._policy_of(item)
        if (users or policy) and inc.status == "resolved" and status in (None, "resolved"):
            raise bad(2001, "Invalid Input Provided",
                      f"Incident {inc.id} is resolved and cannot be reassigned")

    def _assignees_of(self, item: dict[str, Any]) -> list[str] | None:
        """``assignments[{assignee}]`` as user ids (None when absent); ``assignments`` and
        ``escalation_policy`` exclude each other (notes §5.3, §5.5)."""
        refs = item.get("assignments")
        if refs is None:
            return None
        if item.get("escalation_policy") is not None:
            raise bad(2001, "Invalid Input Provided",
                      "assignments and escalation_policy cannot both be given")
        ids = [a["assignee"]["id"] for a in refs]
        if not ids or any(i not in self.users for i in ids):
            raise bad(2001, "Invalid Input Provided", "assignments must reference users")
        return list(dict.fromkeys(ids))

    def _policy_of(self, item: dict[str, Any]) -> str | None:
        ref = item.get("escalation_policy")
        if ref is None:
            return None
        if ref["id"] not in self.policies:
            raise bad(2001, "Invalid Input Provided",
                      "escalation_policy must reference an escalation policy")
        return str(ref["id"])

    def _reassign(self, inc: PDIncident, users: list[str] | None, policy: str | None,
                  agent: tuple[str, str], channel: dict[str, Any], *, keep_ack: bool) -> None:
        """Reassign an open incident to users or to another escalation policy (level 1). A
        reassigned acknowledged incident is triggered again for its new assignees (PagerDuty
        KB "Reassign an incident"; ours where the notes are silent), unless the same request
        acknowledges it."""
        now = self.clock.now()
        if inc.status == "acknowledged" and not keep_ack:
            self._set_status(inc, "triggered", agent, channel)
        if policy is not None:
            inc.ep_id, inc.escalation_level = policy, 1
            inc.assignees = [(now, u) for u in self._level_users(policy, 1, now)]
            inc.assigned_via = "escalation_policy"
            self._log(inc, "escalate_log_entry", agent, channel)
        elif users is not None:
            inc.assignees = [(now, u) for u in users]
            inc.assigned_via = "direct_assignment"
            self._log(inc, "assign_log_entry", agent, channel,
                      assignees=[self.users[u].ref() for u in users])

    def _apply_update(self, inc: PDIncident, item: dict[str, Any], user: User) -> None:
        agent, channel = ("user", user.id), {"type": "api"}
        now = self.clock.now()
        changed = False
        if "title" in item:
            inc.title, changed = item["title"], True
        if "priority" in item:
            before = inc.priority_id
            inc.priority_id = None if item["priority"] is None else \
                self._priority_for(item["priority"])
            if inc.priority_id != before:  # no log entry (notes §5.6), a webhook event
                self._emit(inc, "incident.priority_updated", agent)
            changed = True
        if "urgency" in item and item["urgency"] != inc.urgency:
            inc.urgency = item["urgency"]
            self._log(inc, "urgency_change_log_entry", agent, channel)
            changed = True
        status = item.get("status")
        if status is not None:
            if status == "resolved":
                self._set_status(inc, "resolved", agent, channel, note=item.get("resolution"))
            elif inc.status == "resolved":
                # Reopen: to acknowledged -> assigned to the current user (notes §5.3).
                self._set_status(inc, "triggered", agent, channel)
                if status == "acknowledged":
                    self._set_status(inc, "acknowledged", agent, channel)
            elif status == "acknowledged":
                self._set_status(inc, "acknowledged", agent, channel)
        users, policy = self._assignees_of(item), self._policy_of(item)
        if (users or policy) and inc.status != "resolved":
            self._reassign(inc, users, policy, agent, channel,
                           keep_ack=status == "acknowledged")
            changed = True
        if "escalation_level" in item and inc.status != "resolved":
            inc.escalation_level = item["escalation_level"]
            inc.assignees = [(now, u) for u in self._level_users(
                inc.ep_id, inc.escalation_level, now)]
            self._log(inc, "escalate_log_entry", agent, channel)
            changed = True
        if changed:
            inc.updated_at = now
            self._touch()

    async def _create(self, request: Request) -> Response:
        """POST /incidents (notes §5.5); the body's types are already checked."""
        user = self._from(request)
        item = (await self._json(request))["incident"]
        service = self.services.get(item["service"]["id"])
        if service is None:
            raise bad(2001, "Invalid Input Provided", "service must reference a service")
        users, policy = self._assignees_of(item), self._policy_of(item)
        key = item.get("incident_key")
        if key is not None and not key:
            raise bad(2001, "Invalid Input Provided", "incident_key must not be empty")
        if key and (service.id, key) in self.open_key:
            # DD 15-Incident-Creation-API: an open incident with this key on the service.
            raise bad(2001, "Invalid Input Provided", "Open incident with matching dedup key "
                      "already exists on this service")
        urgency = item.get("urgency") or "high"
        priority = self._priority_for(item["priority"]) if item.get("priority") else None
        details = (item.get("body") or {}).get("details")
        inc = self._new_incident(service, item["title"], key=key, urgency=urgency,
                                 agent=("user", user.id), channel={"type": "api"},
                                 priority_id=priority, details=details, ep_id=policy,
                                 assignees=users)
        if users:
            inc.assigned_via = "direct_assignment"
            if users == [user.id]:  # assigning yourself acknowledges, without notifying (DD)
                self._set_status(inc, "acknowledged", ("user", user.id), {"type": "api"})
        return JSONResponse({"incident": self.incident_json(inc)}, status_code=201)

    # log entries ------------------------------------------------------------

    def _log_query(self, request: Request, entries: list[LogEntry] | None) -> Response:
        since, until = self._time(request, "since"), self._time(request, "until")
        overview = _bool(request.query_params.get("is_overview"))
        include = self._list_param(request, "include",
                                   ("incidents", "services", "channels", "teams"))
        if entries is None:  # the account feed: bisect the time-sorted list
            lo = bisect.bisect_left(self.log_times, since.timestamp()) if since else 0
            hi = bisect.bisect_left(self.log_times, until.timestamp()) if until else \
                len(self.logs)
            chosen = self.logs[lo:hi]
        else:
            chosen = [e for e in entries if (since is None or e.at >= since)
                      and (until is None or e.at < until)]
        if overview:
            chosen = [e for e in chosen if e.type in OVERVIEW_TYPES]
        chosen = chosen[::-1]  # newest first, as PagerDuty lists them
        return self._page("log_entries", chosen, request,
                          lambda e: self.log_json(e, include_incident="incidents" in include))

    async def r_logs(self, request: Request) -> Response:
        return self._log_query(request, None)

    async def r_incident_logs(self, request: Request) -> Response:
        try:
            inc = self._find(request.path_params["id"])
        except KeyError:
            return pd_error(404, 2100, "Not Found")
        return self._log_query(request, [self.log_by_id[i] for i in inc.log_ids])

    # catalogue ----------------------------------------------------------------

    async def r_priorities(self, request: Request) -> Response:
        return self._page("priorities", [p[0] for p in self.priorities], request,
                          self._priority_json)

    async def r_users(self, request: Request) -> Response:
        query = (request.query_params.get("query") or "").lower()
        users = [u for u in self.users.values()
                 if not query or query in u.email.lower() or query in u.name.lower()]
        return self._page("users", users, request, lambda u: u.to_json())

    async def r_user(self, request: Request) -> Response:
        user = self.users.get(request.path_params["id"])
        if user is None:
            return pd_error(404, 2100, "Not Found")
        return JSONResponse({"user": user.to_json()})

    async def r_me(self, request: Request) -> Response:
        # Account-level keys cannot use /users/me; PagerDuty answers with a string error (§3).
        return JSONResponse({"error": "Because this request was made using an account-level "
                             "access token, we were unable to determine the user's identity. "
                             "Please use a user-level token."}, status_code=400)

    def _service_json(self, s: Service) -> dict[str, Any]:
        return {**s.ref(), "type": "service", "name": s.name, "description": s.name,
                "auto_resolve_timeout": s.auto_resolve, "acknowledgement_timeout": s.ack_timeout,
                "created_at": "2024-01-01T00:00:00Z", "status": "active",
                "escalation_policy": self.policies[s.ep_id].ref(),
                "teams": [{"id": s.team_id, "type": "team_reference",
                           "summary": self.teams[s.team_id]}],
                "integrations": [{"id": f"PINT{k[:3].upper()}", "type":
                                  "events_api_v2_inbound_integration_reference", "summary": n}
                                 for k, n in s.integrations.items()],
                "alert_creation": "create_alerts_and_incidents",
                "incident_urgency_rule": {"type": "constant", "urgency": "high"}}

    def _named(self, request: Request, items: list[Any]) -> list[Any]:
        """``query`` (name substring), ``name`` (exact), ``team_ids[]`` and ``sort_by`` name
        ordering, as GET /services and /escalation_policies apply them."""
        q = request.query_params
        text, exact = (q.get("query") or "").lower(), q.get("name")
        teams = set(self._list_param(request, "team_ids"))
        out = [x for x in items if text in x.name.lower() and exact in (None, x.name)
               and (not teams or x.team_id in teams)]
        if q.get("sort_by"):
            out.sort(key=lambda x: x.name.lower(), reverse=q["sort_by"] == "name:desc")
        return out

    async def r_services(self, request: Request) -> Response:
        return self._page("services", self._named(request, list(self.services.values())),
                          request, self._service_json)

    def _policy_json(self, ep: EscalationPolicy, include: Sequence[str] = ()
                     ) -> dict[str, Any]:
        """With ``include[]=escalation_rule_assignment_strategies`` each rule says its strategy,
        as the string the spec's ``EscalationRule`` schema declares."""
        rules = []
        for level, targets in enumerate(ep.levels, 1):
            refs = [self.users[t].ref() if kind == "user" else self.schedules[t].ref()
                    for kind, t in targets]
            rule: dict[str, Any] = {"id": f"{ep.id}R{level}",
                                    "escalation_delay_in_minutes": ep.delay(level),
                                    "targets": refs}
            if "escalation_rule_assignment_strategies" in include:
                rule["escalation_rule_assignment_strategy"] = (
                    "round_robin" if level in ep.round_robin else "assign_to_everyone")
            rules.append(rule)
        return {**ep.ref(), "type": "escalation_policy", "name": ep.name,
                "description": ep.description, "num_loops": ep.num_loops,
                "on_call_handoff_notifications": "if_has_services",
                "escalation_rules": rules,
                "services": [s.ref() for s in self.services.values() if s.ep_id == ep.id],
                "teams": self._team_refs(ep.team_id)}

    def _team_refs(self, team_id: str | None) -> list[dict[str, Any]]:
        if team_id is None:
            return []
        return [{"id": team_id, "type": "team_reference", "summary": self.teams[team_id],
                 "self": f"{API}/teams/{team_id}", "html_url": f"{WEB}/teams/{team_id}"}]

    def _team_of(self, teams: list[Any]) -> str | None:
        for ref in teams:
            if ref.id not in self.teams:
                raise bad(2001, "Invalid Input Provided", f"teams: no team {ref.id}")
        return teams[0].id if teams else None

    async def r_policies(self, request: Request) -> Response:
        if request.method == "POST":
            body = PolicyWrite.model_validate(await self._json(request)).escalation_policy
            ep = EscalationPolicy("", body.name, None, [])
            self._apply_policy(ep, body)
            ep.id = _pid("PE", next(self.object_seq))  # once the body is accepted
            self.policies[ep.id] = ep
            return JSONResponse({"escalation_policy": self._policy_json(ep)}, status_code=201)
        include = self._list_param(request, "include")
        return self._page("escalation_policies", self._named(
            request, list(self.policies.values())), request,
            lambda ep: self._policy_json(ep, include))

    async def r_policy(self, request: Request) -> Response:
        ep = self.policies.get(request.path_params["id"])
        if ep is None:
            return pd_error(404, 2100, "Not Found")
        if request.method == "PUT":
            body = PolicyWrite.model_validate(await self._json(request)).escalation_policy
            self._apply_policy(ep, body)
        return JSONResponse({"escalation_policy": self._policy_json(
            ep, self._list_param(request, "include"))})

    def _apply_policy(self, ep: EscalationPolicy, body: Any) -> None:
        """Check every target exists, then replace the policy's definition in place."""
        levels: list[list[tuple[str, str]]] = []
        problems = []
        for n, rule in enumerate(body.escalation_rules):
            targets = []
            for t in rule.targets:
                kind = "user" if t.type.startswith("user") else "schedule"
                known = self.users if kind == "user" else self.schedules
                if t.id not in known:
                    problems.append(f"escalation_rules[{n}]: no {kind} {t.id}")
                targets.append((kind, t.id))
            levels.append(targets)
        team = self._team_of(body.teams)
        if problems:
            raise bad(2001, "Invalid Input Provided", *problems)
        ep.name, ep.team_id, ep.levels, ep.num_loops = body.name, team, levels, body.num_loops
        ep.delays = [r.escalation_delay_in_minutes for r in body.escalation_rules]
        ep.round_robin = {n for n, r in enumerate(body.escalation_rules, 1)
                          if r.strategy == "round_robin"}
        # Ours: every write restarts each ring at its first target. Whether PagerDuty keeps
        # the ring's position across an edit is not documented (round-robin-scheduling).
        ep.turns = {}
        ep.description = body.description if body.description is not None else ep.description

    # schedules ------------------------------------------------------------------

    def _schedule_json(self, s: Schedule, *, zone_name: str | None = None,
                       window: tuple[datetime, datetime] | None = None, overflow: bool = False,
                       layers: bool = True, final: bool = True) -> dict[str, Any]:
        """A schedule as GET /schedules/{id} answers: layers highest first (migration.md
        §1.7), times and restrictions in the request's zone, entries when a range is given."""
        zone, own = ZoneInfo(zone_name or s.time_zone), ZoneInfo(s.time_zone)
        today = self.clock.now().astimezone(own).date()
        out: dict[str, Any] = {
            **(s.ref() if s.id else {}), "type": "schedule", "name": s.name,
            "time_zone": s.time_zone, "description": s.description,
            "users": [self.users[u].ref() for u in s.users],
            "escalation_policies": [ep.ref() for ep in self.policies.values()
                                    if any(t == ("schedule", s.id)
                                           for lvl in ep.levels for t in lvl)],
            "teams": self._team_refs(s.team_id)}

        def entries(spans: list[Any], name: str | None = None) -> dict[str, Any]:
            if window is None:
                return {"name": name} if name else {}
            shown = clip(spans, *window, overflow)
            body: dict[str, Any] = {"name": name} if name else {}
            body["rendered_schedule_entries"] = [
                {"start": stamp_in(e.start, zone), "end": stamp_in(e.end, zone),
                 "user": self.users[e.user].ref()} for e in shown]
            body["rendered_coverage_percentage"] = coverage(shown, *window)
            return body

        if layers:
            out["schedule_layers"] = [{
                "id": layer.id, "name": layer.name, "start": stamp_in(layer.start, zone),
                "end": stamp_in(layer.end, zone),
                "users": [{"user": self.users[u].ref()} for u in layer.users],
                "restrictions": [restriction_json(r, own, zone, today)
                                 for r in layer.restrictions],
                "rotation_virtual_start": stamp_in(layer.virtual_start, zone),
                "rotation_turn_length_seconds": layer.turn_seconds,
                **entries(s.spans(*window, layers=[layer.rotation(s.time_zone)], overrides=[])
                          if window else [])}
                for layer in reversed(s.layers)]
        if final:
            out["overrides_subschedule"] = entries(
                s.spans(*window, layers=[]) if window else [], "Overrides")
            out["final_schedule"] = entries(s.spans(*window) if window else [],
                                            "Final Schedule")
        return out

    def _window(self, request: Request) -> tuple[datetime, datetime] | None:
        q = request.query_params
        window = render_range(q.get("since"), q.get("until"))
        if window is not None and window[1] <= window[0]:
            raise bad(2001, "Invalid Input Provided", "until must be after since")
        return window

    def _definition(self, body: ScheduleBody, existing: list[ScheduleLayer]
                    ) -> list[ScheduleLayer]:
        try:
            return parse_layers(body, set(self.users),
                                lambda: _pid("PL", next(self.object_seq)), existing,
                                self.clock.now())
        except ValueError as exc:
            raise bad(2001, "Invalid Input Provided", *exc.args[0]) from None

    async def r_schedules(self, request: Request) -> Response:
        if request.method == "POST":
            body = ScheduleWrite.model_validate(await self._json(request)).schedule
            team = self._team_of(body.teams)
            layers = self._definition(body, [])
            sched = Schedule(_pid("PS", next(self.object_seq)), body.name or "New Schedule",
                             layers, team, time_zone=body.time_zone,
                             description=body.description or "")
            self.schedules[sched.id] = sched
            return JSONResponse({"schedule": self._schedule_json(sched)}, status_code=201)
        include = self._list_param(request, "include")
        window = self._window(request)
        zone = request.query_params.get("time_zone") or "Etc/UTC"  # the account's zone

        def render(s: Schedule) -> dict[str, Any]:
            # The list never carries final_schedule (PagerDuty/api-schema#430, migration.md
            # §3); layers only on request, in the request's (default: the account's) zone.
            return self._schedule_json(s, zone_name=zone, window=window,
                                       layers="schedule_layers" in include, final=False)
        return self._page("schedules", self._named(request, list(self.schedules.values())),
                          request, render)

    async def r_schedule(self, request: Request) -> Response:
        sched = self.schedules.get(request.path_params["id"])
        if sched is None:
            return pd_error(404, 2100, "Not Found")
        if request.method == "PUT":
            body = ScheduleWrite.model_validate(await self._json(request)).schedule
            team = self._team_of(body.teams) if body.teams else sched.team_id
            sched.layers = self._definition(body, sched.layers)
            sched.time_zone, sched.team_id = body.time_zone, team
            sched.name = body.name or sched.name
            if body.description is not None:
                sched.description = body.description
            return JSONResponse({"schedule": self._schedule_json(sched)})
        q = request.query_params
        return JSONResponse({"schedule": self._schedule_json(
            sched, zone_name=q.get("time_zone"), window=self._window(request),
            overflow=_bool(q.get("overflow")))})

    async def r_preview(self, request: Request) -> Response:
        """Render a posted definition without saving it (createSchedulePreview)."""
        body = ScheduleWrite.model_validate(await self._json(request)).schedule
        self._team_of(body.teams)
        sched = Schedule("", body.name or "Preview", self._definition(body, []), None,
                         time_zone=body.time_zone, description=body.description or "")
        now = self.clock.now()
        window = self._window(request) or (now, now + timedelta(weeks=2))
        return JSONResponse({"schedule": self._schedule_json(
            sched, window=window, overflow=_bool(request.query_params.get("overflow")))})

    def _seed_override(self, now: datetime) -> None:
        """Tomorrow 12:00-20:00 UTC, Frank covers the business-hours schedule."""
        start = (now + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
        n = next(self.override_seq)
        self.schedules[SCHED_BUSINESS].overrides.append(
            Override(_pid("QO", n), "PUSR006", start, start + timedelta(hours=8), n))

    # overrides and on-call -----------------------------------------------------

    async def r_overrides(self, request: Request) -> Response:
        sched = self.schedules.get(request.path_params["id"])
        if sched is None:
            return pd_error(404, 2100, "Not Found")
        if request.method == "GET":
            since, until = self._time(request, "since"), self._time(request, "until")
            if since is None or until is None:
                raise bad(2003, "Missing Arguments", "since and until are required")
            found = [o for o in sched.overrides if o.start < until and o.end > since]
            return JSONResponse({"overrides": [self._override_json(o) for o in found]})
        body = await self._json(request)
        items = body.get("overrides")
        if items is None and isinstance(body.get("override"), dict):
            items = [body["override"]]  # the deprecated single form
        if not isinstance(items, list) or not items:
            raise bad(2003, "Missing Arguments", "overrides must be a non-empty array")
        out = []
        for item in items:
            problems = []
            try:
                start = parse_time(str(item.get("start")))
                end = parse_time(str(item.get("end")))
            except (ValueError, AttributeError):
                start = end = None
                problems.append("start and end must be ISO 8601 date-times")
            user_id = (item.get("user") or {}).get("id") if isinstance(item, dict) else None
            if user_id not in self.users:
                problems.append("user must reference a user in the account")
            if start and end and end <= start:
                problems.append("Override must end after its start")
            if problems:
                out.append({"status": 400, "errors": problems, "override": item})
                continue
            assert start is not None and end is not None and user_id is not None
            n = next(self.override_seq)
            o = Override(_pid("QO", n), user_id, start, end, n)
            sched.overrides.append(o)
            out.append({"status": 201, "override": self._override_json(o)})
        return JSONResponse(out, status_code=201)

    def _override_json(self, o: Override) -> dict[str, Any]:
        return {"id": o.id, "start": iso(o.start), "end": iso(o.end),
                "user": self.users[o.user_id].ref()}

    async def r_oncalls(self, request: Request) -> Response:
        q = request.query_params
        now = self.clock.now()
        # Each bound "defaults to current time" (SPEC listOnCalls since/until).
        since = self._time(request, "since") or now
        until = self._time(request, "until") or now
        if until < since:
            raise bad(2004, "Invalid Input Provided", "until may not be before since")
        if until > now + timedelta(days=90):
            raise bad(2001, "Invalid Input Provided",
                      "until may be at most 90 days in the future")
        users = set(self._list_param(request, "user_ids"))
        policies = set(self._list_param(request, "escalation_policy_ids"))
        schedules = set(self._list_param(request, "schedule_ids"))
        include = self._list_param(request, "include", ("escalation_policies", "users",
                                                        "schedules"))
        earliest = _bool(q.get("earliest"))
        rows: list[tuple[EscalationPolicy, int, str, Schedule | None, Any, Any]] = []
        for ep in self.policies.values():
            if policies and ep.id not in policies:
                continue
            for level, targets in enumerate(ep.levels, 1):
                for kind, tid in targets:
                    if kind == "user":
                        if schedules and "null" not in schedules:
                            continue
                        rows.append((ep, level, tid, None, None, None))
                        continue
                    if schedules and tid not in schedules:
                        continue
                    sched = self.schedules[tid]
                    # Entries overlapping [since, until]; a point window still finds one.
                    for who, s, e in sched.entries(since, max(until, since + timedelta(
                            seconds=1))):
                        rows.append((ep, level, who, sched, s, e))
        if users:
            rows = [r for r in rows if r[2] in users]
        if earliest:
            seen: set[tuple[str, int, str]] = set()
            kept = []
            for r in rows:
                if (r[0].id, r[1], r[2]) not in seen:
                    seen.add((r[0].id, r[1], r[2]))
                    kept.append(r)
            rows = kept

        def render(r: tuple[EscalationPolicy, int, str, Schedule | None, Any, Any]
                   ) -> dict[str, Any]:
            ep, level, who, sched, s, e = r
            user = self.users[who].to_json() if "users" in include else self.users[who].ref()
            return {"escalation_policy": self._policy_json(ep) if "escalation_policies" in
                    include else ep.ref(),
                    "escalation_level": level, "user": user,
                    "schedule": sched.ref() if sched else None,
                    "start": iso(s), "end": iso(e)}
        return self._page("oncalls", rows, request, render)
