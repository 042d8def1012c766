"""SpikeClient against the simulator over ASGI: polling, pushes, create, on-call, limits, faults,
and every malformed-response case (through a tiny response-corrupting ASGI wrapper)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from spike_helpers import make_client, settings
from structlog.testing import capture_logs

from syncd.model import Incident, NewIncident, Severity, State
from syncd.ratelimit import Budget, Limit
from syncd.simulators.spike import DEFAULT_API_KEY, SpikeSimulator
from syncd.vendors.base import (
    Action,
    AuthError,
    Capability,
    MalformedResponse,
    Outcome,
    Page,
    PermanentError,
    Push,
    RateLimited,
    TransientError,
    VendorClient,
)
from syncd.vendors.spike import READ_BACKS_PER_BATCH, SpikeClient


def fire(sim: SpikeSimulator, title: str, severity: str | None = None) -> str:
    return sim.alert(dedup=title, title=title, severity=severity)["incident"]["counterId"]


async def collect(client: SpikeClient, cursor: str | None, full: bool = False):
    pages = [p async for p in client.poll(cursor, full=full)]
    assert pages[-1].cursor is not None and all(p.cursor is None for p in pages[:-1])
    return pages, {i.external_id: i for p in pages for i in p.incidents}


def pushes(action: Action, ids: list[str], severity: Severity | None = None) -> list[Push]:
    return [Push(i, action, f"k-{i}", severity) for i in ids]


def test_declarations() -> None:
    assert isinstance(SpikeClient("a", settings(), transport=httpx.MockTransport(
        lambda r: httpx.Response(200))), VendorClient)
    assert Capability.UNACK in SpikeClient.capabilities
    assert Capability.REOPEN not in SpikeClient.capabilities
    with pytest.raises(ValueError):
        settings(unknown_key=1)
    for bad in (-1, 86401, float("nan"), True):
        with pytest.raises(ValueError):
            settings(resolve_sweep=bad)
    assert settings().resolve_sweep == 300


async def test_full_poll_reads_every_open_incident(sim: SpikeSimulator,
                                                   client: SpikeClient) -> None:
    sim.seed_incidents(150)  # 30 days old: no time window may hide them
    sim.seed_incidents(120, state="acknowledged")
    sim.seed_incidents(50, state="resolved")
    _pages, seen = await collect(client, None)
    assert len(seen) == 270
    assert sim.call_count(route="/incidents/triggered") == 2
    assert sim.call_count(route="/incidents/acknowledged") == 2
    assert sim.call_count(route="/incidents/all-occurrences") == 0
    inc = seen["sre-101"]
    assert inc.state is State.TRIGGERED and inc.severity is Severity.SEV1
    assert inc.keys == {"dedup": inc.title} and inc.created_at and inc.updated_at
    assert inc.updated_at.tzinfo is not None


async def test_incremental_poll_sees_changes_and_resolves(sim: SpikeSimulator,
                                                          client: SpikeClient) -> None:
    a, b, c = fire(sim, "a", "sev2"), fire(sim, "b"), fire(sim, "c")
    _pages, first = await collect(client, None)
    cursor = _pages[-1].cursor
    assert set(first) == {a, b, c}
    sim.clock.advance(5)
    sim.act(a, "acknowledge")
    sim.act(b, "resolve")
    sim.act(c, "severity", severity="sev1")
    pages, seen = await collect(client, cursor)
    assert seen[a].state is State.ACKNOWLEDGED
    assert seen[b].state is State.RESOLVED
    assert seen[c].severity is Severity.SEV1
    assert sim.call_count(route="/incidents/all-occurrences") == 1
    # the ack-timeout moving ACK back to NACK is seen like any other change
    sim.clock.advance(1801)
    _pages, seen = await collect(client, pages[-1].cursor)
    assert seen[a].state is State.TRIGGERED


def resolve_reads(sim: SpikeSimulator) -> int:
    return sim.call_count(route="/incidents/all-occurrences")


async def settled(client: SpikeClient) -> str:
    """The cursor after a full read and the first delta poll: that one reads the resolves
    (nothing remembered after a full read), the next ones need not."""
    pages, _seen = await collect(client, None)
    pages, _seen = await collect(client, pages[-1].cursor)
    return pages[-1].cursor


async def resolved_then_polled(sim: SpikeSimulator, client: SpikeClient, cursor: str,
                               iid: str) -> tuple[list[Page], dict[str, Incident]]:
    """``iid`` resolved in Spike a few seconds after the poll that gave ``cursor`` (the sweep
    is not due), then the next poll: it comes out resolved, through exactly one resolve read."""
    sim.clock.advance(5)
    sim.act(iid, "resolve")
    sim.calls.clear()
    pages, seen = await collect(client, cursor)
    assert seen[iid].state is State.RESOLVED
    assert resolve_reads(sim) == 1
    return pages, seen


async def test_idle_poll_costs_the_open_lists_only(sim: SpikeSimulator,
                                                   client: SpikeClient) -> None:
    """Spike has no updated-since filter: an idle delta poll reads both open lists to their end,
    ceil(NACK/100) + ceil(ACK/100) calls, no resolve page (nothing known left the open lists and
    the sweep is not due) and never a per-incident read (docs/vendors/spike.md, "Idle cost")."""
    sim.seed_incidents(150)
    sim.seed_incidents(250, state="acknowledged")
    cursor = await settled(client)
    for _ in range(3):
        sim.clock.advance(30)
        sim.calls.clear()
        pages, seen = await collect(client, cursor)
        cursor = pages[-1].cursor
        assert len(seen) == 400  # every open incident, unchanged: the ledger sees no change
        assert sim.call_count() == math.ceil(150 / 100) + math.ceil(250 / 100), sim.calls
        assert resolve_reads(sim) == 0
        assert not [r for (_m, r, _s) in sim.calls if "{" in r], sim.calls
    # resolve_sweep = 0 is the old behaviour: the resolve page on every poll
    every = make_client(sim, resolve_sweep=0)
    cursor = await settled(every)
    sim.calls.clear()
    await collect(every, cursor)
    assert resolve_reads(sim) == 1
    await every.aclose()


async def test_known_incident_resolved_between_polls_is_read(sim: SpikeSimulator,
                                                             client: SpikeClient) -> None:
    a, b = fire(sim, "a"), fire(sim, "b")
    cursor = await settled(client)
    # the sweep is not due: only a known id leaving the lists reads
    _pages, seen = await resolved_then_polled(sim, client, cursor, a)
    assert seen[b].state is State.TRIGGERED


async def test_created_copy_resolved_before_the_next_poll_is_read(
        sim: SpikeSimulator, client: SpikeClient) -> None:
    """A copy syncd created after the last poll is in no remembered set; resolved by someone
    before the next poll, it is in no open list either."""
    cursor = await settled(client)
    gone = await client.create(NewIncident(marker="m-1", title="Copy"))
    kept = await client.create(NewIncident(marker="m-2", title="Copy 2"))
    pages, _seen = await resolved_then_polled(sim, client, cursor, gone.external_id)
    # the copy still open is now remembered like any other: the next idle poll skips the read
    sim.clock.advance(5)
    sim.calls.clear()
    _pages, seen = await collect(client, pages[-1].cursor)
    assert seen[kept.external_id].state is State.TRIGGERED and resolve_reads(sim) == 0


async def test_copy_found_again_by_marker_counts_as_created(
        sim: SpikeSimulator, client: SpikeClient) -> None:
    """A create whose answer was lost is found again by its marker (the dispatcher's retry):
    that copy is as unknown to the remembered set as a fresh one."""
    cursor = await settled(client)
    other = make_client(sim)  # the process whose create answer was lost
    lost = await other.create(NewIncident(marker="m-lost", title="Copy"))
    found = await client.find_created("m-lost")
    assert found is not None and found.external_id == lost.external_id
    await resolved_then_polled(sim, client, cursor, lost.external_id)


async def test_outside_flap_is_read_at_the_sweep_and_since_holds(sim: SpikeSimulator) -> None:
    """An incident triggered and resolved between two polls by someone else is in no open list
    and was never known: only the periodic resolve read sees it (correlate mode: its twin in
    another tool must still get the resolve, later rather than never). While reads are skipped
    the cursor's ``since`` stays put, so that read covers the whole gap (no overlap here: a
    ``since`` that moved with the polls would start after the flap)."""
    client = make_client(sim, resolve_overlap=0, resolve_sweep=300)
    fire(sim, "steady")
    cursor = await settled(client)
    since = json.loads(cursor)["since"]
    sim.clock.advance(10)
    flap = fire(sim, "flap")
    sim.act(flap, "resolve")
    sim.calls.clear()
    for _ in range(4):  # 60, 120, 180, 240 s after the last read
        sim.clock.advance(60 if _ else 50)
        pages, seen = await collect(client, cursor)
        cursor = pages[-1].cursor
        assert flap not in seen and json.loads(cursor)["since"] == since
    assert resolve_reads(sim) == 0
    sim.clock.advance(60)  # 300 s: the sweep is due
    pages, seen = await collect(client, cursor)
    assert seen[flap].state is State.RESOLVED and resolve_reads(sim) == 1
    assert json.loads(pages[-1].cursor)["since"] > since
    await client.aclose()


async def test_full_read_keeps_the_resolve_window(sim: SpikeSimulator) -> None:
    """A full read reads no resolves and is handed no cursor, so it must not move ``since``
    past what the skipped delta polls left unread: the next resolve read still sees a flap
    from before the full read."""
    client = make_client(sim, resolve_overlap=0)
    cursor = await settled(client)
    since = json.loads(cursor)["since"]
    sim.clock.advance(10)
    flap = fire(sim, "flap")
    sim.act(flap, "resolve")
    sim.clock.advance(50)
    pages, seen = await collect(client, cursor)  # skipped: nothing known left
    assert flap not in seen
    sim.clock.advance(60)
    pages, seen = await collect(client, None, full=True)
    assert flap not in seen and json.loads(pages[-1].cursor)["since"] == since
    _pages, seen = await collect(client, pages[-1].cursor)  # no memory after a full read
    assert seen[flap].state is State.RESOLVED
    await client.aclose()


async def test_no_memory_reads_the_resolves(sim: SpikeSimulator, client: SpikeClient) -> None:
    """The remembered open set belongs to the cursor this client handed out: a restarted
    daemon, a cursor the engine did not commit, or a v1 cursor all mean reading the resolves."""
    fire(sim, "a")
    cursor = await settled(client)
    sim.clock.advance(5)
    sim.calls.clear()
    restarted = make_client(sim)
    await collect(restarted, cursor)
    assert resolve_reads(sim) == 1
    await restarted.aclose()
    await collect(client, cursor)  # the client's own: remembered, skipped
    assert resolve_reads(sim) == 1
    await collect(client, cursor)  # that poll's cursor was not committed: read again
    assert resolve_reads(sim) == 2
    old = json.dumps({"v": 1, "since": json.loads(cursor)["since"]})
    await collect(client, old)
    assert resolve_reads(sim) == 3


def paging_race(sim: SpikeSimulator) -> tuple[httpx.ASGITransport, list[str]]:
    """An ASGI wrapper that acknowledges the id put in the returned list right after answering
    page 1 of the triggered list: it moves to the acknowledged list (read after, so still seen)
    and offset paging skips the first incident of page 2 of the triggered list."""
    race: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sim.app(scope, receive, send)
        if race and scope["type"] == "http" and scope["path"] == "/incidents/triggered" and (
                b"page=1&" in scope["query_string"]):
            sim.act(race.pop(), "acknowledge")

    return httpx.ASGITransport(app=app), race


async def test_missing_only_reads_never_resolves(sim: SpikeSimulator) -> None:
    """Invariant: an id missing from the open lists is never taken as resolved. Here it is
    missing only because another incident left the list mid-read; the client reads the
    resolves, reports only what Spike answered (nothing resolved), and keeps the skipped id
    known one more poll, so its resolve right after is still read."""
    seeded = sim.seed_incidents(150)  # newest first: page 1 = seeded[149..50], page 2 the rest
    transport, race = paging_race(sim)
    client = make_client(sim, transport)
    cursor = await settled(client)
    race.append(seeded[149])
    sim.clock.advance(5)
    sim.calls.clear()
    pages, seen = await collect(client, cursor)
    skipped = seeded[49]
    assert skipped not in seen  # the race happened: paging skipped an open incident
    assert seen[seeded[149]].state is State.ACKNOWLEDGED
    assert resolve_reads(sim) == 1  # the missing id made the poll read the resolves
    assert not [i for i in seen.values() if i.state is State.RESOLVED]
    sim.clock.advance(5)
    sim.act(skipped, "resolve")
    _pages, seen = await collect(client, pages[-1].cursor)
    assert seen[skipped].state is State.RESOLVED and resolve_reads(sim) == 2
    await client.aclose()


async def test_garbage_cursor_means_full_read(sim: SpikeSimulator, client: SpikeClient) -> None:
    fire(sim, "x")
    _pages, seen = await collect(client, "not json")
    assert set(seen) == {"sre-101"}


async def test_push_batches_and_outcomes(sim: SpikeSimulator, client: SpikeClient) -> None:
    ids = sim.seed_incidents(150)
    sim.act(ids[0], "resolve")
    results = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids))
    assert sim.call_count(route="/incidents/acknowledge") == 2  # 100 + 50
    by = {r.external_id: r for r in results}
    # resolved is past acknowledged: done, as PagerDuty's and Splunk On-Call's clients say
    assert by[ids[0]].outcome is Outcome.ALREADY and "resolved" in by[ids[0]].message
    assert by[ids[0]].incident is not None and by[ids[0]].incident.state is State.RESOLVED
    assert by[ids[1]].outcome is Outcome.DONE
    assert by[ids[1]].incident is not None and by[ids[1]].incident.state is State.ACKNOWLEDGED
    again = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids[1:3]))
    assert [r.outcome for r in again] == [Outcome.ALREADY, Outcome.ALREADY]
    unack = await client.push(Action.UNACKNOWLEDGE, pushes(Action.UNACKNOWLEDGE, ids[1:2]))
    assert unack[0].outcome is Outcome.DONE and unack[0].incident.state is State.TRIGGERED
    res = await client.push(Action.RESOLVE, pushes(Action.RESOLVE, [ids[1], "sre-99999"]))
    assert [r.outcome for r in res] == [Outcome.DONE, Outcome.REFUSED]
    # a late ack never reopens a resolved incident
    late = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids[1:2]))
    assert late[0].outcome is Outcome.ALREADY
    assert next(i for i in sim.canonical_incidents() if i["id"] == ids[1])["state"] == "resolved"
    with pytest.raises(PermanentError):
        await client.push(Action.REOPEN, pushes(Action.REOPEN, ids[1:2]))


@pytest.mark.parametrize(("fault", "outcome"), [
    ({"error_rate": 1.0}, Outcome.RETRY), ({"rate_limit_rate": 1.0}, Outcome.RETRY),
    ({"error_rate": 1.0, "error_status": 403}, Outcome.REFUSED),
    ({"wrong_types_rate": 1.0}, Outcome.REFUSED)])
async def test_a_failed_read_back_of_a_refused_ack_answers_for_that_id_only(
        sim: SpikeSimulator, fault: dict[str, Any], outcome: Outcome) -> None:
    """The read-back after a refused ack fails (5xx, 429, 403, garbage): that id is retried
    (or stays refused) and the batch's other answers stand; raised, the dispatcher would push
    the whole chunk again and lose the DONE answers."""
    client = make_client(sim, max_retries=0)  # no waiting out the 429 here
    ids = [fire(sim, "a"), fire(sim, "b")]
    sim.act(ids[0], "resolve")
    sim.faults.routes = ["/incidents/{counterId}"]
    for name, value in fault.items():
        setattr(sim.faults, name, value)
    results = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids))
    assert [r.outcome for r in results] == [outcome, Outcome.DONE]
    assert sim.call_count(route="/incidents/{counterId}") >= 1  # the read-back was tried
    await client.aclose()


async def test_read_backs_of_refused_acks_are_capped_per_batch(sim: SpikeSimulator,
                                                              client: SpikeClient) -> None:
    """A batch refused wholesale (a person resolved them all) reads back only
    READ_BACKS_PER_BATCH of them: the rest stay refused, as before read-backs, instead of
    spending the 50/min budget."""
    ids = [fire(sim, f"r{n}") for n in range(READ_BACKS_PER_BATCH + 3)]
    for i in ids:
        sim.act(i, "resolve")
    results = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids))
    outcomes = [r.outcome for r in results]
    assert outcomes == [Outcome.ALREADY] * READ_BACKS_PER_BATCH + [Outcome.REFUSED] * 3
    assert sim.call_count(route="/incidents/{counterId}") == READ_BACKS_PER_BATCH


async def test_severity_push_clamps_and_removes(sim: SpikeSimulator, client: SpikeClient) -> None:
    a, b = fire(sim, "a"), fire(sim, "b")
    plan = [Push(a, Action.SET_SEVERITY, "1", Severity.SEV5),
            Push(b, Action.SET_SEVERITY, "2", Severity.SEV2)]
    results = await client.push(Action.SET_SEVERITY, plan)
    assert [r.outcome for r in results] == [Outcome.DONE, Outcome.DONE]
    assert results[0].incident.severity is Severity.SEV3  # sev5 clamps to Spike's sev3
    assert sim.call_count(route="/incidents/severity") == 2  # one call per target value
    cleared = await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "3", None)])
    assert cleared[0].outcome is Outcome.DONE
    assert sim.call_count(method="DELETE", route="/incidents/severity/remove") == 1
    assert next(i for i in sim.canonical_incidents() if i["id"] == a)["severity"] is None


async def test_priority_field(sim: SpikeSimulator) -> None:
    client = make_client(sim, severity_field="priority")
    a = fire(sim, "a")
    r = await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1", Severity.SEV4)])
    assert r[0].incident.severity is Severity.SEV4
    assert sim.call_count(route="/incidents/priority") == 1
    _pages, seen = await collect(client, None)
    assert seen[a].severity is Severity.SEV4
    await client.aclose()


async def test_create_api_idempotent_and_find_after_crash(sim: SpikeSimulator,
                                                         client: SpikeClient) -> None:
    new = NewIncident(marker="m-123", title="Mirror of PD#7", severity=Severity.SEV2)
    created = await client.create(new)
    assert created.keys["marker"] == "m-123" and created.severity is Severity.SEV2
    assert created.title == "Mirror of PD#7 [syncd:m-123]"
    again = await client.create(new)  # a retry after a lost answer
    assert again.external_id == created.external_id
    assert len(sim.canonical_incidents()) == 1
    # a fresh client (the daemon restarted) finds it again
    other = make_client(sim)
    found = await other.find_created("m-123")
    assert found is not None and found.external_id == created.external_id
    sim.act(created.external_id, "resolve")
    found = await other.find_created("m-123")  # resolved ones within find_window too
    assert found is not None and found.state is State.RESOLVED
    assert await other.find_created("m-none") is None
    await other.aclose()


async def test_create_returns_the_real_state_when_the_push_answer_is_empty() -> None:
    """Spike's documented action answer is a 200 with no content [SP-D]: the ack that moves a
    fresh mirror to its agreed state says nothing about the incident, so create reads it back
    instead of returning it as triggered."""
    sim = SpikeSimulator(seed=1, action_answer="empty")
    client = make_client(sim, create_via="webhook")
    created = await client.create(NewIncident(marker="w-e", title="From webhook",
                                              state=State.ACKNOWLEDGED))
    assert created.state is State.ACKNOWLEDGED
    assert sim.canonical_incidents()[0]["state"] == "acknowledged"
    results = await client.push(Action.RESOLVE, pushes(Action.RESOLVE, [created.external_id]))
    assert results[0].outcome is Outcome.DONE and results[0].incident is None
    await client.aclose()


class ResolvedBeforeTheAck(httpx.AsyncBaseTransport):
    """Someone resolves the fresh incident in Spike just before the client's acknowledge
    reaches it: Spike refuses that ack, yet its documented answer is still an empty 200."""

    def __init__(self, sim: SpikeSimulator) -> None:
        self.sim = sim
        self.inner = sim.transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/incidents/acknowledge":
            for counter in json.loads(request.content)["ids"]:
                self.sim.act(counter, "resolve")
        return await self.inner.handle_async_request(request)


async def test_create_reads_back_an_action_refused_under_an_empty_answer() -> None:
    """The empty 200 [SP-D] hides a refused ack: create reports the incident as Spike holds
    it (resolved), and the dispatcher's look-up by marker finds that one, no second copy."""
    sim = SpikeSimulator(seed=1, action_answer="empty")
    client = make_client(sim, ResolvedBeforeTheAck(sim), create_via="webhook")
    new = NewIncident(marker="w-r", title="Refused ack", state=State.ACKNOWLEDGED)
    created = await client.create(new)
    assert created.state is State.RESOLVED
    assert [i["state"] for i in sim.canonical_incidents()] == ["resolved"]
    found = await client.find_created("w-r")
    assert found is not None and found.external_id == created.external_id
    assert found.state is State.RESOLVED and len(sim.canonical_incidents()) == 1
    await client.aclose()


