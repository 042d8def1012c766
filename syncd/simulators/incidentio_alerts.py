"""incident.io simulator, part 2: the alert model. The HTTP alert source (dedup by
``deduplication_key`` among firing alerts, notes 7), alerts, the escalations where acknowledgement
lives (respond ack/snooze, cancel, snoozes waking on the sim clock, notes 6, 9) and escalation
paths. Incidents and plumbing come from :mod:`syncd.simulators.incidentio_base`, schedules and
escalation paths from :mod:`syncd.simulators.incidentio_oncall`.

Late escalations: incident.io creates escalations asynchronously after an alert is routed
(notes 6, 7). With ``escalation_delay`` seconds (constructor, or ``POST /_sim/escalation-delay
{"seconds": N}``) the escalation of a new alert appears that much later on the sim clock (ours:
0 by default, i.e. at once), unless the alert resolved meanwhile or the escalation can no
longer be simulated (``check_pageable``)."""


from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.simulators.base import parse_time
from syncd.simulators.incidentio_base import (
    ALERT_EVENTS_PER_MIN,
    ALERT_SOURCE_ID,
    ALERT_SOURCE_TOKEN,
    ESC_OPEN,
    Alert,
    ApiError,
    ApiKey,
    Escalation,
    IIncident,
    User,
    ts,
    ulid,
)
from syncd.simulators.incidentio_oncall import IncidentIOOnCall


class IncidentIOAlerts(IncidentIOOnCall):
    """Alerts, escalations and escalation paths on top of the organisation's records."""

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

    def _escalate(self, *, title: str, description: str, incident: IIncident | None,
                  alert: Alert | None, creator: dict[str, Any], idempotency_key: str | None = None,
                  user_ids: list[str] | None = None, path_id: str | None = None) -> Escalation:
        now = self.clock.now()
        # Whom to notify first, so a refusal (not simulated) leaves nothing half made. Ours:
        # whoever is on call in the first schedule, not the path's targets (check_pageable).
        targets = user_ids or self.on_call_users(next(iter(self.schedules.values())), now)
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
        # The incident's updated_at is left alone: nothing documents that an ack bumps it, so a
        # client must find acks in the escalations feed (notes 6: "Poll GET /v2/escalations?
        # updated_at[gte]=... as a second change feed rather than relying on the incident feed").
        self._esc_event(esc, "acked", "acked", users=[user] if user else [])
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
                self.check_pageable(self.path_id)  # the route escalates through the path
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
        if self.escalation_delay > 0:
            due = now + timedelta(seconds=self.escalation_delay)
            self.late_escalations.append((due, alert.id))
        else:
            self._escalate_alert(alert)
        return alert

    def _escalate_alert(self, alert: Alert) -> None:
        """The route's escalation through the path, for a firing alert and its incident."""
        inc = self.incidents[alert.incident_id] if alert.incident_id else None
        self._escalate(title=alert.title, description=alert.description or "", incident=inc,
                       alert=alert, creator={"alert": {"id": alert.id, "title": alert.title}},
                       path_id=self.path_id)

    def _late_escalations(self) -> None:
        """Create the escalations whose delay has passed on the sim clock. One the simulator
        cannot stand in for by then (``check_pageable``: the path or the first schedule
        changed since the alert was routed) is not created (ours): there is no request left
        to answer 400, and a half-made escalation would be state no vendor produces."""
        now = self.clock.now()
        due = [aid for when, aid in self.late_escalations if when <= now]
        if not due:
            return
        self.late_escalations = [(w, a) for w, a in self.late_escalations if w > now]
        for aid in due:
            alert = self.alerts.get(aid)
            if alert is None or alert.status != "firing":
                continue
            try:
                self.check_pageable(self.path_id)
            except ApiError:
                continue
            self._escalate_alert(alert)

    def _control_routes(self) -> list[Route]:
        return [*super()._control_routes(),
                Route("/_sim/escalation-delay", self._c_escalation_delay, methods=["POST"])]

    async def _c_escalation_delay(self, request: Request) -> Response:
        seconds = float((await self._body(request)).get("seconds", 0))
        if not 0 <= seconds <= 86400:
            return JSONResponse({"error": "seconds must be 0..86400"}, status_code=400)
        self.escalation_delay = seconds
        return JSONResponse({"escalation_delay": seconds})

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
        """Late escalations appear; snoozed ones trigger again when their snooze ends."""
        if self.late_escalations:
            self._late_escalations()
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

    def _esc(self, eid: str) -> Escalation:
        esc = self.escalations.get(eid)
        if esc is None:
            raise ApiError(404, "not_found", "Escalation not found")
        return esc

    async def h_list_escalations(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "escalations")
        f = self.filters(request)
        self.check_filters(f, ("escalation_path", "status", "alert", "incident", "created_at",
                               "updated_at", "idempotency_key"))
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
        return self.page(request, "escalations", rows, size, lambda e: e.id, self.escalation_json)

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
        if path is not None and path not in self.paths:
            raise ApiError(422, "invalid_value", "Escalation path not found",
                           field="escalation_path_id")
        if path is not None:
            self.check_pageable(path)
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
        refused = await self.validate(request)
        if refused is not None:
            return refused
        try:
            body = await self._json_body(request)
            return JSONResponse(self.intake(body, source), status_code=202)
        except ApiError as exc:
            return self.error(exc.status, exc.code, exc.message, field=exc.field)

    async def h_list_alerts(self, request: Request, key: ApiKey) -> Response:
        size = self.page_size(request, "alerts", required=True)
        f = self.filters(request)
        # Alert groups, attributes, notes, tags and maintenance windows are not modelled (spec
        # ListAlerts documents those filters). Any other filter name is 422: ours, the notes
        # and spec give no answer for an unknown filter (docs/vendors/incidentio.md).
        self.check_filters(f, ("deduplication_key", "status", "alert_source", "created_at",
                               "updated_at"),
                           ("alert_group_id", "attributes", "has_notes", "tags",
                            "include_maintenance_window"))
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
                                                          "updated_at", precise=True):
                continue
            if "created_at" in f and not self._date_match(a.created, f["created_at"],
                                                          "created_at"):
                continue
            rows.append(a)
        return self.page(request, "alerts", rows, size, lambda a: a.id, self.alert_json)

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
        return self.page(request, "incident_alerts", rows, size, lambda r: r["id"])
