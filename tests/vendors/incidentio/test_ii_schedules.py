"""The incident.io simulator's schedule definitions, entries, previews and escalation paths:
each endpoint and rule, valid and refused, in the vendor's error shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from syncd.simulators.incidentio import IncidentIOSimulator, ulid
from syncd.simulators.incidentio_base import ApiError

NY = ulid("C", 3)
TWELVE = ulid("C", 4)


def rotation(**over: Any) -> dict[str, Any]:
    return {"name": "Days", "users": [{"email": "bob@example.com"},
                                      {"email": "carol@example.com"}],
            "handover_start_at": "2026-10-05T13:00:00Z", "layers": [{"name": "Layer 1"}],
            "handovers": [{"interval_type": "daily", "interval": 1}], **over}


def schedule(*rotations: dict[str, Any], zone: str = "America/New_York") -> dict[str, Any]:
    return {"schedule": {"name": "S", "timezone": zone,
                         "config": {"rotations": list(rotations or [rotation()])}}}


def refused(r: httpx.Response, status: int, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert {"type", "status", "request_id", "errors"} <= set(body) and body["status"] == status
    if field is not None:
        assert body["errors"][0]["source"]["field"] == field, body


async def final(http: httpx.AsyncClient, sid: str, start: datetime, end: datetime
                ) -> list[tuple[str, str, str]]:
    r = await http.get("/v2/schedule_entries", params={
        "schedule_id": sid, "entry_window_start": start.isoformat(),
        "entry_window_end": end.isoformat()})
    assert r.status_code == 200, r.text
    return [(e["user"]["email"], e["start_at"][:16], e["end_at"][:16])
            for e in r.json()["schedule_entries"]["final"]]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def test_create_show_list_and_the_definition_round_trips(http: httpx.AsyncClient) -> None:
    body = schedule(rotation(working_intervals=[
        {"weekday": "monday", "start_time": "09:00", "end_time": "17:00"}]))
    body["schedule"]["annotations"] = {"owner": "sre"}
    r = await http.post("/v2/schedules", json=body)
    assert r.status_code == 201, r.text
    made = r.json()["schedule"]
    assert made["timezone"] == "America/New_York" and made["annotations"] == {"owner": "sre"}
    rot = made["config"]["rotations"][0]
    assert [u["email"] for u in rot["users"]] == ["bob@example.com", "carol@example.com"]
    assert rot["working_intervals"] == [{"weekday": "monday", "start_time": "09:00",
                                         "end_time": "17:00"}]
    shown = (await http.get(f"/v2/schedules/{made['id']}")).json()["schedule"]
    assert shown["config"] == made["config"]
    listed = (await http.get("/v2/schedules")).json()
    assert made["id"] in {s["id"] for s in listed["schedules"]}


async def test_definition_rules_are_refused_in_the_vendor_shape(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    before = len(sim.schedules)
    cases = [
        (schedule(rotation(users=[])), 422, "schedule.config.rotations[0].users"),
        (schedule(rotation(users=[{"email": "nobody@example.com"}])), 422,
         "schedule.config.rotations[0].users[0]"),
        (schedule(rotation(handovers=[{"interval_type": "daily", "interval": 0}])), 422,
         "schedule.config.rotations[0].handovers[0].interval"),
        (schedule(rotation(working_intervals=[
            {"weekday": "monday", "start_time": "17:00", "end_time": "09:00"}])), 422,
         "schedule.config.rotations[0].working_intervals[0]"),
        (schedule(rotation(layers=[{"id": "L1", "name": "a"}, {"id": "L1", "name": "b"}])),
         422, "schedule.config.rotations[0].layers"),
        (schedule(rotation(effective_from="2026-12-01T00:00:00Z")), 422,
         "schedule.config.rotations"),
        ({"schedule": {"name": "S", "timezone": "Mars/Olympus"}}, 422, "schedule.timezone"),
    ]
    for body, status, field in cases:
        refused(await http.post("/v2/schedules", json=body), status, field)
    assert len(sim.schedules) == before


FAIR = {"handovers": [{"interval_type": "daily", "interval": 2},
                      {"interval_type": "daily", "interval": 5}], "scheduling_mode": "fair"}


@pytest.mark.parametrize("shape", [
    FAIR, {**FAIR, "scheduling_mode": None},
    {**FAIR, "layers": [{"name": "Primary"}, {"name": "Secondary"}]}])
async def test_an_undocumented_rotation_is_held_but_not_rendered(
        sim: IncidentIOSimulator, http: httpx.AsyncClient, shape: dict[str, Any]) -> None:
    """"fair" alternating handovers (scheduling_mode; with none, the default is undocumented):
    how incident.io orders people there is undocumented, so the simulator stores and answers
    the definition and refuses to say who is on call rather than invent it, with several
    layers too (a sequential rotation's layers are rendered, the dealing ours: see
    test_two_layers_page_two_people_and_an_override_replaces_one_layers)."""
    body = schedule(rotation(**{k: v for k, v in shape.items() if v is not None}))
    r = await http.post("/v2/schedules", json=body)
    assert r.status_code == 201, r.text
    made = r.json()["schedule"]
    assert "current_shifts" not in made  # optional in ScheduleV2
    shown = (await http.get(f"/v2/schedules/{made['id']}")).json()["schedule"]
    for key in ("layers", "handovers", "scheduling_mode"):
        if key in shape:
            got = shown["config"]["rotations"][0].get(key)
            assert got == shape[key] or [n["name"] for n in got] == [
                n["name"] for n in shape[key]], (key, got)
    refused(await http.get("/v2/schedule_entries", params={
        "schedule_id": made["id"], "entry_window_start": "2026-10-05T00:00:00Z",
        "entry_window_end": "2026-10-06T00:00:00Z"}), 400)
    refused(await http.post(f"/v2/schedules/{NY}/actions/preview_entries", json=body), 400)


async def test_timezone_cannot_change_and_update_keeps_the_id(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    refused(await http.put(f"/v2/schedules/{NY}", json={"schedule": {"timezone": "UTC"}}), 422,
            "schedule.timezone")
    r = await http.put(f"/v2/schedules/{NY}", json={"schedule": {"name": "Renamed"}})
    assert r.status_code == 200 and r.json()["schedule"]["id"] == NY
    assert sim.schedules[NY].name == "Renamed" and len(sim.schedules[NY].rotations) == 2


async def test_update_drops_overrides_of_rotations_it_removes(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    current = (await http.get(f"/v2/schedules/{NY}")).json()["schedule"]["config"]["rotations"]
    weekly, business = current
    assert any(o.rotation_id == business["id"] for o in sim.overrides.values())
    keep = {k: weekly[k] for k in ("id", "name", "handover_start_at", "handovers", "layers")}
    keep["users"] = [{"id": u["id"]} for u in weekly["users"]]
    r = await http.put(f"/v2/schedules/{NY}", json={"schedule": {"config": {
        "rotations": [keep]}}})
    assert r.status_code == 200, r.text
    assert r.json()["schedule"]["config"]["rotations"][0]["id"] == weekly["id"]
    assert not any(o.rotation_id == business["id"] for o in sim.overrides.values())


async def test_entries_keep_local_handovers_across_dst(http: httpx.AsyncClient) -> None:
    """Business hours hand over at 09:00 New York: 13:00 UTC before 2026-11-01, 14:00 after;
    the 12-hour rotation hands over at 08:00/20:00 local; both rotations page at once."""
    rows = await final(http, NY, at(2026, 10, 30, 12), at(2026, 11, 3, 0))
    business = [r for r in rows if r[0] in ("carol@example.com", "dave@example.com",
                                            "erin@example.com")]
    assert [(s, e) for _, s, e in business] == [("2026-10-30T13:00", "2026-10-30T21:00"),
                                                ("2026-11-02T14:00", "2026-11-02T22:00")]
    weekly = [r for r in rows if r[0] in ("alice@example.com", "bob@example.com")]
    assert weekly[0][1] == "2026-10-30T12:00"  # the weekly rotation pages alongside
    twelve = await final(http, TWELVE, at(2026, 10, 31, 0), at(2026, 11, 2, 0))
    assert [s for _, s, _ in twelve] == ["2026-10-31T00:00", "2026-10-31T12:00",
                                         "2026-11-01T00:00", "2026-11-01T13:00"]


async def test_versions_take_effect_from_their_date(http: httpx.AsyncClient) -> None:
    made = (await http.post("/v2/schedules", json=schedule())).json()["schedule"]
    first = made["config"]["rotations"][0]
    later = {**rotation(users=[{"email": "dave@example.com"}]), "id": first["id"],
             "layers": first["layers"], "effective_from": "2026-10-20T13:00:00Z"}
    r = await http.put(f"/v2/schedules/{made['id']}", json={"schedule": {"config": {
        "rotations": [{**rotation(), "id": first["id"], "layers": first["layers"]}, later]}}})
    assert r.status_code == 200, r.text
    rows = await final(http, made["id"], at(2026, 10, 19, 0), at(2026, 10, 21, 0))
    assert [u for u, _, _ in rows][-1] == "dave@example.com"
    assert rows[-1][1] == "2026-10-20T13:00" and "dave@example.com" not in [
        u for u, _, _ in rows[:-1]]


async def test_preview_renders_without_saving_and_caps_at_91_days(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    before = sim.schedules[NY].rotations
    r = await http.post(f"/v2/schedules/{NY}/actions/preview_entries", json={
        **schedule(rotation()), "entry_window_start": "2026-10-01T00:00:00Z",
        "entry_window_end": "2027-06-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    entries = r.json()["schedule_entries"]
    assert entries["final"][-1]["end_at"][:10] == "2026-12-31"  # 91 days from the start
    assert {e["user"]["email"] for e in entries["final"]} == {"bob@example.com",
                                                             "carol@example.com"}
    assert sim.schedules[NY].rotations is before
    default = (await http.post(f"/v2/schedules/{NY}/actions/preview_entries",
                               json=schedule(rotation()))).json()["schedule_entries"]
    span = (datetime.fromisoformat(default["final"][-1]["end_at"])
            - datetime.fromisoformat(default["final"][0]["start_at"]))
    assert timedelta(days=27) < span <= timedelta(days=28)
    refused(await http.post(f"/v2/schedules/{NY}/actions/preview_entries", json=schedule(
        rotation(users=[]))), 422)


async def test_overrides_replace_only_their_rotations_person(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    weekly, business = sim.schedules[NY].rotation_ids()
    layer = sim.schedules[NY].layer_ids(weekly).pop()
    r = await http.post("/v2/schedule_overrides", json={
        "schedule_id": NY, "rotation_id": weekly, "layer_id": layer,
        "start_at": "2026-10-27T15:00:00Z", "end_at": "2026-10-27T16:00:00Z",
        "user": {"email": "erin@example.com"}})
    assert r.status_code == 201, r.text
    rows = await final(http, NY, at(2026, 10, 27, 15), at(2026, 10, 27, 16))
    assert len(rows) == 2 and "erin@example.com" in {u for u, _, _ in rows}
    refused(await http.post("/v2/schedule_overrides", json={
        "schedule_id": NY, "rotation_id": business, "layer_id": layer,
        "start_at": "2026-10-27T15:00:00Z", "end_at": "2026-10-27T16:00:00Z",
        "user": {"email": "erin@example.com"}}), 422, "layer_id")


async def test_two_layers_page_two_people_and_an_override_replaces_one_layers(
        http: httpx.AsyncClient) -> None:
    """A rotation's layers are its concurrent shifts: at each handover they take the next users
    in order (turn k, layer j: users[(k * 2 + j) % 3]), and an override on one layer replaces
    that layer's person only, as the vendor documents an override's ``layer_id``."""
    users = [{"email": e} for e in ("bob@example.com", "carol@example.com",
                                    "dave@example.com")]
    r = await http.post("/v2/schedules", json=schedule(rotation(
        users=users, layers=[{"name": "Layer 1"}, {"name": "Layer 2"}]), zone="UTC"))
    assert r.status_code == 201, r.text
    made = r.json()["schedule"]
    rot = made["config"]["rotations"][0]
    assert [lay["name"] for lay in rot["layers"]] == ["Layer 1", "Layer 2"]
    first, second = (lay["id"] for lay in rot["layers"])
    day = at(2026, 10, 5, 13)  # the handover start: turn 0

    async def who(n: int) -> list[str]:
        a = day + timedelta(days=n, hours=1)
        return sorted(u for u, _, _ in await final(http, made["id"], a, a + timedelta(hours=1)))

    assert await who(0) == ["bob@example.com", "carol@example.com"]
    assert await who(1) == ["bob@example.com", "dave@example.com"]  # dave, then bob
    assert await who(2) == ["carol@example.com", "dave@example.com"]
    r = await http.post("/v2/schedule_overrides", json={
        "schedule_id": made["id"], "rotation_id": rot["id"], "layer_id": second,
        "start_at": iso(day), "end_at": iso(day + timedelta(days=1)),
        "user": {"email": "erin@example.com"}})
    assert r.status_code == 201, r.text
    assert await who(0) == ["bob@example.com", "erin@example.com"]  # carol's layer only
    r = await http.post("/v2/schedule_overrides", json={
        "schedule_id": made["id"], "rotation_id": rot["id"], "layer_id": first,
        "start_at": iso(day), "end_at": iso(day + timedelta(days=1)),
        "user": {"email": "erin@example.com"}})
    assert r.status_code == 201, r.text
    assert await who(0) == ["erin@example.com", "erin@example.com"]
    r = await http.get("/v2/schedule_entries", params={
        "schedule_id": made["id"], "entry_window_start": iso(day + timedelta(hours=1)),
        "entry_window_end": iso(day + timedelta(hours=2))})
    fingerprints = [e["fingerprint"] for e in r.json()["schedule_entries"]["final"]]
    assert len(set(fingerprints)) == len(fingerprints) == 2  # two shifts, one person
    assert await who(1) == ["bob@example.com", "dave@example.com"]


def level(node: str, target: dict[str, Any], seconds: int = 60) -> dict[str, Any]:
    return {"id": node, "type": "level", "level": {
        "targets": [{**target, "urgency": "high"}], "time_to_ack_seconds": seconds}}


async def test_escalation_paths_create_update_show_list(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    user = next(iter(sim.users))
    body = {"name": "P", "path": [
        level("a", {"type": "schedule", "id": NY, "schedule_mode": "currently_on_call"}),
        {"id": "b", "type": "if_else", "if_else": {
            "conditions": [{"subject": "alert.priority", "operation": "one_of",
                            "param_bindings": [{"array_value": [{"literal": "P1"}]}]}],
            "then_path": [level("c", {"type": "user", "id": user})], "else_path": []}},
        {"id": "d", "type": "repeat", "repeat": {"repeat_times": 2, "to_node": "a"}}]}
    r = await http.post("/v2/escalation_paths", json=body)
    assert r.status_code == 201, r.text
    made = r.json()["escalation_path"]
    assert [n["type"] for n in made["path"]] == ["level", "if_else", "repeat"]
    assert made["path"][1]["if_else"]["then_path"][0]["level"]["targets"][0]["id"] == user
    r = await http.put(f"/v2/escalation_paths/{made['id']}", json={**body, "name": "P2"})
    assert r.status_code == 200 and r.json()["escalation_path"]["id"] == made["id"]
    assert sim.paths[made["id"]].name == "P2"
    pages = (await http.get("/v2/escalation_paths", params={"page_size": 1})).json()
    assert len(pages["escalation_paths"]) == 1 and pages["pagination_meta"]["after"]
    shown = (await http.get(f"/v2/escalation_paths/{ulid('P', 2)}")).json()["escalation_path"]
    assert [n["type"] for n in shown["path"]] == ["level", "level", "level", "repeat"]
    assert shown["path"][3]["repeat"]["repeat_times"] == 2


async def test_escalation_path_rules(sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    before = dict(sim.paths)
    sched = {"type": "schedule", "id": NY}
    cases = [
        ({"name": "x", "path": []}, 422, "path"),
        ({"name": "x", "path": [level("a", sched), {"id": "r", "type": "repeat", "repeat": {
            "repeat_times": 2, "to_node": "zz"}}]}, 422, "path[1].repeat.to_node"),
        ({"name": "x", "path": [level("a", {"type": "schedule", "id": "nope"})]}, 422,
         "path[0].level.targets[0].id"),
        ({"name": "x", "path": [level("a", {"type": "slack_channel", "id": "C1"})]}, 400,
         "path[0].level.targets[0].type"),
        ({"name": "x", "path": [level("a", sched), level("a", sched)]}, 422, "path[1].id"),
        ({"name": "x", "path": [{"id": "a", "type": "delay"}]}, 400, "path[0].type"),
        ({"name": "x", "path": [{"id": "a", "type": "level"}]}, 422, "path[0].level"),
    ]
    for body, status, field in cases:
        refused(await http.post("/v2/escalation_paths", json=body), status, field)
    refused(await http.get("/v2/escalation_paths/01HPNOTAPATH00000000000000"), 404)
    assert sim.paths == before


async def test_a_round_robin_level_is_held_but_paging_through_it_is_not_simulated(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    """round_robin_config pages one target of the level in turn ("stick with a single target
    per level", openapi.json EscalationPathRoundRobinConfigV2; the user "paged longest ago",
    docs.incident.io/on-call/round-robin): the simulator keeps no such history, so it stores
    and answers the config, leaves current_responders out, and refuses an escalation through
    the path (400 not_simulated) rather than page every target. rotate_after_seconds has no
    minimum in the spec: 0 is stored as posted."""
    alice, bob = list(sim.users)[:2]
    body = {"name": "Robin", "path": [{"id": "a", "type": "level", "level": {
        "targets": [{"type": "user", "id": alice, "urgency": "high"},
                    {"type": "user", "id": bob, "urgency": "high"}],
        "time_to_ack_seconds": 60,
        "round_robin_config": {"enabled": True, "rotate_after_seconds": 0}}}]}
    r = await http.post("/v2/escalation_paths", json=body)
    assert r.status_code == 201, r.text
    made = r.json()["escalation_path"]
    assert made["path"][0]["level"]["round_robin_config"] == {
        "enabled": True, "rotate_after_seconds": 0}
    assert "current_responders" not in made
    before = len(sim.escalations)
    refused(await http.post("/v2/escalations", json={
        "idempotency_key": "rr", "title": "page", "escalation_path_id": made["id"]}), 400)
    assert len(sim.escalations) == before
    sim.paths[sim.path_id].nodes = sim.paths[made["id"]].nodes  # the alert route's path
    alerts = len(sim.alerts)
    with pytest.raises(ApiError, match="round-robin"):
        sim.intake({"title": "disk", "status": "firing", "deduplication_key": "rr"})
    assert (len(sim.alerts), len(sim.escalations)) == (alerts, before)
    off = {**body, "path": [{**body["path"][0], "level": {
        **body["path"][0]["level"], "round_robin_config": {"enabled": False}}}]}
    r = await http.put(f"/v2/escalation_paths/{made['id']}", json=off)
    assert [u["id"] for u in r.json()["escalation_path"]["current_responders"]] == [alice, bob]
    r = await http.post("/v2/escalations", json={
        "idempotency_key": "rr", "title": "page", "escalation_path_id": made["id"]})
    assert r.status_code == 201, r.text


async def test_an_escalation_it_cannot_notify_leaves_no_partial_state(
        sim: IncidentIOSimulator, http: httpx.AsyncClient) -> None:
    """The simulator's escalations notify whoever is on call in its first schedule (ours, not
    the path's targets). When that schedule is "fair" (who is on call is not simulated), an
    escalation is refused 400 before anything is created: the alert route left an alert, an
    incident and a half-made escalation behind, and a late escalation raised out of the
    clock's tick. A late one is now checked like the others and is not created."""
    first = next(iter(sim.schedules.values())).rotations[0]
    handovers = list(first.handovers)
    first.handovers = [("daily", 2), ("daily", 5)]  # scheduling_mode None: fair (undocumented)
    counts = (len(sim.alerts), len(sim.incidents), len(sim.escalations))
    with pytest.raises(ApiError, match="not simulated"):
        sim.intake({"title": "disk", "status": "firing", "deduplication_key": "fair"})
    refused(await http.post("/v2/escalations", json={
        "idempotency_key": "fair", "title": "page", "escalation_path_id": sim.path_id}), 400)
    assert (len(sim.alerts), len(sim.incidents), len(sim.escalations)) == counts
    # Late: routed while the schedule is sequential, due once it is fair.
    first.handovers = handovers
    sim.escalation_delay = 30
    sim.intake({"title": "disk", "status": "firing", "deduplication_key": "late"})
    first.handovers = [("daily", 2), ("daily", 5)]
    sim.clock.advance(60)
    sim.tick()
    assert len(sim.escalations) == counts[2] and not sim.late_escalations
