"""incident.io simulator, part 1: the organisation's records, the request models, the incident
core every part uses (statuses, severities, updates, on-call) and the API plumbing (auth, scopes,
rate limits, errors, deepObject filters, pagination). The vendor facts and our choices are listed in
syncd/simulators/incidentio.py and docs/vendors/incidentio.md."""


from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from syncd.simulators.base import Simulator, parse_time
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
    "schedules.create", "schedules.update", "escalation_paths.create",
    "escalation_paths.update",
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


class AlertEventBody(Body):
    """An HTTP alert source event (notes 7)."""

    title: Text
    status: Literal["firing", "resolved"]
    deduplication_key: str | None = None
    description: str | None = None
    source_url: str | None = None
    metadata: dict[str, Any] | None = None


OPERATIONS: dict[str, Operation] = {
    "POST /v2/alert_events/http/{alert_source_config_id}": Operation(body=AlertEventBody),
    "GET /v2/incidents": Operation(query=IncidentsQuery),
    "POST /v2/incidents": Operation(body=CreateIncidentBody),
    "POST /v2/incidents/{id}/actions/edit": Operation(body=EditIncidentBody),
    "GET /v2/incident_updates": Operation(query=UpdatesQuery),
    "GET /v1/incident_attachments": Operation(query=AttachmentsQuery),
    "POST /v1/incident_attachments": Operation(body=CreateAttachmentBody),
    "GET /v2/escalations": Operation(query=Paged),
    "POST /v2/escalations": Operation(body=CreateEscalationBody),
    "POST /v2/escalations/{escalation_id}/actions/respond": Operation(body=RespondBody),
    "GET /v2/alerts": Operation(query=Paged),
    "GET /v2/incident_alerts": Operation(query=IncidentAlertsQuery),
    "GET /v2/users": Operation(query=UsersQuery),
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


class IncidentIOBase(Simulator):
    """State and shared behaviour; the alert model and the HTTP handlers build on it."""

    vendor = "incidentio"
    operations = OPERATIONS
    report_totals = True
    """Whether list pages carry ``pagination_meta.total_record_count``: the spec makes it
    optional ("if known", ``PaginationMetaResultWithTotalV2``); set False to answer as an
    organisation whose total is not known does."""

    def __init__(self, *, seed: int = 0, rate_limits: bool = True, severity_required: bool = True,
                 auto_decline: bool = True, auto_cancel_escalations: bool = True,
                 escalation_delay: float = 0.0) -> None:
        self.severity_required = severity_required
        self.escalation_delay = escalation_delay  # see incidentio_alerts._late_escalations
        self.auto_decline = auto_decline
        self.auto_cancel_escalations = auto_cancel_escalations
        super().__init__(seed=seed, rate_limits=rate_limits)

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
        self.late_escalations: list[tuple[datetime, str]] = []  # (due, alert id)

    def _next(self, kind: str) -> str:
        return ulid(kind, 10_000 + next(self._ids))

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
    def check_filters(f: Mapping[str, Any], simulated: Iterable[str],
                      documented: Iterable[str] = ()) -> None:
        """Refuse a filter the handler will not apply: one the spec documents but the simulator
        does not model is 400 ``not simulated`` (like a body field, validation.py), any other
        unknown name 422; ignoring either would answer an unfiltered 200."""
        for name in f:
            if name in documented:
                raise ApiError(400, "not_simulated", f"not simulated: the {name} filter",
                               field=name)
            if name not in simulated:
                raise ApiError(422, "invalid_filter", f"unknown filter {name}", field=name)

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

    def _date_match(self, when: datetime, ops: dict[str, list[str]], name: str, *,
                    precise: bool = False) -> bool:
        """Date filters compare days (every documented example is a date, notes 4.1). With
        ``precise``, a ``gte``/``lte`` timestamp compares to the instant: ``GET /v2/alerts``
        documents ``updated_at[gte]=<last sync time>`` (``2025-01-01T00:00:00Z``) for
        incremental syncs (spec, List Alerts V2, "By updated_at")."""
        day = when.astimezone(UTC).date()
        for op, values in ops.items():
            for v in values:
                if precise and op in ("gte", "lte") and "T" in v:
                    try:
                        at = parse_time(v)
                    except ValueError:
                        raise ApiError(422, "invalid_value", f"{name} must be a date or an "
                                       "RFC 3339 time", field=name) from None
                    if (when < at) if op == "gte" else (when > at):
                        return False
                    continue
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

    def page(self, request: Request, key: str, rows: list[Any], size: int,
             id_of: Callable[[Any], str], render: Callable[[Any], Any] = lambda x: x, *,
             total: bool = False) -> JSONResponse:
        """One page of ``rows`` after the request's ``after`` cursor, in the list envelope."""
        page, after = self._paginate(rows, request.query_params.get("after"), size, id_of)
        meta: dict[str, Any] = {"page_size": size}
        if total and self.report_totals:
            meta["total_record_count"] = len(rows)
        if after:
            meta["after"] = after
        return JSONResponse({key: [render(x) for x in page], "pagination_meta": meta})

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