@pytest.mark.parametrize("fault", ["wrong_types", "error"])
async def test_a_failed_read_back_leaves_one_incident_for_the_retry(fault: str) -> None:
    """The ack landed but reading the incident back failed (a malformed or failed GET): create
    raises, and the retry (the dispatcher's find_created, then create) finds the incident the
    first attempt made, acknowledged, instead of creating a second one."""
    sim = SpikeSimulator(seed=1, action_answer="empty")
    client = make_client(sim, create_via="webhook")
    sim.faults.routes = ["/incidents/{counterId}"]
    if fault == "error":
        sim.faults.error_rate = 1.0
    else:
        sim.faults.wrong_types_rate = 1.0
    new = NewIncident(marker="w-f", title="Lost read-back", state=State.ACKNOWLEDGED)
    with pytest.raises(MalformedResponse if fault == "wrong_types" else TransientError):
        await client.create(new)
    assert [i["state"] for i in sim.canonical_incidents()] == ["acknowledged"]
    found = await client.find_created("w-f")
    assert found is not None and found.state is State.ACKNOWLEDGED
    again = await client.create(new)
    assert again.external_id == found.external_id and again.state is State.ACKNOWLEDGED
    assert len(sim.canonical_incidents()) == 1
    await client.aclose()


async def test_create_via_webhook(sim: SpikeSimulator) -> None:
    client = make_client(sim, create_via="webhook")
    created = await client.create(NewIncident(marker="w-1", title="From webhook",
                                              state=State.ACKNOWLEDGED))
    assert created.keys["marker"] == "w-1" and created.state is State.ACKNOWLEDGED
    assert sim.call_count(route="/{token}/push-events") == 1
    await client.aclose()
    bad = make_client(sim, create_via="api", escalation_id=None)
    with pytest.raises(PermanentError):
        await bad.create(NewIncident(marker="z", title="z"))
    await bad.aclose()


