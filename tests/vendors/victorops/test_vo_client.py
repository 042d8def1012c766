"""The Splunk On-Call client against the simulator (ASGI transport, no HTTP mocks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from syncd.model import NewIncident, Severity, State
from syncd.ratelimit import Budget
from syncd.simulators.oncall import Layer
from syncd.vendors.base import (
    Action,
    AuthError,
    Capability,
    MalformedResponse,
    Outcome,
    PermanentError,
    Push,
    TransientError,
    VendorClient,
)
from syncd.vendors.victorops import VictorOpsClient, limit_table

INC = "/api-public/v1/incidents"
REPORTING = "/api-reporting/v2/incidents"


async def poll_all(client, cursor=None, full=False):
    pages = [p async for p in client.poll(cursor, full=full)]
    incidents = [i for p in pages for i in p.incidents]
    skipped = [s for p in pages for s in p.skipped]
    assert pages[-1].cursor is not None
    return incidents, skipped, pages[-1].cursor


def pushes(ids, action=Action.ACKNOWLEDGE):
    return [Push(i, action, f"k-{i}") for i in ids]


def test_declares_protocol_and_truthful_capabilities() -> None:
    assert isinstance(VictorOpsClient, type)
    caps = VictorOpsClient.capabilities
    assert caps & Capability.ACK and caps & Capability.RESOLVE and caps & Capability.CREATE
    assert not caps & (Capability.UNACK | Capability.SEVERITY_WRITE | Capability.REOPEN)
    assert VictorOpsClient.batch_size == {Action.ACKNOWLEDGE: 100, Action.RESOLVE: 100}


def test_limit_tables_match_the_simulator() -> None:
    from syncd.simulators.victorops import LIMIT_TABLES
    for name in ("2018", "2020"):
        for endpoint, limit in limit_table(name).items():
            if endpoint != "*":
                assert LIMIT_TABLES[name][endpoint] == limit.requests, endpoint


async def test_poll_full_then_incremental(sim, make_client) -> None:
    client = make_client(org_slug="acme")
    assert isinstance(client, VendorClient)
    sim.ingest("syncd", {"message_type": "CRITICAL", "entity_id": "disk-1",
                         "entity_display_name": "Disk full"})
    sim.ingest("syncd", {"message_type": "WARNING", "entity_id": "w"})  # no incident
    sim.seed_incidents(3)
    incidents, skipped, cursor = await poll_all(client)
    assert len(incidents) == 4 and not skipped
    disk = next(i for i in incidents if i.keys.get("dedup") == "disk-1")
    assert disk.state is State.TRIGGERED and disk.severity is Severity.SEV1
    assert disk.title == "Disk full" and disk.external_id == disk.number == "1"
    assert disk.created_at.tzinfo is not None and disk.url.endswith("/incident/1/details")
    assert "marker" not in disk.keys
    again, _, cursor = await poll_all(client, cursor)
    assert again == []
    sim.act("1", "acknowledge")
    changed, _, cursor = await poll_all(client, cursor)
    assert [(i.external_id, i.state) for i in changed] == [("1", State.ACKNOWLEDGED)]
    full, _, _ = await poll_all(client, cursor, full=True)
    assert len(full) == 4


async def test_a_live_list_larger_than_the_answer_cap_is_read_whole(sim, make_client) -> None:
    """The live list is unpaginated (7.3 MB at 10,000 open incidents): read whole under the
    10 MiB answer cap, an account with ~14,000 open incidents could never be polled. It is
    read element by element, so the cap bounds one incident, not the list; here the cap is
    cut to 16 KiB and the list is ~10 times that, for the poll, the refusal check of a push
    and the marker search of a create."""
    client = make_client()
    client.http.max_body = 16 * 1024
    ids = sim.seed_incidents(250)
    sim.ingest("syncd", {"message_type": "CRITICAL", "entity_id": "disk-1"})
    incidents, skipped, cursor = await poll_all(client)
    assert len(incidents) == 251 and not skipped
    sim.act(ids[0], "resolve")
    results = await client.push(Action.ACKNOWLEDGE, pushes([ids[0]]))
    assert results[0].outcome is Outcome.ALREADY and results[0].incident.state is State.RESOLVED
    found = await client.find_created("disk-1")
    assert found is not None and found.external_id == "251"
    changed, _, _ = await poll_all(client, cursor)
    assert [(i.external_id, i.state) for i in changed] == [(ids[0], State.RESOLVED)]


async def test_resolves_that_age_out_come_from_reporting(sim, make_client) -> None:
    client = make_client()
    ids = sim.seed_incidents(3)
    _, _, cursor = await poll_all(client)
    sim.act(ids[0], "resolve")
    sim.clock.advance(sim.resolved_retention + 5)  # resolved and aged out between polls
    sim.act(ids[1], "resolve")  # resolved recently: still in the live list
    before = sim.call_count(route=REPORTING)
    changed, _, cursor = await poll_all(client, cursor)
    assert {(i.external_id, i.state) for i in changed} == {
        (ids[0], State.RESOLVED), (ids[1], State.RESOLVED)}
    assert sim.call_count(route=REPORTING) == before + 1
    assert json.loads(cursor)["gone"] == []
    quiet, _, _ = await poll_all(client, cursor)
    assert quiet == []


async def test_reporting_lookup_waits_for_its_budget_in_the_cursor(sim, make_client) -> None:
    client = make_client(budget=Budget(limit_table("2018"), 1.0))
    ids = sim.seed_incidents(2)
    _, _, cursor = await poll_all(client)
    await client.budget.acquire("GET /api-reporting/v2/incidents")  # spend the 1/min token
    sim.act(ids[0], "resolve")
    sim.clock.advance(sim.resolved_retention + 5)
    changed, _, cursor = await poll_all(client, cursor)
    assert changed == [] and json.loads(cursor)["gone"] == [ids[0]]
    assert sim.call_count(route=REPORTING) == 0


async def test_push_batches_and_outcomes(sim, make_client) -> None:
    client = make_client()
    ids = sim.seed_incidents(250)
    results = await client.push(Action.ACKNOWLEDGE, pushes(ids))
    assert [r.outcome for r in results] == [Outcome.DONE] * 250
    assert sim.call_count(method="PATCH", route=f"{INC}/ack") == 3
    assert sim.incidents[int(ids[-1])].transitions[-1]["by"] == "syncd-bot"
    sim.act(ids[1], "resolve")
    results = await client.push(Action.ACKNOWLEDGE, pushes([ids[0], ids[1], "999999"]))
    out = {r.external_id: r for r in results}
    assert out[ids[0]].outcome is Outcome.ALREADY  # already acked
    assert out[ids[1]].outcome is Outcome.ALREADY  # resolved: a late ack never reopens
    assert out[ids[1]].incident.state is State.RESOLVED
    assert sim.incidents[int(ids[1])].phase == "RESOLVED"
    assert out["999999"].outcome is Outcome.REFUSED and out["999999"].message
    results = await client.push(Action.RESOLVE, pushes(ids[2:7], Action.RESOLVE))
    assert [r.outcome for r in results] == [Outcome.DONE] * 5
    with pytest.raises(PermanentError):
        await client.push(Action.SET_SEVERITY, pushes(ids[:1], Action.SET_SEVERITY))


async def test_unknown_service_user_is_permanent(sim, make_client) -> None:
    client = make_client(user_name="nobody")
    ids = sim.seed_incidents(1)
    with pytest.raises(PermanentError, match="nobody"):
        await client.push(Action.ACKNOWLEDGE, pushes(ids))


async def test_read_only_key_403_backs_off_once_then_auth_error(sim, make_client) -> None:
    client = make_client(api_key=sim.READ_ONLY_KEY)
    ids = sim.seed_incidents(1)
    with pytest.raises(AuthError) as info:
        await client.push(Action.ACKNOWLEDGE, pushes(ids))
    assert sim.call_count(route=f"{INC}/ack", status=403) == 2  # one retry, never forever
    assert sim.READ_ONLY_KEY not in str(info.value) and sim.API_ID not in str(info.value)
    incidents, _, _ = await poll_all(client)  # reads still work with a read-only key
    assert len(incidents) == 1


async def test_a_403_after_a_retry_that_met_a_server_error_backs_off_again(
        sim, make_client) -> None:
    """A 403 whose back-off retry met a 503 is forgotten: a later rate-limit 403 backs off
    once again and the push lands, instead of an AuthError at once."""
    ids = sim.seed_incidents(2)
    route = f"{INC}/ack"
    after_backoff = {"error_status": 503}  # the back-off's retry meets a server error instead

    async def sleep(seconds: float) -> None:
        sim.faults.__dict__.update(after_backoff)

    sim.faults.__dict__.update({"error_rate": 1.0, "error_status": 403, "routes": [route]})
    client = make_client(sleep=sleep)
    with pytest.raises(TransientError):
        await client.push(Action.ACKNOWLEDGE, pushes(ids[:1]))
    assert sim.call_count(route=route, status=403) == 1

    sim.faults.error_status = 403
    after_backoff.clear()
    after_backoff["error_rate"] = 0.0  # the rate limit has passed when the back-off ends
    results = await client.push(Action.ACKNOWLEDGE, pushes(ids[1:]))
    assert [r.outcome for r in results] == [Outcome.DONE]
    assert sim.call_count(route=route, status=403) == 2


async def test_a_403_long_after_a_retry_that_got_no_answer_backs_off_again(
        sim, make_client) -> None:
    """A 403 whose back-off retry timed out (no answer to end the spell) is forgotten once a
    back-off and an exchange have passed: a later rate-limit 403 backs off once again."""
    ids = sim.seed_incidents(2)
    route = f"{INC}/ack"
    after_backoff = {"error_rate": 0.0, "hang_rate": 1.0, "hang_seconds": 5.0}

    async def sleep(seconds: float) -> None:
        sim.faults.__dict__.update(after_backoff)

    sim.faults.__dict__.update({"error_rate": 1.0, "error_status": 403, "routes": [route]})
    client = make_client(sleep=sleep, timeout=0.1)
    with pytest.raises(TransientError):
        await client.push(Action.ACKNOWLEDGE, pushes(ids[:1]))
    assert sim.call_count(route=route, status=403) == 1

    await anyio.sleep(0.01 + 2 * 0.1 + 1.0 + 0.1)  # past the back-off's window
    sim.faults.__dict__.update({"error_rate": 1.0, "hang_rate": 0.0})
    after_backoff.clear()
    after_backoff["error_rate"] = 0.0  # the rate limit has passed when the back-off ends
    results = await client.push(Action.ACKNOWLEDGE, pushes(ids[1:]))
    assert [r.outcome for r in results] == [Outcome.DONE]
    assert sim.call_count(route=route, status=403) == 2


async def test_wrong_key_is_an_auth_error(sim, make_client) -> None:
    client = make_client(api_key="wrong-key-value")
    with pytest.raises(AuthError) as info:
        await poll_all(client)
    assert "wrong-key-value" not in str(info.value)


async def test_rate_limit_403_is_retried_after_backing_off(sim, make_client) -> None:
    sim.rate_limits_enabled = True

    async def sleep(seconds: float) -> None:
        sim.clock.advance(seconds)

    client = make_client(sleep=sleep)
    client._forbidden_backoff = 60.0
    sim.seed_incidents(1)
    for _ in range(8):  # 6/min in the 2018 table: the 7th call meets a 403
        incidents, _, _ = await poll_all(client)
        assert len(incidents) == 1
    assert sim.call_count(route=INC, status=403) >= 1


async def test_429_option_honours_retry_after(make_client) -> None:
    from syncd.simulators.victorops import VictorOpsSimulator
    sim = VictorOpsSimulator(rate_limit_status=429)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        sim.clock.advance(seconds)

    client = make_client(app=sim.app, sleep=sleep)
    for _ in range(7):
        await poll_all(client)
    assert sim.call_count(route=INC, status=429) == 1 and waits and waits[0] >= 1


async def test_budget_paces_the_live_list_per_endpoint() -> None:
    budget = Budget(limit_table("2018"), 0.5)
    bucket = budget.buckets_for("GET /api-public/v1/incidents")
    assert [b.capacity for b in bucket] == [60.0, 3.0]


async def test_faults_retry_reads_not_writes(sim, make_client) -> None:
    client = make_client()
    ids = sim.seed_incidents(1)
    sim.faults.error_rate, sim.faults.routes = 1.0, ["/api-public/v1/incidents/ack"]
    with pytest.raises(TransientError):
        await client.push(Action.ACKNOWLEDGE, pushes(ids))
    assert sim.call_count(route=f"{INC}/ack") == 1  # PATCH is not retried blindly
    sim.faults.error_rate = 0
    sim.faults.drop_rate, sim.faults.routes = 1.0, ["/api-public/v1/incidents"]
    with pytest.raises(TransientError):
        await poll_all(client)
    assert sim.call_count(route=INC) == 3  # max_retries=2
    sim.faults.drop_rate = 0
    sim.faults.outage_until = sim.clock.monotonic() + 60
    with pytest.raises(TransientError):
        await poll_all(client)


async def test_create_is_idempotent_and_found_after_crash(sim, make_client) -> None:
    client = make_client(warning_creates_incidents=False)
    new = NewIncident(marker="syncd-m-1", title="Mirrored", severity=Severity.SEV3,
                      details="from PagerDuty")
    made = await client.create(new)
    assert made.keys == {"dedup": "syncd-m-1", "marker": "syncd-m-1"}
    assert made.severity is Severity.SEV1  # WARNING would not open an incident here
    assert (await client.create(new)).external_id == made.external_id
    assert len(sim.incidents) == 1 and sim.incidents[1].alert_count == 1
    fresh = make_client()  # a restart
    assert (await fresh.find_created("syncd-m-1")).external_id == made.external_id
    assert await fresh.find_created("syncd-never") is None
    # Resolved and aged out of the live list: reporting v2 still finds it.
    sim.act(made.external_id, "resolve")
    sim.clock.advance(sim.resolved_retention + 1)
    found = await fresh.find_created("syncd-m-1")
    assert found.external_id == made.external_id and found.state is State.RESOLVED


async def test_create_acknowledged_and_warning(sim, make_client) -> None:
    sim.warning_creates_incidents = True
    client = make_client(warning_creates_incidents=True)
    made = await client.create(NewIncident(marker="m-2", title="t", severity=Severity.SEV2,
                                           state=State.ACKNOWLEDGED))
    assert made.state is State.ACKNOWLEDGED and made.severity is Severity.SEV2


async def test_create_without_rest_key_or_with_failure(sim, make_client, corrupt) -> None:
    client = make_client(rest_api_key=None)
    with pytest.raises(PermanentError, match="rest_api_key"):
        await client.create(NewIncident(marker="m", title="t"))
    path = f"/integrations/generic/20131114/alert/{sim.REST_KEY}/syncd"
    app = corrupt(sim.app, path, b'{"result":"failure","message":"bad entity"}')
    with pytest.raises(PermanentError, match="failure"):
        await make_client(app=app).create(NewIncident(marker="m", title="t"))


async def test_oncall_levels_emails_and_override(sim, make_client) -> None:
    client = make_client()
    now = datetime.now(UTC)
    entries = await client.oncall(now, now + timedelta(days=14))
    pol = "pol-pl4tf0rm0000prim"
    level1 = sorted((e for e in entries if e.schedule_id == pol and e.level == 1),
                    key=lambda e: e.start)
    assert {e.level for e in entries} == {1, 2}
    assert level1[0].user_email == f"{level1[0].user_id}@example.com"
    assert level1[0].start == now or level1[0].start <= now + timedelta(seconds=1)
    assert level1[-1].end <= now + timedelta(days=14)
    assert level1[0].user_id == sim.oncall_at(pol, 0, now)
    assert level1[0].team == "Platform" and level1[0].schedule_name == "Platform on-call"
    # Cover the next two hours of level 1 with frank.
    start, end = now + timedelta(hours=1), now + timedelta(hours=3)
    ids = await client.create_override(pol, "frank@example.com", start, end)
    assert ids and sim.oncall_at(pol, 0, start + timedelta(minutes=30)) == "frank"
    after = await client.oncall(now, now + timedelta(days=1))
    franks = [e for e in after if e.schedule_id == pol and e.level == 1
              and e.user_id == "frank"]
    assert [(f.start, f.end) for f in franks] == [
        (start.replace(microsecond=0), end.replace(microsecond=0))]
    # Over frank's override, erin: the override replaces frank (the one paged), not the
    # rotation's user, whom frank's override already replaced.
    assert await client.create_override(pol, "erin@example.com", start, end)
    assert sim.oncall_at(pol, 0, start + timedelta(minutes=30)) == "erin"
    with pytest.raises(PermanentError):
        await client.create_override(pol, "ghost@example.com", start, end)
    with pytest.raises(PermanentError):
        await client.create_override("pol-nope", "frank@example.com", start, end)


# ---------------------------------------------------------------------- malformed answers


@pytest.mark.parametrize("body,ctype", [
    (b'{"nope": []}', "application/json"),
    (b'{"incidents": null}', "application/json"),
    (b'{"incidents": [', "application/json"),
    (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    (b"[]", "application/json"),
])
async def test_unusable_live_list_raises(sim, make_client, corrupt, body, ctype) -> None:
    client = make_client(app=corrupt(sim.app, INC, body, content_type=ctype))
    with pytest.raises(MalformedResponse) as info:
        await poll_all(client)
    assert "GET /api-public/v1/incidents" in str(info.value)


async def test_bad_records_are_skipped_not_fatal(sim, make_client, corrupt) -> None:
    sim.seed_incidents(6)

    def damage(raw: bytes) -> bytes:
        data = json.loads(raw)
        rows = data["incidents"]
        rows[0]["currentPhase"] = "SNOOZED"  # unknown enum
        del rows[1]["incidentNumber"]  # missing field
        rows[2]["currentPhase"] = None  # null
        rows[3]["startTime"] = "yesterday"  # bad timestamp
        rows[4] = "not an object"
        return json.dumps(data).encode()

    client = make_client(app=corrupt(sim.app, INC, damage))
    incidents, skipped, cursor = await poll_all(client)
    assert [i.external_id for i in incidents] == ["6"]
    assert len(skipped) == 5
    assert any("SNOOZED" in s.reason for s in skipped)
    # Bad records that were known before are not mistaken for incidents that went away.
    good = make_client()
    _, _, cursor = await poll_all(good)
    _, _, cursor2 = await poll_all(client, cursor)
    assert json.loads(cursor2)["gone"] == []


async def test_unknown_entity_state_reads_as_no_severity(sim, make_client, corrupt) -> None:
    sim.seed_incidents(1)

    def odd(raw: bytes) -> bytes:
        data = json.loads(raw)
        data["incidents"][0]["entityState"] = "OK"
        return json.dumps(data).encode()

    incidents, _, _ = await poll_all(make_client(app=corrupt(sim.app, INC, odd)))
    assert incidents[0].severity is None


@pytest.mark.parametrize("body", [b'{"results": "ok"}', b"{}", b'{"results": [',
                                  b"<html>oops</html>"])
async def test_unusable_ack_answer_raises(sim, make_client, corrupt, body) -> None:
    ids = sim.seed_incidents(1)
    client = make_client(app=corrupt(sim.app, f"{INC}/ack", body))
    with pytest.raises(MalformedResponse):
        await client.push(Action.ACKNOWLEDGE, pushes(ids))


async def test_ack_results_missing_or_partial(sim, make_client, corrupt) -> None:
    ids = sim.seed_incidents(3)

    def partial(raw: bytes) -> bytes:
        data = json.loads(raw)
        data["results"] = data["results"][:2]
        del data["results"][1]["cmdAccepted"]
        return json.dumps(data).encode()

    client = make_client(app=corrupt(sim.app, f"{INC}/ack", partial))
    out = await client.push(Action.ACKNOWLEDGE, pushes(ids))
    assert [r.outcome for r in out] == [Outcome.DONE, Outcome.RETRY, Outcome.RETRY]


async def test_malformed_reporting_answer(sim, make_client, corrupt) -> None:
    ids = sim.seed_incidents(1)
    _, _, cursor = await poll_all(make_client())
    sim.act(ids[0], "resolve")
    sim.clock.advance(sim.resolved_retention + 1)
    client = make_client(app=corrupt(sim.app, REPORTING, b'{"incidents": []}'))
    with pytest.raises(MalformedResponse, match="total"):
        await poll_all(client, cursor)


async def test_malformed_oncall(sim, make_client, corrupt) -> None:
    now = datetime.now(UTC)
    client = make_client(app=corrupt(sim.app, "/api-public/v1/oncall/current",
                                     b'{"teamsOnCall": [{"team": null}]}'))
    with pytest.raises(MalformedResponse):
        await client.oncall(now, now + timedelta(days=1))
    path = "/api-public/v2/team/team-pl4tf0rm00000001/oncall/schedule"
    bad = b'{"schedules": [{"policy": {"slug": "p"}, "schedule": [{"rolls": [{"start": 1}]}]}]}'
    client = make_client(app=corrupt(sim.app, path, bad))
    with pytest.raises(MalformedResponse):
        await client.oncall(now, now + timedelta(days=1))


async def test_shifts_on_duty_at_once_are_all_read(sim, api, make_client) -> None:
    """Splunk On-Call puts several shifts of a rotation on duty at once and the step pages
    all their users (vendor-notes/migration.md §4): the team schedule answers one OnCallEntry
    per shift (spec PolicySchedule.schedule[]) and the client reads every one of them."""
    pol, rotation = "pol-pl4tf0rm0000prim", "rtg-pl4tf0rm0prim01"
    sim.add_shift(rotation, "follow the sun", Layer(("carol", "alice"), timedelta(days=1)))
    now = datetime.now(UTC)
    both = sim.oncall_all(pol, 0, now)
    assert both[0] == sim.oncall_at(pol, 0, now)
    body = (await api.get("/api-public/v2/team/team-pl4tf0rm00000001/oncall/schedule",
                          params={"daysForward": 3})).json()
    entries = next(s for s in body["schedules"] if s["policy"]["slug"] == pol)["schedule"]
    assert [e["shiftName"] for e in entries] == ["weekly", "follow the sun"]
    current = (await api.get("/api-public/v1/oncall/current")).json()["teamsOnCall"]
    paged = {u["onCallUser"]["username"] for t in current for p in t["onCallNow"]
             if p["escalationPolicy"]["slug"] == pol for u in p["users"]}
    assert set(both) <= paged
    level1 = [e for e in await make_client().oncall(now, now + timedelta(days=3))
              if e.schedule_id == pol and e.level == 1]
    at = now + timedelta(days=2)
    assert {e.user_id for e in level1 if e.start <= at < e.end} == set(
        sim.oncall_all(pol, 0, at))
    assert any(len({e.user_id for e in level1 if e.start <= t < e.end}) == 2
               for t in (now + timedelta(hours=h) for h in range(0, 72, 6)))


async def test_403s_of_calls_in_flight_together_are_one_rate_limit(sim, make_client) -> None:
    """Two reads of one endpoint in flight together both meet the rate limit's 403: the second
    was sent before syncd backed off, so it is not the "403 again after backing off" that
    means a bad key (A7): both back off and retry, the account is not stopped."""
    import anyio

    sim.rate_limits_enabled = True

    async def sleep(seconds: float) -> None:
        sim.clock.advance(seconds)

    async def slow_answers(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        async def late(message) -> None:  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                await anyio.sleep(0.05)  # both calls reach the simulator before either answer
            await send(message)
        await sim.app(scope, receive, late)

    client = make_client(sleep=sleep, app=slow_answers)
    client._forbidden_backoff = 61.0
    for _ in range(6):  # 6/min in the 2018 table: spend them
        await client.http.request("GET", INC)
    answers: list[int] = []

    async def read() -> None:
        answers.append((await client.http.request("GET", INC)).status_code)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        tg.start_soon(read)
    assert answers == [200, 200]
    assert sim.call_count(route=INC, status=403) == 2
