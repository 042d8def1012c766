"""PagerDutyClient against the simulator over real HTTP semantics (ASGI transport, no mocks)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from contract_kit import rate_limit_header

from syncd.model import NewIncident, Severity, State
from syncd.ratelimit import Budget
from syncd.simulators.pagerduty import (
    ROUTING_KEY,
    SCHED_PRIMARY,
    PagerDutySimulator,
)
from syncd.vendors.base import (
    Action,
    AuthError,
    MalformedResponse,
    Outcome,
    Page,
    PermanentError,
    Push,
    TransientError,
)
from syncd.vendors.pagerduty import PagerDutyClient, PagerDutySettings


def settings_for(sim: PagerDutySimulator, **extra: Any) -> PagerDutySettings:
    creds = sim.describe("http://pd.localhost")["credentials"]
    return PagerDutySettings.model_validate({
        "vendor": "pagerduty", "base_url": "http://pd.localhost", "token": creds["token"],
        "from_email": creds["from_email"], "service_id": creds["service_id"],
        "budget_fraction": 1.0, "max_retries": 2, **extra})


def make_client(sim: PagerDutySimulator, app: Any = None, *,
                behind: timedelta | None = None, **extra: Any) -> PagerDutyClient:
    """``behind``: the client's clock is the simulator's minus that (a vendor clock ahead of
    ours); None keeps the client's own clock."""
    async def sleep(seconds: float) -> None:
        sim.clock.advance(seconds)  # retries wait on the simulator's clock, not real time

    transport = httpx.ASGITransport(app=app or sim.app)
    # The budget runs on the simulator's clock too, so a 429 pause ends when the sim says so.
    budget = Budget(PagerDutyClient.limits, 1.0, clock=sim.clock.monotonic)
    clock = {} if behind is None else {"clock": lambda: sim.clock.now() - behind}
    return PagerDutyClient("pd", settings_for(sim, **extra), transport=transport,
                           budget=budget, backoff_base=0.001, sleep=sleep, **clock)


@pytest.fixture
async def client(sim: PagerDutySimulator) -> AsyncIterator[PagerDutyClient]:
    c = make_client(sim)
    yield c
    await c.aclose()


async def collect(client: PagerDutyClient, cursor: str | None, full: bool = False
                  ) -> tuple[list[Page], str]:
    pages = [p async for p in client.poll(cursor, full=full)]
    cursors = [p.cursor for p in pages if p.cursor]
    assert cursors and pages[-1].cursor == cursors[-1]
    return pages, cursors[-1]


def fire(sim: PagerDutySimulator, dedup: str, severity: str | None = None) -> str:
    return sim.alert(dedup=dedup, title=f"alert {dedup}", severity=severity)["incident_id"]


# ---------------------------------------------------------------- polling