async def test_oncall_and_override(sim: SpikeSimulator, client: SpikeClient) -> None:
    now = sim.clock.now()
    entries = await client.oncall(now, now + timedelta(days=3))
    primary = sim.describe("x")["schedules"]["SRE primary"]
    mine = [e for e in entries if e.schedule_id == primary]
    assert len(mine) in (3, 4)  # daily handovers within three days
    assert all(e.user_email and e.level == 1 and e.schedule_name == "SRE primary" for e in mine)
    assert mine[0].start == now and mine[-1].end == now + timedelta(days=3)
    oid = await client.create_override(primary, "dave@example.com", now, now + timedelta(hours=1))
    assert oid
    entries = await client.oncall(now, now + timedelta(minutes=30))
    assert [e.user_email for e in entries if e.schedule_id == primary] == ["dave@example.com"]
    with pytest.raises(PermanentError):
        await client.create_override(primary, "nobody@example.com", now, now)
    # 10 days needs a second page of the schedule's 7-day shift window
    long = await client.oncall(now, now + timedelta(days=10))
    assert max(e.end for e in long if e.schedule_id == primary) == now + timedelta(days=10)


async def test_auth_errors_never_leak_the_key(sim: SpikeSimulator) -> None:
    bad = make_client(sim, api_key="wrong-key-value")
    with capture_logs() as logs, pytest.raises(AuthError) as err:
        _ = [p async for p in bad.poll(None)]
    assert "wrong-key-value" not in str(err.value) and "GET /incidents/triggered" in str(err.value)
    assert "wrong-key-value" not in json.dumps(logs, default=str)
    assert DEFAULT_API_KEY not in str(err.value)
    await bad.aclose()
    wrong_team = make_client(sim, team_id="")
    with pytest.raises(AuthError):
        _ = [p async for p in wrong_team.poll(None)]
    await wrong_team.aclose()


