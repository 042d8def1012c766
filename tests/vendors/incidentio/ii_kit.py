"""incident.io's contract kit (see tests/vendors/contract_kit.py): every implemented operation
answers what the official spec says.

The spec is ../shared/vendor-specs/incidentio/openapi.json (OpenAPI 3.0.3, 7.8 MB), read once
per session. Responses are validated against the operation's declared response schema with
openapi-schema-validator's OAS 3.0 validator (faster than building openapi-core's full spec,
which takes ~8 s, and the same schema semantics).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from contract_kit import ContractKit, Recorder
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from syncd.simulators.base import Simulator, iso
from syncd.simulators.incidentio import (
    ALERT_SOURCE_ID,
    ALERT_SOURCE_TOKEN,
    DEFAULT_API_KEY,
    IncidentIOSimulator,
)

HEADERS = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
SPEC_URI = "urn:incidentio-openapi"

# Tolerated deviations from the official spec, in ONE place, with reasons (vendor-notes 11):
TOLERATED: dict[tuple[str, str], str] = {
    # The spec declares no body for these 200s; the vendor sends an empty body (notes 6).
    ("POST", "/v2/escalations/{escalation_id}/actions/respond"): "200 without a schema",
    ("POST", "/v2/escalations/{id}/actions/cancel"): "200 without a schema",
    ("DELETE", "/v2/schedule_overrides/{id}"): "204 without a body",
}
# Not deviations in our answers but in the spec, which the validator is told about:
# - nothing is marked nullable although optional fields may be absent; we omit them instead of
#   sending null, so no relaxation is needed for the simulator's own answers;
# - ErrorSource requires both field and pointer, but the documented 422 example has only field
#   (notes 11): ``pointer`` is not required below.




def load_spec(vendor_specs: Path) -> tuple[dict[str, Any], Registry]:
    data = json.loads((vendor_specs / "incidentio" / "openapi.json").read_text())
    source = data["components"]["schemas"]["ErrorSource"]
    source["required"] = [r for r in source.get("required", []) if r != "pointer"]
    return data, Registry().with_resource(SPEC_URI, Resource.from_contents(
        data, default_specification=DRAFT4))


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")


def _operation(spec: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    best = None
    for template, ops in spec["paths"].items():
        if method.lower() in ops and _template_regex(template).match(path):
            # Prefer literal segments over parameters (/v2/incidents/x vs /v2/{...}).
            score = template.count("{")
            if best is None or score < best[0]:
                best = (score, template, ops[method.lower()])
    assert best is not None, f"{method} {path} is not in the official spec"
    return best[1], best[2]


def validate(spec: dict[str, Any], registry: Registry, method: str, path: str, status: int,
             body: Any) -> str:
    template, op = _operation(spec, method, path)
    declared = op["responses"].get(str(status))
    assert declared is not None, f"{method} {template} never answers {status}"
    schema = declared.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        assert (method, template) in TOLERATED, f"{method} {template} {status} has no schema"
        return template
    ref = schema["$ref"]
    OAS30Validator({"$ref": SPEC_URI + ref}, registry=registry).validate(body)
    return template


def check(spec: tuple[dict[str, Any], Registry], sim: Simulator, request: httpx.Request,
          response: httpx.Response) -> str:
    body = response.json() if response.content else None
    template = validate(*spec, request.method, request.url.path, response.status_code, body)
    return f"{request.method} {template}"


async def exercise(sim: Simulator, rec: Recorder) -> None:
    """Call every implemented operation (and some failures)."""
    assert isinstance(sim, IncidentIOSimulator)
    sim.alert(dedup="disk", title="Disk full", severity="sev1")
    sim.alert(dedup="cpu", title="CPU")
    sim.seed_incidents(3)
    inc = sim.canonical_incidents()[0]["id"]
    esc = next(iter(sim.escalations))
    alert = next(iter(sim.alerts))
    sched = next(iter(sim.schedules.values()))
    now = sim.clock.now()
    async with httpx.AsyncClient(transport=rec, base_url="http://sim.localhost",
                                 headers=HEADERS) as c:
        await c.get("/v1/identity")
        await c.get("/v1/severities")
        await c.get("/v1/incident_statuses")
        await c.get("/v1/incident_types")
        await c.get("/v2/incidents", params={"page_size": 2})
        await c.get("/v2/incidents", params={"status_category[one_of]": "triage",
                                             "updated_at[gte]": now.date().isoformat()})
        await c.get(f"/v2/incidents/{inc}")
        await c.post("/v2/incidents", json={"idempotency_key": "c1", "visibility": "public",
                                            "name": "API", "severity_id": sim.severities[1].id})
        await c.post("/v2/incidents", json={"idempotency_key": "c2", "visibility": "public"})
        await c.post(f"/v2/incidents/{inc}/actions/edit", json={
            "incident": {"severity_id": sim.severities[0].id}, "notify_incident_channel": False})
        await c.get("/v2/incident_updates", params={"incident_id": inc})
        await c.post("/v1/incident_attachments", json={"incident_id": inc, "resource": {
            "resource_type": "arbitrary_url", "url": "https://example.com/x"}})
        await c.get("/v1/incident_attachments", params={"incident_id": inc})
        await c.get("/v2/escalations", params={"page_size": 50})
        await c.get(f"/v2/escalations/{esc}")
        await c.post("/v2/escalations", json={"idempotency_key": "e1", "title": "Help",
                                              "user_ids": [next(iter(sim.users))]})
        await c.post(f"/v2/escalations/{esc}/actions/respond", json={"response": "ack"})
        await c.post(f"/v2/escalations/{esc}/actions/respond", json={"response": "nack"})
        await c.post(f"/v2/escalations/{esc}/actions/cancel")
        await c.get("/v2/escalation_paths")
        await c.get(f"/v2/escalation_paths/{sim.path_id}")
        await c.get("/v2/alerts", params={"page_size": 10})
        await c.get(f"/v2/alerts/{alert}")
        await c.post(f"/v2/alerts/{alert}/actions/resolve")
        await c.get("/v2/incident_alerts", params={"page_size": 10, "incident_id": inc})
        await c.get("/v2/users")
        await c.get(f"/v2/users/{next(iter(sim.users))}")
        await c.get("/v2/schedules")
        await c.get(f"/v2/schedules/{sched.id}")
        await c.get("/v2/schedule_entries", params={
            "schedule_id": sched.id, "entry_window_start": iso(now),
            "entry_window_end": iso(now + timedelta(days=9))})
        body = {"schedule_id": sched.id, "rotation_id": sched.rotation_id,
                "layer_id": sched.layer_id, "start_at": iso(now),
                "end_at": iso(now + timedelta(hours=1)), "user": {"email": "erin@example.com"}}
        created = await c.post("/v2/schedule_overrides", json=body)
        oid = created.json()["override"]["id"]
        await c.get("/v2/schedule_overrides", params={"schedule_id": sched.id})
        await c.get(f"/v2/schedule_overrides/{oid}")
        await c.put(f"/v2/schedule_overrides/{oid}", json={
            k: v for k, v in body.items() if k != "schedule_id"})
        await c.delete(f"/v2/schedule_overrides/{oid}")
        await schedules_and_paths(c, sim)
        await c.get("/v2/incidents/01HNOTFOUND000000000000000")
        await c.get("/v2/incidents", params={"page_size": 900})
        sim.faults.rate_limit_rate = 1.0
        await c.get("/v1/severities")
        sim.faults.rate_limit_rate = 0.0
    async with httpx.AsyncClient(transport=rec, base_url="http://sim.localhost") as anon:
        await anon.get("/v2/incidents")
        await anon.post(f"/v2/alert_events/http/{ALERT_SOURCE_ID}",
                        params={"token": ALERT_SOURCE_TOKEN},
                        json={"title": "t", "status": "firing", "deduplication_key": "k"})


NY_ROTATION = {
    "name": "Days", "users": [{"email": "bob@example.com"}, {"email": "carol@example.com"}],
    "handover_start_at": "2026-10-05T13:00:00Z", "layers": [{"name": "Layer 1"}],
    "handovers": [{"interval_type": "daily", "interval": 1}],
    "working_intervals": [{"weekday": "monday", "start_time": "09:00", "end_time": "17:00"}],
}


async def schedules_and_paths(c: httpx.AsyncClient, sim: IncidentIOSimulator) -> None:
    """The migration operations: schedule definitions, their preview, escalation paths."""
    created = await c.post("/v2/schedules", json={"schedule": {
        "name": "Contract", "timezone": "America/New_York", "annotations": {"k": "v"},
        "config": {"rotations": [NY_ROTATION]}}})
    sid = created.json()["schedule"]["id"]
    rotation = created.json()["schedule"]["config"]["rotations"][0]
    later = {**NY_ROTATION, "id": rotation["id"], "effective_from": "2026-12-07T14:00:00Z",
             "layers": rotation["layers"], "users": [{"email": "dave@example.com"}]}
    await c.put(f"/v2/schedules/{sid}", json={"schedule": {"name": "Contract 2", "config": {
        "rotations": [{**NY_ROTATION, "id": rotation["id"], "layers": rotation["layers"]},
                      later]}}})
    await c.put(f"/v2/schedules/{sid}", json={"schedule": {"timezone": "Europe/London"}})
    await c.get(f"/v2/schedules/{sid}")
    await c.post(f"/v2/schedules/{sid}/actions/preview_entries", json={
        "entry_window_start": "2026-10-26T00:00:00Z", "entry_window_end": "2027-06-01T00:00:00Z",
        "schedule": {"config": {"rotations": [NY_ROTATION]}}})
    await c.post("/v2/schedules", json={"schedule": {"name": "x", "timezone": "UTC",
                                                     "config": {"rotations": []}}})
    user = next(iter(sim.users))
    made = await c.post("/v2/escalation_paths", json={"name": "Contract path", "path": [
        {"id": "n1", "type": "level", "level": {
            "targets": [{"type": "schedule", "id": sid, "urgency": "high",
                         "schedule_mode": "currently_on_call"}], "time_to_ack_seconds": 60}},
        {"id": "n2", "type": "if_else", "if_else": {
            "conditions": [{"subject": "alert.priority", "operation": "one_of",
                            "param_bindings": [{"array_value": [{"literal": "P1"}]}]}],
            "then_path": [{"id": "n3", "type": "level", "level": {
                "targets": [{"type": "user", "id": user, "urgency": "high"}]}}],
            "else_path": []}},
        {"id": "n4", "type": "repeat", "repeat": {"repeat_times": 2, "to_node": "n1"}}]})
    pid = made.json()["escalation_path"]["id"]
    await c.put(f"/v2/escalation_paths/{pid}", json={"name": "Contract path 2", "path": [
        {"id": "n1", "type": "level", "level": {
            "targets": [{"type": "user", "id": user, "urgency": "low"}]}}]})
    await c.get("/v2/escalation_paths", params={"page_size": 1})
    await c.get(f"/v2/escalation_paths/{pid}")
    await c.post("/v2/escalation_paths", json={"name": "bad", "path": [
        {"id": "r", "type": "repeat", "repeat": {"repeat_times": 1, "to_node": "nowhere"}}]})


async def page_ids(http: httpx.AsyncClient, size: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        params: dict[str, Any] = {"page_size": size}
        if after:
            params["after"] = after
        body = (await http.get("/v2/incidents", params=params)).json()
        pages.append([i["id"] for i in body["incidents"]])
        after = body["pagination_meta"].get("after")
        if not after:
            return pages


KIT = ContractKit(
    name="incidentio",
    make=lambda: IncidentIOSimulator(seed=3),
    headers=HEADERS,
    load_spec=load_spec,
    check=check,
    exercise=exercise,
    statuses={200, 201, 202, 204, 401, 404, 422, 429},
    wrong_body=("GET", "/v1/severities", 200, {"severities": [{"id": 1}]}),
    list_path="/v2/incidents",
    auth_failures=[({"Authorization": ""}, 401), ({"Authorization": "Bearer nope"}, 401),
                   ({"Authorization": f"Basic {DEFAULT_API_KEY}"}, 401)],
    page_ids=page_ids,
    rate_limited=lambda r: r.status_code == 429 and r.json()["type"] == "too_many_requests"
    and int(r.headers["Retry-After"]) >= 1 and r.headers["X-RateLimit-Remaining"] == "0",
    error_shape=lambda r: {"type", "status", "request_id", "errors"} <= set(r.json()),
)