async def test_full_poll_reads_every_open_incident_including_old_ones(
        client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    old = sim.seed_incidents(300)
    for n, iid in enumerate(old[:150]):  # half of them opened 45 days ago or earlier
        sim.incidents[iid].created_at -= timedelta(days=45 + n)
    sim.act(old[0], "resolve")
    pages, cursor = await collect(client, None)
    seen = {i.external_id for p in pages for i in p.incidents}
    assert len(seen) == len(old) - 1 and old[0] not in seen and old[1] in seen
    first = next(i for p in pages for i in p.incidents if i.external_id == old[1])
    assert first.state == State.TRIGGERED and first.severity == Severity.SEV2
    assert first.keys["dedup"] == "seed-2-1" and first.number == "2"
    assert first.created_at is not None and first.created_at.tzinfo is not None
    assert json.loads(cursor)["seen"] == []


async def test_full_poll_splits_windows_past_the_offset_cap(
        client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    ids = sim.seed_incidents(12_000)
    pages, _ = await collect(client, None)
    seen = [i.external_id for p in pages for i in p.incidents]
    assert set(seen) == set(ids)
    assert sim.call_count(route="/incidents", status=400) == 0


async def test_feed_returns_changed_incidents_from_log_entries(sim: PagerDutySimulator) -> None:
    client = make_client(sim, sweep_pages=0)  # the log-entry feed alone
    a, b = fire(sim, "feed-a"), fire(sim, "feed-b")
    _, cursor = await collect(client, None)
    sim.calls.clear()
    sim.act(a, "acknowledge", user="carol@example.com")
    pages, cursor = await collect(client, cursor)
    changed = {i.external_id: i for p in pages for i in p.incidents}
    assert changed[a].state == State.ACKNOWLEDGED
    assert sim.call_count(route="/incidents") == 0  # the feed alone, no incident list reads
    # The overlap re-reads entries already seen: they are not reported again.
    pages, cursor = await collect(client, cursor)
    assert [i for p in pages for i in p.incidents] == []
    sim.clock.advance(600)  # beyond the overlap, inside the 30 min ack timeout
    sim.act(b, "resolve")
    pages, cursor = await collect(client, cursor)
    assert [(i.external_id, i.state) for p in pages for i in p.incidents] == [
        (b, State.RESOLVED)]


async def test_priority_change_leaves_no_log_entry_and_the_sweep_sees_it(
        client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    """PagerDuty logs no priority change (notes §5.6): the log feed alone misses it, the one
    page of open incidents each delta poll also reads sees it at the next poll."""
    a = fire(sim, "prio-a")
    fire(sim, "prio-b")
    _, cursor = await collect(client, None)
    logs_before = len(sim.logs)
    sim.clock.advance(5)
    sim.act(a, "severity", severity="sev1")
    assert len(sim.logs) == logs_before  # the simulator logs nothing, like PagerDuty
    sim.calls.clear()
    pages, cursor = await collect(client, cursor)
    seen = {i.external_id: i for p in pages for i in p.incidents}
    assert seen[a].severity == Severity.SEV1
    assert sim.call_count() == 2  # the log feed and one page of open incidents
    feed_only = make_client(sim, sweep_pages=0)
    sim.act(a, "severity", severity="sev3")
    pages, _ = await collect(feed_only, cursor)
    assert a not in {i.external_id for p in pages for i in p.incidents}
    await feed_only.aclose()


async def test_sweep_walks_the_open_incidents_page_by_page(
        client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    ids = sim.seed_incidents(250)
    _, cursor = await collect(client, None)
    swept: set[str] = set()
    for _ in range(3):  # ceil(250 / 100) polls cover every open incident
        sim.calls.clear()
        pages, cursor = await collect(client, cursor)
        assert sim.call_count() == 2
        swept |= {i.external_id for p in pages for i in p.incidents}
    assert swept == set(ids)
    assert json.loads(cursor)["sweep"] == 0  # the walk starts over


async def test_webhook_named_incident_is_read_by_the_next_poll(sim: PagerDutySimulator) -> None:
    """Past one page of open incidents, a verified ``incident.priority_updated`` delivery names
    the incident and the next delta poll reads it (one GET), whatever the sweep position."""
    client = make_client(sim, sweep_pages=0)
    ids = sim.seed_incidents(150)
    _, cursor = await collect(client, None)
    target = ids[0]
    sim.act(target, "severity", severity="sev1")
    event = sim.webhook_event(target, "incident.priority_updated")
    client.note_webhook(json.dumps(event).encode())
    sim.calls.clear()
    pages, cursor = await collect(client, cursor)
    seen = {i.external_id: i for p in pages for i in p.incidents}
    assert seen[target].severity == Severity.SEV1
    assert sim.call_count(route="/incidents/{id}") == 1
    client.note_webhook(b"not json")  # ignored, never raised
    client.note_webhook(json.dumps({"event": {"resource_type": "service",
                                              "data": {"id": "PX"}}}).encode())
    sim.calls.clear()
    await collect(client, cursor)
    assert sim.call_count(route="/incidents/{id}") == 0
    await client.aclose()


async def test_webhook_for_a_logged_change_costs_no_incident_read(
        sim: PagerDutySimulator) -> None:
    """An ack leaves a log entry, so its delivery only hints a poll: a storm of acks that the
    log feed has read (deliveries keep arriving after that poll) is not read again one
    incident at a time."""
    client = make_client(sim, sweep_pages=0)
    ids = sim.seed_incidents(30)
    _, cursor = await collect(client, None)
    for iid in ids:
        sim.act(iid, "acknowledge")
    pages, cursor = await collect(client, cursor)
    seen = {i.external_id: i for p in pages for i in p.incidents}
    assert {seen[i].state for i in ids} == {State.ACKNOWLEDGED}
    for iid in ids:
        client.note_webhook(json.dumps(sim.webhook_event(iid, "incident.acknowledged")).encode())
    sim.calls.clear()
    await collect(client, cursor)
    assert sim.call_count(route="/incidents/{id}") == 0, sim.calls
    await client.aclose()


async def test_feed_sees_timer_changes(client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    a = fire(sim, "timeout-1")
    sim.act(a, "acknowledge")
    _, cursor = await collect(client, None)
    sim.clock.advance(1801)
    sim.tick()
    pages, _ = await collect(client, cursor)
    assert [i.state for p in pages for i in p.incidents] == [State.TRIGGERED]


async def test_bad_cursor_means_full_resync(client: PagerDutyClient,
                                            sim: PagerDutySimulator) -> None:
    fire(sim, "cursor-1")
    pages, _ = await collect(client, "not json")
    assert len([i for p in pages for i in p.incidents]) == 1


# ---------------------------------------------------------------- writes


async def test_push_batches_of_250_with_from(client: PagerDutyClient,
                                             sim: PagerDutySimulator) -> None:
    ids = sim.seed_incidents(300)
    sim.calls.clear()
    results = await client.push(Action.ACKNOWLEDGE,
                                [Push(i, Action.ACKNOWLEDGE, f"k{i}") for i in ids])
    assert [r.outcome for r in results] == [Outcome.DONE] * 300
    assert results[0].incident is not None and results[0].incident.state == State.ACKNOWLEDGED
    assert sim.call_count(method="PUT", route="/incidents") == 2
    assert {c["state"] for c in sim.canonical_incidents()} == {"acknowledged"}
    again = await client.push(Action.ACKNOWLEDGE, [Push(ids[0], Action.ACKNOWLEDGE, "k")])
    assert again[0].outcome == Outcome.ALREADY
    assert sim.call_count(method="PUT") == 2


async def test_late_ack_never_reopens_a_resolved_incident(client: PagerDutyClient,
                                                          sim: PagerDutySimulator) -> None:
    a, b = fire(sim, "late-a"), fire(sim, "late-b")
    sim.act(a, "resolve")
    results = await client.push(Action.ACKNOWLEDGE, [Push(a, Action.ACKNOWLEDGE, "1"),
                                                     Push(b, Action.ACKNOWLEDGE, "2")])
    assert [r.outcome for r in results] == [Outcome.ALREADY, Outcome.DONE]
    assert results[0].incident is None or results[0].incident.state == State.RESOLVED
    states = {c["id"]: c["state"] for c in sim.canonical_incidents()}
    assert states == {a: "resolved", b: "acknowledged"}


async def test_resolve_reopen_and_unknown_ids(client: PagerDutyClient,
                                              sim: PagerDutySimulator) -> None:
    a = fire(sim, "res-a")
    results = await client.push(Action.RESOLVE, [Push(a, Action.RESOLVE, "1"),
                                                 Push("QNOPE", Action.RESOLVE, "2")])
    assert [r.outcome for r in results] == [Outcome.DONE, Outcome.REFUSED]
    again = await client.push(Action.RESOLVE, [Push(a, Action.RESOLVE, "1")])
    assert again[0].outcome == Outcome.ALREADY
    reopened = await client.push(Action.REOPEN, [Push(a, Action.REOPEN, "3")])
    assert reopened[0].outcome == Outcome.DONE
    assert reopened[0].incident is not None and reopened[0].incident.state == State.TRIGGERED
    with pytest.raises(PermanentError):
        await client.push(Action.UNACKNOWLEDGE, [Push(a, Action.UNACKNOWLEDGE, "4")])


async def test_whole_batch_refusal_is_split_to_find_the_refused_record(
        sim: PagerDutySimulator) -> None:
    a, b = fire(sim, "race-a"), fire(sim, "race-b")

    async def racing(scope: Any, receive: Any, send: Any) -> None:
        # Someone resolves `a` in the UI between syncd's status read and its bulk PUT.
        if scope["method"] == "PUT" and scope["path"] == "/incidents" \
                and sim.incidents[a].status != "resolved":
            sim.act(a, "resolve")
        await sim.app(scope, receive, send)

    client = make_client(sim, racing)
    results = await client.push(Action.RESOLVE, [Push(a, Action.RESOLVE, "1"),
                                                 Push(b, Action.RESOLVE, "2")])
    await client.aclose()
    assert [r.outcome for r in results] == [Outcome.ALREADY, Outcome.DONE]
    assert sim.call_count(method="PUT", route="/incidents", status=400) == 1
    assert sim.call_count(method="PUT", route="/incidents/{id}") == 2


async def test_severity_by_priority_name_and_by_urgency(client: PagerDutyClient,
                                                        sim: PagerDutySimulator) -> None:
    a = fire(sim, "sev-a")
    r = await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1",
                                                     severity=Severity.SEV2)])
    assert r[0].outcome == Outcome.DONE and r[0].incident.severity == Severity.SEV2  # type: ignore
    assert sim.canonical_incidents()[0]["severity"] == "sev2"
    r = await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1",
                                                     severity=Severity.SEV2)])
    assert r[0].outcome == Outcome.ALREADY
    assert sim.call_count(route="/priorities") == 1  # the catalogue is read once
    urgent = make_client(sim, severity_field="urgency")
    r = await urgent.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1",
                                                     severity=Severity.SEV5)])
    await urgent.aclose()
    assert r[0].outcome == Outcome.DONE and sim.incidents[a].urgency == "low"
    custom = make_client(sim, severity_map={"P1": "sev1"})
    custom.severity_map = {"P1": Severity.SEV1}
    r = await custom.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1",
                                                     severity=Severity.SEV4)])
    await custom.aclose()
    assert r[0].outcome == Outcome.REFUSED and "sev4" in r[0].message


