"""Splunk On-Call request checking (issue 19): strict auth on every route, even though the spec
marks the X-VO headers optional (so a spec-driven fuzzer never leaves them out), and fields the
simulator does not model are refused (A1, spec ``responses``)."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from syncd.simulators.victorops import REST_ALERT, V1, VictorOpsSimulator

ROUTES = [(method, route.path) for route in VictorOpsSimulator(seed=7)._vendor_routes
          if isinstance(route, Route) and route.path != REST_ALERT
          for method in sorted(route.methods or ()) if method != "HEAD"]


def concrete(path: str) -> str:
    return (path.replace("{incidentNumber}", "1").replace("{team}", "team-pl4tf0rm00000001")
            .replace("{user}", "alice").replace("{policy}", "pol-pl4tf0rm0000prim")
            .replace("{publicId}", "x").replace("{policySlug}", "pol-pl4tf0rm0000prim"))


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_route_refuses_unauthenticated_and_wrong_credentials(
        sim: VictorOpsSimulator, method: str, path: str) -> None:
    sim.alert(dedup="auth", title="x")
    before = sim.canonical_incidents()
    url = concrete(path)
    body = {"userName": "alice", "incidentNames": ["1"]} if method != "GET" else None
    async with sim.client() as c:
        missing = await c.request(method, url, json=body)
        only_id = await c.request(method, url, json=body, headers={"X-VO-Api-Id": sim.API_ID})
        wrong = await c.request(method, url, json=body, headers={
            "X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": "not-the-key"})
        read_only = await c.request(method, url, json=body, headers={
            "X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": sim.READ_ONLY_KEY})
    assert missing.status_code == 401 and only_id.status_code == 401
    assert missing.json() == {"message": "Authentication parameters missing"}
    assert wrong.status_code == 403
    if method != "GET":
        assert read_only.status_code == 403
    assert sim.canonical_incidents() == before


async def test_multi_responder_incidents_are_not_simulated(sim: VictorOpsSimulator,
                                                           api: httpx.AsyncClient) -> None:
    body = {"summary": "s", "details": "d", "userName": "alice",
            "targets": [{"type": "User", "slug": "bob"}]}
    r = await api.post(f"{V1}/incidents", json={**body, "isMultiResponder": True})
    assert r.status_code == 400 and "not simulated: isMultiResponder" in r.json()["message"]
    assert sim.incidents == {}
    ok = await api.post(f"{V1}/incidents", json={**body, "isMultiResponder": False})
    assert ok.status_code == 200


async def test_an_unknown_field_is_refused_not_dropped(sim: VictorOpsSimulator,
                                                       api: httpx.AsyncClient) -> None:
    sim.alert(dedup="x", title="x")
    r = await api.patch(f"{V1}/incidents/ack", json={
        "userName": "alice", "incidentNames": ["1"], "notify": False})
    assert r.status_code == 400 and r.json() == {"message": "not simulated: notify"}
    assert sim.incidents[1].phase == "UNACKED"


@pytest.mark.parametrize("query", ["daysForward=soon", "step=first"])
async def test_schedule_query_numbers_are_checked(api: httpx.AsyncClient, query: str) -> None:
    r = await api.get(f"/api-public/v2/team/team-pl4tf0rm00000001/oncall/schedule?{query}")
    assert r.status_code == 400 and set(r.json()) == {"message"}
