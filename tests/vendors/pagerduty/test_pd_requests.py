"""PagerDuty request checking: documented fields are applied or refused, never ignored, and
query enums/booleans are checked (issue 19; notes §5.3-§5.5, the spec's query parameters)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from syncd.simulators.pagerduty import EP_DBA, EP_SRE, SERVICE_WEB, PagerDutySimulator

BOB = {"id": "PUSR002", "type": "user_reference"}


def change(**fields: Any) -> dict[str, Any]:
    return {"incident": {"type": "incident_reference", **fields}}


async def test_put_assignments_reassigns_and_triggers_an_acknowledged_incident(
        sim: PagerDutySimulator, api: httpx.AsyncClient, from_header: dict[str, str]) -> None:
    iid = sim.alert(dedup="re-a", title="disk")["incident_id"]
    sim.act(iid, "acknowledge")
    r = await api.put(f"/incidents/{iid}", headers=from_header,
                      json=change(assignments=[{"assignee": BOB}]))
    assert r.status_code == 200, r.text
    inc = r.json()["incident"]
    assert [a["assignee"]["id"] for a in inc["assignments"]] == ["PUSR002"]
    assert inc["assigned_via"] == "direct_assignment"
    assert inc["status"] == "triggered"  # reassigning re-triggers for the new assignee
    logs = (await api.get(f"/incidents/{iid}/log_entries")).json()["log_entries"]
    assert logs[0]["type"] == "assign_log_entry"


async def test_put_escalation_policy_moves_the_incident_to_the_new_policy(
        sim: PagerDutySimulator, api: httpx.AsyncClient, from_header: dict[str, str]) -> None:
    iid = sim.alert(dedup="re-b", title="db")["incident_id"]
    assert sim.incidents[iid].ep_id == EP_SRE
    r = await api.put(f"/incidents/{iid}", headers=from_header, json=change(
        escalation_policy={"id": EP_DBA, "type": "escalation_policy_reference"}))
    assert r.status_code == 200, r.text
    inc = r.json()["incident"]
    assert inc["escalation_policy"]["id"] == EP_DBA
    expected = sim._level_users(EP_DBA, 1, sim.clock.now())
    assert [a["assignee"]["id"] for a in inc["assignments"]] == expected


@pytest.mark.parametrize("item", [
    {"assignments": [{"assignee": BOB}],
     "escalation_policy": {"id": EP_DBA, "type": "escalation_policy_reference"}},
    {"assignments": [{"assignee": {"id": "PNOBODY", "type": "user_reference"}}]},
    {"escalation_policy": {"id": "PNOPE", "type": "escalation_policy_reference"}},
])
async def test_bad_reassignments_are_refused(sim: PagerDutySimulator, api: httpx.AsyncClient,
                                             from_header: dict[str, str],
                                             item: dict[str, Any]) -> None:
    iid = sim.alert(dedup="re-c", title="x")["incident_id"]
    before = sim.incidents[iid].assignees
    r = await api.put(f"/incidents/{iid}", headers=from_header, json=change(**item))
    assert r.status_code == 400 and r.json()["error"]["code"] == 2001
    assert sim.incidents[iid].assignees == before


async def test_a_resolved_incident_cannot_be_reassigned_but_reopens_to_the_assignees(
        sim: PagerDutySimulator, api: httpx.AsyncClient, from_header: dict[str, str]) -> None:
    iid = sim.alert(dedup="re-d", title="x")["incident_id"]
    sim.act(iid, "resolve")
    refused = await api.put(f"/incidents/{iid}", headers=from_header,
                            json=change(assignments=[{"assignee": BOB}]))
    assert refused.status_code == 400
    reopened = await api.put(f"/incidents/{iid}", headers=from_header, json=change(
        status="triggered", assignments=[{"assignee": BOB}]))
    assert reopened.status_code == 200, reopened.text
    inc = reopened.json()["incident"]
    assert inc["status"] == "triggered"  # "assigned based on assignees ... in the request"
    assert [a["assignee"]["id"] for a in inc["assignments"]] == ["PUSR002"]


async def test_post_with_escalation_policy_uses_it(
        sim: PagerDutySimulator, api: httpx.AsyncClient, from_header: dict[str, str]) -> None:
    r = await api.post("/incidents", headers=from_header, json={"incident": {
        "type": "incident", "title": "routed",
        "service": {"id": SERVICE_WEB, "type": "service_reference"},
        "escalation_policy": {"id": EP_DBA, "type": "escalation_policy_reference"}}})
    assert r.status_code == 201, r.text
    assert r.json()["incident"]["escalation_policy"]["id"] == EP_DBA


@pytest.mark.parametrize(("field", "value"), [
    ("conference_bridge", {"conference_url": "https://meet.example.com/x"}),
    ("incident_type", {"name": "security"}),
    ("service", {"id": SERVICE_WEB, "type": "service_reference"}),
])
async def test_documented_fields_the_simulator_does_not_model_are_refused(
        sim: PagerDutySimulator, api: httpx.AsyncClient, from_header: dict[str, str],
        field: str, value: Any) -> None:
    iid = sim.alert(dedup="re-e", title="x")["incident_id"]
    r = await api.put(f"/incidents/{iid}", headers=from_header,
                      json=change(**{field: value}))
    assert r.status_code == 400
    assert r.json()["error"]["errors"] == [f"not simulated: incident.{field}"]


@pytest.mark.parametrize("item", [{}, {"type": "AAA"}])
async def test_the_incident_type_is_required_and_checked(
        sim: PagerDutySimulator, api: httpx.AsyncClient, from_header: dict[str, str],
        item: dict[str, Any]) -> None:
    iid = sim.alert(dedup="re-f", title="x")["incident_id"]
    r = await api.put(f"/incidents/{iid}", headers=from_header,
                      json={"incident": {**item, "title": "renamed"}})
    assert r.status_code == 400
    assert sim.incidents[iid].title == "x"


@pytest.mark.parametrize(("path", "query"), [
    ("/services", "include[]=AAA"),
    ("/services", "sort_by=AAA"),
    ("/escalation_policies", "sort_by=size"),
    ("/oncalls", "earliest=AAA"),
    ("/log_entries", "is_overview=maybe"),
    ("/incidents", "total=AAA"),
    ("/incidents", "time_zone=Not/AZone"),
    ("/incidents", "time_zone=America/New_York"),  # rendered in UTC only: not simulated
    ("/users/PUSR001", "include[]=AAA"),
    ("/priorities", "limit=ten"),
])
async def test_query_enums_and_booleans_are_checked(api: httpx.AsyncClient, path: str,
                                                    query: str) -> None:
    r = await api.get(f"{path}?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 2001


@pytest.mark.parametrize(("path", "query"), [
    ("/log_entries", "team_ids[]=PTEAM01"),
    ("/users", "team_ids[]=PTEAM01"),
    ("/schedules", "include_next_oncall_for_user=PUSR001"),
    ("/schedules/PSCHED1", "include_next_oncall_for_user=PUSR001"),
])
async def test_documented_query_parameters_not_modelled_are_refused(
        api: httpx.AsyncClient, path: str, query: str) -> None:
    """A parameter the spec documents for the operation but the simulator does not apply is
    refused as not simulated: an unfiltered 200 would tell a client its filter worked."""
    r = await api.get(f"{path}?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 2001
    assert "not simulated" in r.json()["error"]["errors"][0]


async def test_incident_log_entries_ignore_team_ids(sim: PagerDutySimulator,
                                                    api: httpx.AsyncClient) -> None:
    """listIncidentLogEntries documents no team_ids (only listLogEntries does), so there it is
    an unknown parameter, ignored as elsewhere, not refused as a documented one not simulated."""
    iid = sim.alert(dedup="log-team", title="disk")["incident_id"]
    plain = await api.get(f"/incidents/{iid}/log_entries")
    r = await api.get(f"/incidents/{iid}/log_entries?team_ids[]=PTEAM01")
    assert r.status_code == 200, r.text
    assert r.json()["log_entries"] == plain.json()["log_entries"] != []


async def test_services_sort_and_filter_by_name(api: httpx.AsyncClient) -> None:
    desc = (await api.get("/services?sort_by=name:desc")).json()["services"]
    assert [s["name"] for s in desc] == ["Web", "Database"]
    found = (await api.get("/services?query=dat")).json()["services"]
    assert [s["name"] for s in found] == ["Database"]