async def test_severity_lands_on_the_urgency_the_push_chose(sim: PagerDutySimulator) -> None:
    """An urgency missing from severity_map counts as sev3 when a push picks the closest one;
    the severity it lands as must be that same sev3, not the severity asked for (the dispatcher
    records it as what PagerDuty holds)."""
    a = fire(sim, "sev-a")
    urgent = make_client(sim, severity_field="urgency")
    urgent.severity_map = {"high": Severity.SEV1}  # low: unmapped
    r = await urgent.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1",
                                                     severity=Severity.SEV5)])
    await urgent.aclose()
    assert r[0].outcome == Outcome.DONE and sim.incidents[a].urgency == "low"
    assert urgent.severity_lands_as(Severity.SEV5) == Severity.SEV3
    assert urgent.severity_lands_as(Severity.SEV2) == Severity.SEV1


# Partial overrides first: the merge over the defaults is what keeps the other urgency mapped
# (taking the overrides alone, low would read as no severity after {"high": "sev1"}).
URGENCY_MAPS = [{"high": "sev1"}, {"high": "sev5"}, {"low": "sev5"}, {"low": "sev1"}, {},
                {"high": "sev1", "low": "sev5"}, {"high": "sev3", "low": "sev3"},
                {"high": "sev5", "low": "sev1"}]
