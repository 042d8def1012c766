"""The PagerDuty simulator's schedules and escalation policies: stored definitions, rendered on
demand, refused in PagerDuty's error shape (vendor-notes/pagerduty.md §5.9-5.10, migration.md
§1.7, §4; the REST spec's Schedule, ScheduleLayer, Restriction, EscalationPolicy)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from syncd.simulators.pagerduty import (
    EP_PLATFORM,
    READ_ONLY_TOKEN,
    SCHED_BUSINESS,
    SCHED_HALF_DAY,
    PagerDutySimulator,
)

NY = ZoneInfo("America/New_York")
USER = {"id": "PUSR002", "type": "user_reference"}
LAYER = {"name": "day", "start": "2026-01-05T09:00:00-05:00",
         "rotation_virtual_start": "2026-01-05T09:00:00-05:00",
         "rotation_turn_length_seconds": 86400,
         "users": [{"user": USER}, {"user": {"id": "PUSR003", "type": "user_reference"}}]}
SCHEDULE = {"schedule": {"type": "schedule", "name": "made", "time_zone": "America/New_York",
                         "description": "d", "schedule_layers": [LAYER]}}
POLICY = {"escalation_policy": {
    "type": "escalation_policy", "name": "made", "num_loops": 9,
    "escalation_rules": [{"escalation_delay_in_minutes": 5, "targets": [USER]},
                         {"escalation_delay_in_minutes": 7, "targets": [
                             {"id": SCHED_BUSINESS, "type": "schedule_reference"}]}]}}
RANGE = {"since": "2026-10-30T00:00:00Z", "until": "2026-11-03T00:00:00Z"}


def with_layer(**fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(SCHEDULE)
    body["schedule"]["schedule_layers"][0].update(fields)
    return body


def refused(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] in (2001, 2003) and isinstance(error["message"], str)
    assert all(any(w in e for e in error["errors"]) for w in words), error


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(NY)


async def test_get_shows_layers_highest_first_with_entries(api: httpx.AsyncClient) -> None:
    r = await api.get(f"/schedules/{SCHED_BUSINESS}", params={**RANGE,
                                                             "time_zone": "America/New_York"})
    body = r.json()["schedule"]
    assert [x["name"] for x in body["schedule_layers"]] == ["Business hours", "Weekly"]
    final = body["final_schedule"]["rendered_schedule_entries"]
    # Weekdays 09:00-17:00 local belong to the higher layer on both sides of the DST change.
    daytime = [e for e in final if local(e["start"]).hour == 9 and local(e["end"]).hour == 17]
    assert {local(e["start"]).date().isoformat() for e in daytime} == {
        "2026-10-30", "2026-11-02"}
    assert {e["user"]["id"] for e in daytime} <= {"PUSR001", "PUSR005"}
    assert all(e["start"].endswith(("-04:00", "-05:00")) for e in final)
    assert final[0]["start"] == "2026-10-29T20:00:00-04:00"  # clipped to since
    weekly = body["schedule_layers"][1]["rendered_schedule_entries"]
    # The weekly turns hand over at Monday 09:00 local, now EST; the first is clipped to since.
    assert [e["start"] for e in weekly] == ["2026-10-29T20:00:00-04:00",
                                            "2026-11-02T09:00:00-05:00"]
    long = (await api.get(f"/schedules/{SCHED_BUSINESS}", params={
        **RANGE, "overflow": "true"})).json()["schedule"]["schedule_layers"][1]
    assert long["rendered_schedule_entries"][0]["start"] < "2026-10-27"
    bare = (await api.get(f"/schedules/{SCHED_BUSINESS}")).json()["schedule"]
    assert "rendered_schedule_entries" not in bare["final_schedule"]


async def test_restrictions_follow_the_request_zone(api: httpx.AsyncClient,
                                                    sim: PagerDutySimulator) -> None:
    own = (await api.get(f"/schedules/{SCHED_BUSINESS}")).json()["schedule"]
    utc = (await api.get(f"/schedules/{SCHED_BUSINESS}", params={"time_zone": "UTC"})
           ).json()["schedule"]
    assert own["time_zone"] == utc["time_zone"] == "America/New_York"
    assert own["schedule_layers"][0]["restrictions"][0]["start_time_of_day"] == "09:00:00"
    hours = 9 - sim.clock.now().astimezone(NY).utcoffset().total_seconds() / 3600
    assert utc["schedule_layers"][0]["restrictions"][0]["start_time_of_day"] == \
        f"{int(hours):02d}:00:00"
    r = await api.get(f"/schedules/{SCHED_BUSINESS}", params={"time_zone": "Mars/Olympus"})
    refused(r, "time_zone")


async def test_overrides_lie_on_top_last_created_wins(api: httpx.AsyncClient,
                                                     sim: PagerDutySimulator) -> None:
    start = datetime(2027, 6, 1, 12, tzinfo=UTC)
    for user, hours in (("PUSR003", 6), ("PUSR004", 2)):
        r = await api.post(f"/schedules/{SCHED_HALF_DAY}/overrides", json={"overrides": [{
            "start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat(),
            "user": {"id": user, "type": "user_reference"}}]})
        assert r.status_code == 201
    body = (await api.get(f"/schedules/{SCHED_HALF_DAY}", params={
        "since": start.isoformat(), "until": (start + timedelta(hours=6)).isoformat(),
        "time_zone": "UTC"})).json()["schedule"]
    final = [(e["user"]["id"], e["start"][11:16], e["end"][11:16])
             for e in body["final_schedule"]["rendered_schedule_entries"]]
    assert final == [("PUSR004", "12:00", "14:00"), ("PUSR003", "14:00", "18:00")]
    assert len(body["overrides_subschedule"]["rendered_schedule_entries"]) == 2


async def test_oncalls_agree_with_the_final_schedule(api: httpx.AsyncClient,
                                                     sim: PagerDutySimulator) -> None:
    now = sim.clock.now().replace(microsecond=0)
    since, until = now.isoformat(), (now + timedelta(days=3)).isoformat()
    rows = (await api.get("/oncalls", params={
        "schedule_ids[]": SCHED_BUSINESS, "since": since, "until": until, "limit": 100})
            ).json()["oncalls"]
    final = (await api.get(f"/schedules/{SCHED_BUSINESS}", params={
        "since": since, "until": until, "overflow": "true", "time_zone": "UTC"})
             ).json()["schedule"]["final_schedule"]["rendered_schedule_entries"]
    assert {(r["escalation_policy"]["id"], r["escalation_level"]) for r in rows} == {
        (EP_PLATFORM, 1)}
    assert [(r["user"]["id"], r["start"], r["end"]) for r in rows] == [
        (e["user"]["id"], e["start"].replace("+00:00", "Z"), e["end"].replace("+00:00", "Z"))
        for e in final]
    assert any(r["user"]["id"] == "PUSR006" for r in rows)  # the seeded override


async def test_create_update_and_list(api: httpx.AsyncClient, sim: PagerDutySimulator) -> None:
    r = await api.post("/schedules", json=SCHEDULE)
    assert r.status_code == 201
    made = r.json()["schedule"]
    sid, layer_id = made["id"], made["schedule_layers"][0]["id"]
    edited = with_layer(id=layer_id, users=[{"user": USER}])
    second = {**LAYER, "name": "night", "restrictions": [{
        "type": "daily_restriction", "start_time_of_day": "22:00:00", "duration_seconds": 36000}]}
    edited["schedule"]["schedule_layers"].append(second)
    r = await api.put(f"/schedules/{sid}", json=edited)
    assert r.status_code == 200
    layers = r.json()["schedule"]["schedule_layers"]
    assert [x["name"] for x in layers] == ["night", "day"] and layers[1]["id"] == layer_id
    assert [u["user"]["id"] for u in layers[1]["users"]] == ["PUSR002"]
    # A layer left out of a PUT is ended now, never removed (PagerDuty keeps layers).
    r = await api.put(f"/schedules/{sid}", json=with_layer(id=layer_id))
    kept = r.json()["schedule"]["schedule_layers"]
    assert len(kept) == 2 and kept[1]["name"] == "night" and kept[1]["end"] is not None
    listed = (await api.get("/schedules", params={"query": "MADE"})).json()["schedules"]
    assert [s["id"] for s in listed] == [sid]
    assert "final_schedule" not in listed[0] and "schedule_layers" not in listed[0]
    with_layers = (await api.get("/schedules", params={
        "query": "made", "include[]": ["schedule_layers", "final_schedule"]})).json()
    assert "schedule_layers" in with_layers["schedules"][0]
    assert "final_schedule" not in with_layers["schedules"][0]  # api-schema#430
    assert (await api.get("/schedules/PNOPE")).status_code == 404
    assert (await api.put("/schedules/PNOPE", json=SCHEDULE)).status_code == 404


@pytest.mark.parametrize("body,words", [
    (with_layer(rotation_turn_length_seconds=0), ["rotation_turn_length_seconds"]),
    (with_layer(rotation_turn_length_seconds=-3600), ["rotation_turn_length_seconds"]),
    (with_layer(users=[{"user": {"id": "PGHOST", "type": "user_reference"}}]), ["PGHOST"]),
    (with_layer(users=[]), ["users"]),
    (with_layer(end="2025-01-01T00:00:00Z"), ["end must be after start"]),
    (with_layer(id="PLNOPE"), ["PLNOPE"]),
    (with_layer(restrictions=[{"type": "weekly_restriction", "start_time_of_day": "09:00:00",
                               "duration_seconds": 3600}]), ["start_day_of_week"]),
    (with_layer(restrictions=[{"type": "weekly_restriction", "start_time_of_day": "09:00:00",
                               "duration_seconds": 3600, "start_day_of_week": 8}]),
     ["start_day_of_week"]),
    (with_layer(restrictions=[{"type": "daily_restriction", "start_time_of_day": "25:00:00",
                               "duration_seconds": 3600}]), ["start_time_of_day"]),
    (with_layer(restrictions=[{"type": "daily_restriction", "start_time_of_day": "09:00:00",
                               "duration_seconds": 90000}]), ["at most"]),
    (with_layer(restrictions=[{"type": "daily_restriction", "start_time_of_day": "09:00:00",
                               "duration_seconds": 0}]), ["duration_seconds"]),
    ({"schedule": {**SCHEDULE["schedule"], "time_zone": "Eastern Time"}}, ["time_zone"]),
    ({"schedule": {**SCHEDULE["schedule"], "schedule_layers": []}}, ["schedule_layers"]),
    ({"schedule": {**SCHEDULE["schedule"], "teams": [
        {"id": "PTNOPE", "type": "team_reference"}]}}, ["PTNOPE"]),
])
async def test_invalid_schedules_are_refused_and_change_nothing(
        api: httpx.AsyncClient, sim: PagerDutySimulator, body: dict[str, Any],
        words: list[str]) -> None:
    before = {k: copy.deepcopy(v.layers) for k, v in sim.schedules.items()}
    for method, path in (("POST", "/schedules"), ("PUT", f"/schedules/{SCHED_BUSINESS}"),
                         ("POST", "/schedules/preview")):
        refused(await api.request(method, path, json=body), *words)
    assert {k: v.layers for k, v in sim.schedules.items()} == before


async def test_preview_renders_a_definition_without_saving(api: httpx.AsyncClient,
                                                           sim: PagerDutySimulator) -> None:
    count = len(sim.schedules)
    r = await api.post("/schedules/preview", params=RANGE, json=SCHEDULE)
    assert r.status_code == 200 and len(sim.schedules) == count
    entries = r.json()["schedule"]["final_schedule"]["rendered_schedule_entries"]
    assert entries[0]["start"] == "2026-10-29T20:00:00-04:00"  # clipped to since
    assert {local(e["start"]).hour for e in entries[1:]} == {9}  # across the DST change
    assert {e["user"]["id"] for e in entries} == {"PUSR002", "PUSR003"}
    default = await api.post("/schedules/preview", json=SCHEDULE)  # two weeks from now
    assert len(default.json()["schedule"]["final_schedule"]["rendered_schedule_entries"]) >= 14
    ro = await api.post("/schedules/preview", json=SCHEDULE,
                        headers={"Authorization": f"Token token={READ_ONLY_TOKEN}"})
    assert ro.status_code == 403  # schedules.write


async def test_escalation_policies_create_show_update(api: httpx.AsyncClient) -> None:
    r = await api.post("/escalation_policies", json=POLICY)
    assert r.status_code == 201
    made = r.json()["escalation_policy"]
    assert made["num_loops"] == 9
    assert [rule["escalation_delay_in_minutes"] for rule in made["escalation_rules"]] == [5, 7]
    pid = made["id"]
    changed = copy.deepcopy(POLICY)
    changed["escalation_policy"].update(num_loops=0, name="renamed")
    r = await api.put(f"/escalation_policies/{pid}", json=changed)
    assert r.status_code == 200 and r.json()["escalation_policy"]["id"] == pid
    shown = (await api.get(f"/escalation_policies/{pid}")).json()["escalation_policy"]
    assert (shown["name"], shown["num_loops"]) == ("renamed", 0)
    platform = (await api.get(f"/escalation_policies/{EP_PLATFORM}")).json()[
        "escalation_policy"]
    assert platform["num_loops"] == 2 and len(platform["escalation_rules"]) == 3
    listed = (await api.get("/escalation_policies", params={"query": "renamed"})).json()
    assert [p["id"] for p in listed["escalation_policies"]] == [pid]
    assert (await api.get("/escalation_policies/PNOPE")).status_code == 404


async def test_a_round_robin_rule_is_held_shown_when_asked_and_assigns_in_turn(
        api: httpx.AsyncClient) -> None:
    """EscalationRule.escalation_rule_assignment_strategy, in the string form of the spec's
    schema or the object form of its examples; answered when include[] asks for it; a
    round-robin rule assigns each new incident to its next target, not to all of them."""
    from syncd.simulators.pagerduty import EP_SRE, FROM_EMAIL, SERVICE_WEB

    two = [USER, {"id": "PUSR003", "type": "user_reference"}]
    for form in ("round_robin", {"type": "round_robin"}, [{"type": "round_robin"}]):
        r = await api.put(f"/escalation_policies/{EP_SRE}", json=policy_with(escalation_rules=[
            {"escalation_delay_in_minutes": 5, "targets": two,
             "escalation_rule_assignment_strategy": form}]))
        assert r.status_code == 200, r.text
        assert "escalation_rule_assignment_strategy" not in r.json()[
            "escalation_policy"]["escalation_rules"][0]
    include = {"include[]": "escalation_rule_assignment_strategies"}
    shown = (await api.get(f"/escalation_policies/{EP_SRE}", params=include)).json()
    assert shown["escalation_policy"]["escalation_rules"][0][
        "escalation_rule_assignment_strategy"] == "round_robin"
    listed = (await api.get("/escalation_policies", params=include)).json()
    assert "assign_to_everyone" in [
        rule["escalation_rule_assignment_strategy"] for p in listed["escalation_policies"]
        for rule in p["escalation_rules"]]
    assignees = []
    for n in range(3):
        r = await api.post("/incidents", headers={"From": FROM_EMAIL}, json={"incident": {
            "type": "incident", "title": f"robin {n}",
            "service": {"id": SERVICE_WEB, "type": "service_reference"}}})
        assert r.status_code == 201, r.text
        assignees.append([a["assignee"]["id"] for a in r.json()["incident"]["assignments"]])
    assert assignees == [["PUSR002"], ["PUSR003"], ["PUSR002"]]
    refused(await api.put(f"/escalation_policies/{EP_SRE}", json=policy_with(escalation_rules=[
        {"escalation_delay_in_minutes": 5, "targets": two,
         "escalation_rule_assignment_strategy": "sometimes"}])),
        "escalation_rule_assignment_strategy")
    refused(await api.put(f"/escalation_policies/{EP_SRE}", json=policy_with(escalation_rules=[
        {"escalation_delay_in_minutes": 5, "targets": two,
         "escalation_rule_assignment_strategy": [{"type": "round_robin"},
                                                 {"type": "assign_to_everyone"}]}])),
        "escalation_rule_assignment_strategy")


def policy_with(**fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(POLICY)
    body["escalation_policy"].update(fields)
    return body


@pytest.mark.parametrize("body,words", [
    (policy_with(num_loops=10), ["num_loops"]),
    (policy_with(num_loops=-1), ["num_loops"]),
    (policy_with(escalation_rules=[]), ["escalation_rules"]),
    (policy_with(escalation_rules=[{"escalation_delay_in_minutes": 5, "targets": []}]),
     ["targets"]),
    (policy_with(escalation_rules=[{"escalation_delay_in_minutes": 5, "targets": [
        {"id": "PGHOST", "type": "user_reference"}]}]), ["PGHOST"]),
    (policy_with(escalation_rules=[{"escalation_delay_in_minutes": 5, "targets": [
        {"id": "PSNOPE", "type": "schedule_reference"}]}]), ["PSNOPE"]),
    (policy_with(escalation_rules=[{"escalation_delay_in_minutes": -1, "targets": [USER]}]),
     ["escalation_delay_in_minutes"]),
])
async def test_invalid_policies_are_refused_and_change_nothing(
        api: httpx.AsyncClient, sim: PagerDutySimulator, body: dict[str, Any],
        words: list[str]) -> None:
    before = {k: (v.levels, v.num_loops) for k, v in sim.policies.items()}
    refused(await api.post("/escalation_policies", json=body), *words)
    refused(await api.put(f"/escalation_policies/{EP_PLATFORM}", json=body), *words)
    assert {k: (v.levels, v.num_loops) for k, v in sim.policies.items()} == before
