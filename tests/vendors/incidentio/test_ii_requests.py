"""incident.io request checking and the documented cross-field rules of the writes a spec-driven
fuzzer rarely satisfies (issue 19): attachments (notes 4.9), escalations (notes 6) and schedule
override writes (notes 5), each with a valid and an invalid case; plus fields and query values
the simulator does not model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from syncd.simulators.base import iso
from syncd.simulators.incidentio import IncidentIOSimulator


def live_incident(sim: IncidentIOSimulator) -> str:
    status = sim.first_status("live").id
    inc = sim._new_incident(name="live", status_id=status, severity_id=sim.severities[0].id,
                            creator={"api_key": {"id": "k", "name": "k"}})
    return inc.id


@pytest.mark.parametrize(("resource", "status", "code"), [
    ({"resource_type": "arbitrary_url", "url": "https://example.com/a", "title": "a"}, 201, None),
    ({"resource_type": "arbitrary_url", "external_id": "https://example.com/b"}, 201, None),
    ({"resource_type": "arbitrary_url", "title": "no link"}, 422, "is_required"),
    ({"resource_type": "jira_issue", "external_id": "OPS-1"}, 422, "integration_not_installed"),
    ({"resource_type": "fax", "external_id": "1"}, 422, "invalid_value"),
])
async def test_attachment_rules(sim: IncidentIOSimulator, http: httpx.AsyncClient,
                                resource: dict[str, Any], status: int, code: str | None) -> None:
    iid = live_incident(sim)
    r = await http.post("/v1/incident_attachments", json={"incident_id": iid,
                                                          "resource": resource})
    assert r.status_code == status, r.text
    if code:
        assert r.json()["errors"][0]["code"] == code
        assert sim.attachments == []
    else:
        found = await http.get("/v1/incident_attachments", params={"incident_id": iid})
        assert len(found.json()["incident_attachments"]) == 1


async def test_attachment_list_checks_resource_type(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/incident_attachments?resource_type=AAA&external_id=x")
    assert r.status_code == 422 and r.json()["errors"][0]["source"]["field"] == "resource_type"


@pytest.mark.parametrize(("extra", "status"), [
    ({"escalation_path_id": "PATH"}, 201),
    ({"user_ids": ["USER"]}, 201),
    ({}, 422),  # exactly one of escalation_path_id or user_ids
    ({"escalation_path_id": "PATH", "user_ids": ["USER"]}, 422),
    ({"user_ids": []}, 422),
    ({"escalation_path_id": "01HNOPATH0000000000000000"}, 422),
    ({"user_ids": ["USER"], "incident_id": "01HNOINCIDENT00000000000000"}, 422),
])
async def test_escalation_create_rules(sim: IncidentIOSimulator, http: httpx.AsyncClient,
                                       extra: dict[str, Any], status: int) -> None:
    user = next(iter(sim.users))
    body = {k: (sim.path_id if v == "PATH" else [user] if v == ["USER"] else v)
            for k, v in extra.items()}
    before = len(sim.escalations)
    r = await http.post("/v2/escalations", json={"idempotency_key": "k1", "title": "page",
                                                 **body})
    assert r.status_code == status, r.text
    assert len(sim.escalations) == before + (status == 201)
    if status == 201:  # a repeated idempotency key returns the existing escalation
        again = await http.post("/v2/escalations", json={"idempotency_key": "k1",
                                                         "title": "page", **body})
        assert again.json()["escalation"]["id"] == r.json()["escalation"]["id"]
        assert len(sim.escalations) == before + 1


@pytest.mark.parametrize(("body", "status"), [
    ({"response": "ack"}, 200),
    ({"response": "snooze", "snooze_details": {"snooze_until": "FUTURE"}}, 200),
    ({"response": "snooze"}, 422),  # snooze needs snooze_details
    ({"response": "snooze", "snooze_details": {"snooze_until": "PAST"}}, 422),
    ({"response": "nack"}, 422),  # an API key cannot nack
    ({"response": "later"}, 422),
])
async def test_escalation_respond_rules(sim: IncidentIOSimulator, http: httpx.AsyncClient,
                                        body: dict[str, Any], status: int) -> None:
    sim.alert(dedup="esc", title="page me")
    esc = next(iter(sim.escalations.values()))
    now = sim.clock.now()
    details = body.get("snooze_details")
    if details:
        when = now + timedelta(hours=1) if details["snooze_until"] == "FUTURE" \
            else now - timedelta(hours=1)
        body = {**body, "snooze_details": {"snooze_until": iso(when)}}
    r = await http.post(f"/v2/escalations/{esc.id}/actions/respond", json=body)
    assert r.status_code == status, r.text
    assert esc.status == {"ack": "acked", "snooze": "snoozed"}.get(body["response"], "triggered") \
        if status == 200 else esc.status == "triggered"


@pytest.mark.parametrize(("change", "status"), [
    ({}, 201),
    ({"user": {"slack_user_id": "U0SIM0003"}}, 201),
    ({"end_at": "START"}, 422),  # end must be after start
    ({"layer_id": "01HLNOTALAYER0000000000000"}, 422),
    ({"rotation_id": "01HONOTAROTATION0000000000"}, 422),
    ({"user": {"email": "nobody@example.com"}}, 422),
    ({"user": {}}, 422),
])
async def test_override_create_rules(sim: IncidentIOSimulator, http: httpx.AsyncClient,
                                     change: dict[str, Any], status: int) -> None:
    sched = next(iter(sim.schedules.values()))
    now = sim.clock.now().replace(microsecond=0)
    body: dict[str, Any] = {"schedule_id": sched.id, "rotation_id": sched.rotation_id,
                            "layer_id": sched.layer_id, "start_at": iso(now),
                            "end_at": iso(now + timedelta(hours=2)),
                            "user": {"email": "erin@example.com"}, **change}
    if body["end_at"] == "START":
        body["end_at"] = body["start_at"]
    seeded = len(sim.overrides)
    r = await http.post("/v2/schedule_overrides", json=body)
    assert r.status_code == status, r.text
    assert len(sim.overrides) - seeded == (status == 201)


async def test_override_update_rules(sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    sched = next(iter(sim.schedules.values()))
    now = sim.clock.now().replace(microsecond=0)
    layer = {"rotation_id": sched.rotation_id, "layer_id": sched.layer_id}
    created = await http.post("/v2/schedule_overrides", json={
        "schedule_id": sched.id, **layer, "start_at": iso(now),
        "end_at": iso(now + timedelta(hours=2)), "user": {"email": "erin@example.com"}})
    oid = created.json()["override"]["id"]
    same_user = {**layer, "user": {"email": "erin@example.com"}, "start_at": iso(now)}
    widened = await http.put(f"/v2/schedule_overrides/{oid}", json={
        **same_user, "end_at": iso(now + timedelta(hours=5))})
    assert widened.status_code == 200
    assert sim.overrides[oid].end == now + timedelta(hours=5)
    for bad in ({**same_user, "end_at": iso(now)},  # end before start
                {**same_user, "end_at": iso(now + timedelta(hours=1)),
                 "user": {"email": "dave@example.com"}},  # the user cannot change
                {**same_user, "end_at": iso(now + timedelta(hours=1)),
                 "schedule_id": sched.id}):  # not part of the PUT body
        r = await http.put(f"/v2/schedule_overrides/{oid}", json=bad)
        assert r.status_code in (400, 422), r.text
        assert sim.overrides[oid].end == now + timedelta(hours=5)


@pytest.mark.parametrize("field", ["custom_field_entries", "incident_role_assignments",
                                   "slack_channel_name_override"])
async def test_documented_create_fields_the_simulator_does_not_model_are_refused(
        sim: IncidentIOSimulator, http: httpx.AsyncClient, field: str) -> None:
    r = await http.post("/v2/incidents", json={
        "idempotency_key": "k", "visibility": "public", "severity_id": sim.severities[0].id,
        field: []})
    assert r.status_code == 400
    assert r.json()["errors"][0] == {"code": "not_simulated",
                                     "message": f"not simulated: {field}",
                                     "source": {"field": field}}
    assert sim.incidents == {}


async def test_edit_with_a_call_url_is_refused(sim: IncidentIOSimulator,
                                               http: httpx.AsyncClient) -> None:
    iid = live_incident(sim)
    r = await http.post(f"/v2/incidents/{iid}/actions/edit", json={
        "notify_incident_channel": False, "incident": {"name": "x", "call_url": "https://z"}})
    assert r.status_code == 400 and "not simulated: incident.call_url" in r.text
    assert sim.incidents[iid].name == "live"


@pytest.mark.parametrize("query", ["include_inactive=AAA", "page_size=many"])
async def test_user_list_query_is_checked(http: httpx.AsyncClient, query: str) -> None:
    r = await http.get(f"/v2/users?{query}")
    assert r.status_code == 422 and r.json()["type"] == "validation_error"


async def test_include_inactive_is_accepted(http: httpx.AsyncClient) -> None:
    r = await http.get("/v2/users?include_inactive=true")
    assert r.status_code == 200 and len(r.json()["users"]) == 6