PRIORITY_MAPS = [{}, {"P2": "sev3"}, {"P1": "sev2", "P2": "sev1"}, {"P0": "sev1"}]


@pytest.mark.parametrize(("field", "overrides"), [("urgency", m) for m in URGENCY_MAPS]
                         + [("priority", m) for m in PRIORITY_MAPS])
async def test_a_severity_push_lands_as_what_the_read_says_under_overridden_maps(
        sim: PagerDutySimulator, field: str, overrides: dict[str, str]) -> None:
    """Read and write agree under partial, full and empty severity_map overrides: they are
    merged over the defaults, so high, low and P1..P5 stay mapped (the sev3 _urgency_severity
    gives an unmapped urgency is not reached through config), and a priority no name maps
    to is refused, never guessed. What the dispatcher records a push as landing on
    (severity_lands_as) is what reading the incident PagerDuty answered gives, or the push's
    echo would read as a person's change and drift the other vendors."""
    a = fire(sim, "sev-maps")
    client = make_client(sim, severity_field=field, severity_map=overrides)
    try:
        for target in Severity:
            (r,) = await client.push(Action.SET_SEVERITY, [
                Push(a, Action.SET_SEVERITY, "1", severity=target)])
            if r.outcome is Outcome.REFUSED:
                names = [name for _id, name, _desc in sim.priorities]
                assert field == "priority"
                assert target not in [client.severity_map.get(n) for n in names]
                continue
            assert r.incident is not None
            assert r.incident.severity == client.severity_lands_as(target), target
    finally:
        await client.aclose()


# ---------------------------------------------------------------- mirrors


async def test_create_is_idempotent_and_found_after_a_crash(sim: PagerDutySimulator) -> None:
    first = make_client(sim)
    new = NewIncident(marker="syncd-mig-42", title="Mirrored: disk full",
                      state=State.ACKNOWLEDGED, severity=Severity.SEV1, details="from Spike")
    created = await first.create(new)
    await first.aclose()  # the daemon dies here
    assert created.state == State.ACKNOWLEDGED and created.severity == Severity.SEV1
    assert created.keys == {"dedup": "syncd-mig-42", "marker": "syncd-mig-42"}
    second = make_client(sim)
    found = await second.find_created("syncd-mig-42")
    assert found is not None and found.external_id == created.external_id
    again = await second.create(new)  # a retried create finds instead of duplicating
    assert again.external_id == created.external_id
    assert len(sim.incidents) == 1
    assert await second.find_created("syncd-mig-43") is None
    await second.aclose()


async def test_create_via_events_api(sim: PagerDutySimulator) -> None:
    client = make_client(sim, create_via="events", routing_key=ROUTING_KEY)
    made = await client.create(NewIncident(marker="syncd-ev-1", title="From events",
                                           state=State.RESOLVED))
    assert made.state == State.RESOLVED and made.keys["marker"] == "syncd-ev-1"
    assert sim.call_count(route="/v2/enqueue") == 1
    await client.aclose()


