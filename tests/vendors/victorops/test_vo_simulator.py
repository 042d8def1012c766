"""The simulator holds clients to Splunk On-Call's documented rules (vendor notes part A)."""

from __future__ import annotations

import time

import httpx
import pytest

from syncd.simulators.victorops import VictorOpsSimulator

INC = "/api-public/v1/incidents"


def rest_alert(sim: VictorOpsSimulator) -> str:
    return f"/integrations/generic/20131114/alert/{sim.REST_KEY}/syncd"


async def critical(api: httpx.AsyncClient, sim: VictorOpsSimulator, entity: str,
                   kind: str = "CRITICAL") -> dict:
    r = await api.post(rest_alert(sim), json={"message_type": kind, "entity_id": entity,
                                              "entity_display_name": f"{entity} is down"})
    assert r.status_code == 200
    return r.json()


def number_of(sim: VictorOpsSimulator, entity: str) -> str:
    return str(max(i.number for i in sim.incidents.values() if i.entity_id == entity))


async def test_auth_missing_wrong_and_read_only(sim: VictorOpsSimulator) -> None:
    async with sim.client() as c:
        assert (await c.get(INC)).status_code == 401
        r = await c.get(INC, headers={"X-VO-Api-Id": sim.API_ID})
        assert r.status_code == 401
        r = await c.get(INC, headers={"X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": "nope"})
        assert r.status_code == 403
        ro = {"X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": sim.READ_ONLY_KEY}
        assert (await c.get(INC, headers=ro)).status_code == 200
        r = await c.patch(f"{INC}/ack", headers=ro,
                          json={"userName": "alice", "incidentNames": []})
        assert r.status_code == 403


async def test_rest_endpoint_lifecycle_by_entity_id(api, sim) -> None:
    assert (await critical(api, sim, "db-1")) == {"result": "success", "entity_id": "db-1"}
    await critical(api, sim, "db-1")  # same entity, still open: one incident, two alerts
    assert len(sim.incidents) == 1
    inc = (await api.get(INC)).json()["incidents"][0]
    assert inc["alertCount"] == 2 and inc["currentPhase"] == "UNACKED"
    assert inc["entityId"] == "db-1" and inc["routingKey"] == "syncd"
    await critical(api, sim, "db-1", "ACKNOWLEDGEMENT")
    assert (await api.get(INC)).json()["incidents"][0]["currentPhase"] == "ACKED"
    await critical(api, sim, "db-1", "RECOVERY")
    assert (await api.get(INC)).json()["incidents"][0]["currentPhase"] == "RESOLVED"
    await critical(api, sim, "db-1")  # after recovery a new alert opens a new incident
    assert len(sim.incidents) == 2
    # INFO never opens; WARNING only with the org setting; no entity_id: one is generated.
    await critical(api, sim, "info-1", "INFO")
    await critical(api, sim, "warn-1", "WARNING")
    assert len(sim.incidents) == 2
    r = await api.post(rest_alert(sim), json={"message_type": "CRITICAL"})
    assert r.json()["result"] == "success" and r.json()["entity_id"]
    r = await api.post(rest_alert(sim), json={"entity_id": "x"})
    assert r.status_code == 200 and r.json()["result"] == "failure"
    r = await api.post("/integrations/generic/20131114/alert/bad/syncd",
                       json={"message_type": "CRITICAL"})
    assert r.status_code == 403


async def test_warning_opens_when_org_allows() -> None:
    sim = VictorOpsSimulator(rate_limits=False, warning_creates_incidents=True)
    sim.ingest("default", {"message_type": "WARNING", "entity_id": "w"})
    assert sim.canonical_incidents()[0]["severity"] == "sev2"