async def test_rate_limit_429_is_waited_out(sim: SpikeSimulator) -> None:
    sim.rate_limit_per_minute = 2
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        sim.clock.advance(seconds)

    # the budget shares the sim clock, so its 429 pause passes when the sim's time does
    client = SpikeClient("spike-test", settings(), transport=sim.transport(), sleep=sleep,
                         budget=Budget({"*": Limit(6000)}, 1.0, clock=sim.clock.monotonic))
    fire(sim, "x")
    _ = [p async for p in client.poll(None)]
    _ = [p async for p in client.poll(None)]  # 4 calls against 2/min: 429, Retry-After, retry
    assert sim.call_count(status=429) >= 1 and any(w >= 1 for w in waits)
    sim.rate_limit_per_minute = 0.001
    sim.window.reset()
    limited = SpikeClient("spike-test", settings(max_retries=0), transport=sim.transport())
    with pytest.raises(RateLimited) as err:
        _ = [p async for p in limited.poll(None)]
    assert err.value.retry_after >= 1
    await client.aclose()
    await limited.aclose()


async def test_budget_keeps_us_under_the_limit(sim: SpikeSimulator) -> None:
    sim.rate_limit_per_minute = 5
    client = make_client(sim, rate_limit_per_minute=5, budget_fraction=1.0)
    assert client.budget.seconds_for(6) > 0  # a 6th request would have to wait
    fire(sim, "x")
    _ = [p async for p in client.poll(None)]
    _ = [p async for p in client.poll(None)]
    assert sim.call_count(status=429) == 0
    await client.aclose()


