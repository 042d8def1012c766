"""Spike.sh simulator rules over HTTP: auth, headers, paging, batches, transitions, intake, timers,
rate limits, on-call and overrides."""

from __future__ import annotations

from datetime import timedelta

import httpx

from syncd.simulators.base import parse_time
from syncd.simulators.spike import (
    DEFAULT_API_KEY,
    OTHER_TEAM_ID,
    TEAM_ID,
    WEBHOOK_TOKEN,
    SpikeSimulator,
)

HOOK = f"/{WEBHOOK_TOKEN}/push-events"


async def fire(http: httpx.AsyncClient, title: str, **extra: object) -> httpx.Response:
    return await http.post(HOOK, json={"title": title, **extra})


async def test_auth_and_team_header(sim: SpikeSimulator) -> None:
    async with sim.client() as c:
        r = await c.get("/incidents")
        assert r.status_code == 401
        assert set(r.json()) == {"message", "error"}
        r = await c.get("/incidents", headers={"x-api-key": "wrong", "x-team-id": TEAM_ID})
        assert r.status_code == 401
        r = await c.get("/incidents", headers={"x-api-key": DEFAULT_API_KEY})
        assert r.status_code == 400 and "x-team-id" in r.json()["message"]
        r = await c.get("/incidents", headers={"x-api-key": DEFAULT_API_KEY,
                                               "x-team-id": "000000000000000000000000"})
        assert r.status_code == 401
        # org routes take the key only
        r = await c.get("/orgs/members", headers={"x-api-key": DEFAULT_API_KEY})
        assert r.status_code == 200 and "syncd-bot@example.com" in {
            m["email"] for m in r.json()["members"]}


async def test_incident_shape_and_404(http: httpx.AsyncClient) -> None:
    assert (await fire(http, "disk full", severity="sev2", priority="p3")).json() == {"Ok": True}
    inc = (await http.get("/incidents/sre-101")).json()
    assert inc["counterId"] == "sre-101" and inc["message"] == "disk full"
    assert inc["status"] == "NACK" and inc["NACK_at"] and inc["ACK_at"] is None
    assert inc["groupedIncident"] == {"priority": "p3", "severity": "sev2", "notes": []}
    r = await http.get("/incidents/sre-999")
    assert r.status_code == 404 and r.json()["error"] == "Not Found"