async def test_create_via_events_waits_for_the_asynchronous_incident() -> None:
    """The Events API is asynchronous: a 202 does not mean the incident exists yet (notes §7,
    §9). Until it does, create is a TransientError; the retry finds it and never makes two."""
    sim = PagerDutySimulator(seed=1, event_delay=30)
    client = make_client(sim, create_via="events", routing_key=ROUTING_KEY)
    new = NewIncident(marker="syncd-ev-2", title="Late", state=State.ACKNOWLEDGED)
    with pytest.raises(TransientError, match="no incident yet"):
        await client.create(new)
    assert not sim.incidents  # accepted, not yet applied
    with pytest.raises(TransientError):
        await client.create(new)  # retried early: a second event for the same dedup_key
    sim.clock.advance(31)
    made = await client.create(new)
    assert made.state is State.ACKNOWLEDGED and made.keys["marker"] == "syncd-ev-2"
    assert len(sim.incidents) == 1  # both triggers landed on one alert
    await client.aclose()


async def test_create_without_service_is_refused(sim: PagerDutySimulator) -> None:
    client = make_client(sim, service_id=None)
    with pytest.raises(PermanentError, match="service_id"):
        await client.create(NewIncident(marker="syncd-x-1", title="t"))
    await client.aclose()


# ---------------------------------------------------------------- on-call


