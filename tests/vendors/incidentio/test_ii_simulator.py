"""The incident.io simulator holds clients to the documented rules (vendor-notes 1-7)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from syncd.simulators.base import iso
from syncd.simulators.incidentio import (
    ALERT_SOURCE_ID,
    ALERT_SOURCE_TOKEN,
    DEFAULT_API_KEY,
    VIEWER_API_KEY,
    IncidentIOSimulator,
)

INTAKE = f"/v2/alert_events/http/{ALERT_SOURCE_ID}"


def envelope_ok(body: dict, status: int, type_: str) -> None:
    assert body["status"] == status and body["type"] == type_
    assert isinstance(body["request_id"], str) and body["errors"]
    assert {"code", "message"} <= set(body["errors"][0])


async def test_missing_key_gets_the_documented_401(sim: IncidentIOSimulator) -> None:
    async with sim.client() as anon:
        r = await anon.get("/v2/incidents")
    assert r.status_code == 401
    body = r.json()
    envelope_ok(body, 401, "authentication_error")
    assert body["errors"][0] == {"code": "missing_authorization_material",
                                 "message": "No authorization material provided in request"}
    async with sim.client(headers={"Authorization": "Bearer nope"}) as bad:
        assert (await bad.get("/v2/incidents")).status_code == 401


async def test_key_without_scope_gets_403(sim: IncidentIOSimulator) -> None:
    sim.alert(dedup="d1", title="disk")
    async with sim.client(headers={"Authorization": f"Bearer {VIEWER_API_KEY}"}) as viewer:
        assert (await viewer.get("/v2/incidents")).status_code == 200
        inc = (await viewer.get("/v2/incidents")).json()["incidents"][0]
        r = await viewer.post(f"/v2/incidents/{inc['id']}/actions/edit", json={
            "incident": {"severity_id": sim.severities[0].id}, "notify_incident_channel": False})
        assert r.status_code == 403
        envelope_ok(r.json(), 403, "resource_forbidden")
        r = await viewer.post("/v2/incidents", json={"idempotency_key": "k",
                                                     "visibility": "public"})
        assert r.status_code == 403


async def test_pagination_after_cursor_and_page_size_limit(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    sim.seed_incidents(260)
    r = await http.get("/v2/incidents", params={"page_size": 251})
    assert r.status_code == 422
    envelope_ok(r.json(), 422, "validation_error")
    seen, after = [], None
    while True:
        params = {"page_size": 250, **({"after": after} if after else {})}
        body = (await http.get("/v2/incidents", params=params)).json()
        seen += [i["id"] for i in body["incidents"]]
        assert body["pagination_meta"]["total_record_count"] == 260
        after = body["pagination_meta"].get("after")
        if not after:
            break
    assert len(seen) == len(set(seen)) == 260
    assert (await http.get("/v2/escalations", params={"page_size": 51})).status_code == 422
    assert (await http.get("/v2/alerts")).status_code == 422  # page_size is required


async def test_deep_object_filters(sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    sim.seed_incidents(3, state="resolved")
    sim.seed_incidents(2)
    r = await http.get("/v2/incidents", params=[("status_category[one_of]", "live"),
                                                ("status_category[one_of]", "triage")])
    assert len(r.json()["incidents"]) == 2
    r = await http.get("/v2/incidents", params={"status_category[one_of]": "active"})
    assert len(r.json()["incidents"]) == 2  # the slim vocabulary is accepted too
    r = await http.get("/v2/incidents", params={"status_category[not_in]": "closed"})
    assert len(r.json()["incidents"]) == 2
    today = sim.clock.now().date()
    r = await http.get("/v2/incidents", params={"updated_at[gte]": today.isoformat()})
    assert len(r.json()["incidents"]) == 5
    tomorrow = (today + timedelta(days=1)).isoformat()
    r = await http.get("/v2/incidents", params={"updated_at[gte]": tomorrow})
    assert r.json()["incidents"] == []
    r = await http.get("/v2/incidents", params={"updated_at[between]": tomorrow})
    assert r.status_code == 422


async def test_filters_the_simulator_cannot_apply_are_refused(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    """A documented filter the simulator does not model (roles and custom fields on incidents;
    tags, attributes, alert groups, notes, maintenance windows on alerts: spec ListIncidents,
    ListAlerts) is refused as not simulated, and an undocumented one is an unknown filter; an
    unfiltered 200 would tell a client its filter worked."""
    sim.seed_incidents(2)
    sim.alert(dedup="d", title="t")
    for params in ({"incident_role[01ROLE][one_of]": "01USER"},
                   {"custom_field[01FIELD][one_of]": "01OPTION"}):
        r = await http.get("/v2/incidents", params=params)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "not_simulated"
    for name in ("tags", "attributes", "alert_group_id", "has_notes",
                 "include_maintenance_window"):
        r = await http.get("/v2/alerts", params={"page_size": 5, f"{name}[one_of]": "x"})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "not_simulated", name
    r = await http.get("/v2/alerts", params={"page_size": 5, "colour[one_of]": "red"})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "invalid_filter"
    r = await http.get("/v2/alerts", params={"page_size": 5, "status[one_of]": "firing"})
    assert r.status_code == 200 and len(r.json()["alerts"]) == 1


async def test_create_requires_key_visibility_and_severity(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    r = await http.post("/v2/incidents", json={"visibility": "public"})
    assert r.status_code == 422 and r.json()["errors"][0]["source"]["field"] == "idempotency_key"
    r = await http.post("/v2/incidents", json={"idempotency_key": "k1", "visibility": "public",
                                               "name": "x"})
    assert r.status_code == 422
    assert r.json()["errors"][0] == {"code": "is_required",
                                     "message": "A severity is required to open an incident",
                                     "source": {"field": "severity_id"}}
    body = {"idempotency_key": "k1", "visibility": "public", "name": "x",
            "severity_id": sim.severities[2].id}
    first = await http.post("/v2/incidents", json=body)
    again = await http.post("/v2/incidents", json={**body, "name": "changed"})
    assert first.status_code == again.status_code == 200
    assert first.json()["incident"]["id"] == again.json()["incident"]["id"]
    assert len(sim.incidents) == 1


async def test_edit_allows_only_documented_status_moves(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    sim.alert(dedup="d", title="t")
    iid = next(iter(sim.incidents))
    st = {s.name: s.id for s in sim.statuses.values()}

    async def move(name: str) -> httpx.Response:
        return await http.post(f"/v2/incidents/{iid}/actions/edit", json={
            "incident": {"incident_status_id": st[name]}, "notify_incident_channel": False})

    assert (await move("Investigating")).status_code == 422  # triage -> live ("accept")
    assert (await move("Paused")).status_code == 422
    r = await move("Documenting")  # triage -> learning: resolving
    assert r.status_code == 200 and r.json()["incident"]["incident_status"]["category"] == (
        "learning")
    assert (await move("Closed")).status_code == 200  # learning -> closed
    r = await move("Documenting")  # a reopen-like move
    assert r.status_code == 422 and r.json()["type"] == "validation_error"
    r = await http.post(f"/v2/incidents/{iid}/actions/edit", json={"incident": {}})
    assert r.status_code == 422  # notify_incident_channel is required
    updates = (await http.get("/v2/incident_updates", params={"incident_id": iid})).json()
    assert [u["new_incident_status"]["name"] for u in updates["incident_updates"]][:2] == [
        "Closed", "Documenting"]


async def test_show_takes_id_or_reference_number_and_edit_the_id_only(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    """GET /v2/incidents/{id} takes the ID or "the numeric part of the reference" (notes 4.2);
    the edit names "the unique identifier of the incident" (spec, IncidentsV2 Edit ``id``), so
    an edit by reference must fail here as it would at incident.io, changing nothing."""
    body = {"idempotency_key": "k", "visibility": "public",
            "severity_id": sim.severities[0].id}
    inc = (await http.post("/v2/incidents", json=body)).json()["incident"]
    number = inc["reference"].removeprefix("INC-")
    assert (await http.get(f"/v2/incidents/{number}")).json()["incident"]["id"] == inc["id"]
    r = await http.get(f"/v2/incidents/{inc['reference']}")
    assert r.status_code == 404
    envelope_ok(r.json(), 404, "not_found")
    for ref in (number, inc["reference"]):
        r = await http.post(f"/v2/incidents/{ref}/actions/edit", json={
            "incident": {"name": "renamed"}, "notify_incident_channel": False})
        assert r.status_code == 404
    assert sim.incidents[inc["id"]].name == inc["name"]


async def test_escalation_respond_state_machine(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    sim.alert(dedup="d", title="t")
    esc = next(iter(sim.escalations.values()))
    url = f"/v2/escalations/{esc.id}/actions/respond"
    r = await http.post(url, json={"response": "nack"})
    assert r.status_code == 422  # a key cannot nack
    until = iso(sim.clock.now() + timedelta(minutes=10))
    r = await http.post(url, json={"response": "snooze", "snooze_details": {
        "snooze_until": until}})
    assert r.status_code == 200 and esc.status == "snoozed"
    await http.post("/_sim/clock", json={"advance": 601})
    assert esc.status == "triggered"  # the snooze timer ran on the sim clock
    assert (await http.post(url, json={"response": "ack"})).status_code == 200
    body = (await http.get(f"/v2/escalations/{esc.id}")).json()["escalation"]
    assert body["status"] == "acked" and body["events"][-1]["event"] == "acked"
    assert sim.canonical_incidents()[0]["state"] == "acknowledged"
    cancel = f"/v2/escalations/{esc.id}/actions/cancel"
    assert (await http.post(cancel)).status_code == 200
    assert (await http.post(url, json={"response": "ack"})).status_code == 422
    r = await http.get("/v2/escalations", params={"status[one_of]": "cancelled"})
    assert [e["id"] for e in r.json()["escalations"]] == [esc.id]


async def test_an_ack_changes_the_escalation_not_the_incident(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    """Nothing documents that an escalation ack bumps the incident's ``updated_at`` (notes 6:
    poll the escalations as a second feed "rather than relying on the incident feed"), so the
    simulator does not: a client finding acks in the incident feed alone fails here."""
    sim.alert(dedup="d", title="t")
    iid, esc = next(iter(sim.incidents)), next(iter(sim.escalations.values()))
    before = (await http.get(f"/v2/incidents/{iid}")).json()["incident"]["updated_at"]
    await http.post("/_sim/clock", json={"advance": 90})
    r = await http.post(f"/v2/escalations/{esc.id}/actions/respond", json={"response": "ack"})
    assert r.status_code == 200
    sim.act(iid, "acknowledge")  # a person acking changes nothing more
    after = (await http.get(f"/v2/incidents/{iid}")).json()["incident"]["updated_at"]
    assert after == before
    body = (await http.get(f"/v2/escalations/{esc.id}")).json()["escalation"]
    assert body["status"] == "acked" and body["updated_at"] > before


async def test_alert_intake_auth_dedup_and_resolve(sim: IncidentIOSimulator) -> None:
    event = {"title": "CPU", "status": "firing", "deduplication_key": "cpu-1"}
    async with sim.client() as tool:
        assert (await tool.post(INTAKE, json=event)).status_code == 401
        auth = {"Authorization": f"Bearer {ALERT_SOURCE_TOKEN}"}
        r = await tool.post(INTAKE, json=event, headers=auth)
        assert r.status_code == 202 and r.json()["deduplication_key"] == "cpu-1"
        r = await tool.post(INTAKE, json=event, params={"token": ALERT_SOURCE_TOKEN})
        assert r.status_code == 202
        assert len(sim.alerts) == 1 and len(sim.incidents) == 1  # deduplicated
        bad = {"title": "x", "status": "firing"}
        assert (await tool.post(INTAKE, json=bad, headers=auth)).status_code == 422
        r = await tool.post(INTAKE, json={**event, "status": "resolved"}, headers=auth)
        assert r.status_code == 202
    canon = sim.canonical_incidents()[0]
    assert canon["state"] == "resolved" and canon["dedup"] == "cpu-1"  # auto-declined triage
    assert next(iter(sim.escalations.values())).status == "cancelled"


async def test_rate_limit_token_bucket_429(sim: IncidentIOSimulator,
                                           http: httpx.AsyncClient) -> None:
    await http.post("/_sim/rate-limits", json={"scale": 0.005})  # 6 burst, 0.1/s
    statuses = [(await http.get("/v1/severities")).status_code for _ in range(8)]
    assert statuses[:6] == [200] * 6 and statuses[-1] == 429
    r = await http.get("/v1/severities")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    body = r.json()
    envelope_ok(body, 429, "too_many_requests")
    assert set(body["rate_limit"]) == {"name", "limit", "remaining", "retry_after"}
    await http.post("/_sim/clock", json={"advance": 20})
    ok = await http.get("/v1/severities")
    assert ok.status_code == 200 and "X-RateLimit-Remaining" in ok.headers


async def test_alert_source_limit_120_per_minute(sim: IncidentIOSimulator) -> None:
    sim.rate_scale = 0.05  # 6 per minute
    async with sim.client(params={"token": ALERT_SOURCE_TOKEN}) as tool:
        codes = [(await tool.post(INTAKE, json={"title": "t", "status": "firing",
                                                "deduplication_key": f"k{i}"})).status_code
                 for i in range(7)]
    assert codes == [202] * 6 + [429]


async def test_overrides_never_overlap_and_apply_to_entries(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    sched = next(iter(sim.schedules.values()))
    now = sim.clock.now().replace(microsecond=0)
    base = {"schedule_id": sched.id, "rotation_id": sched.rotation_id,
            "layer_id": sched.layer_id}
    first = await http.post("/v2/schedule_overrides", json={
        **base, "start_at": iso(now), "end_at": iso(now + timedelta(hours=4)),
        "user": {"email": "erin@example.com"}})
    assert first.status_code == 201
    second = await http.post("/v2/schedule_overrides", json={
        **base, "start_at": iso(now + timedelta(hours=2)), "end_at": iso(now + timedelta(hours=6)),
        "user": {"email": "dave@example.com"}})
    assert second.status_code == 201
    rows = (await http.get("/v2/schedule_overrides", params={"schedule_id": sched.id})).json()
    spans = [(o["user"]["email"], o["start_at"], o["end_at"]) for o in rows["overrides"]]
    assert spans == [("erin@example.com", iso(now).replace("Z", ".000000Z"),
                      iso(now + timedelta(hours=2)).replace("Z", ".000000Z")),
                     ("dave@example.com", iso(now + timedelta(hours=2)).replace("Z", ".000000Z"),
                      iso(now + timedelta(hours=6)).replace("Z", ".000000Z"))]
    assert first.json()["override"]["id"] not in {o["id"] for o in rows["overrides"]}
    entries = (await http.get("/v2/schedule_entries", params={
        "schedule_id": sched.id, "entry_window_start": iso(now),
        "entry_window_end": iso(now + timedelta(hours=3))})).json()["schedule_entries"]
    assert [e["user"]["email"] for e in entries["final"]] == ["erin@example.com",
                                                              "dave@example.com"]
    oid = second.json()["override"]["id"]
    layer = {k: v for k, v in base.items() if k != "schedule_id"}  # PUT's body has none
    r = await http.put(f"/v2/schedule_overrides/{oid}", json={
        **layer, "start_at": iso(now), "end_at": iso(now + timedelta(hours=6)),
        "user": {"email": "erin@example.com"}})
    assert r.status_code == 422  # the user cannot change
    assert (await http.delete(f"/v2/schedule_overrides/{oid}")).status_code == 204
    assert (await http.delete(f"/v2/schedule_overrides/{oid}")).status_code == 204  # idempotent


async def test_schedule_entries_page_by_after(sim: IncidentIOSimulator,
                                              http: httpx.AsyncClient) -> None:
    sched = next(iter(sim.schedules.values()))
    start = sim.clock.now()
    end = start + timedelta(days=10)
    r = (await http.get("/v2/schedule_entries", params={
        "schedule_id": sched.id, "entry_window_start": iso(start),
        "entry_window_end": iso(end)})).json()
    assert "after" in r["pagination_meta"] and "after_url" in r["pagination_meta"]
    r2 = (await http.get("/v2/schedule_entries", params={
        "schedule_id": sched.id, "entry_window_start": r["pagination_meta"]["after"],
        "entry_window_end": iso(end)})).json()
    assert "pagination_meta" not in r2 and r2["schedule_entries"]["final"]


async def test_act_and_seed(sim: IncidentIOSimulator) -> None:
    sim.alert(dedup="a", title="A", severity="sev2")
    iid = sim.canonical_incidents()[0]["id"]
    assert sim.canonical_incidents()[0]["severity"] == "sev2"
    sim.act(iid, "acknowledge", user="bob@example.com")
    assert sim.canonical_incidents()[0]["state"] == "acknowledged"
    for bad in ("unacknowledge", "reopen"):
        try:
            sim.act(iid, bad)
        except ValueError:
            pass
        else:
            raise AssertionError(bad)
    sim.act(iid, "resolve")
    assert sim.canonical_incidents()[0]["state"] == "resolved"
    ids = sim.seed_incidents(1000, state="acknowledged")
    assert len(ids) == 1000
    assert {i["state"] for i in sim.canonical_incidents()[1:]} == {"acknowledged"}


async def test_faults_and_call_counts(sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    await http.post("/_sim/faults", json={"error_rate": 1.0, "error_status": 502})
    r = await http.get("/v1/severities")
    assert r.status_code == 502 and "html" in r.headers["content-type"]
    await http.delete("/_sim/faults")
    assert (await http.get("/v1/severities")).status_code == 200
    assert sim.call_count(route="/v1/severities", status=502) == 1


def test_describe_names_credentials() -> None:
    desc = IncidentIOSimulator().describe("http://127.0.0.1:8083")
    assert desc["credentials"]["api_key"] == DEFAULT_API_KEY
    assert desc["intake"]["alert_source_config_id"] == ALERT_SOURCE_ID
    assert "syncd-bot@example.com" in desc["users"]
