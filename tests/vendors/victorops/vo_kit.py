"""Splunk On-Call's contract kit (see tests/vendors/contract_kit.py): every implemented
operation's responses validate against the official Swagger 2.0 spec 0.0.3
(../shared/vendor-specs/victorops/victorops-api-v1.yaml), with jsonschema against its
``definitions`` (openapi-core does not read Swagger 2.0; see VENDOR-CHECKLIST)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from contract_kit import ContractKit, Recorder, route_of

from syncd.simulators.base import Simulator
from syncd.simulators.victorops import REST_ALERT, VictorOpsSimulator

# Tolerated deviations from the 0.0.3 spec, in one place, with reasons.
DEVIATIONS: dict[tuple[str, str], Any] = {
    # The spec's 200 points to Notes, a copy-paste error (SOURCE.md); the 0.0.2 spec and the
    # CreatedIncident definition describe the real answer.
    ("POST", "/api-public/v1/incidents"): {"$ref": "#/definitions/CreatedIncident"},
    # Not in either spec; the official Go client reads a flat {users: [...]} (notes A5).
    ("GET", "/api-public/v2/user"): {"type": "object", "required": ["users"], "properties": {
        "users": {"type": "array", "items": {"$ref": "#/definitions/V1User"}}}},
}
# The REST endpoint (alert.victorops.com) is not part of the public API spec; its answer shape
# comes from the vendor notes A6 and is checked here against that shape instead.
REST_ANSWER = {"type": "object", "required": ["result"], "properties": {
    "result": {"enum": ["success", "failure"]}, "entity_id": {"type": "string"},
    "message": {"type": "string"}}}
# Error answers: the spec lists 400/401/403/404 without schemas; the simulator answers the
# {message} body the notes record (A1, part D).
ERROR = {"type": "object", "required": ["message"], "properties": {
    "message": {"type": "string"}}, "additionalProperties": False}
HEADERS = {"X-VO-Api-Id": VictorOpsSimulator.API_ID, "X-VO-Api-Key": VictorOpsSimulator.API_KEY}


def load_spec(vendor_specs: Path) -> dict[str, Any]:
    with open(vendor_specs / "victorops" / "victorops-api-v1.yaml") as f:
        return yaml.safe_load(f)  # type: ignore[no-any-return]


def check_body(spec: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    schema = DEVIATIONS.get((method, path)) if status < 300 else None
    if schema is None:
        op = spec["paths"][path][method.lower()]
        declared = op["responses"].get(str(status))
        assert declared is not None, f"{method} {path} never answers {status}"
        schema = declared.get("schema") or (ERROR if status >= 400 else None)
        assert schema is not None or body in ({}, None), f"{method} {path}: no schema"
        if schema is None:
            return
    validator = jsonschema.Draft4Validator({**schema, "definitions": spec["definitions"]})
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, f"{method} {path}: {errors[0].message} at {list(errors[0].path)}"


def check(spec: dict[str, Any], sim: Simulator, request: httpx.Request,
          response: httpx.Response) -> str | None:
    template, _args = route_of(sim, request.method, request.url.path)
    body = response.json() if response.content else None
    if template == REST_ALERT:
        jsonschema.validate(body, REST_ANSWER)
    else:
        check_body(spec, request.method, template, response.status_code, body)
    return f"{request.method} {template}"


async def exercise(sim: Simulator, rec: Recorder) -> None:
    assert isinstance(sim, VictorOpsSimulator)
    sim.ingest("syncd", {"message_type": "CRITICAL", "entity_id": "c-1", "host_name": "db1"})
    sim.ingest("syncd", {"message_type": "CRITICAL", "entity_id": "c-2"})
    sim.seed_incidents(3, state="resolved")
    sim.act("2", "acknowledge")
    team, pol = "team-pl4tf0rm00000001", "pol-pl4tf0rm0000prim"
    async with httpx.AsyncClient(transport=rec, base_url="http://sim.localhost",
                                 headers=HEADERS) as c:

        async def call(method: str, url: str, **kw: Any) -> Any:
            r = await c.request(method, url, **kw)
            assert r.status_code == 200, (method, url, r.text)
            return r.json() if r.content else None

        await call("GET", "/api-public/v1/incidents")
        await call("GET", "/api-public/v1/incidents/1")
        made = await call("POST", "/api-public/v1/incidents", json={
            "summary": "s", "details": "d", "userName": "alice",
            "targets": [{"type": "EscalationPolicy", "slug": pol}]})
        await call("PATCH", "/api-public/v1/incidents/ack", json={
            "userName": "syncd-bot", "incidentNames": ["1", "2", "404"]})
        await call("PATCH", "/api-public/v1/incidents/resolve", json={
            "userName": "syncd-bot", "incidentNames": ["1"]})
        await call("POST", "/api-public/v1/incidents/reroute", json={
            "userName": "alice", "reroutes": [{"incidentNumber": made["incidentNumber"],
                                               "targets": [{"type": "User", "slug": "bob"}]}]})
        await call("PATCH", "/api-public/v1/incidents/byUser/ack", json={"userName": "bob"})
        await call("PATCH", "/api-public/v1/incidents/byUser/resolve", json={"userName": "bob"})
        await call("GET", "/api-reporting/v2/incidents",
                   params={"currentPhase": "resolved,acknowledged,triggered"})
        await call("GET", "/api-public/v1/oncall/current")
        sched = await call("GET", f"/api-public/v2/team/{team}/oncall/schedule",
                           params={"daysForward": 14})
        await call("GET", "/api-public/v2/user/alice/oncall/schedule")
        current = sim.oncall_at(pol, 0, sim.clock.now())
        await call("PATCH", f"/api-public/v1/policies/{pol}/oncall/user",
                   json={"fromUser": current, "toUser": "frank"})
        roll = sched["schedules"][0]["schedule"][0]["rolls"][1]
        ov = await call("POST", "/api-public/v1/overrides", json={
            "username": roll["onCallUser"]["username"], "timezone": "Etc/UTC",
            "start": roll["start"], "end": roll["end"]})
        one = f"/api-public/v1/overrides/{ov['schedule']['publicId']}"
        await call("PUT", f"{one}/assignments/{pol}", json={"policy": pol, "username": "erin"})
        await call("GET", f"{one}/assignments/{pol}")
        await call("GET", f"{one}/assignments")
        await call("GET", "/api-public/v1/overrides")
        await call("GET", one)
        await call("DELETE", f"{one}/assignments/{pol}")
        await call("DELETE", one)
        await call("GET", "/api-public/v1/user")
        await call("GET", "/api-public/v2/user")
        await call("GET", "/api-public/v1/team")
        await call("GET", f"/api-public/v1/team/{team}/members")
        await call("GET", "/api-public/v1/policies")
        await call("GET", "/api-public/v1/org/routing-keys")
        rest = f"/integrations/generic/20131114/alert/{sim.REST_KEY}/syncd"
        for body in ({"message_type": "CRITICAL", "entity_id": "r"}, {"entity_id": "r"}):
            await c.post(rest, json=body)
        await c.get("/api-public/v1/incidents/999")  # 404
        await c.patch("/api-public/v1/incidents/ack", json={"userName": 5})  # 400


async def page_ids(http: httpx.AsyncClient, size: int) -> list[list[str]]:
    """Reporting v2 is the paged list (the public incident list is not paged, A3)."""
    pages, offset = [], 0
    while True:
        body = (await http.get("/api-reporting/v2/incidents", params={
            "currentPhase": "triggered", "offset": offset, "limit": size})).json()
        pages.append([i["incidentNumber"] for i in body["incidents"]])
        offset += size
        if offset >= body["total"]:
            return pages


KIT = ContractKit(
    name="victorops",
    make=lambda: VictorOpsSimulator(seed=7, rate_limits=False),
    headers=HEADERS,
    load_spec=load_spec,
    check=check,
    exercise=exercise,
    statuses={200, 400, 404},
    wrong_body=("GET", "/api-public/v1/incidents", 200,
                {"incidents": [{"currentPhase": "BOGUS"}]}),
    list_path="/api-public/v1/incidents",
    auth_failures=[({"X-VO-Api-Id": "", "X-VO-Api-Key": ""}, 401),
                   ({"X-VO-Api-Key": ""}, 401),
                   ({"X-VO-Api-Key": "not-the-key"}, 403),
                   ({"X-VO-Api-Id": "someone-else"}, 403)],
    page_ids=page_ids,
    # The 2018 limits answer 403 "Authentication failed or rate-limit reached" (spec).
    rate_limited=lambda r: r.status_code == 403
    and r.json() == {"message": "Authentication failed or rate-limit reached"},
    error_shape=lambda r: set(r.json()) == {"message"},
)
