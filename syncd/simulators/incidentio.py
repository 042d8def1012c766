"""incident.io simulator: one seeded organisation behind the public API and an HTTP alert source.

Facts come from ../shared/vendor-notes/incidentio.md (section numbers below) and the official
OpenAPI spec (``../shared/vendor-specs/incidentio/openapi.json``, the one the PyPI ``incident-io``
client is generated from). Where both are silent we chose; each choice is marked "ours" here and
listed in docs/vendors/incidentio.md.

- Auth: ``Authorization: Bearer <key>``; missing/unknown key -> 401 with the documented body
  (notes 1). Each key has scopes (the spec's ``x-rbac-scopes``); a missing one -> 403
  ``resource_forbidden`` / ``missing_required_scope`` (notes 1, 10).
- Errors: ``{type, status, request_id, errors[{code, message, source?}]}`` (notes 2).
- Rate limit: token bucket of 1200 refilling 20/s per key, ``X-RateLimit-*`` headers, 429 with
  ``Retry-After`` seconds and the ``rate_limit`` body (notes 2); POST /v2/escalations 60/min;
  alert intake 120 events/min per source.
- Pagination: ``after`` = last id, ``pagination_meta`` without ``after`` on the last page;
  ``page_size`` above the endpoint's maximum -> 422 (ours: the real API's answer is undocumented).
- Incidents: status categories, the documented edit transitions only (same category,
  live/triage -> learning/closed, learning -> closed; anything else 422, notes 4.5), severity
  required to open a non-triage incident (the documented 422, notes 4.4), a repeated
  ``idempotency_key`` returns the incident created first (ours, notes 12).
- ``updated_at``/``created_at`` filters compare at **date** granularity (every documented
  example is a date, notes 4.1): a timestamp is truncated to its day (ours).
- Escalations hold acknowledgement (notes 6, 9): respond ack/snooze (a key cannot nack), cancel,
  snoozes that wake up on the sim clock, escalations resolving when their incident resolves.
- Alerts: HTTP source with its own token, dedup by ``deduplication_key`` among firing alerts,
  a firing alert creates a triage incident and an escalation through the path; a resolved event
  resolves the alert, cancels unacked escalations and declines a still-triage incident
  (route options ``auto_cancel_escalations`` and ``auto_decline_enabled``, notes 7).
- On-call: schedules with rotations on the sim clock, schedule entries (scheduled, overrides,
  final) and overrides that never overlap on one layer (notes 5).
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.simulators.base import Simulator, parse_time
from syncd.simulators.oncall import Layer, final
from syncd.simulators.validation import Body, DateTime, Operation, Problem, Query, Text

DEFAULT_API_KEY = "inc_sim_5f1c0a7d2b9e4c8a6d3f0e1b7a2c9d4e8f6a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e"
VIEWER_API_KEY = "inc_sim_viewer_00000000000000000000000000000000000000000000000000000001"
ALERT_SOURCE_ID = "01HSIMALERTSRC0000000000001"
ALERT_SOURCE_TOKEN = "sim-alert-source-token-0001"
ORG_SLUG = "sim-org"
SLACK_TEAM_ID = "T02SIM0000"

ALL_SCOPES = frozenset({
    "incidents.view", "incidents.create", "incidents.update_status", "incidents.update_severity",
    "incidents.update_name", "incidents.update_summary", "severities.view",
    "incident_statuses.view", "incident_types.view", "users.view", "schedules.view",
    "schedule_overrides.create", "schedule_overrides.update", "schedule_overrides.destroy",
    "escalations.view", "escalations.create", "escalations.respond", "escalations.cancel",
    "escalation_paths.view", "alerts.view", "alerts.resolve", "attachments.view",
    "attachments.create", "post_incident_flow_opt_out",
})
VIEW_SCOPES = frozenset(s for s in ALL_SCOPES if s.endswith(".view"))

OPEN_CATEGORIES = ("triage", "live", "paused")
RESOLVED_CATEGORIES = ("learning", "closed", "declined", "canceled", "merged")
SLIM_CATEGORY = {"live": "active", "learning": "post-incident"}  # IncidentSlimV2 vocabulary
FILTER_ALIASES = {"active": "live", "post-incident": "learning"}
ESC_OPEN = ("pending", "triggered", "snoozed", "delayed", "pending_repeat")
ESC_TERMINAL = ("resolved", "expired", "cancelled")
DEFAULT_MODES = ("standard", "retrospective")

PAGE_MAX = {
    "incidents": 250, "incident_updates": 250, "schedule_overrides": 250, "escalations": 50,
    "alerts": 50, "incident_alerts": 50, "escalation_paths": 25, "users": 10000,
    "schedules": 10000,
}
API_LIMIT, API_REFILL = 1200.0, 20.0  # token bucket per key (notes 2)
ESCALATION_CREATE_PER_MIN = 60.0
ALERT_EVENTS_PER_MIN = 120.0
ENTRY_PAGE_SPAN = timedelta(days=7)  # ours: schedule entries are paged a week at a time
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# What each operation accepts (openapi.json request schemas, notes 4..6, 11). Documented fields the
# simulator does not model (custom fields, role assignments, timestamps, Slack overrides,
# retrospective options, call_url) are refused as "not simulated: FIELD".
RESOURCE_TYPES = Literal[
    "pager_duty_incident", "opsgenie_alert", "datadog_monitor_alert", "github_pull_request",
    "gitlab_merge_request", "sentry_issue", "jira_issue", "jsm_alert",
    "atlassian_statuspage_incident", "zendesk_ticket", "google_calendar_event",
    "outlook_calendar_event", "slack_file", "salesforce_case", "pylon_issue", "arbitrary_url",
    "scrubbed", "statuspage_incident"]


class CreateIncidentBody(Body):
    idempotency_key: Text
    visibility: Literal["public", "private"]
    name: str | None = None
    summary: str | None = None
    severity_id: str | None = None
    incident_status_id: str | None = None
    incident_type_id: str | None = None
    mode: Literal["standard", "retrospective", "test", "tutorial"] | None = None


class IncidentEdit(Body):
    name: str | None = None
    summary: str | None = None
    severity_id: str | None = None
    incident_status_id: str | None = None


class EditIncidentBody(Body):
    incident: IncidentEdit
    notify_incident_channel: bool


class AttachmentResource(Body):
    resource_type: RESOURCE_TYPES
    external_id: str | None = None
    url: str | None = None
    title: str | None = None
    emoji: str | None = None


class CreateAttachmentBody(Body):
    incident_id: Text
    resource: AttachmentResource


class CreateEscalationBody(Body):
    idempotency_key: Text
    title: Text
    description: str | None = None
    escalation_path_id: str | None = None
    user_ids: list[str] | None = None
    incident_id: str | None = None


class SnoozeDetails(Body):
    snooze_until: DateTime
    reason: str | None = None


class RespondBody(Body):
    response: Literal["ack", "nack", "snooze"]
    snooze_details: SnoozeDetails | None = None


class UserRef(Body):
    id: str | None = None
    email: str | None = None
    slack_user_id: str | None = None


class UpdateOverrideBody(Body):
    rotation_id: Text
    layer_id: Text
    start_at: DateTime
    end_at: DateTime
    user: UserRef


class CreateOverrideBody(UpdateOverrideBody):
    schedule_id: Text


class Paged(Query):
    page_size: int | None = None
    after: str | None = None


class IncidentsQuery(Paged):
    sort_by: Literal["created_at_newest_first", "created_at_oldest_first"] | None = None
    filter_mode: Literal["all", "any"] | None = None


class UsersQuery(Paged):
    email: str | None = None
    slack_user_id: str | None = None
    include_inactive: bool | None = None


class AttachmentsQuery(Query):
    incident_id: str | None = None
    external_id: str | None = None
    resource_type: RESOURCE_TYPES | None = None


class UpdatesQuery(Paged):
    incident_id: str | None = None


class IncidentAlertsQuery(Paged):
    alert_id: str | None = None
    incident_id: str | None = None


class EntriesQuery(Query):
    schedule_id: str | None = None
    entry_window_start: DateTime | None = None
    entry_window_end: DateTime | None = None


class OverridesQuery(Paged):
    schedule_id: str | None = None
    rotation_id: str | None = None
    layer_id: str | None = None


OPERATIONS: dict[str, Operation] = {
    "GET /v2/incidents": Operation(query=IncidentsQuery),
    "POST /v2/incidents": Operation(body=CreateIncidentBody),
    "POST /v2/incidents/{id}/actions/edit": Operation(body=EditIncidentBody),
    "GET /v2/incident_updates": Operation(query=UpdatesQuery),
    "GET /v1/incident_attachments": Operation(query=AttachmentsQuery),
    "POST /v1/incident_attachments": Operation(body=CreateAttachmentBody),
    "GET /v2/escalations": Operation(query=Paged),
    "POST /v2/escalations": Operation(body=CreateEscalationBody),
    "POST /v2/escalations/{escalation_id}/actions/respond": Operation(body=RespondBody),
    "GET /v2/escalation_paths": Operation(query=Paged),
    "GET /v2/alerts": Operation(query=Paged),
    "GET /v2/incident_alerts": Operation(query=IncidentAlertsQuery),
    "GET /v2/users": Operation(query=UsersQuery),
    "GET /v2/schedules": Operation(query=Paged),
    "GET /v2/schedule_entries": Operation(query=EntriesQuery),
    "GET /v2/schedule_overrides": Operation(query=OverridesQuery),
    "POST /v2/schedule_overrides": Operation(body=CreateOverrideBody),
    "PUT /v2/schedule_overrides/{id}": Operation(body=UpdateOverrideBody),
}


def ulid(kind: str, n: int) -> str:
    """A 26-character ULID-shaped id, deterministic: "01H" + kind letter(s) + counter."""
    digits = ""
    while True:
        n, r = divmod(n, 32)
        digits = CROCKFORD[r] + digits
        if n == 0:
            break
    head = "01H" + kind
    return head + digits.rjust(26 - len(head), "0")


def ts(dt: datetime | None) -> str | None:
    """RFC 3339 with microseconds and Z, as the spec examples render times."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    """Raised inside a handler; turned into the documented error envelope."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "resource_forbidden",
             404: "not_found", 409: "conflict", 413: "payload_too_large",
             422: "validation_error", 429: "too_many_requests", 500: "api_error"}

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass
class ApiKey:
    token: str
    id: str
    name: str
    scopes: frozenset[str]


