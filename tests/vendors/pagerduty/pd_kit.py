"""PagerDuty's contract kit (see tests/vendors/contract_kit.py): its answers validate against
PagerDuty's official OpenAPI specs.

Every exchange the client (and a few raw calls for error paths) makes is recorded and checked
with openapi-core against ``rest-openapiv3.json`` / ``events-v2-openapiv3.json`` from
../shared/vendor-specs/pagerduty (never copied into this repo). The REST spec fails openapi-core's
own spec validation, so it is loaded with ``spec_validator_cls=None`` (VENDOR-CHECKLIST).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from contract_kit import ContractKit, Recorder, route_of
from openapi_core import OpenAPI
from openapi_core.configurations import Config
from openapi_core.testing import MockRequest, MockResponse

from syncd.model import NewIncident, Severity
from syncd.simulators.base import Simulator
from syncd.simulators.pagerduty import (
    EP_PLATFORM,
    FROM_EMAIL,
    ROUTING_KEY,
    SCHED_BUSINESS,
    SCHED_HALF_DAY,
    SCHED_PRIMARY,
    TOKEN,
    PagerDutySimulator,
)
from syncd.vendors.base import Action, Push
from syncd.vendors.pagerduty import PagerDutyClient

# ---------------------------------------------------------------------------------------------
# Tolerated deviations from the official spec, all in one place, each with its reason.
# ---------------------------------------------------------------------------------------------
NULLABLE = {
    # vendor-notes §10: null in real responses and in the spec's own examples, and DD 06-Types
    # says any non-required field may be null; the spec forgets `nullable: true`.
    ("Incident", "priority"), ("Incident", "resolved_at"), ("Incident", "resolve_reason"),
    ("Incident", "alert_grouping"), ("Incident", "first_trigger_log_entry"),
    ("Incident", "incident_key"),
    # vendor-notes §5.7: start/end are null for permanent on-call (direct user targets), and
    # schedule is null for them too.
    ("Oncall", "start"), ("Oncall", "end"), ("Oncall", "schedule"),
    # DD 06-Types: non-required fields may be null; the spec's own examples have null here.
    ("Priority", "html_url"), ("Service", "auto_resolve_timeout"),
    ("Service", "acknowledgement_timeout"),
    # The spec's own ScheduleLayer.end description: "If `null`, the layer does not end".
    ("ScheduleLayer", "end"),
}
LOG_ENTRY_ONEOF = (
    "vendor-notes §10: the log entry oneOf matches nothing (overlapping Channel alternatives; "
    "AcknowledgeLogEntry pins acknowledgement_log_entry while the base enum and real payloads "
    "say acknowledge_log_entry), so log entries validate against the base LogEntry schema")
INCLUDED_INCIDENT = (
    "notes §5.6: include[]=incidents expands LogEntry.incident into the full Incident, but the "
    "spec types it only as an IncidentReference (include[] expansions are not modelled); the "
    "same for GET /oncalls include[]=users, which expands Oncall.user into a User (notes §5.7)")
READ_ONLY_REFS = (
    "the base object's id/type are readOnly, so every reference in a request body "
    "(service, priority, user) is refused by a strict request validator, although the spec's own "
    "request examples send {id, type} references; readOnly is dropped for request checks")
STATUS_REMAP = {
    # vendor-notes §5.9/§10: the spec gives GET /schedules/{id}/overrides' success as 201, an
    # oddity; the simulator answers 200 like every other GET.
    ("get", "/schedules/{id}/overrides", 200): 201,
    # The spec lists no 400 for PUT /incidents/{id}, but the From-header rule (notes §1) and
    # invalid statuses produce one with the standard error object; checked against PUT
    # /incidents' 400.
    ("put", "/incidents/{id}", 400): 400,
}
CHECKED_AS = {
    # Answers the spec does not list for an operation, checked against a sibling operation's
    # identical error response: PUT /incidents/{id} against PUT /incidents (see STATUS_REMAP);
    # PUT /escalation_policies/{id} lists no 400, yet invalid input (num_loops out of range, an
    # unknown target) gets the standard error object, as POST /escalation_policies declares.
    ("put", "/incidents/{id}", 400): ("put", "/incidents"),
    ("put", "/escalation_policies/{id}", 400): ("post", "/escalation_policies"),
}
EVENTS_ERRORS = (
    "vendor-notes §7: the Events spec's 400/429 responses have a $ref string as description and "
    "no schema; the simulator follows DD's {status, message, errors} shape instead")


HEADERS = {"Authorization": f"Token token={TOKEN}",
           "Accept": "application/vnd.pagerduty+json;version=2"}
NULL_ONLY = {"type": "object", "nullable": True, "enum": [None]}


def _patched_rest(raw: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(raw)
    schemas = spec["components"]["schemas"]
    for schema, prop in NULLABLE:
        for part in schemas[schema].get("allOf", [schemas[schema]]):
            if prop in part.get("properties", {}):
                target = part["properties"][prop]
                if "type" in target:
                    target["nullable"] = True
                else:  # a $ref or oneOf: null needs its own branch under OAS 3.0 rules
                    part["properties"][prop] = {"anyOf": [target, NULL_ONLY]}
    for prop in schemas["Tag"]["allOf"][0]["properties"].values():  # READ_ONLY_REFS
        prop.pop("readOnly", None)
    for part in schemas["LogEntry"]["allOf"]:  # INCLUDED_INCIDENT
        if "incident" in part.get("properties", {}):
            part["properties"]["incident"] = {"anyOf": [
                {"$ref": "#/components/schemas/IncidentReference"},
                {"$ref": "#/components/schemas/Incident"}]}
    schemas["Oncall"]["properties"]["user"] = {"anyOf": [  # INCLUDED_INCIDENT, for users
        {"$ref": "#/components/schemas/UserReference"}, {"$ref": "#/components/schemas/User"}]}
    schemas["Channel"].pop("oneOf", None)  # LOG_ENTRY_ONEOF: its alternatives overlap
    for path in ("/log_entries", "/incidents/{id}/log_entries"):
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]
        schema = content["application/json"]["schema"]
        for part in schema["allOf"]:
            if "log_entries" in part.get("properties", {}):
                part["properties"]["log_entries"]["items"] = {
                    "$ref": "#/components/schemas/LogEntry"}
    return spec


def load_spec(vendor_specs: Path) -> tuple[dict[str, Any], OpenAPI, OpenAPI]:
    raw = json.loads((vendor_specs / "pagerduty" / "rest-openapiv3.json").read_text())
    events = json.loads((vendor_specs / "pagerduty" / "events-v2-openapiv3.json").read_text())
    config = Config(spec_validator_cls=None)
    return (raw, OpenAPI.from_dict(_patched_rest(raw), config=config),
            OpenAPI.from_dict(events, config=config))


def check(spec: tuple[dict[str, Any], OpenAPI, OpenAPI], sim: Simulator,
          request: httpx.Request, response: httpx.Response) -> str | None:
    raw, api, events = spec
    method, path = request.method.lower(), request.url.path
    template, view_args = route_of(sim, request.method, path)
    status = response.status_code
    kind = response.headers.get("content-type", "application/json").split(";")[0]
    if template == "/v2/enqueue":
        if status != 202:
            return None  # EVENTS_ERRORS
        mock = MockRequest("https://events.pagerduty.com", method, "/v2/enqueue",
                           data=request.content, headers=dict(request.headers))
        events.validate_request(mock)
        events.validate_response(mock, MockResponse(response.content, status_code=status,
                                                    content_type=kind))
        return f"POST {template}"
    assert method in raw["paths"].get(template, {}), f"{method} {template} not in the spec"
    body = request.content or None
    spec_status = STATUS_REMAP.get((method, template, status), status)
    mock_request = MockRequest("https://api.pagerduty.com", method, path,
                               path_pattern=template, view_args=view_args,
                               headers=dict(request.headers), data=body)
    if body is not None and status < 300:
        api.validate_request(mock_request)
    check_method, check_path = CHECKED_AS.get((method, template, status), (method, template))
    check_request = MockRequest("https://api.pagerduty.com", check_method, check_path,
                                path_pattern=check_path, view_args=view_args,
                                headers=dict(request.headers), data=body)
    api.validate_response(check_request, MockResponse(
        response.content, status_code=spec_status, content_type=kind))
    return f"{request.method} {template}"


async def exercise(sim: Simulator, rec: Recorder) -> None:
    assert isinstance(sim, PagerDutySimulator)
    creds = sim.describe("http://pd.localhost")["credentials"]
    settings = PagerDutyClient.Settings.model_validate({
        "vendor": "pagerduty", "base_url": "http://pd.localhost", "token": creds["token"],
        "from_email": FROM_EMAIL, "service_id": creds["service_id"],
        "routing_key": ROUTING_KEY})
    client = PagerDutyClient("pd", settings, transport=rec)
    a = sim.alert(dedup="contract-a", title="A", severity="sev2")["incident_id"]
    b = sim.alert(dedup="contract-b", title="B")["incident_id"]
    cursor = [p async for p in client.poll(None)][-1].cursor
    sim.act(b, "acknowledge")
    await client.push(Action.ACKNOWLEDGE, [Push(a, Action.ACKNOWLEDGE, "1")])
    await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "2", Severity.SEV1)])
    await client.push(Action.RESOLVE, [Push(a, Action.RESOLVE, "3")])
    await client.push(Action.REOPEN, [Push(a, Action.REOPEN, "4")])
    _ = [p async for p in client.poll(cursor)]
    await client.create(NewIncident(marker="syncd-c-1", title="Created", severity=Severity.SEV3))
    await client.create(NewIncident(marker="syncd-c-1", title="Created"))  # 400, found again
    now = sim.clock.now()
    await client.oncall(now, now + timedelta(days=1))
    await client.create_override(SCHED_PRIMARY, "bob@example.com", now, now + timedelta(hours=1))
    await exercise_migration(client, now)
    sim.seed_incidents(260)
    await client.push(Action.ACKNOWLEDGE, [Push(i, Action.ACKNOWLEDGE, "x") for i in list(
        sim.open_ids)[:3]])
    await client.aclose()

    async with httpx.AsyncClient(transport=rec, base_url="http://pd.localhost",
                                 headers=HEADERS) as raw:
        await raw.get(f"/incidents/{a}")
        await raw.get(f"/incidents/{a}/log_entries", params={"is_overview": "true"})
        await raw.get("/users/PUSR001")
        await raw.get("/users/me")
        await raw.get("/users", params={"query": "bob"})
        await raw.get("/services", params={"sort_by": "name"})
        await raw.get("/escalation_policies")
        await raw.get("/schedules")
        await raw.get(f"/schedules/{SCHED_PRIMARY}/overrides",
                      params={"since": "2024-01-01", "until": "2099-01-01"})
        await raw.get("/incidents/NOPE")  # 404
        await raw.get("/schedules", params={"include[]": "schedule_layers", "query": "SRE"})
        await raw.get(f"/schedules/{SCHED_PRIMARY}")  # no range: no entries
        await raw.get(f"/schedules/{SCHED_BUSINESS}", params={
            "since": "2026-10-30T00:00:00Z", "overflow": "true", "time_zone": "UTC"})
        await raw.get("/schedules/PNOPE")  # 404
        await raw.get("/escalation_policies/PNOPE")  # 404
        await raw.post("/schedules", json={"schedule": {  # 400: turn length not positive
            "type": "schedule", "time_zone": "UTC", "schedule_layers": [{
                "start": "2026-01-01T00:00:00Z", "rotation_virtual_start": "2026-01-01T00:00:00Z",
                "rotation_turn_length_seconds": 0,
                "users": [{"user": {"id": "PUSR001", "type": "user_reference"}}]}]}})
        await raw.put(f"/escalation_policies/{EP_PLATFORM}", json={"escalation_policy": {
            "type": "escalation_policy", "name": "x", "num_loops": 10, "escalation_rules": [
                {"escalation_delay_in_minutes": 5,
                 "targets": [{"id": "PUSR001", "type": "user_reference"}]}]}})  # 400
        await raw.get("/incidents", params={"limit": 100, "offset": 9950})  # 400 code 2002
        await raw.get("/incidents", headers={"Authorization": "Token token=nope"})  # 401
        await raw.put("/incidents", json={"incidents": [
            {"id": i, "type": "incident_reference", "status": "acknowledged"}
            for i in list(sim.incidents)[:251]]}, headers={"From": FROM_EMAIL})  # 413
        await raw.put(f"/incidents/{a}", json={"incident": {
            "type": "incident_reference", "status": "acknowledged"}})  # 400: no From
        await raw.put(f"/incidents/{b}", headers={"From": FROM_EMAIL}, json={"incident": {
            "type": "incident_reference", "status": "resolved"}})
        await raw.post("/v2/enqueue", json={
            "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "contract-c",
            "payload": {"summary": "C", "source": "test", "severity": "warning"}})
        sim.rate_scale = 1 / 960
        await raw.get("/priorities")
        await raw.get("/priorities")  # 429
        sim.rate_scale = 1.0


async def exercise_migration(client: PagerDutyClient, now: datetime) -> None:
    """Every schedule and escalation policy operation the migration client makes."""
    schedules = await client.read_schedules([SCHED_BUSINESS, SCHED_HALF_DAY])
    await client.rendered(SCHED_BUSINESS, now, now + timedelta(days=28))
    await client.preview(schedules[0], now, now + timedelta(days=28))
    new = await client.create_schedule(replace(schedules[0], overrides=()), "syncd-kit-1")
    await client.update_schedule(new, replace(schedules[1], overrides=()), "syncd-kit-1")
    await client.sync_overrides(new, schedules[0].overrides)
    await client.find_schedule("syncd-kit-1")
    policies = await client.read_policies([EP_PLATFORM])
    ep = await client.create_policy(policies[0], "syncd-kit-2")
    await client.update_policy(ep, policies[0], "syncd-kit-2")
    await client.read_policies()


async def page_ids(http: httpx.AsyncClient, size: int) -> list[list[str]]:
    pages, offset = [], 0
    while True:
        body = (await http.get("/incidents", params={
            "limit": size, "offset": offset, "date_range": "all"})).json()
        pages.append([i["id"] for i in body["incidents"]])
        if not body["more"]:
            return pages
        offset += size


def _error_shape(r: httpx.Response) -> bool:
    err = r.json().get("error")
    return isinstance(err, dict) and isinstance(err.get("code"), int) \
        and isinstance(err.get("message"), str)


KIT = ContractKit(
    name="pagerduty",
    make=lambda: PagerDutySimulator(seed=1),
    headers=HEADERS,
    load_spec=load_spec,
    check=check,
    exercise=exercise,
    statuses={200, 201, 202, 400, 401, 404, 413, 429},
    expected={
        "POST /incidents 400", "PUT /incidents/{id} 400", "GET /incidents 400",
        "GET /incidents 401", "PUT /incidents 413", "GET /priorities 429",
        "GET /incidents/{id} 404", "POST /schedules/{id}/overrides 201",
        "POST /schedules 201", "POST /schedules 400", "PUT /schedules/{id} 200",
        "GET /schedules/{id} 200", "GET /schedules/{id} 404", "POST /schedules/preview 200",
        "POST /escalation_policies 201", "PUT /escalation_policies/{id} 200",
        "PUT /escalation_policies/{id} 400", "GET /escalation_policies/{id} 200",
        "GET /escalation_policies/{id} 404",
    },
    wrong_body=("GET", "/priorities", 200, {"priorities": [{"id": 5}], "limit": "x"}),
    list_path="/incidents",
    auth_failures=[({"Authorization": ""}, 401), ({"Authorization": "Token token=nope"}, 401),
                   ({"Authorization": "Bearer nope"}, 401)],
    page_ids=page_ids,
    rate_limited=lambda r: r.status_code == 429 and r.json()["error"]["code"] == 2020
    and {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(r.headers),
    error_shape=_error_shape,
    unspecified={"GET /users/me": "answers an account-level key with a bare string error "
                                  "(notes §3), which the spec does not describe"},
)