async def test_ack_resolve_results_per_incident(api, sim) -> None:
    for e in ("a", "b", "c"):
        await critical(api, sim, e)
    a, b, c = (number_of(sim, e) for e in "abc")
    sim.act(c, "resolve")
    r = await api.patch(f"{INC}/ack", json={"userName": "syncd-bot",
                                            "incidentNames": [a, c, "99999"]})
    assert r.status_code == 200
    res = {x["incidentNumber"]: x for x in r.json()["results"]}
    assert res[a]["cmdAccepted"] is True and res[a]["entityId"] == "a"
    assert res[c]["cmdAccepted"] is False and res["99999"]["cmdAccepted"] is False
    again = await api.patch(f"{INC}/ack", json={"userName": "syncd-bot", "incidentNames": [a]})
    assert again.json()["results"][0]["cmdAccepted"] is False  # only UNACKED acks
    r = await api.patch(f"{INC}/resolve", json={"userName": "syncd-bot",
                                                "incidentNames": [a, b], "message": "done"})
    assert all(x["cmdAccepted"] for x in r.json()["results"])
    t = sim.incidents[int(a)].transitions[-1]
    assert t["name"] == "resolved" and t["by"] == "syncd-bot" and t["message"] == "done"
    # Unknown user: 404; bad body: 400.
    r = await api.patch(f"{INC}/ack", json={"userName": "ghost", "incidentNames": [a]})
    assert r.status_code == 404
    assert (await api.patch(f"{INC}/ack", json={"incidentNames": [a]})).status_code == 400
    r = await api.patch(f"{INC}/ack", json={"userName": "alice", "incidentNames": [1]})
    assert r.status_code == 400
    assert (await api.patch(f"{INC}/ack", content=b"{not json")).status_code == 400


async def test_large_batches_are_not_limited(api, sim) -> None:
    ids = sim.seed_incidents(600)
    r = await api.patch(f"{INC}/ack", json={"userName": "syncd-bot", "incidentNames": ids})
    assert r.status_code == 200 and len(r.json()["results"]) == 600
    assert all(x["cmdAccepted"] for x in r.json()["results"])


async def test_by_user_reroute_and_manual_create(api, sim) -> None:
    r = await api.post(INC, json={"summary": "Manual", "details": "d", "userName": "alice",
                                  "targets": [{"type": "User", "slug": "dave"}]})
    number = r.json()["incidentNumber"]
    got = (await api.get(f"{INC}/{number}")).json()
    assert got["monitorName"] == "vouser-alice" and "dave" in got["pagedUsers"]
    assert (await api.post(INC, json={"summary": "x"})).status_code == 400
    bad_target = {"summary": "s", "details": "d", "userName": "alice",
                  "targets": [{"type": "User", "slug": "ghost"}]}
    assert (await api.post(INC, json=bad_target)).status_code == 400
    r = await api.post(f"{INC}/reroute", json={"userName": "alice", "reroutes": [
        {"incidentNumber": number, "targets": [
            {"type": "EscalationPolicy", "slug": "pol-d4t4b4se0000prim"}]}]})
    assert r.json()["statuses"][0]["success"] is True
    assert sim.incidents[int(number)].paged_policies == ["pol-d4t4b4se0000prim"]
    paged = sim.incidents[int(number)].paged_users[0]
    r = await api.patch(f"{INC}/byUser/ack", json={"userName": paged})
    assert [x["incidentNumber"] for x in r.json()["results"]] == [number]
    assert sim.incidents[int(number)].phase == "ACKED"
    assert (await api.get(f"{INC}/abc")).status_code == 400
    assert (await api.get(f"{INC}/424242")).status_code == 404


async def test_live_list_keeps_recent_resolves_then_reporting(api, sim) -> None:
    await critical(api, sim, "old")
    n = number_of(sim, "old")
    sim.act(n, "resolve")
    assert [i["incidentNumber"] for i in (await api.get(INC)).json()["incidents"]] == [n]
    await api.post("/_sim/clock", json={"advance": sim.resolved_retention + 1})
    assert (await api.get(INC)).json()["incidents"] == []
    r = await api.get("/api-reporting/v2/incidents")
    body = r.json()
    assert body["total"] == 1 and body["incidents"][0]["incidentNumber"] == n
    # Still reachable by number "regardless if it is active or not".
    assert (await api.get(f"{INC}/{n}")).json()["currentPhase"] == "RESOLVED"