async def test_team_scoping(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    await fire(http, "only in sre")
    r = await http.get("/incidents/sre-101", headers={"x-team-id": OTHER_TEAM_ID})
    assert r.status_code == 404
    r = await http.get("/incidents", headers={"x-team-id": OTHER_TEAM_ID})
    assert r.json()["totalIncidents"] == 0


async def test_pagination_limits(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    sim.seed_incidents(130)
    r = await http.get("/incidents", params={"perPage": 101})
    assert r.status_code == 400
    r = await http.get("/incidents/triggered", params={"perPage": 0})
    assert r.status_code == 400
    first = (await http.get("/incidents", params={"perPage": 100})).json()
    assert first["totalIncidents"] == 130 and first["totalOpenIncidents"] == 130
    assert first["pagination"] == {"page": 1, "perPage": 100, "total": 130, "totalPages": 2}
    second = (await http.get("/incidents", params={"perPage": 100, "page": 2})).json()
    ids = [i["counterId"] for i in first["incidents"] + second["incidents"]]
    assert len(set(ids)) == 130 and ids[0] == "sre-230"  # newest first
    default = (await http.get("/incidents/triggered")).json()
    assert len(default["incidents"]) == 25


async def test_all_occurrences(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    r = await http.get("/incidents/all-occurrences")
    assert r.status_code == 400
    await fire(http, "a")
    await fire(http, "b")
    t0 = sim.clock.now()
    sim.clock.advance(60)
    await http.post("/incidents/resolve", json={"ids": ["sre-101"]})
    params = {"start": (t0 + timedelta(seconds=1)).isoformat(),
              "end": (t0 + timedelta(hours=1)).isoformat()}
    res = (await http.get("/incidents/all-occurrences", params={**params, "status": "RES"})).json()
    assert [i["counterId"] for i in res["incidents"]] == ["sre-101"]
    every = (await http.get("/incidents/all-occurrences", params=params)).json()
    assert {i["counterId"] for i in every["incidents"]} == {"sre-101", "sre-102"}
    r = await http.get("/incidents/all-occurrences", params={**params, "status": "OPEN"})
    assert r.status_code == 400
    r = await http.get("/incidents/all-occurrences", params={**params, "perPage": 500})
    assert r.status_code == 400


async def test_occurrence_filters_not_modelled_are_refused(http: httpx.AsyncClient) -> None:
    """all-occurrences documents ``teams``, ``service`` and ``integration`` [SP-D incidents];
    the simulator applies none of them, so it refuses them rather than answer unfiltered."""
    window = {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    for name in ("teams", "service", "integration"):
        r = await http.get("/incidents/all-occurrences", params={**window, name: "x"})
        assert r.status_code == 400 and "not simulated" in r.json()["message"], name
    assert (await http.get("/incidents/all-occurrences", params=window)).status_code == 200


async def test_state_machine_and_batch_answer(http: httpx.AsyncClient) -> None:
    for t in ("x", "y", "z"):
        await fire(http, t)
    await http.post("/incidents/resolve", json={"ids": ["sre-103"]})
    r = (await http.post("/incidents/acknowledge",
                         json={"ids": ["sre-101", "sre-102", "sre-103", "nope-1"]})).json()
    assert r["updated"] == ["sre-101", "sre-102"]
    assert {f["id"] for f in r["failed"]} == {"sre-103", "nope-1"}
    r = (await http.post("/incidents/acknowledge", json={"ids": ["sre-101"]})).json()
    assert r["unchanged"] == ["sre-101"]
    r = (await http.post("/incidents/unacknowledge", json={"ids": ["sre-101"]})).json()
    assert r["updated"] == ["sre-101"] and r["incidents"][0]["status"] == "NACK"
    r = (await http.post("/incidents/unacknowledge", json={"ids": ["sre-103"]})).json()
    assert r["failed"][0]["id"] == "sre-103"
    r = (await http.post("/incidents/escalate", json={"ids": ["sre-103"]})).json()
    assert r["failed"]
    log = (await http.get("/incidents/sre-101/activity-log")).json()["activityLog"]
    assert [e["action"] for e in log] == ["triggered", "acknowledged", "unacknowledged"]


async def test_batch_and_body_validation(http: httpx.AsyncClient) -> None:
    await fire(http, "v")
    assert (await http.post("/incidents/acknowledge", json={})).status_code == 400
    assert (await http.post("/incidents/acknowledge", json={"ids": []})).status_code == 400
    assert (await http.post("/incidents/acknowledge", content=b"{oops")).status_code == 400
    big = {"ids": [f"sre-{n}" for n in range(101, 202)]}
    r = await http.post("/incidents/resolve", json=big)
    assert r.status_code == 400 and "100" in r.json()["message"]
    r = await http.post("/incidents/severity", json={"ids": ["sre-101"], "severity": "sev4"})
    assert r.status_code == 400
    r = await http.post("/incidents/priority", json={"ids": ["sre-101"], "priority": "p9"})
    assert r.status_code == 400


async def test_priority_severity_and_removal(http: httpx.AsyncClient) -> None:
    await fire(http, "p")
    await http.post("/incidents/severity", json={"ids": ["sre-101"], "severity": "sev1"})
    await http.post("/incidents/priority", json={"ids": ["sre-101"], "priority": "p2"})
    inc = (await http.get("/incidents/sre-101")).json()
    assert (inc["severity"], inc["priority"]) == ("sev1", "p2")
    r = await http.request("DELETE", "/incidents/severity/remove", json={"ids": ["sre-101"]})
    assert r.json()["updated"] == ["sre-101"]
    r = await http.request("DELETE", "/incidents/priority/remove", json={"ids": ["sre-101"]})
    inc = (await http.get("/incidents/sre-101")).json()
    assert inc["severity"] is None and inc["priority"] is None
    r = await http.request("DELETE", "/incidents/priority/remove")
    assert r.status_code == 400


async def test_priority_and_severity_carry_to_the_next_occurrence(
        http: httpx.AsyncClient) -> None:
    """"Once set, we will remember the severity and priority when the incident occurs in the
    future"; values an integration sends "overwrite" them (SP-KB priority-and-severity, notes
    B5). A repeat of a resolved incident is a new incident carrying the remembered values."""
    await fire(http, "disk full")
    await http.post("/incidents/severity", json={"ids": ["sre-101"], "severity": "sev1"})
    await http.post("/incidents/priority", json={"ids": ["sre-101"], "priority": "p2"})
    await http.post("/incidents/resolve", json={"ids": ["sre-101"]})
    await fire(http, "disk full")
    inc = (await http.get("/incidents/sre-102")).json()
    assert (inc["severity"], inc["priority"]) == ("sev1", "p2")
    await fire(http, "other title")  # another incident remembers nothing of it
    inc = (await http.get("/incidents/sre-103")).json()
    assert (inc["severity"], inc["priority"]) == (None, None)
    await http.post("/incidents/resolve", json={"ids": ["sre-102"]})
    await fire(http, "disk full", severity="sev3")  # sent values win, priority remembered
    inc = (await http.get("/incidents/sre-104")).json()
    assert (inc["severity"], inc["priority"]) == ("sev3", "p2")
    await http.request("DELETE", "/incidents/priority/remove", json={"ids": ["sre-104"]})
    await http.post("/incidents/resolve", json={"ids": ["sre-104"]})
    await fire(http, "disk full")
    inc = (await http.get("/incidents/sre-105")).json()
    assert (inc["severity"], inc["priority"]) == ("sev3", None)


async def test_public_sharing(http: httpx.AsyncClient) -> None:
    await fire(http, "share")
    r = await http.patch("/incidents/sre-101/public-sharing", json={"publicSharing": True})
    assert r.json()["publicSharing"] is True
    r = await http.patch("/incidents/sre-101/public-sharing", json={"publicSharing": "yes"})
    assert r.status_code == 400
    r = await http.patch("/incidents/sre-9/public-sharing", json={"publicSharing": True})
    assert r.status_code == 404


async def test_webhook_dedupe_and_autoresolve(sim: SpikeSimulator,
                                              http: httpx.AsyncClient) -> None:
    await fire(http, "cpu hot")
    await fire(http, "cpu hot")
    assert [i["id"] for i in sim.canonical_incidents()] == ["sre-101"]
    r = await http.post(HOOK, json={"title": "cpu hot", "status": "resolve"})
    assert r.json() == {"Ok": True}
    assert sim.canonical_incidents()[0]["state"] == "resolved"
    await fire(http, "cpu hot")  # a new occurrence once the old one is resolved
    assert [i["state"] for i in sim.canonical_incidents()] == ["resolved", "triggered"]
    r = await http.post("/0000/push-events", json={"title": "x"})
    assert (r.status_code, r.json()) == (500, {})
    r = await http.post(HOOK, json={"body": "no title"})
    assert (r.status_code, r.json()) == (500, {})


async def test_duplicate_flood_suppression(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    for _ in range(20):
        await fire(http, "flappy")
    await http.post(HOOK, json={"title": "flappy", "status": "resolve"})
    await fire(http, "flappy")  # suppressed for a minute: no new incident
    assert len(sim.canonical_incidents()) == 1
    sim.clock.advance(61)
    await fire(http, "flappy")
    assert len(sim.canonical_incidents()) == 2


async def test_create_endpoint(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    body = {"title": "made by api", "escalation": "65a1f0c2e4b0a1b2c3d4e600",
            "integration": WEBHOOK_TOKEN, "severity": "sev3"}
    r = await http.post("/incidents/create", json=body)
    assert r.status_code == 200 and r.json()["incident"]["counterId"] == "sre-101"
    r = await http.post("/incidents/create", json=body)  # same title while open: same incident
    assert r.json()["incident"]["counterId"] == "sre-101"
    r = await http.post("/incidents/create", json={"title": "t"})
    assert r.status_code == 400 and "escalation" in r.json()["message"]
    r = await http.post("/incidents/create", json={**body, "integration": "bogus"})
    assert r.status_code == 400


async def test_ack_timeout_retriggers(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    await fire(http, "slow")
    await http.post("/incidents/acknowledge", json={"ids": ["sre-101"]})
    sim.clock.advance(1799)
    assert (await http.get("/incidents/sre-101")).json()["status"] == "ACK"
    r = await http.post("/_sim/clock", json={"advance": 2})
    assert r.status_code == 200
    inc = (await http.get("/incidents/sre-101")).json()
    assert inc["status"] == "NACK"
    log = (await http.get("/incidents/sre-101/activity-log")).json()["activityLog"]
    assert log[-1]["by"] == "Acknowledge timeout"


async def test_rate_limit_429(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    await http.post("/_sim/rate-limits", json={"scale": 0.05})  # 60/min -> 3/min
    codes = [(await http.get("/incidents/triggered")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = await http.get("/incidents/triggered")
    assert set(r.json()) == {"message", "error"} and int(r.headers["retry-after"]) >= 1
    sim.clock.advance(61)
    assert (await http.get("/incidents/triggered")).status_code == 200
    await http.post("/_sim/rate-limits", json={"enabled": False})
    assert all([(await http.get("/incidents/triggered")).status_code == 200 for _ in range(10)])


async def test_oncall_and_overrides(sim: SpikeSimulator, http: httpx.AsyncClient) -> None:
    schedules = (await http.get("/on-calls")).json()["oncalls"]
    assert {s["name"] for s in schedules} == {"SRE primary", "SRE secondary"}
    primary = next(s for s in schedules if s["name"] == "SRE primary")["_id"]
    active = (await http.get("/oncalls/all-active-on-call-shifts")).json()["shifts"]
    now = sim.clock.now()
    before = next(s for s in active if s["oncall"]["_id"] == primary)
    assert parse_time(before["start"]) <= now < parse_time(before["end"])
    # the rotation hands over every 24 h
    sim.clock.advance(24 * 3600)
    later = (await http.get("/oncalls/all-active-on-call-shifts")).json()["shifts"]
    after = next(s for s in later if s["oncall"]["_id"] == primary)
    assert after["user"]["_id"] != before["user"]["_id"]
    # overrides: most recent wins where they overlap
    dave, erin = "660000000000000000000004", "660000000000000000000005"
    now = sim.clock.now()
    span = {"start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=2)).isoformat()}
    r1 = (await http.post(f"/on-calls/{primary}/overrides/add", json={"user": dave, **span}))
    r2 = (await http.post(f"/on-calls/{primary}/overrides/add", json={"user": erin, **span}))
    assert r1.status_code == r2.status_code == 200
    active = (await http.get("/oncalls/all-active-on-call-shifts")).json()["shifts"]
    mine = next(s for s in active if s["oncall"]["_id"] == primary)
    assert mine["user"]["_id"] == erin and mine["isOverride"] is True
    am = (await http.get("/oncalls/am-i-on-call", params={"id": erin})).json()
    assert am["isOnCall"] is True
    listed = (await http.get(f"/oncalls/{primary}/overrides",
                             params={"from": span["start"], "to": span["end"]})).json()
    assert len(listed["overrides"]) == 2
    oid = r2.json()["override"]["_id"]
    r = await http.delete(f"/on-calls/{primary}/overrides/{oid}/remove")
    assert r.status_code == 200
    active = (await http.get("/oncalls/all-active-on-call-shifts")).json()["shifts"]
    assert next(s for s in active if s["oncall"]["_id"] == primary)["user"]["_id"] == dave
    r = await http.delete(f"/on-calls/{primary}/overrides/{oid}/remove")
    assert r.status_code == 404
    r = await http.post(f"/on-calls/{primary}/overrides/add", json={"user": "nobody", **span})
    assert r.status_code == 400
    r = await http.get(f"/on-calls/{primary}")
    assert r.status_code == 400  # from is required
    detail = (await http.get(f"/on-calls/{primary}", params={"from": now.isoformat()})).json()
    assert detail["shifts"] and detail["shifts"][0]["user"]["_id"] == dave


async def test_control_surface_act_alert_seed(sim: SpikeSimulator) -> None:
    async with sim.client() as c:
        r = await c.post("/_sim/alerts", json={"dedup": "db-1", "title": "DB down"})
        assert r.json()["incident"]["counterId"] == "sre-101"
        assert (await c.post("/_sim/alerts", json={"dedup": "db-1", "title": "x",
                                                   "action": "acknowledge"})).status_code == 400
        r = await c.post("/_sim/incidents/sre-101/act", json={"action": "acknowledge"})
        assert r.json()["status"] == "ACK"
        r = await c.post("/_sim/incidents/sre-101/act", json={"action": "reopen"})
        assert r.status_code == 409
        r = await c.post("/_sim/incidents/sre-9/act", json={"action": "resolve"})
        assert r.status_code == 404
    canon = sim.canonical_incidents()
    assert canon[0]["dedup"] == "db-1" and canon[0]["state"] == "acknowledged"
    ids = sim.seed_incidents(1000, state="resolved")
    assert len(ids) == 1000 and sim.canonical_incidents()[-1]["state"] == "resolved"


def test_seed_is_fast() -> None:
    import time

    sim = SpikeSimulator()
    started = time.monotonic()
    sim.seed_incidents(100_000)
    assert time.monotonic() - started < 10
    d = sim.describe("http://127.0.0.1:8084")
    assert d["credentials"] == {"api_key": DEFAULT_API_KEY, "team_id": TEAM_ID}
    assert d["intake"]["webhook_token"] == WEBHOOK_TOKEN
