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
  example is a date, notes 4.1): a timestamp is truncated to its day (ours). ``GET /v2/alerts``
  ``updated_at`` is the exception: the spec documents a timestamp there ("poll with
  updated_at[gte] set to your last sync time"), compared to the instant.
- Escalations hold acknowledgement (notes 6, 9): respond ack/snooze (a key cannot nack), cancel,
  snoozes that wake up on the sim clock, escalations resolving when their incident resolves.
- Alerts: HTTP source with its own token, dedup by ``deduplication_key`` among firing alerts,
  a firing alert creates a triage incident and an escalation through the path; a resolved event
  resolves the alert, cancels unacked escalations and declines a still-triage incident
  (route options ``auto_cancel_escalations`` and ``auto_decline_enabled``, notes 7).
- On-call: schedules with rotations on the sim clock, schedule entries (scheduled, overrides,
  final) and overrides that never overlap on one layer (notes 5).

The code is split along its seams: incidentio_base (records, request models, incident core,
on-call, plumbing), incidentio_alerts (the alert model: alert source, alerts, escalations,
paths) and this module (incident, catalogue, attachment, user and schedule handlers, routes).
"""


from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.simulators.incidentio_alerts import IncidentIOAlerts
from syncd.simulators.incidentio_base import (
    ALERT_SOURCE_ID,
    ALERT_SOURCE_TOKEN,
    DEFAULT_API_KEY,
    DEFAULT_MODES,
    ESC_OPEN,
    ESCALATION_CREATE_PER_MIN,
    FILTER_ALIASES,
    ORG_SLUG,
    RESOLVED_CATEGORIES,
    VIEWER_API_KEY,
    ApiError,
    ApiKey,
    Escalation,
    IIncident,
    Status,
    User,
    ts,
    ulid,
)


class IncidentIOSimulator(IncidentIOAlerts):
    """An incident.io organisation: incidents, escalations, alerts, schedules, one alert source.
    This module holds the incident, catalogue, attachment, user and schedule handlers and the
    route table; the alert model is in incidentio_alerts, the shared core in incidentio_base."""

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

    def seed_incidents(self, count: int, *, state: str = "triggered",
                       age_days: float = 0.0) -> list[str]:
        if state not in ("triggered", "acknowledged", "resolved"):
            raise ValueError(f"unknown state {state!r}")
        live = self.first_status("live").id
        closed = self.first_status("closed").id
        minor = self.severities[0].id
        actor = {"api_key": {"id": self.keys[DEFAULT_API_KEY].id, "name": "seed"}}
        now = self.clock.now() - timedelta(days=age_days)
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

    def _lookup(self, incident_id: str, *, by_number: bool = True) -> IIncident:
        """An incident by ID or, with ``by_number``, by the numeric part of its reference
        (``123`` for INC-123): GET /v2/incidents/{id} takes both (notes 4.2); the edit takes
        "the unique identifier of the incident" only (spec, IncidentsV2 Edit). The full reference
        (``INC-123``) is a 404: ours, the notes and spec say nothing of it."""
        if incident_id in self.incidents:
            return self.incidents[incident_id]
        if by_number and incident_id.isdigit() and int(incident_id) in self.by_number:
            return self.incidents[self.by_number[int(incident_id)]]
        raise KeyError(incident_id)

    def act(self, incident_id: str, action: str, *, user: str | None = None,
            severity: str | None = None) -> dict[str, Any]:
        inc = self._lookup(incident_id.upper().removeprefix("INC-"))  # a person may say INC-7
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
        add("/v2/escalation_paths", "POST", self.h_create_path, "escalation_paths.create")
        add("/v2/escalation_paths/{id}", "GET", self.h_show_path, "escalation_paths.view")
        add("/v2/escalation_paths/{id}", "PUT", self.h_update_path, "escalation_paths.update")
        add("/v2/alerts", "GET", self.h_list_alerts, "alerts.view")
        add("/v2/alerts/{id}", "GET", self.h_show_alert, "alerts.view")
        add("/v2/alerts/{id}/actions/resolve", "POST", self.h_resolve_alert, "alerts.resolve")
        add("/v2/incident_alerts", "GET", self.h_incident_alerts, "alerts.view")
        add("/v2/users", "GET", self.h_list_users, "users.view")
        add("/v2/users/{id}", "GET", self.h_show_user, "users.view")
        add("/v2/schedules", "GET", self.h_list_schedules, "schedules.view")
        add("/v2/schedules", "POST", self.h_create_schedule, "schedules.create")
        add("/v2/schedules/{id}", "GET", self.h_show_schedule, "schedules.view")
        add("/v2/schedules/{id}", "PUT", self.h_update_schedule, "schedules.update")
        add("/v2/schedules/{id}/actions/preview_entries", "POST", self.h_preview,
            "schedules.view")
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
        # No roles or custom fields here (spec ListIncidents documents both filters).
        self.check_filters(f, ("status", "status_category", "created_at", "updated_at",
                               "severity", "incident_type", "mode"),
                           ("incident_role", "custom_field"))
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
        return self.page(request, "incidents", rows, size, lambda i: i.id, self.incident_json,
                         total=True)

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
            inc = self._lookup(request.path_params["id"], by_number=False)
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
        return self.page(request, "incident_updates", rows, size, lambda r: r["id"])

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

    async def h_list_users(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "users")
        q = request.query_params
        rows = [u for u in self.users.values()
                if (not q.get("email") or u.email.lower() == q["email"].lower())
                and (not q.get("slack_user_id") or u.slack_user_id == q["slack_user_id"])]
        return self.page(request, "users", rows, size, lambda u: u.id, User.full)

    async def h_show_user(self, request: Request, key: ApiKey) -> Response:
        u = self.users.get(request.path_params["id"])
        if u is None:
            raise ApiError(404, "not_found", "User not found")
        return JSONResponse({"user": u.full()})


__all__ = [
    "ALERT_SOURCE_ID",
    "ALERT_SOURCE_TOKEN",
    "DEFAULT_API_KEY",
    "VIEWER_API_KEY",
    "IncidentIOSimulator",
    "ulid",
]