async def test_reporting_pagination_and_filters(api, sim) -> None:
    sim.seed_incidents(250, state="resolved")
    sim.seed_incidents(5)
    r = await api.get("/api-reporting/v2/incidents", params={"limit": 101})
    assert r.status_code == 400
    first = (await api.get("/api-reporting/v2/incidents", params={"limit": 100})).json()
    assert first["total"] == 250 and len(first["incidents"]) == 100 and first["limit"] == 100
    last = (await api.get("/api-reporting/v2/incidents",
                          params={"limit": 100, "offset": 200})).json()
    assert len(last["incidents"]) == 50
    default = (await api.get("/api-reporting/v2/incidents")).json()
    assert len(default["incidents"]) == 20  # default limit
    r = await api.get("/api-reporting/v2/incidents",
                      params={"currentPhase": "triggered", "incidentNumber": "1,251:253"})
    assert [i["incidentNumber"] for i in r.json()["incidents"]] == ["251", "252", "253"]
    r = await api.get("/api-reporting/v2/incidents", params={"entityId": "seed-entity-7"})
    assert r.json()["total"] == 1
    r = await api.get("/api-reporting/v2/incidents", params={"currentPhase": "bogus"})
    assert r.status_code == 400


async def test_rate_limits_2018_answer_403_and_reset(sim) -> None:
    sim.rate_limits_enabled = True
    headers = {"X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": sim.API_KEY}
    async with sim.client(headers=headers) as c:
        codes = [(await c.get(INC)).status_code for _ in range(7)]
        assert codes == [200] * 6 + [403]
        assert (await c.get("/api-public/v1/oncall/current")).status_code == 200
        assert (await c.get("/api-public/v1/oncall/current")).status_code == 403
        auth = await c.get(INC, headers={"X-VO-Api-Key": "wrong"})
        assert auth.json() == (await c.get(INC)).json()  # the notes know no distinct body
        await c.post("/_sim/clock", json={"advance": 60})
        assert (await c.get(INC)).status_code == 200
        await c.post("/_sim/rate-limits", json={"scale": 10})
        codes = [(await c.get(INC)).status_code for _ in range(60)]
        assert codes.count(200) == 60


async def test_rate_limits_2020_table_and_429_option() -> None:
    sim = VictorOpsSimulator(limit_table="2020", rate_limit_status=429)
    headers = {"X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": sim.API_KEY}
    async with sim.client(headers=headers) as c:
        codes = [(await c.get(INC)).status_code for _ in range(61)]
        assert codes == [200] * 60 + [429]
        r = await c.get(INC)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await c.get("/api-reporting/v2/incidents")).status_code == 200
        assert (await c.get("/api-reporting/v2/incidents")).status_code == 429


def test_act_follows_the_vendor_state_machine(sim) -> None:
    sim.ingest("default", {"message_type": "CRITICAL", "entity_id": "e"})
    with pytest.raises(ValueError):
        sim.act("1", "unacknowledge")
    sim.act("1", "acknowledge", user="bob")
    with pytest.raises(ValueError):
        sim.act("1", "acknowledge")
    with pytest.raises(ValueError):
        sim.act("1", "severity", severity="sev2")
    sim.act("1", "resolve")
    with pytest.raises(ValueError):
        sim.act("1", "reopen")
    with pytest.raises(KeyError):
        sim.act("77", "resolve")
    assert [t["name"] for t in sim.incidents[1].transitions] == [
        "triggered", "acknowledged", "resolved"]
    assert sim.incidents[1].transitions[1]["by"] == "bob"
    (row,) = sim.canonical_incidents()
    assert row["state"] == "resolved" and row["dedup"] == "e" and row["severity"] == "sev1"


async def test_control_alert_uses_rest_path(api, sim) -> None:
    r = await api.post("/_sim/alerts", json={"dedup": "k1", "title": "T", "severity": "sev1"})
    assert r.json()["result"] == "success"
    await api.post("/_sim/alerts", json={"dedup": "k1", "title": "T", "action": "resolve"})
    assert sim.canonical_incidents()[0]["state"] == "resolved"


def test_seed_is_fast_and_keeps_history_out_of_live_list() -> None:
    sim = VictorOpsSimulator(rate_limits=False)
    started = time.monotonic()
    ids = sim.seed_incidents(100_000, state="resolved")
    assert len(ids) == 100_000 and time.monotonic() - started < 10
    sim.seed_incidents(3)
    assert len(sim.open) == 3 and not sim.recent