async def test_faults_5xx_drop_and_outage(sim: SpikeSimulator, client: SpikeClient) -> None:
    fire(sim, "x")
    sim.faults.error_rate, sim.faults.routes = 1.0, ["/incidents/triggered"]
    with pytest.raises(TransientError):
        _ = [p async for p in client.poll(None)]
    assert sim.call_count(route="/incidents/triggered", status=503) == 4  # 1 + 3 retries
    sim.faults.error_rate, sim.faults.drop_rate = 0.0, 1.0
    with pytest.raises(TransientError):
        _ = [p async for p in client.poll(None)]
    sim.faults.drop_rate = 0.0
    # writes are retried too (set-to-value actions are idempotent)
    sim.faults.error_rate, sim.faults.routes = 0.5, ["/incidents/acknowledge"]
    sim.random.seed(3)
    out = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ["sre-101"]))
    assert out[0].outcome in (Outcome.DONE, Outcome.ALREADY)


# --------------------------------------------------------------------------- malformed answers


def corrupting(sim: SpikeSimulator, route: str, make: Callable[[Any], bytes | None],
               status: int = 200, content_type: bytes = b"application/json"
               ) -> httpx.ASGITransport:
    """An ASGI wrapper that replaces the body of ``route`` answers (a network test double)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != route:
            await sim.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def grab(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await sim.app(scope, receive, grab)
        original = json.loads(b"".join(chunks) or b"null")
        body = make(original)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": body or b""})

    return httpx.ASGITransport(app=app)


def edit_first(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], bytes]:
    def make(data: Any) -> bytes:
        change(data["incidents"][0])
        return json.dumps(data).encode()
    return make


RECORD_CASES = {
    "missing counterId": edit_first(lambda i: i.pop("counterId")),
    "null status": edit_first(lambda i: i.update(status=None)),
    "unknown status": edit_first(lambda i: i.update(status="SNOOZED")),
    "unknown severity": edit_first(lambda i: i.update(groupedIncident={"severity": "sev9"})),
    "missing title": edit_first(lambda i: (i.pop("message"), i.pop("title"))),
    "bad timestamp": edit_first(lambda i: i.update(createdAt="yesterday")),
    "record is a string": lambda d: json.dumps({**d, "incidents": ["oops", *d["incidents"]]
                                                }).encode(),
}


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
async def test_bad_record_is_skipped_not_fatal(sim: SpikeSimulator, case: str) -> None:
    fire(sim, "a")
    fire(sim, "b")
    client = make_client(sim, corrupting(sim, "/incidents/triggered", RECORD_CASES[case]))
    pages, seen = await collect(client, None)
    skipped = [s for p in pages for s in p.skipped]
    assert len(skipped) == 1 and skipped[0].endpoint == "GET /incidents/triggered"
    assert len(seen) == 1 if case != "record is a string" else len(seen) == 2
    await client.aclose()


WHOLE_CASES: dict[str, tuple[Callable[[Any], bytes | None], int, bytes, type[Exception]]] = {
    "html error page": (lambda d: b"<html><body>Bad gateway</body></html>", 200, b"text/html",
                        MalformedResponse),
    "truncated json": (lambda d: json.dumps(d).encode()[:40], 200, b"application/json",
                       MalformedResponse),
    "missing incidents": (lambda d: b'{"pagination": {}}', 200, b"application/json",
                          MalformedResponse),
    "incidents is null": (lambda d: b'{"incidents": null}', 200, b"application/json",
                          MalformedResponse),
    "200 carrying a failure": (lambda d: b'{"message": "Team not found", "error": "Not Found"}',
                               200, b"application/json", MalformedResponse),
    "html 502": (lambda d: b"<html>502</html>", 502, b"text/html", TransientError),
}


@pytest.mark.parametrize("case", sorted(WHOLE_CASES))
async def test_unusable_list_response_raises(sim: SpikeSimulator, case: str) -> None:
    make, status, kind, error = WHOLE_CASES[case]
    fire(sim, "a")
    client = make_client(sim, corrupting(sim, "/incidents/triggered", make, status, kind))
    with pytest.raises(error) as err:
        _ = [p async for p in client.poll(None)]
    assert "GET /incidents/triggered" in str(err.value)
    await client.aclose()


PUSH_CASES: dict[str, Callable[[Any], bytes | None]] = {
    "html": lambda d: b"<html>oops</html>",
    "truncated": lambda d: json.dumps(d).encode()[:25],
    "failed not a list": lambda d: json.dumps({**d, "failed": "sre-101"}).encode(),
    "200 carrying a failure": lambda d: b'{"success": false, "message": "nope"}',
    "failed entry without id": lambda d: json.dumps({**d, "failed": [{"message": "x"}]}).encode(),
}


@pytest.mark.parametrize("case", sorted(PUSH_CASES))
async def test_malformed_push_answer(sim: SpikeSimulator, case: str) -> None:
    fire(sim, "a")
    client = make_client(sim, corrupting(sim, "/incidents/acknowledge", PUSH_CASES[case]))
    with pytest.raises(MalformedResponse) as err:
        await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ["sre-101"]))
    assert "POST /incidents/acknowledge" in str(err.value)
    await client.aclose()


async def test_push_tolerates_no_content_and_missing_ids(sim: SpikeSimulator) -> None:
    fire(sim, "a")
    fire(sim, "b")
    empty = make_client(sim, corrupting(sim, "/incidents/acknowledge", lambda d: b""))
    out = await empty.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ["sre-101"]))
    assert out[0].outcome is Outcome.DONE  # Spike's documented "No content" answer
    await empty.aclose()

    def drop_b(d: Any) -> bytes:
        d["updated"] = [i for i in d["updated"] if i != "sre-102"]
        return json.dumps(d).encode()

    partial = make_client(sim, corrupting(sim, "/incidents/resolve", drop_b))
    out = await partial.push(Action.RESOLVE, pushes(Action.RESOLVE, ["sre-101", "sre-102"]))
    assert [r.outcome for r in out] == [Outcome.DONE, Outcome.RETRY]
    await partial.aclose()


async def test_tolerates_other_readings(sim: SpikeSimulator) -> None:
    """A bare list envelope and numeric counterIds (the 2022 draft) still parse."""
    fire(sim, "a")

    def bare(d: Any) -> bytes:
        for i in d["incidents"]:
            i["counterId"] = 101
            i.pop("message")
        return json.dumps(d["incidents"]).encode()

    client = make_client(sim, corrupting(sim, "/incidents/triggered", bare))
    _pages, seen = await collect(client, None)
    assert set(seen) == {"101"} and seen["101"].title == "a"
    await client.aclose()