@dataclass
class User:
    id: str
    name: str
    email: str
    slack_user_id: str
    role: str = "responder"

    def slim(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "role": self.role,
                "slack_user_id": self.slack_user_id}

    def full(self) -> dict[str, Any]:
        base = "owner" if self.role == "owner" else "responder"
        return {**self.slim(), "is_active": True, "custom_roles": [],
                "base_role": {"id": ulid("R", 1 if base == "owner" else 2), "name": base.title(),
                              "slug": base},
                "seats": {"on_call": "full_access", "response": "full_access"}}


@dataclass
class Status:
    id: str
    name: str
    category: str
    rank: int
    description: str = ""


@dataclass
class SeverityDef:
    id: str
    name: str
    rank: int
    description: str


@dataclass
class IIncident:
    id: str
    seq: int
    number: int
    name: str
    status_id: str
    severity_id: str | None
    visibility: str
    mode: str
    creator: dict[str, Any]
    created: datetime
    updated: datetime
    summary: str | None = None
    idempotency_key: str | None = None
    alert_ids: list[str] = field(default_factory=list)
    escalation_ids: list[str] = field(default_factory=list)


@dataclass
class Escalation:
    id: str
    seq: int
    title: str
    description: str
    status: str
    path_id: str | None
    priority: str
    creator: dict[str, Any]
    created: datetime
    updated: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    incident_ids: list[str] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    snooze_until: datetime | None = None


@dataclass
class Alert:
    id: str
    seq: int
    source_id: str
    dedup: str
    status: str
    title: str
    created: datetime
    updated: datetime
    description: str | None = None
    source_url: str | None = None
    resolved_at: datetime | None = None
    incident_id: str | None = None
    incident_alert_id: str | None = None


@dataclass
class Override:
    id: str
    schedule_id: str
    rotation_id: str
    layer_id: str
    user_id: str
    start: datetime
    end: datetime
    created: datetime
    updated: datetime


@dataclass
class Schedule:
    id: str
    name: str
    rotation_id: str
    layer_id: str
    users: list[str]
    interval_type: str  # hourly | daily | weekly
    interval: int
    created: datetime

    @property
    def layer(self) -> Layer:
        """The rotation as a shared on-call layer (handovers from the common epoch)."""
        unit = {"hourly": timedelta(hours=1), "daily": timedelta(days=1),
                "weekly": timedelta(weeks=1)}[self.interval_type]
        return Layer(tuple(self.users), unit * self.interval)