async def test_oncall_current_schedule_take_and_overrides(api, sim) -> None:
    cur = (await api.get("/api-public/v1/oncall/current")).json()["teamsOnCall"]
    assert {t["team"]["name"] for t in cur} == {"Platform", "Database"}
    team = "team-pl4tf0rm00000001"
    path = f"/api-public/v2/team/{team}/oncall/schedule"
    sched = (await api.get(path, params={"daysForward": 21})).json()
    rolls = sched["schedules"][0]["schedule"][0]["rolls"]
    assert len(rolls) >= 3 and len({r["onCallUser"]["username"] for r in rolls}) == 3
    assert (await api.get(path, params={"daysForward": 31})).status_code == 400
    assert (await api.get(path, params={"step": 4})).status_code == 400
    assert (await api.get("/api-public/v2/team/team-nope/oncall/schedule")).status_code == 404
    pol = "pol-pl4tf0rm0000prim"
    now_user = sim.oncall_at(pol, 0, sim.clock.now())
    r = await api.patch(f"/api-public/v1/policies/{pol}/oncall/user",
                        json={"fromUser": now_user, "toUser": "frank"})
    assert r.json() == {"result": "Success"}
    assert sim.oncall_at(pol, 0, sim.clock.now()) == "frank"
    r = await api.patch(f"/api-public/v1/policies/{pol}/oncall/user",
                        json={"fromUser": "ghost", "toUser": "frank"})
    assert r.status_code == 404
    # Scheduled override for the next shift's user, then an assignment makes it effective.
    nxt = rolls[1]
    start, user = nxt["start"], nxt["onCallUser"]["username"]
    r = await api.post("/api-public/v1/overrides", json={
        "username": user, "timezone": "Etc/UTC", "start": start, "end": nxt["end"]})
    pid = r.json()["schedule"]["publicId"]
    assert r.json()["schedule"]["assignments"][0]["assigned"] is False
    from syncd.simulators.base import parse_time
    assert sim.oncall_at(pol, 0, parse_time(start)) == user
    r = await api.put(f"/api-public/v1/overrides/{pid}/assignments/{pol}",
                      json={"policy": pol, "username": "erin"})
    assert r.json()["assigned"] is True and r.json()["user"] == "erin"
    assert sim.oncall_at(pol, 0, parse_time(start)) == "erin"
    sched = (await api.get(path, params={"daysForward": 21})).json()
    assert {"origOnCallUser": {"username": user}, "overrideOnCallUser": {"username": "erin"},
            "start": start, "end": nxt["end"]} in sched["schedules"][0]["overrides"]
    assert (await api.get(f"/api-public/v1/overrides/{pid}/assignments")).status_code == 200
    assert (await api.delete(f"/api-public/v1/overrides/{pid}")).status_code == 200
    assert sim.oncall_at(pol, 0, parse_time(start)) == user
    bad = await api.post("/api-public/v1/overrides", json={
        "username": user, "start": nxt["end"], "end": start})
    assert bad.status_code == 400


async def test_directory_endpoints(api, sim) -> None:
    users = (await api.get("/api-public/v2/user")).json()["users"]
    assert "syncd-bot" in {u["username"] for u in users}
    one = (await api.get("/api-public/v2/user", params={"email": "bob@example.com"})).json()
    assert [u["username"] for u in one["users"]] == ["bob"]
    assert isinstance((await api.get("/api-public/v1/team")).json(), list)
    pols = (await api.get("/api-public/v1/policies")).json()["policies"]
    assert {p["policy"]["slug"] for p in pols} == set(sim.policies)
    keys = (await api.get("/api-public/v1/org/routing-keys")).json()["routingKeys"]
    assert {k["routingKey"] for k in keys} == {"default", "syncd", "database"}


def test_describe_names_credentials_and_intake(sim) -> None:
    d = sim.describe("http://127.0.0.1:8082/")
    assert d["vendor"] == "victorops" and d["base_url"] == "http://127.0.0.1:8082"
    assert set(d["credentials"]) == {"api_id", "api_key", "read_only_api_key", "rest_api_key"}
    assert d["intake"]["rest_endpoint"].startswith("http://127.0.0.1:8082/integrations/")
    assert "syncd-bot" in d["users"]