async def test_oncall_and_override(client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    now = sim.clock.now()
    entries = await client.oncall(now, now + timedelta(hours=1))
    primary = [e for e in entries if e.schedule_id == SCHED_PRIMARY]
    assert primary and all(e.level == 1 and e.user_email for e in primary)
    assert primary[0].schedule_name == "SRE primary"
    permanent = [e for e in entries if e.start is None]
    assert permanent and permanent[0].schedule_id == "PEPSRE1" and permanent[0].level == 3
    assert permanent[0].user_email == "frank@example.com"
    who = primary[0].user_email
    other = next(e for e in ("alice@example.com", "bob@example.com") if e != who)
    override_id = await client.create_override(SCHED_PRIMARY, other, now - timedelta(minutes=1),
                                                now + timedelta(hours=2))
    assert override_id
    after = [e for e in await client.oncall(now, now + timedelta(hours=1))
             if e.schedule_id == SCHED_PRIMARY]
    assert {e.user_email for e in after} == {other}
    with pytest.raises(PermanentError, match="refused"):
        await client.create_override(SCHED_PRIMARY, other, now, now - timedelta(hours=1))
    with pytest.raises(PermanentError, match="no PagerDuty user"):
        await client.create_override(SCHED_PRIMARY, "ghost@example.com", now, now)


async def test_user_emails_is_the_whole_account_read_once(client: PagerDutyClient,
                                                           sim: PagerDutySimulator) -> None:
    """The on-call directory: everyone, also people on no schedule (syncd-bot), one GET /users
    per process."""
    emails = await client.user_emails()
    assert set(emails.values()) == {u.email for u in sim.users.values()}
    assert "syncd-bot@example.com" in emails.values()
    await client.user_emails()
    assert sim.call_count(route="/users", method="GET") == 1


# ---------------------------------------------------------------- limits, faults, auth


async def test_429_waits_for_ratelimit_reset(client: PagerDutyClient,
                                             sim: PagerDutySimulator) -> None:
    fire(sim, "rl-1")
    sim.rate_scale = 2 / 960  # two requests a minute
    started = sim.clock.monotonic()
    for _ in range(3):
        await client.find_created("rl-1")
    assert sim.call_count(status=429) >= 1
    assert sim.clock.monotonic() - started >= 30  # it waited on ratelimit-reset


async def test_faults_5xx_and_dropped_connections(client: PagerDutyClient,
                                                  sim: PagerDutySimulator) -> None:
    fire(sim, "fault-1")
    sim.faults.error_rate = 1.0
    with pytest.raises(TransientError):
        await client.find_created("fault-1")
    assert sim.call_count(status=503) == 3  # first try plus max_retries=2
    sim.faults.error_rate, sim.faults.drop_rate = 0.0, 1.0
    with pytest.raises(TransientError):
        await client.find_created("fault-1")
    sim.faults.drop_rate = 0.0
    assert await client.find_created("fault-1") is not None


async def test_auth_and_from_errors_name_no_secret(sim: PagerDutySimulator) -> None:
    fire(sim, "auth-1")
    with structlog.testing.capture_logs() as logs:
        bad = make_client(sim, token="wrong-key-123456")
        with pytest.raises(AuthError) as info:
            await bad.find_created("auth-1")
        await bad.aclose()
        assert "wrong-key-123456" not in str(info.value)
        nobody = make_client(sim, from_email="nobody@example.com")
        iid = sim.canonical_incidents()[0]["id"]
        with pytest.raises(AuthError, match="From"):
            await nobody.push(Action.ACKNOWLEDGE, [Push(iid, Action.ACKNOWLEDGE, "k")])
        await nobody.aclose()
    assert sim.token not in repr(logs)


# ---------------------------------------------------------------- malformed answers


def corrupting(sim: PagerDutySimulator, route: str,
               change: Callable[[bytes], tuple[int, str, bytes]]) -> Any:
    """A network double: the simulator's answer to ``route`` is rewritten before the client."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != route:
            await sim.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await sim.app(scope, receive, capture)
        status, kind, body = change(b"".join(parts))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind.encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


def edit_incidents(fn: Callable[[list[dict[str, Any]]], None]
                   ) -> Callable[[bytes], tuple[int, str, bytes]]:
    def change(body: bytes) -> tuple[int, str, bytes]:
        data = json.loads(body)
        fn(data["incidents"])
        return 200, "application/json", json.dumps(data).encode()
    return change


@pytest.mark.parametrize("mutate,reason", [
    (lambda incs: incs[0].pop("status"), "unknown status None"),
    (lambda incs: incs[0].update(status=None), "unknown status None"),
    (lambda incs: incs[0].update(status="snoozed"), "unknown status 'snoozed'"),
    (lambda incs: incs[0].pop("id"), "missing id"),
    (lambda incs: incs[0].update(title=None, summary=None), "missing title"),
    (lambda incs: incs[0].update(created_at=12), "timestamp is int"),
    (lambda incs: incs[0].update(priority="P1"), "priority is str"),
])
async def test_bad_records_are_skipped_and_counted(sim: PagerDutySimulator, mutate: Any,
                                                   reason: str) -> None:
    fire(sim, "m-1")
    fire(sim, "m-2")
    client = make_client(sim, corrupting(sim, "/incidents", edit_incidents(mutate)))
    pages, _ = await collect(client, None)
    await client.aclose()
    good = [i for p in pages for i in p.incidents]
    skipped = [s for p in pages for s in p.skipped]
    assert len(good) == 1 and len(skipped) == 1
    assert reason in skipped[0].reason and skipped[0].endpoint == "GET /incidents"


async def test_null_priority_is_no_severity(sim: PagerDutySimulator) -> None:
    fire(sim, "null-1")
    client = make_client(sim, corrupting(sim, "/incidents", edit_incidents(
        lambda incs: incs[0].update(priority=None, resolved_at=None, incident_key=None))))
    pages, _ = await collect(client, None)
    await client.aclose()
    inc = pages[0].incidents[0]
    assert inc.severity is None and "dedup" not in inc.keys


@pytest.mark.parametrize("status,kind,body,what", [
    (200, "text/html", b"<html><body>Maintenance</body></html>", "HTML"),
    (200, "application/json", b'{"incidents": [{"id": "Q1", "sta', "invalid JSON"),
    (200, "application/json", b'{"error": {"message": "Internal", "code": 2000}}',
     "carrying an error"),
    (200, "application/json", b'{"limit": 100, "offset": 0, "more": false}', "incidents"),
    (200, "application/json", b'{"incidents": [], "total": 0}', "'more'"),
    (200, "application/json", b'{"incidents": [], "more": false, "total": null}', "'total'"),
    (200, "application/json", b'[1, 2]', "expected a JSON object"),
])
async def test_unusable_responses_raise_malformed(sim: PagerDutySimulator, status: int,
                                                  kind: str, body: bytes, what: str) -> None:
    client = make_client(sim, corrupting(sim, "/incidents", lambda _b: (status, kind, body)))
    with pytest.raises(MalformedResponse) as info:
        await collect(client, None)
    await client.aclose()
    assert what in str(info.value) and "GET /incidents" in str(info.value)


async def test_more_true_on_an_empty_page_is_malformed(sim: PagerDutySimulator) -> None:
    client = make_client(sim, corrupting(sim, "/log_entries", lambda _b: (
        200, "application/json", b'{"log_entries": [], "more": true, "total": 0}')))
    with pytest.raises(MalformedResponse, match="empty page"):
        await collect(client, json.dumps({"since": "2024-01-01T00:00:00Z", "seen": []}))
    await client.aclose()


async def test_feed_entry_without_incident_is_skipped(sim: PagerDutySimulator) -> None:
    fire(sim, "feed-bad")
    def strip(body: bytes) -> tuple[int, str, bytes]:
        data = json.loads(body)
        data["log_entries"][0]["incident"] = None
        return 200, "application/json", json.dumps(data).encode()
    client = make_client(sim, corrupting(sim, "/log_entries", strip), sweep_pages=0)
    pages, _ = await collect(client, json.dumps({"since": "2024-01-01T00:00:00Z", "seen": []}))
    await client.aclose()
    assert pages[-1].incidents == [] and len(pages[-1].skipped) == 1


async def test_push_answer_without_incidents_is_malformed(sim: PagerDutySimulator) -> None:
    a = fire(sim, "put-bad")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "PUT":
            await sim.app(scope, receive, lambda m: _noop(m))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"ok": true}'})
            return
        await sim.app(scope, receive, send)

    client = make_client(sim, app)
    with pytest.raises(MalformedResponse, match="incidents"):
        await client.push(Action.ACKNOWLEDGE, [Push(a, Action.ACKNOWLEDGE, "k")])
    await client.aclose()


async def _noop(message: Any) -> None:
    return None


async def test_feed_yields_each_page_of_entries_as_it_is_read(sim: PagerDutySimulator) -> None:
    """A storm of acks read in pages of 10 log entries reaches the poller page by page (the
    daemon starts pushing while later pages are read): every incident once, only the last
    page with the cursor, so a crash before it re-reads the feed."""
    client = make_client(sim, sweep_pages=0, page_size=10)
    ids = sim.seed_incidents(30)
    _, cursor = await collect(client, None)
    for iid in ids:
        sim.act(iid, "acknowledge")
    pages, _ = await collect(client, cursor)
    await client.aclose()
    assert len([p for p in pages if p.incidents]) >= 3
    assert all(p.cursor is None for p in pages[:-1])
    seen = [i.external_id for p in pages for i in p.incidents]
    assert sorted(seen) == sorted(ids)


async def test_feed_past_the_offset_cap_splits_its_window_and_drops_no_resolve(
        sim: PagerDutySimulator) -> None:
    """More log entries since the cursor than offset paging reaches (offset + limit <= 10,000,
    notes §2), as after a long downtime of a busy account: the window is halved until each
    part fits (notes §5.6, PYPD's iter_history). A full resync instead lists open incidents
    only, so none of these resolves would ever be seen. One entry per incident, so an entry
    lost at a split boundary is an incident missing; PagerDuty's clock is 3 hours ahead of
    ours, so the open-ended window must end at its newest entry, not at our clock."""
    client = make_client(sim, behind=timedelta(hours=3), sweep_pages=0)
    ids = sim.seed_incidents(10_000)
    _, cursor = await collect(client, None)
    for iid in ids:  # 10,000 resolve entries, one a second
        sim.clock.advance(1)
        sim.act(iid, "resolve")
    sim.calls.clear()
    pages, _ = await collect(client, cursor)
    await client.aclose()
    seen = {i.external_id: i.state for p in pages for i in p.incidents}
    assert seen == dict.fromkeys(ids, State.RESOLVED)
    assert sim.call_count(route="/incidents") == 0  # no resync
    assert sim.call_count(route="/log_entries") >= 100


def growing_feed(sim: PagerDutySimulator, grow: Callable[[], None], *,
                 oldest_first: bool = False) -> Any:
    """A busy account: once the first log-entries page is answered, ``grow`` logs more (the
    account keeps logging while the feed is read). ``oldest_first`` lists each page oldest
    first: PagerDuty documents no order (notes §5.6)."""
    answered = 0

    def change(body: bytes) -> tuple[int, str, bytes]:
        nonlocal answered
        answered += 1
        if answered == 1:
            grow()
        data = json.loads(body)
        if oldest_first:
            data["log_entries"].reverse()
        return 200, "application/json", json.dumps(data).encode()
    return corrupting(sim, "/log_entries", change)


def resolve_all(sim: PagerDutySimulator, ids: list[str]) -> Callable[[], None]:
    """Resolve ``ids`` one a second: one log entry each, so an entry lost is an incident
    missing."""
    def grow() -> None:
        for iid in ids:
            sim.clock.advance(1)
            sim.act(iid, "resolve")
    return grow


def busy_account(sim: PagerDutySimulator, *, oldest_first: bool = False
                 ) -> tuple[PagerDutyClient, list[str], list[str]]:
    """10,100 incidents; the client's feed will find 9,850 resolves when it starts reading
    (the first page's total fits under the offset cap) and 250 more after its first page, so
    a later page's total shows the walk would pass the cap (it would fail with a 400 there).
    Returns the client and the incidents resolved before and during the read."""
    ids = sim.seed_incidents(10_100)
    before, during = ids[:9_850], ids[9_850:]
    client = make_client(sim, growing_feed(sim, resolve_all(sim, during),
                                           oldest_first=oldest_first),
                         behind=timedelta(0), sweep_pages=0)
    return client, before, during


@pytest.mark.parametrize("oldest_first", [False, True], ids=["newest-first", "oldest-first"])
async def test_feed_window_that_grows_past_the_offset_cap_while_read_is_read_once(
        sim: PagerDutySimulator, oldest_first: bool) -> None:
    """The feed grows past the cap while it is read: the rest of the window is read as a
    window of its own (newest first, as PagerDuty lists them; in any other order the window
    is halved), and every entry is yielded exactly once, however the new entries shifted the
    offset pages."""
    client, before, during = busy_account(sim, oldest_first=oldest_first)
    since = sim.clock.now()
    resolve_all(sim, before)()
    with structlog.testing.capture_logs() as logs:
        entries = [e async for page in client._log_pages(since, None) for e in page]
    await client.aclose()
    entry_ids = [e["id"] for e in entries]
    assert len(entry_ids) == len(set(entry_ids)), "an entry yielded twice"
    resolved = {e["incident"]["id"] for e in entries}
    assert set(before) <= resolved <= set(before + during)
    assert any(e["event"] == "pagerduty.feed_grew" for e in logs)


async def test_poll_of_a_feed_that_grows_past_the_offset_cap_sees_every_change(
        sim: PagerDutySimulator) -> None:
    """The same growth in a poll: it succeeds (no resync) and sees every resolve logged
    before it started; those logged while it read reach it or the next poll."""
    client, before, during = busy_account(sim)
    start = make_client(sim, behind=timedelta(0))
    _, cursor = await collect(start, None)
    await start.aclose()
    resolve_all(sim, before)()
    sim.calls.clear()
    pages, cursor = await collect(client, cursor)
    seen = {i.external_id: i.state for p in pages for i in p.incidents}
    assert {i: seen.get(i) for i in before} == dict.fromkeys(before, State.RESOLVED)
    assert sim.call_count(route="/incidents") == 0  # no resync
    pages, _ = await collect(client, cursor)
    await client.aclose()
    seen.update({i.external_id: i.state for p in pages for i in p.incidents})
    assert seen == dict.fromkeys(before + during, State.RESOLVED)


async def test_feed_window_that_cannot_be_split_falls_back_to_a_resync(
        sim: PagerDutySimulator) -> None:
    """10,000 entries within one second cannot be split (stamps are whole seconds): the poll
    does not fail forever on the same window; it resyncs (lossy, and says so) and moves on."""
    client = make_client(sim, behind=timedelta(0), sweep_pages=0)
    ids = sim.seed_incidents(10_000)
    keep = ids.pop()
    _, cursor = await collect(client, None)
    sim.clock.advance(5)
    for iid in ids:
        sim.act(iid, "resolve")
    sim.calls.clear()
    with structlog.testing.capture_logs() as logs:
        pages, after = await collect(client, cursor)
    await client.aclose()
    assert keep in {i.external_id for p in pages for i in p.incidents}
    assert sim.call_count(route="/incidents") >= 1  # the resync
    assert any(e["event"] == "pagerduty.feed_overflow" for e in logs)
    assert after != cursor



@pytest.mark.parametrize("reset", ["-5", "0", "nan", "inf", "1e9", "1e400"])
async def test_an_absurd_ratelimit_reset_is_waited_within_bounds(sim: PagerDutySimulator,
                                                                 reset: str) -> None:
    """A 429 storm whose reset is absurd: syncd never retries at once (0, negative, NaN) nor
    sleeps for ever or for years (inf, 1e9): each wait is between the floor and the cap
    (PagerDuty's resets are whole seconds, notes §4), and the answer surfaces as RateLimited
    with a finite retry_after the dispatcher can store."""
    from syncd.vendors._http import RETRY_AFTER_CAP, RETRY_AFTER_FLOOR
    from syncd.vendors.base import RateLimited

    fire(sim, "absurd-1")
    sim.faults.rate_limit_rate = 1.0
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        sim.clock.advance(seconds)

    budget = Budget(PagerDutyClient.limits, 1.0, clock=sim.clock.monotonic)
    app = rate_limit_header(sim, "ratelimit-reset", reset)
    client = PagerDutyClient("pd", settings_for(sim), budget=budget, backoff_base=0.001,
                             transport=httpx.ASGITransport(app=app), sleep=sleep)
    with pytest.raises(RateLimited) as info:
        await client.find_created("absurd-1")
    await client.aclose()
    assert RETRY_AFTER_FLOOR <= info.value.retry_after <= RETRY_AFTER_CAP
    assert len(waits) == 2  # max_retries=2
    assert all(RETRY_AFTER_FLOOR <= w <= RETRY_AFTER_CAP + 0.25 for w in waits), waits
    assert 0 < budget.buckets_for("*")[0].delay() <= RETRY_AFTER_CAP
