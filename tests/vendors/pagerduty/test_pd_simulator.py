"""The PagerDuty simulator holds clients to the documented rules (vendor-notes/pagerduty.md)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import httpx
from starlette.requests import Request

from syncd.simulators.base import Faults
from syncd.simulators.pagerduty import (
    FROM_EMAIL,
    FROM_MISSING,
    READ_ONLY_TOKEN,
    ROUTING_KEY,
    ROUTING_KEY_2,
    SCHED_PRIMARY,
    SERVICE_DB,
    SERVICE_WEB,
    PagerDutySimulator,
)

FROM = {"From": FROM_EMAIL}


def new_incident(title: str, key: str | None = None, service: str = SERVICE_WEB,
                 **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "incident", "title": title,
                            "service": {"id": service, "type": "service_reference"}, **extra}
    if key:
        body["incident_key"] = key
    return {"incident": body}


async def trigger(api: httpx.AsyncClient, dedup: str, key: str = ROUTING_KEY,
                  action: str = "trigger") -> httpx.Response:
    return await api.post("/v2/enqueue", json={
        "routing_key": key, "event_action": action, "dedup_key": dedup,
        "payload": {"summary": f"alert {dedup}", "source": "test", "severity": "critical"}})


def incident_id(sim: PagerDutySimulator, dedup: str) -> str:
    return next(c["id"] for c in sim.canonical_incidents() if c["dedup"] == dedup)


# ---------------------------------------------------------------- auth, headers, errors


async def test_auth_failures_use_the_error_envelope(sim: PagerDutySimulator) -> None:
    async with sim.client(base_url="http://pd.localhost") as raw:
        for headers in ({}, {"Authorization": "Token token=wrong"},
                        {"Authorization": "token=" + sim.token}, {"Authorization": "Token token="}):
            r = await raw.get("/incidents", headers=headers)
            assert r.status_code == 401
            assert r.json() == {"error": {"message": "Authentication failed", "code": 2006}}
        r = await raw.get("/priorities", headers={"Authorization": f"Bearer {sim.token}"})
        assert r.status_code == 200
        ro = {"Authorization": f"Token token={READ_ONLY_TOKEN}", **FROM}
        assert (await raw.get("/incidents", headers=ro)).status_code == 200
        r = await raw.put("/incidents", headers=ro, json={"incidents": []})
        assert r.status_code == 403 and r.json()["error"]["code"] == 2010


async def test_from_header_is_required_on_incident_writes(api: httpx.AsyncClient,
                                                          sim: PagerDutySimulator) -> None:
    await trigger(api, "from-1")
    iid = incident_id(sim, "from-1")
    body = {"incidents": [{"id": iid, "type": "incident_reference", "status": "acknowledged"}]}
    r = await api.put("/incidents", json=body)
    assert r.status_code == 400
    assert r.json()["error"] == {"message": FROM_MISSING, "code": 2016}
    r = await api.put("/incidents", json=body, headers={"From": "nobody@example.com"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1008
    r = await api.put("/incidents", json=body, headers={"From": "not-an-email"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1028
    assert (await api.post("/incidents", json=new_incident("x"))).status_code == 400
    # GETs need neither From nor Content-Type (the official client sends neither).
    assert (await api.get(f"/incidents/{iid}")).status_code == 200
    assert sim.canonical_incidents()[0]["state"] == "triggered"


async def test_writes_need_a_json_content_type(api: httpx.AsyncClient,
                                             sim: PagerDutySimulator) -> None:
    """The spec requires ``Content-Type: application/json`` (header_Content-Type, required,
    enum application/json) on every operation; the notes waive it for GETs only (§1, §8)."""
    iid = sim.seed_incidents(1)[0]
    raw = json.dumps({"incidents": [{"id": iid, "type": "incident_reference",
                                     "status": "acknowledged"}]})
    for kind in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {**FROM, **({"Content-Type": kind} if kind else {})}
        r = await api.put("/incidents", content=raw, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == 2001, kind
    start = sim.clock.now() + timedelta(days=1)
    overrides = json.dumps({"overrides": [{
        "start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat(),
        "user": {"id": "PUSR001", "type": "user_reference"}}]})
    before = len(sim.schedules[SCHED_PRIMARY].overrides)
    r = await api.post("/schedules/" + SCHED_PRIMARY + "/overrides", content=overrides,
                       headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "Invalid Input Provided",
        "code": 2001, "errors": ["Content-Type must be application/json"]}
    assert len(sim.schedules[SCHED_PRIMARY].overrides) == before
    assert sim.incidents[iid].status == "triggered"
    r = await api.put("/incidents", content=raw, headers={
        **FROM, "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200 and sim.incidents[iid].status == "acknowledged"


def _bare_request(method: str, headers: dict[str, str]) -> Request:
    return Request({"type": "http", "method": method, "path": "/schedules/X/overrides/Y",
                    "query_string": b"", "headers": [(k.lower().encode(), v.encode())
                                                     for k, v in headers.items()]})


def test_bodiless_requests_need_no_content_type() -> None:
    """The official client sends Content-Type on POST/PUT/PATCH only (PYPD prepare_headers), so
    a DELETE, which carries no body, must pass without one; a body still needs the JSON type.
    The simulator routes no DELETE yet, so the check is exercised on its own."""
    check = PagerDutySimulator._content_type
    assert check(_bare_request("DELETE", {})) is None
    assert check(_bare_request("DELETE", {"Content-Length": "0"})) is None
    refused = check(_bare_request("DELETE", {"Content-Length": "2", "Content-Type": "text/plain"}))
    assert refused is not None and json.loads(bytes(refused.body))["error"]["code"] == 2001
    chunked = check(_bare_request("PUT", {"Transfer-Encoding": "chunked"}))
    assert chunked is not None and chunked.status_code == 400


async def test_a_bodiless_write_is_refused_by_its_body_check(api: httpx.AsyncClient) -> None:
    r = await api.post("/incidents", headers=FROM)
    assert r.status_code == 400
    assert r.json()["error"]["errors"] == ["Request body must be a JSON object"]


async def test_not_found_and_users_me(api: httpx.AsyncClient) -> None:
    r = await api.get("/incidents/NOPE")
    assert r.status_code == 404 and r.json() == {"error": {"message": "Not Found", "code": 2100}}
    r = await api.get("/users/me")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


async def test_writes_take_the_incident_id_not_its_number(api: httpx.AsyncClient,
                                                          sim: PagerDutySimulator) -> None:
    """Only GET /incidents/{id} "accepts either an incident id, or an incident number" (SPEC
    getIncident); the writes name the resource by its ID (SPEC updateIncident, updateIncidents
    ``id``) and say nothing of numbers; refusing one is our stricter reading, so a client
    writing by number fails here."""
    iid = sim.seed_incidents(1)[0]
    number = str(sim.incidents[iid].number)
    assert (await api.get(f"/incidents/{number}")).json()["incident"]["id"] == iid
    r = await api.put(f"/incidents/{number}", headers=FROM, json={"incident": {
        "type": "incident_reference", "status": "acknowledged"}})
    assert r.status_code == 404 and r.json()["error"]["code"] == 2100
    r = await api.put("/incidents", headers=FROM, json={"incidents": [
        {"id": number, "type": "incident_reference", "status": "acknowledged"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1004
    assert sim.incidents[iid].status == "triggered"


# ---------------------------------------------------------------- pagination and windows


async def test_pagination_limits(api: httpx.AsyncClient, sim: PagerDutySimulator) -> None:
    sim.seed_incidents(230)
    r = await api.get("/incidents", params={"limit": 101})
    assert r.status_code == 400 and r.json()["error"]["code"] == 2001
    r = await api.get("/incidents", params={"limit": 100, "offset": 9901})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 2002
    assert "10000" in r.json()["error"]["errors"][0]
    assert (await api.get("/incidents", params={"limit": 100, "offset": 9900})).status_code == 200
    page = (await api.get("/incidents", params={"limit": 100, "date_range": "all"})).json()
    assert (page["limit"], page["offset"], page["more"], page["total"]) == (100, 0, True, None)
    last = (await api.get("/incidents", params={"limit": 100, "offset": 200, "total": "true",
                                                "date_range": "all"})).json()
    assert len(last["incidents"]) == 30 and last["more"] is False and last["total"] == 230


async def test_default_window_hides_incidents_older_than_a_month(
        api: httpx.AsyncClient, sim: PagerDutySimulator) -> None:
    sim.seed_incidents(60 * 24 * 40)  # one a minute for 40 days
    open_all = {"statuses[]": ["triggered", "acknowledged"], "total": "true", "limit": 1}
    recent = (await api.get("/incidents", params=open_all)).json()["total"]
    everything = (await api.get("/incidents", params={**open_all, "date_range": "all"})).json()
    assert everything["total"] == 60 * 24 * 40
    assert 60 * 24 * 29 < recent < 60 * 24 * 31
    r = await api.get("/incidents", params={"since": "2020-01-01", "until": "2021-01-01"})
    assert r.status_code == 400  # more than six months
    r = await api.get("/incidents", params={"statuses[]": "open"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 2001


async def test_sort_and_incident_key_filter(api: httpx.AsyncClient) -> None:
    for n in range(3):
        await trigger(api, f"sort-{n}")
    r = await api.get("/incidents", params={"sort_by": "incident_number:desc"})
    numbers = [i["incident_number"] for i in r.json()["incidents"]]
    assert numbers == sorted(numbers, reverse=True)
    r = await api.get("/incidents", params={"incident_key": "sort-1", "date_range": "all"})
    assert [i["incident_key"] for i in r.json()["incidents"]] == ["sort-1"]
    assert (await api.get("/incidents", params={"sort_by": "title"})).status_code == 400


# ---------------------------------------------------------------- writes and state machine


async def test_bulk_update_limit_and_all_or_nothing(api: httpx.AsyncClient,
                                                    sim: PagerDutySimulator) -> None:
    ids = sim.seed_incidents(251)
    items = [{"id": i, "type": "incident_reference", "status": "acknowledged"} for i in ids]
    r = await api.put("/incidents", json={"incidents": items}, headers=FROM)
    assert r.status_code == 413
    r = await api.put("/incidents", json={"incidents": items[:250]}, headers=FROM)
    assert r.status_code == 200
    got = r.json()["incidents"]
    assert len(got) == 250 and {i["status"] for i in got} == {"acknowledged"}
    assert got[0]["acknowledgements"][0]["acknowledger"]["summary"] == "syncd bot"
    assert got[0]["assignments"][0]["assignee"]["id"] == got[0]["acknowledgements"][0][
        "acknowledger"]["id"]
    # Resolving a resolved incident fails the whole request; nothing else changes.
    await api.put("/incidents", json={"incidents": [{"id": ids[0], "type": "incident_reference",
                                                     "status": "resolved"}]}, headers=FROM)
    r = await api.put("/incidents", headers=FROM, json={"incidents": [
        {"id": ids[1], "type": "incident_reference", "status": "resolved"},
        {"id": ids[0], "type": "incident_reference", "status": "resolved"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1001
    assert sim.incidents[ids[1]].status == "acknowledged"


async def test_reopen_rule_and_no_unacknowledge(api: httpx.AsyncClient,
                                                sim: PagerDutySimulator) -> None:
    await trigger(api, "reopen-1")
    iid = incident_id(sim, "reopen-1")

    async def put(status: str) -> httpx.Response:
        return await api.put(f"/incidents/{iid}", headers=FROM, json={
            "incident": {"type": "incident_reference", "status": status}})

    assert (await put("acknowledged")).status_code == 200
    r = await put("triggered")  # no un-acknowledge through the API
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003
    assert (await put("resolved")).json()["incident"]["status"] == "resolved"
    # A late acknowledge on a resolved incident reopens it, assigned to the acting user.
    r = await put("acknowledged")
    inc = r.json()["incident"]
    assert inc["status"] == "acknowledged" and inc["resolved_at"] is None
    assert inc["assignments"][0]["assignee"]["summary"] == "syncd bot"
    logs = (await api.get(f"/incidents/{iid}/log_entries")).json()["log_entries"]
    kinds = [e["type"] for e in reversed(logs)]
    assert kinds == ["trigger_log_entry", "acknowledge_log_entry", "resolve_log_entry",
                     "trigger_log_entry", "acknowledge_log_entry"]
    assert all(e["agent"]["type"] in ("user_reference", "service_reference") for e in logs)


async def test_priority_urgency_and_escalation_updates(api: httpx.AsyncClient,
                                                       sim: PagerDutySimulator) -> None:
    await trigger(api, "prio-1")
    iid = incident_id(sim, "prio-1")
    r = await api.put("/incidents", headers=FROM, json={"incidents": [
        {"id": iid, "type": "incident_reference", "priority": "P2", "urgency": "low",
         "escalation_level": 2}]})
    inc = r.json()["incidents"][0]
    assert inc["priority"]["name"] == "P2" and inc["urgency"] == "low"
    r = await api.put("/incidents", headers=FROM, json={"incidents": [
        {"id": iid, "type": "incident_reference",
         "priority": {"id": "PPRIO01", "type": "priority_reference"}}]})
    assert r.json()["incidents"][0]["priority"]["summary"] == "P1"
    r = await api.put("/incidents", headers=FROM, json={"incidents": [
        {"id": iid, "type": "incident_reference", "priority": "P9"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1020
    kinds = {e["type"] for e in (await api.get(f"/incidents/{iid}/log_entries")).json()[
        "log_entries"]}
    assert {"urgency_change_log_entry", "escalate_log_entry"} <= kinds


async def test_create_dedups_open_incident_key_per_service(api: httpx.AsyncClient,
                                                           sim: PagerDutySimulator) -> None:
    r = await api.post("/incidents", json=new_incident("Mirror", "syncd-g-1"), headers=FROM)
    assert r.status_code == 201
    first = r.json()["incident"]
    assert first["incident_key"] == "syncd-g-1" and first["status"] == "triggered"
    r = await api.post("/incidents", json=new_incident("Mirror", "syncd-g-1"), headers=FROM)
    assert r.status_code == 400
    # Another service may use the key; once resolved the key is free again.
    r = await api.post("/incidents", json=new_incident("Mirror", "syncd-g-1", SERVICE_DB),
                       headers=FROM)
    assert r.status_code == 201
    sim.act(first["id"], "resolve")
    r = await api.post("/incidents", json=new_incident("Again", "syncd-g-1"), headers=FROM)
    assert r.status_code == 201
    found = (await api.get("/incidents", params={"incident_key": "syncd-g-1",
                                                 "date_range": "all"})).json()["incidents"]
    assert len(found) == 3
    # Reopening the resolved one would make two open incidents with one key: refused.
    r = await api.put(f"/incidents/{first['id']}", headers=FROM, json={
        "incident": {"type": "incident_reference", "status": "triggered"}})
    assert r.status_code == 400


# ---------------------------------------------------------------- events API v2


async def test_events_dedup_and_routing_key_rule(api: httpx.AsyncClient,
                                                 sim: PagerDutySimulator) -> None:
    r = await trigger(api, "ev-1")
    assert r.status_code == 202
    assert r.json() == {"status": "success", "message": "Event processed", "dedup_key": "ev-1"}
    await trigger(api, "ev-1")  # same open alert: no second incident
    assert len(sim.incidents) == 1
    # An ack through another integration's routing key is dropped.
    await trigger(api, "ev-1", key=ROUTING_KEY_2, action="acknowledge")
    assert sim.canonical_incidents()[0]["state"] == "triggered"
    await trigger(api, "ev-1", action="acknowledge")
    assert sim.canonical_incidents()[0]["state"] == "acknowledged"
    await trigger(api, "ev-1", action="resolve")
    assert sim.canonical_incidents()[0]["state"] == "resolved"
    await trigger(api, "ev-1", action="acknowledge")  # resolved: dropped
    await trigger(api, "ev-1")  # a new trigger after resolve: a new incident
    assert [c["state"] for c in sim.canonical_incidents()] == ["resolved", "triggered"]
    r = await api.post("/v2/enqueue", json={"routing_key": ROUTING_KEY,
                                            "event_action": "trigger", "payload": {}})
    assert r.status_code == 400 and r.json()["errors"]
    r = await api.post("/v2/enqueue", content=b"{nope")
    assert r.status_code == 400 and r.json()["status"] == "Unrecognized object"
    r = await api.post("/v2/enqueue", json={"routing_key": ROUTING_KEY,
                                            "event_action": "trigger",
                                            "payload": {"summary": "s", "source": "x",
                                                        "severity": "critical"}})
    assert len(r.json()["dedup_key"]) == 32  # generated when absent


# ---------------------------------------------------------------- timers


async def test_ack_timeout_and_auto_resolve(api: httpx.AsyncClient,
                                            sim: PagerDutySimulator) -> None:
    await trigger(api, "timer-1")
    iid = incident_id(sim, "timer-1")
    sim.act(iid, "acknowledge", user="bob@example.com")
    inc = (await api.get(f"/incidents/{iid}")).json()["incident"]
    assert inc["pending_actions"][0]["type"] == "unacknowledge"
    await api.post("/_sim/clock", json={"advance": 1801})
    assert sim.incidents[iid].status == "triggered"
    logs = (await api.get(f"/incidents/{iid}/log_entries")).json()["log_entries"]
    assert logs[0]["type"] == "unacknowledge_log_entry"
    assert logs[0]["agent"]["type"] == "service_reference"
    assert logs[0]["channel"] == {"type": "timeout"}
    # Database has a 4 h auto-resolve.
    await trigger(api, "db-1", key="d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
    db = incident_id(sim, "db-1")
    await api.post("/_sim/clock", json={"advance": 4 * 3600 + 1})
    assert sim.incidents[db].status == "resolved"
    assert sim.log_by_id[sim.incidents[db].log_ids[-1]].channel == {"type": "auto"}


# ---------------------------------------------------------------- rate limits


async def test_rate_limit_headers_and_429(api: httpx.AsyncClient,
                                          sim: PagerDutySimulator) -> None:
    r = await api.get("/priorities")
    assert r.headers["ratelimit-limit"] == "960"
    assert int(r.headers["ratelimit-remaining"]) == 959
    await api.post("/_sim/rate-limits", json={"scale": 5 / 960})  # 5 per minute
    statuses = [(await api.get("/priorities")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    r = await api.get("/priorities")
    assert r.json() == {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
    assert r.headers["ratelimit-remaining"] == "0" and int(r.headers["ratelimit-reset"]) > 0
    await api.post("/_sim/clock", json={"advance": 61})
    assert (await api.get("/priorities")).status_code == 200


async def test_events_rate_limit_per_routing_key(api: httpx.AsyncClient,
                                                 sim: PagerDutySimulator) -> None:
    await api.post("/_sim/rate-limits", json={"scale": 3 / 120})
    codes = [(await trigger(api, f"rl-{n}")).status_code for n in range(4)]
    assert codes == [202, 202, 202, 429]
    assert (await trigger(api, "other", key=ROUTING_KEY_2)).status_code == 202
    assert len(sim.incidents) == 4  # the throttled event was not ingested


# ---------------------------------------------------------------- on-call and overrides


async def test_oncalls_window_defaults_to_now(api: httpx.AsyncClient,
                                             sim: PagerDutySimulator) -> None:
    """``since`` and ``until`` each default to the current time (SPEC listOnCalls): a ``since``
    alone reads from then until now, and a ``since`` in the future alone puts ``until`` before
    it, which is a 400."""
    now = sim.clock.now().replace(microsecond=0)
    since = (now - timedelta(days=3)).isoformat()
    params = {"since": since, "limit": 100, "schedule_ids[]": SCHED_PRIMARY}
    alone = (await api.get("/oncalls", params=params)).json()["oncalls"]
    both = (await api.get("/oncalls", params={**params, "until": now.isoformat()})).json()[
        "oncalls"]
    assert alone == both and len({r["start"] for r in alone}) > 1
    r = await api.get("/oncalls", params={"since": (now + timedelta(days=1)).isoformat()})
    assert r.status_code == 400 and r.json()["error"]["code"] == 2004


async def test_oncalls_follow_rotations_and_overrides(api: httpx.AsyncClient,
                                                      sim: PagerDutySimulator) -> None:
    rows = (await api.get("/oncalls", params={"limit": 100})).json()["oncalls"]
    levels = {(r["escalation_policy"]["id"], r["escalation_level"]) for r in rows}
    assert ("PEPSRE1", 1) in levels and ("PEPSRE1", 3) in levels
    permanent = [r for r in rows if r["schedule"] is None]
    assert permanent and all(r["start"] is None and r["end"] is None for r in permanent)
    primary = [r for r in rows if r["schedule"] and r["schedule"]["id"] == SCHED_PRIMARY]
    before = primary[0]["user"]["id"]
    other = next(u for u in ("PUSR001", "PUSR002", "PUSR003") if u != before)
    now = sim.clock.now()
    r = await api.post(f"/schedules/{SCHED_PRIMARY}/overrides", json={"overrides": [
        {"start": now.isoformat(), "end": (now.replace(microsecond=0)).isoformat(),
         "user": {"id": other, "type": "user_reference"}},
        {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z",
         "user": {"id": other, "type": "user_reference"}, "time_zone": "UTC"}]})
    assert r.status_code == 201
    body = r.json()
    assert isinstance(body, list) and [i["status"] for i in body] == [400, 201]
    assert body[1]["override"]["id"]
    rows = (await api.get("/oncalls", params={"schedule_ids[]": SCHED_PRIMARY})).json()[
        "oncalls"]
    assert {r["user"]["id"] for r in rows} == {other}
    listed = (await api.get(f"/schedules/{SCHED_PRIMARY}/overrides", params={
        "since": "2024-01-01", "until": "2030-01-01"})).json()["overrides"]
    assert len(listed) == 1
    assert (await api.get(f"/schedules/{SCHED_PRIMARY}/overrides")).status_code == 400
    far = (await api.get("/oncalls", params={"until": "2199-01-01T00:00:00Z"}))
    assert far.status_code == 400


async def test_log_entries_feed_since_until_and_include(api: httpx.AsyncClient,
                                                        sim: PagerDutySimulator) -> None:
    start = sim.clock.now()
    await trigger(api, "feed-1")
    sim.act(incident_id(sim, "feed-1"), "acknowledge")
    r = await api.get("/log_entries", params={"since": start.isoformat(),
                                              "include[]": "incidents"})
    entries = r.json()["log_entries"]
    assert [e["type"] for e in entries] == ["acknowledge_log_entry", "trigger_log_entry"]
    assert entries[0]["incident"]["status"] == "acknowledged"
    assert entries[0]["agent"]["summary"] == "Alice Archer"
    r = await api.get("/log_entries", params={"until": start.isoformat()})
    assert r.json()["log_entries"] == []


async def test_seed_is_fast_and_lists_stay_cheap(sim: PagerDutySimulator) -> None:
    started = time.monotonic()
    sim.seed_incidents(100_000)
    assert time.monotonic() - started < 5
    async with sim.client(base_url="http://pd.localhost", headers={
            "Authorization": f"Token token={sim.token}"}) as api:
        started = time.monotonic()
        for offset in range(0, 2000, 100):
            r = await api.get("/incidents", params={
                "date_range": "all", "statuses[]": ["triggered", "acknowledged"],
                "limit": 100, "offset": offset})
            assert len(r.json()["incidents"]) == 100
        assert time.monotonic() - started < 10


# ---------------------------------------------------------------- after_next_write


async def test_a_persons_act_after_a_write_waits_for_one_taken_and_never_spoils_its_answer(
        sim: PagerDutySimulator, api: httpx.AsyncClient) -> None:
    """after_next_write fires after a write the vendor took (its app answered 2xx), not after
    one an injected fault answered without the vendor (a 502, a 429, a 200 of deep JSON, a 2xx
    echo page: it changed nothing); what the action raises is kept for the test, and the
    write's own answer reaches the client unchanged."""
    ran: list[int] = []
    sim.after_next_write(lambda: ran.append(len(sim.write_log)))
    sim.faults = Faults(error_rate=1.0, error_status=502)
    assert (await trigger(api, "a")).status_code == 502
    sim.faults = Faults(rate_limit_rate=1.0)
    assert (await trigger(api, "a")).status_code == 429
    sim.faults = Faults(deep_json_rate=1.0, deep_json_depth=3)
    assert (await trigger(api, "a")).status_code == 200
    sim.faults = Faults(echo_headers_rate=1.0, echo_status=200)
    assert (await trigger(api, "a")).status_code == 200
    assert ran == []
    assert not sim.incidents
    sim.faults = Faults()
    assert (await trigger(api, "a")).status_code == 202
    assert ran == [5]

    def refuse() -> None:
        raise ValueError("incident is resolved: nothing to acknowledge")

    sim.after_next_write(refuse)
    assert (await trigger(api, "b")).status_code == 202
    assert [str(e) for e in sim.after_write_errors] == [
        "incident is resolved: nothing to acknowledge"]