class IncidentIOSimulator(Simulator):
    """An incident.io organisation: incidents, escalations, alerts, schedules, one alert source."""

    vendor = "incidentio"
    operations = OPERATIONS

    def __init__(self, *, seed: int = 0, rate_limits: bool = True, severity_required: bool = True,
                 auto_decline: bool = True, auto_cancel_escalations: bool = True) -> None:
        self.severity_required = severity_required
        self.auto_decline = auto_decline
        self.auto_cancel_escalations = auto_cancel_escalations
        super().__init__(seed=seed, rate_limits=rate_limits)

    # ------------------------------------------------------------------ seeding

    def reset(self) -> None:
        now = self.clock.now()
        self.created_at = now - timedelta(days=400)
        self._ids = itertools.count(1)
        self.keys = {
            DEFAULT_API_KEY: ApiKey(DEFAULT_API_KEY, ulid("K", 1), "syncd", ALL_SCOPES),
            VIEWER_API_KEY: ApiKey(VIEWER_API_KEY, ulid("K", 2), "dashboards (read-only)",
                                   VIEW_SCOPES),
        }
        people = [("Alice Admin", "alice@example.com", "owner"),
                  ("Bob Builder", "bob@example.com", "responder"),
                  ("Carol Chen", "carol@example.com", "responder"),
                  ("Dave Diaz", "dave@example.com", "responder"),
                  ("Erin Evans", "erin@example.com", "responder"),
                  ("syncd-bot", "syncd-bot@example.com", "responder")]
        self.users: dict[str, User] = {}
        for n, (name, email, role) in enumerate(people, 1):
            u = User(ulid("U", n), name, email, f"U0SIM{n:04d}", role)
            self.users[u.id] = u
        uid = list(self.users)
        self.severities = [
            SeverityDef(ulid("S", 1), "Minor", 0, "Issues with **low impact**."),
            SeverityDef(ulid("S", 2), "Major", 1, "Issues causing **significant impact**."),
            SeverityDef(ulid("S", 3), "Critical", 2, "Issues causing **very high impact**."),
        ]
        # The real defaults (notes 4.6): name, category, rank.
        defaults = [("Triage", "triage", 0), ("Investigating", "live", 1), ("Fixing", "live", 2),
                    ("Monitoring", "live", 3), ("Documenting", "learning", 4),
                    ("Reviewing", "learning", 5), ("Closed", "closed", 6), ("Paused", "paused", 7),
                    ("Declined", "declined", -1), ("Merged", "merged", -2),
                    ("Canceled", "canceled", -3)]
        self.statuses = {
            ulid("T", n): Status(ulid("T", n), name, cat, rank, f"{name} (default status)")
            for n, (name, cat, rank) in enumerate(defaults, 1)
        }
        self.schedules = {
            s.id: s for s in (
                Schedule(ulid("C", 1), "Primary on-call", ulid("O", 1), ulid("L", 1),
                         uid[1:4], "daily", 1, self.created_at),
                Schedule(ulid("C", 2), "Secondary on-call", ulid("O", 2), ulid("L", 2),
                         uid[3:5], "weekly", 1, self.created_at),
            )
        }
        self.path_id = ulid("P", 1)
        self.overrides: dict[str, Override] = {}
        self.incidents: dict[str, IIncident] = {}
        self.by_number: dict[int, str] = {}
        self.order: list[str] = []  # incident ids by seq (creation order)
        self.by_category: dict[str, set[str]] = {}
        self.idempotency: dict[str, str] = {}
        self.escalations: dict[str, Escalation] = {}
        self.esc_order: list[str] = []
        self.snoozed: set[str] = set()
        self.alerts: dict[str, Alert] = {}
        self.alert_order: list[str] = []
        self.firing: dict[tuple[str, str], str] = {}  # (source, dedup) -> firing alert id
        self.updates: list[dict[str, Any]] = []
        self.updates_by_incident: dict[str, list[dict[str, Any]]] = {}
        self.attachments: list[dict[str, Any]] = []
        self.next_number = 1

    def _next(self, kind: str) -> str:
        return ulid(kind, 10_000 + next(self._ids))

    @classmethod
    def account_table(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """Config keys for one of this simulator's describe() lines (docs/vendors/incidentio.md)."""
        return {"vendor": cls.vendor, "base_url": desc["base_url"],
                "api_key": desc["credentials"]["api_key"]}

    def describe(self, base_url: str) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "base_url": base_url,
            "credentials": {"api_key": DEFAULT_API_KEY, "viewer_api_key": VIEWER_API_KEY},
            "users": [u.email for u in self.users.values()],
            "intake": {
                "alert_source_config_id": ALERT_SOURCE_ID,
                "alert_source_token": ALERT_SOURCE_TOKEN,
                "alert_events_url": f"{base_url}/v2/alert_events/http/{ALERT_SOURCE_ID}",
            },
        }

    # ------------------------------------------------------------------ model helpers

    def status(self, inc: IIncident) -> Status:
        return self.statuses[inc.status_id]

    def first_status(self, category: str) -> Status:
        return min((s for s in self.statuses.values() if s.category == category),
                   key=lambda s: s.rank)

    def severity_by_id(self, sid: str | None) -> SeverityDef | None:
        return next((s for s in self.severities if s.id == sid), None)

    def severity_for(self, canonical: str | None) -> SeverityDef | None:
        """sev1 -> highest rank (Critical), sev2 -> next, the rest -> the least severe."""
        if not canonical:
            return None
        ranked = sorted(self.severities, key=lambda s: -s.rank)
        level = int(canonical.lower().removeprefix("sev"))
        return ranked[min(level, len(ranked)) - 1]

    def _index(self, inc: IIncident, old_category: str | None) -> None:
        if old_category is not None:
            self.by_category.get(old_category, set()).discard(inc.id)
        self.by_category.setdefault(self.status(inc).category, set()).add(inc.id)

    def _new_incident(self, *, name: str, status_id: str, severity_id: str | None,
                      creator: dict[str, Any], visibility: str = "public", mode: str = "standard",
                      summary: str | None = None, idempotency_key: str | None = None,
                      when: datetime | None = None) -> IIncident:
        now = when or self.clock.now()
        seq = self.next_number
        self.next_number += 1
        inc = IIncident(self._next("I"), seq, seq, name, status_id, severity_id, visibility, mode,
                        creator, now, now, summary=summary, idempotency_key=idempotency_key)
        self.incidents[inc.id] = inc
        self.by_number[inc.number] = inc.id
        self.order.append(inc.id)
        self._index(inc, None)
        if idempotency_key:
            self.idempotency[idempotency_key] = inc.id
        self._record_update(inc, creator, when=now)
        return inc

    def _record_update(self, inc: IIncident, actor: dict[str, Any], *, message: str | None = None,
                       when: datetime | None = None) -> None:
        row: dict[str, Any] = {"id": self._next("D"), "incident_id": inc.id,
                               "new_incident_status": self.status_json(self.status(inc)),
                               "updater": actor, "created_at": ts(when or self.clock.now())}
        sev = self.severity_by_id(inc.severity_id)
        if sev is not None:
            row["new_severity"] = self.severity_json(sev)
        if message:
            row["message"] = message
        self.updates.append(row)
        self.updates_by_incident.setdefault(inc.id, []).append(row)

    def _set_status(self, inc: IIncident, status_id: str, actor: dict[str, Any]) -> None:
        old = self.status(inc).category
        inc.status_id = status_id
        inc.updated = self.clock.now()
        self._index(inc, old)
        if self.status(inc).category in RESOLVED_CATEGORIES:
            # Escalations resolve when their incident resolves (notes 6).
            for eid in inc.escalation_ids:
                esc = self.escalations[eid]
                if esc.status not in ESC_TERMINAL:
                    self._esc_event(esc, "resolved", "resolved")

    def _esc_event(self, esc: Escalation, event: str, status: str | None,
                   users: list[User] | None = None, urgency: str | None = None) -> None:
        now = self.clock.now()
        row: dict[str, Any] = {"id": self._next("E"), "event": event, "occurred_at": ts(now)}
        if users is not None:
            row["users"] = [u.slim() for u in users]
        if urgency:
            row["urgency"] = urgency
        esc.events.append(row)
        if status:
            esc.status = status
        esc.updated = now

    def canonical_state(self, inc: IIncident) -> str:
        if self.status(inc).category in RESOLVED_CATEGORIES:
            return "resolved"
        for eid in inc.escalation_ids:
            esc = self.escalations[eid]
            if esc.status == "acked" or any(e["event"] == "acked" for e in esc.events):
                return "acknowledged"
        return "triggered"

    def dedup_of(self, inc: IIncident) -> str | None:
        return self.alerts[inc.alert_ids[0]].dedup if inc.alert_ids else None

    def canonical_incidents(self) -> list[dict[str, Any]]:
        out = []
        for iid in self.order:
            inc = self.incidents[iid]
            sev = self.severity_by_id(inc.severity_id)
            canon = None
            if sev is not None:
                ranked = sorted(self.severities, key=lambda s: -s.rank)
                canon = f"sev{ranked.index(sev) + 1}"
            out.append({"id": inc.id, "state": self.canonical_state(inc), "severity": canon,
                        "dedup": self.dedup_of(inc), "title": inc.name,
                        "updated_at": ts(inc.updated), "reference": f"INC-{inc.number}"})
        return out

    # ------------------------------------------------------------------ JSON shapes

    def status_json(self, s: Status) -> dict[str, Any]:
        return {"id": s.id, "name": s.name, "description": s.description, "rank": s.rank,
                "category": s.category, "created_at": ts(self.created_at),
                "updated_at": ts(self.created_at)}

    def severity_json(self, s: SeverityDef) -> dict[str, Any]:
        return {"id": s.id, "name": s.name, "description": s.description, "rank": s.rank,
                "created_at": ts(self.created_at), "updated_at": ts(self.created_at)}

    def incident_json(self, inc: IIncident) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": inc.id, "reference": f"INC-{inc.number}", "name": inc.name,
            "incident_status": self.status_json(self.status(inc)),
            "visibility": inc.visibility, "mode": inc.mode, "creator": inc.creator,
            "incident_role_assignments": [], "custom_field_entries": [],
            "slack_team_id": SLACK_TEAM_ID, "slack_channel_id": f"C0SIM{inc.number:06d}",
            "slack_channel_name": f"inc-{inc.number}",
            "created_at": ts(inc.created), "updated_at": ts(inc.updated),
            "last_activity_at": ts(inc.updated), "team_ids": [],
            "permalink": f"https://app.incident.io/{ORG_SLUG}/incidents/{inc.number}",
            "incident_type": self.incident_type_json(),
        }
        sev = self.severity_by_id(inc.severity_id)
        if sev is not None:
            out["severity"] = self.severity_json(sev)
        if inc.summary:
            out["summary"] = inc.summary
        return out

    def incident_slim(self, inc: IIncident) -> dict[str, Any]:
        cat = self.status(inc).category
        return {"id": inc.id, "external_id": inc.number, "name": inc.name,
                "reference": f"INC-{inc.number}", "visibility": inc.visibility,
                "status_category": SLIM_CATEGORY.get(cat, cat)}

    def incident_type_json(self) -> dict[str, Any]:
        return {"id": ulid("Y", 1), "name": "Default", "description": "The default type",
                "is_default": True, "private_incidents_only": False,
                "create_in_triage": "optional", "created_at": ts(self.created_at),
                "updated_at": ts(self.created_at)}

    def alert_slim(self, a: Alert) -> dict[str, Any]:
        out: dict[str, Any] = {"id": a.id, "title": a.title, "deduplication_key": a.dedup,
                               "alert_source_id": a.source_id, "status": a.status,
                               "created_at": ts(a.created), "updated_at": ts(a.updated)}
        if a.description:
            out["description"] = a.description
        if a.source_url:
            out["source_url"] = a.source_url
        if a.resolved_at:
            out["resolved_at"] = ts(a.resolved_at)
        return out

    def alert_json(self, a: Alert) -> dict[str, Any]:
        return {**self.alert_slim(a), "attributes": []}

    def escalation_json(self, e: Escalation) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": e.id, "title": e.title, "description": e.description, "status": e.status,
            "priority": {"name": e.priority}, "creator": e.creator, "events": list(e.events),
            "related_incidents": [self.incident_slim(self.incidents[i]) for i in e.incident_ids],
            "related_alerts": [self.alert_slim(self.alerts[a]) for a in e.alert_ids],
            "created_at": ts(e.created), "updated_at": ts(e.updated),
        }
        if e.path_id:
            out["escalation_path_id"] = e.path_id
        return out

    def override_json(self, o: Override) -> dict[str, Any]:
        return {"id": o.id, "schedule_id": o.schedule_id, "rotation_id": o.rotation_id,
                "layer_id": o.layer_id, "start_at": ts(o.start), "end_at": ts(o.end),
                "user": self.users[o.user_id].slim(), "created_at": ts(o.created),
                "updated_at": ts(o.updated)}

    def schedule_json(self, s: Schedule) -> dict[str, Any]:
        now = self.clock.now()
        current = self.final_entries(s, now, now + timedelta(seconds=1))
        return {
            "id": s.id, "name": s.name, "timezone": "UTC", "team_ids": [], "annotations": {},
            "permalink": f"https://app.incident.io/{ORG_SLUG}/on-call/schedules/{s.id}",
            "created_at": ts(s.created), "updated_at": ts(s.created),
            "config": {"rotations": [{
                "id": s.rotation_id, "name": "Rotation", "effective_from": ts(s.layer.start),
                "handover_start_at": ts(s.layer.start),
                "handovers": [{"interval_type": s.interval_type, "interval": s.interval}],
                "layers": [{"id": s.layer_id, "name": "Layer 1"}],
                "users": [self.users[u].slim() for u in s.users],
                "working_intervals": [],
            }]},
            "current_shifts": current,
        }

    def path_json(self) -> dict[str, Any]:
        primary = next(iter(self.schedules.values()))
        now = self.clock.now()
        on_call = self.on_call_users(primary, now)
        return {
            "id": self.path_id, "name": "Primary escalation", "kind": "standalone",
            "team_ids": [],
            "path": [{"id": "01HSIMNODE0000000000000001", "type": "level", "level": {
                "targets": [{"type": "schedule", "id": primary.id, "urgency": "high",
                             "schedule_mode": "currently_on_call"}],
                "time_to_ack_seconds": 300, "ack_mode": "all"}}],
            "current_responders": [self.users[u].slim() for u in on_call],
        }

    # ------------------------------------------------------------------ on-call

    def scheduled_entries(self, s: Schedule, start: datetime, end: datetime
                          ) -> list[tuple[str, datetime, datetime]]:
        return [(user, max(a, start), min(b, end)) for user, a, b in s.layer.turns(start, end)]

    def final_segments(self, s: Schedule, start: datetime, end: datetime
                       ) -> list[tuple[str, datetime, datetime, str | None]]:
        """(user, start, end, override id or None) with overrides on the layer applied (they
        never overlap on one layer, notes 5)."""
        spans = final([s.layer], (o for o in self.overrides.values() if o.schedule_id == s.id),
                      start, end, user_of=lambda o: o.user_id, rank=lambda o: o.created)
        return [(sp.user, sp.start, sp.end, sp.override.id if sp.override else None)
                for sp in spans if sp.user is not None]

    def _entry(self, s: Schedule, user: str, a: datetime, b: datetime, oid: str | None
               ) -> dict[str, Any]:
        out: dict[str, Any] = {"start_at": ts(a), "end_at": ts(b),
                               "user": self.users[user].slim(), "rotation_id": s.rotation_id,
                               "fingerprint": f"{s.rotation_id}-{user}-{int(a.timestamp())}"}
        if oid:
            out["entry_id"] = oid
        return out

    def final_entries(self, s: Schedule, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return [self._entry(s, u, a, b, o) for u, a, b, o in self.final_segments(s, start, end)]

    def on_call_users(self, s: Schedule, at: datetime) -> list[str]:
        return [u for u, _a, _b, _o in self.final_segments(s, at, at + timedelta(seconds=1))]

    # ------------------------------------------------------------------ escalations & alerts

    def _escalate(self, *, title: str, description: str, incident: IIncident | None,
                  alert: Alert | None, creator: dict[str, Any], idempotency_key: str | None = None,
                  user_ids: list[str] | None = None, path_id: str | None = None) -> Escalation:
        now = self.clock.now()
        esc = Escalation(self._next("X"), len(self.esc_order), title, description, "triggered",
                         path_id if user_ids is None else None, "P1" if user_ids else "P3",
                         creator, now, now, idempotency_key=idempotency_key)
        self.escalations[esc.id] = esc
        self.esc_order.append(esc.id)
        if incident is not None:
            esc.incident_ids.append(incident.id)
            incident.escalation_ids.append(esc.id)
        if alert is not None:
            esc.alert_ids.append(alert.id)
        self._esc_event(esc, "triggered", None)
        targets = user_ids or self.on_call_users(next(iter(self.schedules.values())), now)
        self._esc_event(esc, "notified_users", None, users=[self.users[u] for u in targets],
                        urgency="high")
        return esc

    def _ack(self, esc: Escalation, user: User | None) -> bool:
        """Returns False when the escalation cannot be acked any more."""
        if esc.status == "acked":
            return True
        if esc.status not in ESC_OPEN:
            return False
        esc.snooze_until = None
        self._esc_event(esc, "acked", "acked", users=[user] if user else [])
        for iid in esc.incident_ids:
            self.incidents[iid].updated = esc.updated  # our choice: an ack bumps the incident
        return True

    def intake(self, body: dict[str, Any], source_id: str = ALERT_SOURCE_ID) -> dict[str, Any]:
        """The HTTP alert source's behaviour (dedup, route: incident + escalation)."""
        title, status, dedup = body.get("title"), body.get("status"), body.get("deduplication_key")
        if not isinstance(title, str) or not title:
            raise ApiError(422, "is_required", "title is required", field="title")
        if status not in ("firing", "resolved"):
            raise ApiError(422, "invalid_value", "status must be firing or resolved",
                           field="status")
        if not isinstance(dedup, str) or not dedup:
            raise ApiError(422, "is_required", "deduplication_key is required for this source",
                           field="deduplication_key")
        now = self.clock.now()
        existing = self.firing.get((source_id, dedup))
        if status == "firing":
            if existing:
                alert = self.alerts[existing]
                alert.title, alert.updated = title, now
            else:
                self._fire(source_id, dedup, title, body)
        elif existing:
            self._resolve_alert(self.alerts[existing])
        return {"status": "success", "message": "Event accepted for processing",
                "deduplication_key": dedup}

    def _fire(self, source_id: str, dedup: str, title: str, body: dict[str, Any]) -> Alert:
        now = self.clock.now()
        alert = Alert(self._next("A"), len(self.alert_order), source_id, dedup, "firing", title,
                      now, now, description=body.get("description"),
                      source_url=body.get("source_url"))
        self.alerts[alert.id] = alert
        self.alert_order.append(alert.id)
        self.firing[(source_id, dedup)] = alert.id
        actor = {"alert": {"id": alert.id, "title": title}}
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        sev = None
        raw_sev = meta.get("severity") if meta else None
        if isinstance(raw_sev, str):
            sev = next((s for s in self.severities if s.name.lower() == raw_sev.lower()), None)
            if sev is None and raw_sev.lower().startswith("sev"):
                sev = self.severity_for(raw_sev)
        # Auto-created incidents start in triage (notes 7).
        inc = self._new_incident(name=title, status_id=self.first_status("triage").id,
                                 severity_id=sev.id if sev else None, creator=actor)
        inc.alert_ids.append(alert.id)
        alert.incident_id = inc.id
        alert.incident_alert_id = self._next("B")
        self._escalate(title=title, description=body.get("description") or "", incident=inc,
                       alert=alert, creator=actor, path_id=self.path_id)
        return alert

    def _resolve_alert(self, alert: Alert) -> None:
        now = self.clock.now()
        alert.status, alert.updated, alert.resolved_at = "resolved", now, now
        self.firing.pop((alert.source_id, alert.dedup), None)
        related = [e for e in self.escalations.values() if alert.id in e.alert_ids]
        if self.auto_cancel_escalations:
            for esc in related:
                if esc.status in ESC_OPEN:
                    self._esc_event(esc, "cancelled", "cancelled")
                elif esc.status == "acked":
                    self._esc_event(esc, "resolved", "resolved")
        if alert.incident_id and self.auto_decline:
            inc = self.incidents[alert.incident_id]
            others = [a for a in inc.alert_ids if self.alerts[a].status == "firing"]
            if self.status(inc).category == "triage" and not others:
                self._set_status(inc, self.first_status("declined").id,
                                 {"alert": {"id": alert.id, "title": alert.title}})
                self._record_update(inc, {"alert": {"id": alert.id, "title": alert.title}},
                                    message="Declined: all alerts resolved")

    def tick(self) -> None:
        """Snoozed escalations trigger again when their snooze ends."""
        if not self.snoozed:
            return
        now = self.clock.now()
        for eid in list(self.snoozed):
            esc = self.escalations[eid]
            if esc.status != "snoozed":
                self.snoozed.discard(eid)
            elif esc.snooze_until and esc.snooze_until <= now:
                self.snoozed.discard(eid)
                esc.snooze_until = None
                self._esc_event(esc, "triggered", "triggered")

    # ------------------------------------------------------------------ control hooks

    def seed_incidents(self, count: int, *, state: str = "triggered") -> list[str]:
        if state not in ("triggered", "acknowledged", "resolved"):
            raise ValueError(f"unknown state {state!r}")
        live = self.first_status("live").id
        closed = self.first_status("closed").id
        minor = self.severities[0].id
        actor = {"api_key": {"id": self.keys[DEFAULT_API_KEY].id, "name": "seed"}}
        now = self.clock.now()
        ids = []
        for n in range(count):
            seq = self.next_number
            self.next_number += 1
            when = now - timedelta(seconds=count - n)
            inc = IIncident(self._next("I"), seq, seq, f"Seeded incident {seq}",
                            closed if state == "resolved" else live, minor, "public", "standard",
                            actor, when, when)
            self.incidents[inc.id] = inc
            self.by_number[seq] = inc.id
            self.order.append(inc.id)
            self.by_category.setdefault(self.status(inc).category, set()).add(inc.id)
            if state == "acknowledged":
                esc = Escalation(self._next("X"), len(self.esc_order), inc.name, "", "acked",
                                 self.path_id, "P3", actor, when, when,
                                 events=[{"id": self._next("E"), "event": "acked",
                                          "occurred_at": ts(when), "users": []}],
                                 incident_ids=[inc.id])
                self.escalations[esc.id] = esc
                self.esc_order.append(esc.id)
                inc.escalation_ids.append(esc.id)
            ids.append(inc.id)
        return ids

    def _lookup(self, incident_id: str) -> IIncident:
        if incident_id in self.incidents:
            return self.incidents[incident_id]
        ref = incident_id.upper().removeprefix("INC-")
        if ref.isdigit() and int(ref) in self.by_number:
            return self.incidents[self.by_number[int(ref)]]
        raise KeyError(incident_id)

    def act(self, incident_id: str, action: str, *, user: str | None = None,
            severity: str | None = None) -> dict[str, Any]:
        inc = self._lookup(incident_id)
        who = next((u for u in self.users.values() if user in (u.email, u.id, u.name)),
                   next(iter(self.users.values())))
        actor = {"user": who.slim()}
        resolved = self.status(inc).category in RESOLVED_CATEGORIES
        if action == "acknowledge":
            if resolved:
                raise ValueError("incident is resolved: nothing to acknowledge")
            if self.canonical_state(inc) == "acknowledged":
                return self.incident_json(inc)
            ackable = [self.escalations[e] for e in inc.escalation_ids
                       if self.escalations[e].status in ESC_OPEN]
            if not ackable:
                raise ValueError("incident has no escalation to acknowledge")
            for esc in ackable:
                self._ack(esc, who)
        elif action == "resolve":
            if resolved:
                raise ValueError("incident is already resolved")
            self._set_status(inc, self.first_status("closed").id, actor)
            self._record_update(inc, actor)
        elif action == "severity":
            sev = self.severity_for(severity)
            if sev is None:
                raise ValueError("severity needs sev1..sev5")
            inc.severity_id, inc.updated = sev.id, self.clock.now()
            self._record_update(inc, actor)
        elif action in ("unacknowledge", "reopen"):
            raise ValueError(f"incident.io cannot {action} an incident")
        else:
            raise ValueError(f"unknown action {action!r}")
        return self.incident_json(inc)

    def alert(self, *, dedup: str, title: str, action: str = "trigger",
              severity: str | None = None) -> dict[str, Any]:
        if action == "acknowledge":
            raise ValueError("incident.io alerts are firing or resolved; they cannot be acked")
        if action not in ("trigger", "resolve"):
            raise ValueError(f"unknown alert action {action!r}")
        body: dict[str, Any] = {"title": title, "deduplication_key": dedup,
                                "status": "firing" if action == "trigger" else "resolved"}
        if severity:
            body["metadata"] = {"severity": severity}
        try:
            return self.intake(body)
        except ApiError as exc:
            raise ValueError(exc.message) from None

    # ------------------------------------------------------------------ HTTP plumbing

    def error(self, status: int, code: str, message: str, *, field: str | None = None,
              headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
        item: dict[str, Any] = {"code": code, "message": message}
        if field:
            item["source"] = {"field": field}
        body = {"type": extra.pop("type", ApiError.TYPES.get(status, "api_error")),
                "status": status, "request_id": self._request_id(), "errors": [item], **extra}
        return JSONResponse(body, status_code=status, headers=headers)

    def invalid(self, problems: list[Problem]) -> Response:
        """The documented envelope (notes 2): 400 for a body that is not a JSON object or a
        field the simulator does not model, else 422 ``validation_error`` with one entry per
        field (``is_required`` / ``invalid_value``) and its ``source.field``."""
        status = 400 if any(p.kind in ("json", "not_simulated") for p in problems) else 422
        codes = {"json": "invalid_json", "missing": "is_required",
                 "not_simulated": "not_simulated"}
        errors = []
        for p in problems:
            item: dict[str, Any] = {"code": codes.get(p.kind, "invalid_value"),
                                    "message": p.message}
            if p.field:
                item["source"] = {"field": p.field}
            errors.append(item)
        return JSONResponse({"type": ApiError.TYPES[status], "status": status,
                             "request_id": self._request_id(), "errors": errors},
                            status_code=status)

    def _request_id(self) -> str:
        h = f"{self.random.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def rate_limited(self, request: Request, retry_after: float) -> Response:
        wait = max(1, int(retry_after + 0.999))
        reset = self.clock.now() + timedelta(seconds=wait)
        return self.error(
            429, "too_many_requests",
            "Too many requests hit the API too quickly. We recommend an exponential backoff "
            "of your requests.",
            headers={"Retry-After": str(wait), "X-RateLimit-Limit": "1200, 1200;window=60",
                     "X-RateLimit-Remaining": "0", "X-RateLimit-Used": "1200",
                     "X-RateLimit-Reset": str(int(reset.timestamp()))},
            rate_limit={"name": "api_key_name", "limit": 1200, "remaining": 0,
                        "retry_after": reset.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )

    def _authenticate(self, request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        if not header:
            raise ApiError(401, "missing_authorization_material",
                           "No authorization material provided in request")
        scheme, _, token = header.partition(" ")
        key = self.keys.get(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ApiError(401, "invalid_authorization_material",
                           "The API key provided is not valid")
        return key

    def _api(self, handler: Callable[[Request, ApiKey], Awaitable[Response]],
             scope: str | None, bucket: tuple[str, float] | None = None
             ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                key = self._authenticate(request)
            except ApiError as exc:
                return self.error(exc.status, exc.code, exc.message)
            remaining: int | None = None
            if self.rate_limits_enabled:
                cap, rate = API_LIMIT * self.rate_scale, API_REFILL * self.rate_scale
                wait = self.tokens.hit(key.token, "api", cap, rate)
                if wait is None and bucket is not None:
                    wait = self.limit(key.token, bucket[0], bucket[1], 60.0)
                if wait is not None:
                    return self.rate_limited(request, wait)
                remaining = self.tokens.remaining(key.token, "api", cap, rate)
            if scope and scope not in key.scopes:
                return self.error(403, "missing_required_scope",
                                  f"This API key is missing the required scope: {scope}")
            try:
                response = await self.validate(request) or await handler(request, key)
            except ApiError as exc:
                response = self.error(exc.status, exc.code, exc.message, field=exc.field)
            if remaining is not None:
                response.headers["X-RateLimit-Limit"] = "1200, 1200;window=60"
                response.headers["X-RateLimit-Remaining"] = str(remaining)
                response.headers["X-RateLimit-Used"] = str(int(1200 - remaining))
                response.headers["X-RateLimit-Reset"] = str(int(
                    (self.clock.now() + timedelta(seconds=(1200 - remaining) / 20)).timestamp()))
            return response
        return endpoint

    async def _json_body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(400, "invalid_json", "Request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", "Request body must be a JSON object")
        return data

    @staticmethod
    def filters(request: Request) -> dict[str, dict[str, list[str]]]:
        """deepObject query params: ``field[op]=v`` (repeatable) -> {field: {op: [v...]}}."""
        out: dict[str, dict[str, list[str]]] = {}
        for k, v in request.query_params.multi_items():
            if "[" in k and k.endswith("]"):
                name, _, rest = k.partition("[")
                op = rest[:-1]
                out.setdefault(name, {}).setdefault(op, []).append(v)
        return out

    @staticmethod
    def page_size(request: Request, kind: str, *, required: bool = False) -> int:
        raw = request.query_params.get("page_size")
        if raw is None:
            if required:
                raise ApiError(422, "is_required", "page_size is required", field="page_size")
            return 25
        try:
            size = int(raw)
        except ValueError:
            raise ApiError(400, "invalid_parameter", "page_size must be an integer",
                           field="page_size") from None
        if not 1 <= size <= PAGE_MAX[kind]:
            raise ApiError(422, "invalid_value",
                           f"page_size must be between 1 and {PAGE_MAX[kind]}", field="page_size")
        return size

    @staticmethod
    def _day(value: str, name: str) -> date:
        try:
            return parse_time(value).date() if "T" in value else date.fromisoformat(value)
        except ValueError:
            raise ApiError(422, "invalid_value", f"{name} must be a date like 2024-01-31",
                           field=name) from None

    def _date_match(self, when: datetime, ops: dict[str, list[str]], name: str) -> bool:
        day = when.astimezone(UTC).date()
        for op, values in ops.items():
            for v in values:
                if op == "gte" and day < self._day(v, name):
                    return False
                if op == "lte" and day > self._day(v, name):
                    return False
                if op == "date_range":
                    lo, _, hi = v.partition("~")
                    if not self._day(lo, name) <= day <= self._day(hi, name):
                        return False
                if op not in ("gte", "lte", "date_range"):
                    raise ApiError(422, "invalid_operator", f"{name}[{op}] is not supported",
                                   field=name)
        return True

    @staticmethod
    def _set_match(value: str | None, ops: dict[str, list[str]], name: str,
                   norm: Callable[[str], str] = lambda v: v) -> bool:
        for op, values in ops.items():
            wanted = {norm(v) for v in values}
            if op == "one_of" and value not in wanted:
                return False
            if op == "not_in" and value in wanted:
                return False
            if op == "is" and value not in wanted:
                return False
            if op not in ("one_of", "not_in", "is"):
                raise ApiError(422, "invalid_operator", f"{name}[{op}] is not supported",
                               field=name)
        return True

    @staticmethod
    def _paginate(items: list[Any], after: str | None, size: int, id_of: Callable[[Any], str]
                  ) -> tuple[list[Any], str | None]:
        start = 0
        if after:
            ids = [id_of(x) for x in items]
            if after not in ids:
                raise ApiError(422, "invalid_value", "after does not name a record in this list",
                               field="after")
            start = ids.index(after) + 1
        page = items[start:start + size]
        more = start + size < len(items)
        return page, (id_of(page[-1]) if more and page else None)

    # ------------------------------------------------------------------ routes

    def routes(self) -> Iterable[BaseRoute]:
        table: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}

        def add(path: str, method: str, handler: Callable[[Request, ApiKey], Awaitable[Response]],
                scope: str | None, bucket: tuple[str, float] | None = None) -> None:
            table.setdefault(path, {})[method] = self._api(handler, scope, bucket)

        add("/v1/identity", "GET", self.h_identity, None)
        add("/v1/severities", "GET", self.h_severities, "severities.view")
        add("/v1/incident_statuses", "GET", self.h_statuses, "incident_statuses.view")
        add("/v1/incident_types", "GET", self.h_types, "incident_types.view")
        add("/v2/incidents", "GET", self.h_list_incidents, "incidents.view")
        add("/v2/incidents", "POST", self.h_create_incident, "incidents.create")
        add("/v2/incidents/{id}", "GET", self.h_show_incident, "incidents.view")
        add("/v2/incidents/{id}/actions/edit", "POST", self.h_edit_incident, "incidents.view")
        add("/v2/incident_updates", "GET", self.h_updates, "incidents.view")
        add("/v1/incident_attachments", "GET", self.h_list_attachments, "attachments.view")
        add("/v1/incident_attachments", "POST", self.h_create_attachment, "attachments.create")
        add("/v2/escalations", "GET", self.h_list_escalations, "escalations.view")
        add("/v2/escalations", "POST", self.h_create_escalation, "escalations.create",
            ("POST /v2/escalations", ESCALATION_CREATE_PER_MIN))
        add("/v2/escalations/{id}", "GET", self.h_show_escalation, "escalations.view")
        add("/v2/escalations/{escalation_id}/actions/respond", "POST", self.h_respond,
            "escalations.respond")
        add("/v2/escalations/{id}/actions/cancel", "POST", self.h_cancel, "escalations.cancel")
        add("/v2/escalation_paths", "GET", self.h_list_paths, "escalation_paths.view")
        add("/v2/escalation_paths/{id}", "GET", self.h_show_path, "escalation_paths.view")
        add("/v2/alerts", "GET", self.h_list_alerts, "alerts.view")
        add("/v2/alerts/{id}", "GET", self.h_show_alert, "alerts.view")
        add("/v2/alerts/{id}/actions/resolve", "POST", self.h_resolve_alert, "alerts.resolve")
        add("/v2/incident_alerts", "GET", self.h_incident_alerts, "alerts.view")
        add("/v2/users", "GET", self.h_list_users, "users.view")
        add("/v2/users/{id}", "GET", self.h_show_user, "users.view")
        add("/v2/schedules", "GET", self.h_list_schedules, "schedules.view")
        add("/v2/schedules/{id}", "GET", self.h_show_schedule, "schedules.view")
        add("/v2/schedule_entries", "GET", self.h_entries, "schedules.view")
        add("/v2/schedule_overrides", "GET", self.h_list_overrides, "schedules.view")
        add("/v2/schedule_overrides", "POST", self.h_create_override,
            "schedule_overrides.create")
        add("/v2/schedule_overrides/{id}", "GET", self.h_show_override, "schedules.view")
        add("/v2/schedule_overrides/{id}", "PUT", self.h_update_override,
            "schedule_overrides.update")
        add("/v2/schedule_overrides/{id}", "DELETE", self.h_delete_override,
            "schedule_overrides.destroy")

        def dispatch(methods: dict[str, Callable[[Request], Awaitable[Response]]]
                     ) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                return await methods[request.method](request)
            return endpoint

        routes: list[BaseRoute] = [Route(p, dispatch(m), methods=list(m)) for p, m in
                                   table.items()]
        routes.append(Route("/v2/alert_events/http/{alert_source_config_id}", self.h_alert_event,
                            methods=["POST"]))
        return routes

    # ------------------------------------------------------------------ catalogue handlers

    async def h_identity(self, request: Request, key: ApiKey) -> Response:
        roles = ["incident_editor", "on_call_editor", "post_incident_flow_opt_out"] if (
            "incidents.create" in key.scopes) else ["viewer"]
        return JSONResponse({"identity": {
            "name": key.name, "roles": roles, "team_roles": [], "teams": [],
            "dashboard_url": f"https://app.incident.io/{ORG_SLUG}"}})

    async def h_severities(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"severities": [self.severity_json(s) for s in self.severities]})

    async def h_statuses(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"incident_statuses": [
            self.status_json(s) for s in sorted(self.statuses.values(), key=lambda s: s.rank)]})

    async def h_types(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"incident_types": [self.incident_type_json()]})

    # ------------------------------------------------------------------ incidents

    async def h_list_incidents(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "incidents")
        q = request.query_params
        sort = q.get("sort_by", "created_at_newest_first")
        if sort not in ("created_at_newest_first", "created_at_oldest_first"):
            raise ApiError(422, "invalid_value", "unknown sort_by", field="sort_by")
        mode = q.get("filter_mode", "all")
        if mode not in ("all", "any"):
            raise ApiError(422, "invalid_value", "filter_mode must be all or any",
                           field="filter_mode")
        f = self.filters(request)
        known = {"status", "status_category", "created_at", "updated_at", "severity",
                 "incident_type", "mode", "incident_role", "custom_field"}
        for name in f:
            if name not in known:
                raise ApiError(422, "invalid_filter", f"unknown filter {name}", field=name)
        cats = f.get("status_category", {})
        candidates: Iterable[str]
        if mode == "all" and set(cats) == {"one_of"}:
            wanted = {FILTER_ALIASES.get(c, c) for c in cats["one_of"]}
            pool: set[str] = set()
            for c in wanted:
                pool |= self.by_category.get(c, set())
            candidates = sorted(pool, key=lambda i: self.incidents[i].seq)
        else:
            candidates = self.order
        modes = f.get("mode", {"one_of": list(DEFAULT_MODES)})
        rank = {s.id: s.rank for s in self.severities}

        def severity_ok(inc: IIncident, ops: dict[str, list[str]]) -> bool:
            mine = rank.get(inc.severity_id or "", -1)
            for op, values in ops.items():
                if op in ("gte", "lte"):
                    for v in values:
                        if v not in rank:
                            raise ApiError(422, "invalid_value", "unknown severity id",
                                           field="severity")
                        if (op == "gte" and mine < rank[v]) or (op == "lte" and mine > rank[v]):
                            return False
                elif not self._set_match(inc.severity_id, {op: values}, "severity"):
                    return False
            return True

        checks: list[Callable[[IIncident], bool]] = []
        if cats:
            checks.append(lambda i: self._set_match(
                self.status(i).category, cats, "status_category",
                lambda v: FILTER_ALIASES.get(v, v)))
        if "status" in f:
            checks.append(lambda i: self._set_match(i.status_id, f["status"], "status"))
        for name, attr in (("created_at", "created"), ("updated_at", "updated")):
            if name in f:
                checks.append(lambda i, n=name, a=attr: self._date_match(getattr(i, a), f[n], n))
        if "severity" in f:
            checks.append(lambda i: severity_ok(i, f["severity"]))
        if "incident_type" in f:
            checks.append(lambda i: self._set_match(ulid("Y", 1), f["incident_type"],
                                                    "incident_type"))

        def match(inc: IIncident) -> bool:
            if not self._set_match(inc.mode, modes, "mode"):
                return False
            if not checks:
                return True
            results = (c(inc) for c in checks)
            return all(results) if mode == "all" else any(results)

        rows = [self.incidents[i] for i in candidates if match(self.incidents[i])]
        if sort == "created_at_newest_first":
            rows.reverse()
        page, after = self._paginate(rows, q.get("after"), size, lambda i: i.id)
        meta: dict[str, Any] = {"page_size": size, "total_record_count": len(rows)}
        if after:
            meta["after"] = after
        return JSONResponse({"incidents": [self.incident_json(i) for i in page],
                             "pagination_meta": meta})

    async def h_show_incident(self, request: Request, key: ApiKey) -> Response:
        try:
            inc = self._lookup(request.path_params["id"])
        except KeyError:
            raise ApiError(404, "not_found", "Incident not found") from None
        return JSONResponse({"incident": self.incident_json(inc)})

    async def h_create_incident(self, request: Request, key: ApiKey) -> Response:
        body = await self._json_body(request)
        idem = body.get("idempotency_key")
        if not isinstance(idem, str) or not idem:
            raise ApiError(422, "is_required", "idempotency_key is required",
                           field="idempotency_key")
        visibility = body.get("visibility")
        if visibility not in ("public", "private"):
            raise ApiError(422, "is_required", "visibility must be public or private",
                           field="visibility")
        if idem in self.idempotency:
            # A repeated key returns the incident created first (ours: undocumented, notes 12).
            return JSONResponse({"incident": self.incident_json(
                self.incidents[self.idempotency[idem]])})
        status_id = body.get("incident_status_id")
        if status_id is None:
            status_id = self.first_status("live").id
        elif status_id not in self.statuses or self.statuses[status_id].category not in (
                "triage", "live"):
            raise ApiError(422, "invalid_value", "incident_status_id must be a triage or live "
                           "status", field="incident_status_id")
        sev_id = body.get("severity_id")
        if sev_id is not None and self.severity_by_id(sev_id) is None:
            raise ApiError(422, "invalid_value", "Severity not found", field="severity_id")
        if sev_id is None and self.severity_required and (
                self.statuses[status_id].category != "triage"):
            raise ApiError(422, "is_required", "A severity is required to open an incident",
                           field="severity_id")
        mode = body.get("mode") or "standard"
        if body.get("incident_type_id") not in (None, ulid("Y", 1)):
            # The organisation has one incident type, the default (incident_type_json).
            raise ApiError(422, "invalid_value", "Incident type not found",
                           field="incident_type_id")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise ApiError(422, "invalid_value", "name must be a string", field="name")
        inc = self._new_incident(
            name=name or f"Incident {self.next_number}", status_id=status_id,
            severity_id=sev_id, visibility=visibility, mode=mode,
            summary=body.get("summary") if isinstance(body.get("summary"), str) else None,
            creator={"api_key": {"id": key.id, "name": key.name}}, idempotency_key=idem)
        return JSONResponse({"incident": self.incident_json(inc)})

    async def h_edit_incident(self, request: Request, key: ApiKey) -> Response:
        try:
            inc = self._lookup(request.path_params["id"])
        except KeyError:
            raise ApiError(404, "not_found", "Incident not found") from None
        body = await self._json_body(request)
        edit = body.get("incident")
        if not isinstance(edit, dict):
            raise ApiError(422, "is_required", "incident is required", field="incident")
        if not isinstance(body.get("notify_incident_channel"), bool):
            raise ApiError(422, "is_required", "notify_incident_channel is required",
                           field="notify_incident_channel")
        for fld, scope in (("incident_status_id", "incidents.update_status"),
                           ("severity_id", "incidents.update_severity"),
                           ("name", "incidents.update_name"),
                           ("summary", "incidents.update_summary")):
            if fld in edit and scope not in key.scopes:
                raise ApiError(403, "missing_required_scope",
                               f"This API key is missing the required scope: {scope}")
        actor = {"api_key": {"id": key.id, "name": key.name}}
        target = edit.get("incident_status_id")
        new_status: Status | None = None
        if target is not None:
            new_status = self.statuses.get(target)
            if new_status is None:
                raise ApiError(422, "invalid_value", "Incident status not found",
                               field="incident_status_id")
            old = self.status(inc).category
            new = new_status.category
            allowed = (old == new or (old in ("live", "triage") and new in ("learning", "closed"))
                       or (old == "learning" and new == "closed"))
            if not allowed:
                raise ApiError(422, "invalid_status_transition",
                               f"Cannot move an incident from {old} to {new} through the API",
                               field="incident_status_id")
            if (old in ("live", "triage") and new == "closed"
                    and "post_incident_flow_opt_out" not in key.scopes):
                raise ApiError(403, "missing_required_scope",
                               "Closing without the post-incident flow needs the "
                               "post_incident_flow_opt_out role")
        sev_id = edit.get("severity_id")
        if sev_id is not None and self.severity_by_id(sev_id) is None:
            raise ApiError(422, "invalid_value", "Severity not found", field="severity_id")
        changed = False
        if new_status is not None and new_status.id != inc.status_id:
            self._set_status(inc, new_status.id, actor)
            changed = True
        if sev_id is not None and sev_id != inc.severity_id:
            inc.severity_id = sev_id
            changed = True
        for fld in ("name", "summary"):
            if isinstance(edit.get(fld), str) and edit[fld] != getattr(inc, fld):
                setattr(inc, fld, edit[fld])
                changed = True
        if changed:
            inc.updated = self.clock.now()
            self._record_update(inc, actor)
        return JSONResponse({"incident": self.incident_json(inc)})

    async def h_updates(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "incident_updates")
        iid = request.query_params.get("incident_id")
        rows = list(reversed(self.updates_by_incident.get(iid, []) if iid else self.updates))
        page, after = self._paginate(rows, request.query_params.get("after"), size,
                                     lambda r: r["id"])
        meta: dict[str, Any] = {"page_size": size}
        if after:
            meta["after"] = after
        return JSONResponse({"incident_updates": page, "pagination_meta": meta})

    # ------------------------------------------------------------------ attachments

    async def h_list_attachments(self, request: Request, key: ApiKey) -> Response:
        q = request.query_params
        iid, rtype, ext = q.get("incident_id"), q.get("resource_type"), q.get("external_id")
        if not iid and not (rtype and ext):
            raise ApiError(422, "is_required",
                           "Provide incident_id, or resource_type with external_id")
        rows = [a for a in self.attachments if (not iid or a["incident_id"] == iid)
                and (not rtype or a["resource"]["resource_type"] == rtype)
                and (not ext or a["resource"]["external_id"] == ext)]
        return JSONResponse({"incident_attachments": rows})

    async def h_create_attachment(self, request: Request, key: ApiKey) -> Response:
        body = await self._json_body(request)
        iid, res = body.get("incident_id"), body.get("resource")
        if not isinstance(iid, str) or iid not in self.incidents:
            raise ApiError(422, "invalid_value", "Incident not found", field="incident_id")
        if not isinstance(res, dict) or not isinstance(res.get("resource_type"), str):
            raise ApiError(422, "is_required", "resource.resource_type is required",
                           field="resource")
        rtype = res["resource_type"]
        ext = res.get("external_id") or res.get("url")
        if not isinstance(ext, str) or not ext:
            raise ApiError(422, "is_required", "resource needs external_id or url",
                           field="resource")
        if rtype != "arbitrary_url":
            # Other types resolve through their integration, none of which the sim has.
            raise ApiError(422, "integration_not_installed",
                           f"The integration for {rtype} is not installed", field="resource")
        row = {"id": self._next("Z"), "incident_id": iid, "resource": {
            "resource_type": rtype, "external_id": ext, "permalink": ext,
            "title": res.get("title") if isinstance(res.get("title"), str) else ext}}
        self.attachments.append(row)
        return JSONResponse({"incident_attachment": row}, status_code=201)

    # ------------------------------------------------------------------ escalations

    def _esc(self, eid: str) -> Escalation:
        esc = self.escalations.get(eid)
        if esc is None:
            raise ApiError(404, "not_found", "Escalation not found")
        return esc

    async def h_list_escalations(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "escalations")
        f = self.filters(request)
        for name in f:
            if name not in ("escalation_path", "status", "alert", "incident", "created_at",
                            "updated_at", "idempotency_key"):
                raise ApiError(422, "invalid_filter", f"unknown filter {name}", field=name)
        if "incident" in f and set(f["incident"]) == {"one_of"}:
            ids: set[str] = set()
            for iid in f["incident"]["one_of"]:
                if iid in self.incidents:
                    ids.update(self.incidents[iid].escalation_ids)
            pool = sorted((self.escalations[e] for e in ids), key=lambda e: -e.seq)
        else:
            pool = [self.escalations[e] for e in reversed(self.esc_order)]

        def match(e: Escalation) -> bool:
            if "status" in f and not self._set_match(e.status, f["status"], "status"):
                return False
            if "escalation_path" in f and not self._set_match(e.path_id, f["escalation_path"],
                                                              "escalation_path"):
                return False
            for name, values in (("incident", e.incident_ids), ("alert", e.alert_ids)):
                if name in f:
                    ops = f[name]
                    if "one_of" in ops and not set(values) & set(ops["one_of"]):
                        return False
                    if "not_in" in ops and set(values) & set(ops["not_in"]):
                        return False
            for name, when in (("created_at", e.created), ("updated_at", e.updated)):
                if name in f and not self._date_match(when, f[name], name):
                    return False
            if "idempotency_key" in f:
                k = e.idempotency_key or ""
                ops = f["idempotency_key"]
                if "is" in ops and k not in ops["is"]:
                    return False
                if "starts_with" in ops and not any(k.startswith(p) for p in ops["starts_with"]):
                    return False
            return True

        rows = [e for e in pool if match(e)]
        page, after = self._paginate(rows, request.query_params.get("after"), size,
                                     lambda e: e.id)
        meta: dict[str, Any] = {"page_size": size}
        if after:
            meta["after"] = after
        return JSONResponse({"escalations": [self.escalation_json(e) for e in page],
                             "pagination_meta": meta})

    async def h_show_escalation(self, request: Request, key: ApiKey) -> Response:
        return JSONResponse({"escalation": self.escalation_json(
            self._esc(request.path_params["id"]))})

    async def h_create_escalation(self, request: Request, key: ApiKey) -> Response:
        body = await self._json_body(request)
        idem, title = body.get("idempotency_key"), body.get("title")
        if not isinstance(idem, str) or not idem:
            raise ApiError(422, "is_required", "idempotency_key is required",
                           field="idempotency_key")
        if not isinstance(title, str) or not title:
            raise ApiError(422, "is_required", "title is required", field="title")
        found = next((e for e in self.escalations.values() if e.idempotency_key == idem), None)
        if found is not None:  # "the existing escalation will be returned" (notes 6)
            return JSONResponse({"escalation": self.escalation_json(found)}, status_code=201)
        path, users = body.get("escalation_path_id"), body.get("user_ids")
        if (path is None) == (users is None):
            raise ApiError(422, "invalid_value",
                           "Provide exactly one of escalation_path_id or user_ids")
        if path is not None and path != self.path_id:
            raise ApiError(422, "invalid_value", "Escalation path not found",
                           field="escalation_path_id")
        if users is not None and (not isinstance(users, list) or not users
                                  or any(u not in self.users for u in users)):
            raise ApiError(422, "invalid_value", "user_ids must name users", field="user_ids")
        inc = None
        if body.get("incident_id") is not None:
            inc = self.incidents.get(body["incident_id"])
            if inc is None:
                raise ApiError(422, "invalid_value", "Incident not found", field="incident_id")
        esc = self._escalate(title=title, description=str(body.get("description") or ""),
                             incident=inc, alert=None, idempotency_key=idem, user_ids=users,
                             path_id=path, creator={"user": self.users[
                                 next(u for u in self.users
                                      if self.users[u].name == "syncd-bot")].slim()})
        return JSONResponse({"escalation": self.escalation_json(esc)}, status_code=201)

    async def h_respond(self, request: Request, key: ApiKey) -> Response:
        esc = self._esc(request.path_params["escalation_id"])
        body = await self._json_body(request)
        response = body.get("response")
        if response == "nack":
            raise ApiError(422, "invalid_value",
                           "An API key cannot decline an escalation; only users can nack",
                           field="response")
        if response == "ack":
            if not self._ack(esc, None):
                raise ApiError(422, "invalid_state",
                               f"Escalation is {esc.status} and can no longer be acknowledged")
        elif response == "snooze":
            details = body.get("snooze_details")
            until = details.get("snooze_until") if isinstance(details, dict) else None
            try:
                when = parse_time(until) if isinstance(until, str) else None
            except ValueError:
                when = None
            if when is None or when <= self.clock.now():
                raise ApiError(422, "invalid_value", "snooze_details.snooze_until must be a "
                               "future time", field="snooze_details")
            if esc.status not in ESC_OPEN and esc.status != "acked":
                raise ApiError(422, "invalid_state", f"Escalation is {esc.status}")
            esc.snooze_until = when
            self.snoozed.add(esc.id)
            self._esc_event(esc, "notified_users", "snoozed", users=[])
        else:
            raise ApiError(422, "invalid_value", "response must be ack, nack or snooze",
                           field="response")
        return Response(status_code=200)

    async def h_cancel(self, request: Request, key: ApiKey) -> Response:
        esc = self._esc(request.path_params["id"])
        if esc.status in ("resolved", "expired"):
            raise ApiError(422, "invalid_state", f"Escalation is {esc.status}: cannot cancel")
        if esc.status != "cancelled":
            self._esc_event(esc, "cancelled", "cancelled")
        return Response(status_code=200)

    async def h_list_paths(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "escalation_paths")
        return JSONResponse({"escalation_paths": [self.path_json()][:size],
                             "pagination_meta": {"page_size": size}})

    async def h_show_path(self, request: Request, key: ApiKey) -> Response:
        if request.path_params["id"] != self.path_id:
            raise ApiError(404, "not_found", "Escalation path not found")
        return JSONResponse({"escalation_path": self.path_json()})

    # ------------------------------------------------------------------ alerts

    async def h_alert_event(self, request: Request) -> Response:
        source = request.path_params["alert_source_config_id"]
        header = request.headers.get("authorization", "")
        scheme, _, cred = header.partition(" ")
        token = request.query_params.get("token")
        if scheme.lower() == "bearer":
            token = cred.strip()
        elif scheme.lower() == "basic":
            try:
                token = base64.b64decode(cred).decode().partition(":")[2]
            except ValueError:
                token = None
        if source != ALERT_SOURCE_ID:
            return self.error(404, "not_found", "Alert source not found")
        if token != ALERT_SOURCE_TOKEN:
            return self.error(401, "authentication_error" if token else
                              "missing_authorization_material",
                              "Invalid or missing alert source token")
        if self.rate_limits_enabled:
            wait = self.limit(source, "alert_events", ALERT_EVENTS_PER_MIN, 60.0)
            if wait is not None:
                return self.rate_limited(request, wait)
        try:
            body = await self._json_body(request)
            return JSONResponse(self.intake(body, source), status_code=202)
        except ApiError as exc:
            return self.error(exc.status, exc.code, exc.message, field=exc.field)

    async def h_list_alerts(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "alerts", required=True)
        f = self.filters(request)
        rows = []
        for aid in reversed(self.alert_order):
            a = self.alerts[aid]
            if "deduplication_key" in f and not self._set_match(
                    a.dedup, f["deduplication_key"], "deduplication_key"):
                continue
            if "status" in f and not self._set_match(a.status, f["status"], "status"):
                continue
            if "alert_source" in f and not self._set_match(a.source_id, f["alert_source"],
                                                           "alert_source"):
                continue
            if "updated_at" in f and not self._date_match(a.updated, f["updated_at"],
                                                          "updated_at"):
                continue
            if "created_at" in f and not self._date_match(a.created, f["created_at"],
                                                          "created_at"):
                continue
            rows.append(a)
        page, after = self._paginate(rows, request.query_params.get("after"), size,
                                     lambda a: a.id)
        meta: dict[str, Any] = {"page_size": size}
        if after:
            meta["after"] = after
        return JSONResponse({"alerts": [self.alert_json(a) for a in page],
                             "pagination_meta": meta})

    async def h_show_alert(self, request: Request, key: ApiKey) -> Response:
        alert = self.alerts.get(request.path_params["id"])
        if alert is None:
            raise ApiError(404, "not_found", "Alert not found")
        return JSONResponse({"alert": self.alert_json(alert)})

    async def h_resolve_alert(self, request: Request, key: ApiKey) -> Response:
        alert = self.alerts.get(request.path_params["id"])
        if alert is None:
            raise ApiError(404, "not_found", "Alert not found")
        if alert.status == "firing":
            self._resolve_alert(alert)
        return JSONResponse({"alert": self.alert_json(alert)})

    async def h_incident_alerts(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "incident_alerts", required=True)
        q = request.query_params
        iid, aid = q.get("incident_id"), q.get("alert_id")
        if iid:
            alerts = [self.alerts[a] for a in self.incidents[iid].alert_ids] if (
                iid in self.incidents) else []
        else:
            alerts = [self.alerts[a] for a in self.alert_order if self.alerts[a].incident_id]
        if aid:
            alerts = [a for a in alerts if a.id == aid]
        rows = [{"id": a.incident_alert_id, "alert": self.alert_slim(a),
                 "incident": self.incident_slim(self.incidents[a.incident_id]),
                 "alert_route_id": ulid("Q", 1)} for a in alerts if a.incident_id]
        page, after = self._paginate(rows, q.get("after"), size, lambda r: r["id"])
        meta: dict[str, Any] = {"page_size": size}
        if after:
            meta["after"] = after
        return JSONResponse({"incident_alerts": page, "pagination_meta": meta})

    # ------------------------------------------------------------------ users & schedules

    async def h_list_users(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "users")
        q = request.query_params
        rows = [u for u in self.users.values()
                if (not q.get("email") or u.email.lower() == q["email"].lower())
                and (not q.get("slack_user_id") or u.slack_user_id == q["slack_user_id"])]
        page, after = self._paginate(rows, q.get("after"), size, lambda u: u.id)
        meta: dict[str, Any] = {"page_size": size}
        if after:
            meta["after"] = after
        return JSONResponse({"users": [u.full() for u in page], "pagination_meta": meta})

    async def h_show_user(self, request: Request, key: ApiKey) -> Response:
        u = self.users.get(request.path_params["id"])
        if u is None:
            raise ApiError(404, "not_found", "User not found")
        return JSONResponse({"user": u.full()})

    async def h_list_schedules(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "schedules")
        rows = list(self.schedules.values())
        page, after = self._paginate(rows, request.query_params.get("after"), size,
                                     lambda s: s.id)
        meta: dict[str, Any] = {"page_size": size, "total_record_count": len(rows)}
        if after:
            meta["after"] = after
        return JSONResponse({"schedules": [self.schedule_json(s) for s in page],
                             "pagination_meta": meta})

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
        scheduled = [self._entry(s, u, a, b, None)
                     for u, a, b in self.scheduled_entries(s, start, page_end)]
        overrides = [self._entry(s, o.user_id, max(o.start, start), min(o.end, page_end), o.id)
                     for o in sorted(self.overrides.values(), key=lambda o: o.start)
                     if o.schedule_id == s.id and o.end > start and o.start < page_end]
        body: dict[str, Any] = {"schedule_entries": {
            "scheduled": scheduled, "overrides": overrides,
            "final": self.final_entries(s, start, page_end)}}
        if page_end < end:
            after = ts(page_end)
            body["pagination_meta"] = {"after": after, "after_url": (
                f"/v2/schedule_entries?{urlencode({'schedule_id': s.id, 'entry_window_start': after, 'entry_window_end': ts(end)})}")}  # noqa: E501
        return JSONResponse(body)

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
        page, after = self._paginate(rows, q.get("after"), size, lambda o: o.id)
        meta: dict[str, Any] = {"page_size": size}
        if after:
            meta["after"] = after
        return JSONResponse({"overrides": [self.override_json(o) for o in page],
                             "pagination_meta": meta})

    def _override_fields(self, body: dict[str, Any], schedule: Schedule
                         ) -> tuple[str, datetime, datetime]:
        for name in ("rotation_id", "layer_id", "start_at", "end_at", "user"):
            if body.get(name) in (None, ""):
                raise ApiError(422, "is_required", f"{name} is required", field=name)
        if body["rotation_id"] != schedule.rotation_id:
            raise ApiError(422, "invalid_value", "Rotation not found on this schedule",
                           field="rotation_id")
        if body["layer_id"] != schedule.layer_id:
            raise ApiError(422, "invalid_value", "Layer not found on this rotation",
                           field="layer_id")
        ref = body["user"]
        user = None
        if isinstance(ref, dict):
            user = next((u for u in self.users.values()
                         if ref.get("id") == u.id or (ref.get("email") or "").lower() == u.email
                         or ref.get("slack_user_id") == u.slack_user_id), None)
        if user is None:
            raise ApiError(422, "invalid_value", "User not found", field="user")
        try:
            start, end = parse_time(str(body["start_at"])), parse_time(str(body["end_at"]))
        except ValueError:
            raise ApiError(422, "invalid_value", "start_at/end_at must be RFC 3339 times"
                           ) from None
        if end <= start:
            raise ApiError(422, "invalid_value", "end_at must be after start_at", field="end_at")
        return user.id, start, end

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
        uid, start, end = self._override_fields(body, s)
        now = self.clock.now()
        o = Override(self._next("V"), s.id, s.rotation_id, s.layer_id, uid, start, end, now, now)
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
        uid, start, end = self._override_fields(body, self.schedules[o.schedule_id])
        if uid != o.user_id:
            raise ApiError(422, "invalid_value", "An override's user cannot be changed: delete "
                           "it and create a new one", field="user")
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


__all__ = [
    "ALERT_SOURCE_ID",
    "ALERT_SOURCE_TOKEN",
    "DEFAULT_API_KEY",
    "VIEWER_API_KEY",
    "IncidentIOSimulator",
]
