"""The incident.io client against the simulator: real HTTP semantics through the ASGI transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from contract_kit import rate_limit_header
from ii_helpers import drain, make_client, settings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncd.config import SyncGroup
from syncd.engine.observe import GroupContext, ObserveResult, observe
from syncd.ledger import Ledger
from syncd.model import Incident, NewIncident, Severity, State
from syncd.ratelimit import Budget
from syncd.simulators.incidentio import IncidentIOSimulator
from syncd.vendors.base import (
    Action,
    AuthError,
    Capability,
    MalformedResponse,
    Outcome,
    Push,
    RateLimited,
    TransientError,
)
from syncd.vendors.incidentio import ESCALATION_GRACE, IncidentIOClient


def push(eid: str, action: Action, severity: Severity | None = None) -> Push:
    return Push(eid, action, f"k-{eid}-{action.value}", severity)


async def test_full_poll_reads_open_incidents_with_state_and_dedup(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    sim.alert(dedup="disk", title="Disk full", severity="sev1")
    sim.alert(dedup="cpu", title="CPU", severity="sev3")
    old = sim.seed_incidents(1)[0]
    sim.incidents[old].created = sim.incidents[old].updated = sim.clock.now() - timedelta(
        days=300)
    sim.seed_incidents(2, state="resolved")
    disk = next(i for i in sim.canonical_incidents() if i["dedup"] == "disk")["id"]
    sim.act(disk, "acknowledge")
    found, cursor, skipped = await drain(client)
    assert cursor and not skipped
    assert set(found) == {i["id"] for i in sim.canonical_incidents()
                          if i["state"] != "resolved"}
    assert old in found  # an old open incident is never missed
    assert found[disk].state is State.ACKNOWLEDGED and found[disk].severity is Severity.SEV1
    assert found[disk].keys["dedup"] == "disk"
    cpu = next(i for i in found.values() if i.keys.get("dedup") == "cpu")
    assert cpu.state is State.TRIGGERED and cpu.severity is Severity.SEV3
    assert cpu.number and cpu.number.startswith("INC-") and cpu.url


async def test_change_feed_sees_resolves_and_acks_on_escalations(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    sim.alert(dedup="a", title="A")
    sim.alert(dedup="b", title="B")
    _, cursor, _ = await drain(client)
    ids = {i["dedup"]: i["id"] for i in sim.canonical_incidents()}
    sim.clock.advance(5)
    sim.act(ids["a"], "resolve")
    # An ack that does not bump the incident (the notes' unverified case) is still seen.
    esc = sim.escalations[sim.incidents[ids["b"]].escalation_ids[0]]
    before = sim.incidents[ids["b"]].updated
    sim._ack(esc, None)
    sim.incidents[ids["b"]].updated = before
    sim.calls.clear()
    found, cursor2, _ = await drain(client, cursor)
    assert found[ids["a"]].state is State.RESOLVED
    assert found[ids["b"]].state is State.ACKNOWLEDGED
    assert sim.call_count(route="/v2/incidents", method="GET") == 1
    sim.calls.clear()
    sim.clock.advance(5)
    found, _, _ = await drain(client, cursor2)
    assert found == {}  # nothing changed: no incident reported again
    assert sim.call_count(route="/v2/incident_alerts") == 0  # dedup keys are cached


def ack_quietly(sim: IncidentIOSimulator, iid: str) -> None:
    """Ack an incident's escalation without bumping the incident: what the poll sees when the
    ack lands between its incidents feed and its escalations feed (or an ack that does not
    bump the incident, the notes' unverified case)."""
    before = sim.incidents[iid].updated
    sim._ack(sim.escalations[sim.incidents[iid].escalation_ids[0]], None)
    sim.incidents[iid].updated = before


def resolve_quietly(sim: IncidentIOSimulator, iid: str) -> None:
    """Resolve an incident without the change reaching the feed: resolved meanwhile, in no
    open page, what only a single read finds."""
    before = sim.incidents[iid].updated
    sim.act(iid, "resolve")
    sim.incidents[iid].updated = before


def list_lags(sim: IncidentIOSimulator, iid: str, status_id: str, updated: datetime) -> None:
    """The incidents list lags behind the escalations read: it still shows the incident as it
    was (``status_id`` at ``updated``) while its escalations are as they are now."""
    inc = sim.incidents[iid]
    old = sim.status(inc).category
    inc.status_id, inc.updated = status_id, updated
    sim._index(inc, old)


@pytest.mark.parametrize("acked_first", [False, True])
async def test_an_open_listing_takes_no_time_from_the_escalations_its_resolve_ended(
        sim: IncidentIOSimulator, client: IncidentIOClient, acked_first: bool) -> None:
    """incident.io resolves an incident's escalations with it (notes 6): while the incidents
    list still shows it open, the fresh escalations read must not stamp that open listing
    with the resolve's time, or it is no older than the resolve and reads as a reopen."""
    sim.alert(dedup="db", title="DB")
    iid = sim.canonical_incidents()[0]["id"]
    inc = sim.incidents[iid]
    listed = (inc.status_id, inc.updated)
    if acked_first:  # an ack the list has not caught up with either: it still counts
        sim.clock.advance(5)
        ack_quietly(sim, iid)
    sim.clock.advance(5)
    sim.act(iid, "resolve")
    list_lags(sim, iid, *listed)
    found, _, _ = await drain(client, full=True)
    assert found[iid].state is (State.ACKNOWLEDGED if acked_first else State.TRIGGERED)
    assert found[iid].updated_at == listed[1]


async def test_an_alert_resolving_under_an_open_incident_ends_escalations_it_leaves_out() -> None:
    """Not only a record's own resolve ends escalations: in the incident model an alert that
    resolves while its incident stays open (no ``auto_decline``) resolves its acked escalation
    (notes 6, 7). Leaving that time out changes nothing syncd reads: the incident still reads
    acknowledged (the ``acked`` event) and keeps its own time."""
    sim = IncidentIOSimulator(seed=4, auto_decline=False)
    client = make_client(sim)
    try:
        sim.alert(dedup="db", title="DB")
        iid = sim.canonical_incidents()[0]["id"]
        sim.clock.advance(5)
        ack_quietly(sim, iid)
        sim.clock.advance(5)
        sim.alert(dedup="db", title="DB", action="resolve")
        esc = sim.escalations[sim.incidents[iid].escalation_ids[0]]
        assert esc.status == "resolved" and sim.status(sim.incidents[iid]).category == "triage"
        found, _, _ = await drain(client, full=True)
    finally:
        await client.aclose()
    assert found[iid].state is State.ACKNOWLEDGED
    assert found[iid].updated_at == sim.incidents[iid].updated < esc.updated


async def test_a_lagging_open_listing_after_a_resolve_is_not_a_reopen(
        sim: IncidentIOSimulator, client: IncidentIOClient, tmp_path: Path) -> None:
    """The consequence in the ledger: the person's resolve is read, then the lagging open
    listing (with the escalations that resolve ended). Stamped with their time it was no older
    than the resolve, was taken for a reopen and cancelled the resolve owed to b (and with
    ``regressions = follow`` would page b again); by the incident's own time it is list lag."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    caps = Capability.ACK | Capability.RESOLVE
    groups = [GroupContext.build(SyncGroup(name="g", accounts=["a", "b"]),
                                 {"a": caps, "b": caps})]

    def seen(account: str, incidents: list[Incident]) -> ObserveResult:
        now = sim.clock.now()
        return ledger.call(lambda tx: observe(tx, account, incidents, groups, now,
                                              grace=timedelta(seconds=60)))

    sim.alert(dedup="db", title="DB")
    iid = sim.canonical_incidents()[0]["id"]
    listed = (sim.incidents[iid].status_id, sim.incidents[iid].updated)
    found, cursor, _ = await drain(client)
    seen("a", list(found.values()))
    seen("b", [Incident("9", State.TRIGGERED, "DB", keys={"dedup": "db"},
                        updated_at=listed[1])])
    sim.clock.advance(5)
    sim.act(iid, "resolve")
    found, _, _ = await drain(client, cursor)
    assert found[iid].state is State.RESOLVED
    seen("a", [found[iid]])
    list_lags(sim, iid, *listed)
    found, _, _ = await drain(client, full=True)
    assert seen("a", [found[iid]]).stale == 1
    rec = ledger.call(lambda tx: tx.record("a", iid))
    assert rec is not None and rec.state == "resolved"
    owed = ledger.call(lambda tx: [(o.account, o.action) for o in tx.outbox_for_link(1)])
    assert owed == [("b", "resolve")]


def severity_ledger(sim: IncidentIOSimulator, tmp_path: Path, more: Capability,
                    regressions: str) -> tuple[Ledger, Callable[[str, list[Incident]], object]]:
    """A ledger linking account a (the simulator) and b in a group that syncs severity, and
    how to take in a page of either, at the simulator's time."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    caps = (Capability.ACK | Capability.RESOLVE | Capability.SEVERITY_READ
            | Capability.SEVERITY_WRITE | more)
    groups = [GroupContext.build(SyncGroup(name="g", accounts=["a", "b"],
                                           regressions=regressions), {"a": caps, "b": caps})]

    def seen(account: str, incidents: list[Incident]) -> ObserveResult:
        now = sim.clock.now()
        return ledger.call(lambda tx: observe(tx, account, incidents, groups, now,
                                              grace=timedelta(seconds=60)))
    return ledger, seen


async def test_an_ack_read_through_a_lagging_list_keeps_the_newer_severity(
        sim: IncidentIOSimulator, client: IncidentIOClient, tmp_path: Path) -> None:
    """A person sets sev1 (read, owed to b), then acks; the incidents list lags (sev3, its
    old time) while the escalations read shows the ack. The ack is taken, the old severity
    is not: by the incident's own time that listing is from before sev1."""
    ledger, seen = severity_ledger(sim, tmp_path, Capability(0), "ignore")
    sim.alert(dedup="db", title="DB")
    iid = sim.canonical_incidents()[0]["id"]
    sim.act(iid, "severity", severity="sev3")
    inc = sim.incidents[iid]
    listed = (inc.severity_id, inc.updated)
    found, cursor, _ = await drain(client)
    seen("a", list(found.values()))
    seen("b", [Incident("9", State.TRIGGERED, "DB", severity=Severity.SEV3,
                        keys={"dedup": "db"}, updated_at=inc.updated)])
    sim.clock.advance(5)
    sim.act(iid, "severity", severity="sev1")
    found, cursor, _ = await drain(client, cursor)
    seen("a", list(found.values()))
    sim.clock.advance(5)
    ack_quietly(sim, iid)
    inc.severity_id, inc.updated = listed  # the list lags
    found, _, _ = await drain(client, full=True)
    assert (found[iid].state, found[iid].severity) == (State.ACKNOWLEDGED, Severity.SEV3)
    seen("a", list(found.values()))
    rec = ledger.call(lambda tx: tx.record("a", iid))
    assert rec is not None and (rec.state, rec.severity) == ("acknowledged", "sev1")
    owed = ledger.call(lambda tx: sorted((o.account, o.action, o.value)
                                         for o in tx.outbox_for_link(1)))
    assert owed == [("b", "acknowledge", "acknowledged"), ("b", "severity", "sev1")]


def escalations_lag(sim: IncidentIOSimulator, iid: str) -> Callable[[], None]:
    """The escalations read lags behind the incidents list: what restores the incident's first
    escalation to how it is now (call it after a later change to show that change unread)."""
    esc = sim.escalations[sim.incidents[iid].escalation_ids[0]]
    then = (esc.status, list(esc.events), esc.updated)

    def restore() -> None:
        esc.status, esc.events, esc.updated = then[0], list(then[1]), then[2]
    return restore


async def test_an_edit_after_the_ack_read_with_lagging_escalations_is_not_an_unack(
        sim: IncidentIOSimulator, client: IncidentIOClient, tmp_path: Path) -> None:
    """A person acks (read, owed to b), then sets sev1, which bumps the incident's own time
    past the ack's. A full resync reads the incidents list fresh but the escalations read lags
    (the ack not in it): the incident reads triggered, older than the record by neither time.
    incident.io has no un-ack (notes 6), so the client says so (``ack_sticky``) and the ledger
    keeps the ack owed to b, taking the person's sev1; with ``regressions = follow`` the
    un-ack taken would have un-acked b."""
    ledger, seen = severity_ledger(sim, tmp_path, Capability.UNACK, "follow")
    sim.alert(dedup="db", title="DB")
    iid = sim.canonical_incidents()[0]["id"]
    sim.act(iid, "severity", severity="sev3")
    found, cursor, _ = await drain(client)
    seen("a", list(found.values()))
    seen("b", [Incident("9", State.TRIGGERED, "DB", severity=Severity.SEV3,
                        keys={"dedup": "db"}, updated_at=sim.incidents[iid].updated)])
    unread = escalations_lag(sim, iid)
    sim.clock.advance(5)
    ack_quietly(sim, iid)
    found, cursor, _ = await drain(client, cursor)
    assert found[iid].state is State.ACKNOWLEDGED and found[iid].ack_sticky
    seen("a", list(found.values()))
    sim.clock.advance(5)
    sim.act(iid, "severity", severity="sev1")
    unread()
    found, _, _ = await drain(client, full=True)
    assert (found[iid].state, found[iid].severity) == (State.TRIGGERED, Severity.SEV1)
    assert found[iid].updated_at == found[iid].own_updated_at == sim.incidents[iid].updated
    seen("a", list(found.values()))
    rec = ledger.call(lambda tx: tx.record("a", iid))
    assert rec is not None and (rec.state, rec.severity) == ("acknowledged", "sev1")
    owed = ledger.call(lambda tx: sorted((o.account, o.action, o.value, o.status)
                                         for o in tx.outbox_for_link(1)))
    assert owed == [("b", "acknowledge", "acknowledged", "pending"),
                    ("b", "severity", "sev1", "pending")]


async def test_with_ack_from_live_the_ack_is_not_sticky(sim: IncidentIOSimulator) -> None:
    """With ``ack_from_live`` a live incident is acknowledged, and one moved out of live (a
    person pausing it) reads triggered again: a real un-ack, so the listing does not say the
    vendor has none (``ack_sticky``), unlike the escalations' acks of the default reading."""
    sim.alert(dedup="db", title="DB")
    iid = sim.canonical_incidents()[0]["id"]
    sim._set_status(sim.incidents[iid], sim.first_status("live").id, {})
    live = make_client(sim, ack_from_live=True)
    try:
        found, _, _ = await drain(live, full=True)
    finally:
        await live.aclose()
    assert found[iid].state is State.ACKNOWLEDGED and not found[iid].ack_sticky


async def test_an_open_listing_takes_the_time_of_an_ack_on_its_escalation(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """An ack need not bump the incident (notes 9.2): its escalation's time is the record's."""
    sim.alert(dedup="db", title="DB")
    iid = sim.canonical_incidents()[0]["id"]
    sim.clock.advance(5)
    ack_quietly(sim, iid)
    found, _, _ = await drain(client, full=True)
    assert found[iid].state is State.ACKNOWLEDGED
    assert found[iid].updated_at == sim.escalations[sim.incidents[iid].escalation_ids[0]].updated
    assert found[iid].updated_at > sim.incidents[iid].updated


async def aged_backlog(sim: IncidentIOSimulator, client: IncidentIOClient, count: int = 40
                       ) -> tuple[str | None, list[str]]:
    """``count`` open incidents opened days ago (the day feed lists none of them), read once:
    the cursor after that read and their ids."""
    for k in range(count):
        sim.alert(dedup=f"k{k}", title=f"K{k}")
    for inc in sim.incidents.values():
        inc.created = inc.updated = inc.updated - timedelta(days=2)
    _, cursor, _ = await drain(client)
    return cursor, [i["id"] for i in sim.canonical_incidents()]


def related_reads(sim: IncidentIOSimulator) -> tuple[int, int]:
    """(open list pages, single incident reads) since the counters were cleared."""
    list_pages = sim.call_count(route="/v2/incidents", method="GET") - 1  # minus the feed
    return list_pages, sim.call_count(route="/v2/incidents/{id}")


async def test_incidents_of_changed_escalations_read_from_the_open_list(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """Many changed escalations whose incidents the feed did not return (a storm of responds):
    one page of the open incidents' list instead of one GET per incident; an incident not in
    that list (resolved meanwhile, the feed lagging) is still read on its own."""
    for k in range(30):
        sim.alert(dedup=f"k{k}", title=f"K{k}")
    _, cursor, _ = await drain(client)
    ids = [i["id"] for i in sim.canonical_incidents()]
    sim.clock.advance(5)
    for iid in ids[:20]:
        ack_quietly(sim, iid)
    gone = ids[20]
    resolve_quietly(sim, gone)
    sim.calls.clear()
    found, _, skipped = await drain(client, cursor)
    assert not skipped
    assert {i for i, inc in found.items() if inc.state is State.ACKNOWLEDGED} == set(ids[:20])
    assert found[gone].state is State.RESOLVED
    assert sim.call_count(route="/v2/incidents/{id}") == 1, sim.calls  # only the resolved one
    assert sim.call_count(route="/v2/incidents", method="GET") == 2  # the feed, the open list


async def test_few_changed_escalations_read_their_incidents_one_by_one(
        sim: IncidentIOSimulator) -> None:
    """When the open list has more pages than there are incidents to read, single reads win:
    at most one list page is spent finding that out."""
    client = make_client(sim, page_size=5)
    try:
        cursor, ids = await aged_backlog(sim, client)
        sim.clock.advance(5)
        for iid in ids[:3]:
            ack_quietly(sim, iid)
        sim.calls.clear()
        found, _, _ = await drain(client, cursor)
        assert {i for i, inc in found.items() if inc.state is State.ACKNOWLEDGED} == set(ids[:3])
        list_pages, singles = related_reads(sim)
        assert list_pages <= 1 and list_pages + singles <= 3 + 1, sim.calls
    finally:
        await client.aclose()


async def test_open_list_without_totals_costs_at_most_the_missing_ids(
        sim: IncidentIOSimulator) -> None:
    """``total_record_count`` is optional: without it the list cannot tell how many pages are
    left, so it stops once it has cost as many pages as ids are still missing (two of the
    three wanted incidents were resolved meanwhile and are in no open page)."""
    sim.report_totals = False
    client = make_client(sim, page_size=5)
    try:
        cursor, ids = await aged_backlog(sim, client)
        sim.clock.advance(5)
        ack_quietly(sim, ids[0])
        for gone in ids[1:3]:
            ack_quietly(sim, gone)
            resolve_quietly(sim, gone)
        sim.calls.clear()
        found, _, _ = await drain(client, cursor)
        assert found[ids[0]].state is State.ACKNOWLEDGED
        assert {found[i].state for i in ids[1:3]} == {State.RESOLVED}
        list_pages, singles = related_reads(sim)
        assert list_pages <= 3 and list_pages + singles <= 2 * 3, sim.calls  # was 8 pages
    finally:
        await client.aclose()


async def test_one_escalations_lookup_serves_a_full_page_of_acks(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """One escalation each: 50 acks (the escalations page size) share one lookup."""
    for k in range(50):
        sim.alert(dedup=f"k{k}", title=f"K{k}")
    ids = [i["id"] for i in sim.canonical_incidents()]
    sim.calls.clear()
    res = await client.push(Action.ACKNOWLEDGE, [push(i, Action.ACKNOWLEDGE) for i in ids])
    assert {r.outcome for r in res} == {Outcome.DONE}
    assert sim.call_count(route="/v2/escalations", method="GET") == 1, sim.calls


async def test_push_ack_resolve_severity(sim: IncidentIOSimulator,
                                         client: IncidentIOClient) -> None:
    for k in ("a", "b", "c"):
        sim.alert(dedup=k, title=k)
    ids = [i["id"] for i in sim.canonical_incidents()]
    sim.calls.clear()
    res = await client.push(Action.ACKNOWLEDGE, [push(i, Action.ACKNOWLEDGE) for i in ids])
    assert [r.outcome for r in res] == [Outcome.DONE] * 3
    assert sim.call_count(route="/v2/escalations", method="GET") == 1  # one lookup per batch
    assert sim.call_count(route="/v2/escalations/{escalation_id}/actions/respond") == 3
    assert {i["state"] for i in sim.canonical_incidents()} == {"acknowledged"}
    again = await client.push(Action.ACKNOWLEDGE, [push(ids[0], Action.ACKNOWLEDGE)])
    assert again[0].outcome is Outcome.ALREADY
    res = await client.push(Action.SET_SEVERITY, [push(ids[0], Action.SET_SEVERITY,
                                                       Severity.SEV1)])
    assert res[0].outcome is Outcome.DONE and res[0].incident.severity is Severity.SEV1
    res = await client.push(Action.SET_SEVERITY, [push(ids[1], Action.SET_SEVERITY,
                                                       Severity.SEV5)])
    assert res[0].incident.severity is Severity.SEV3  # sev4/sev5 write the least severe
    res = await client.push(Action.RESOLVE, [push(ids[0], Action.RESOLVE)])
    assert res[0].outcome is Outcome.DONE and res[0].incident.state is State.RESOLVED
    assert sim.incidents[ids[0]].status_id == sim.first_status("closed").id


async def test_refusals_and_no_backwards_moves(sim: IncidentIOSimulator) -> None:
    learning = make_client(sim, resolve_status="learning")
    try:
        sim.seed_incidents(1)  # declared incident: no escalation to ack
        sim.alert(dedup="x", title="x")
        plain, paged = [i["id"] for i in sim.canonical_incidents()]
        res = await learning.push(Action.ACKNOWLEDGE, [push(plain, Action.ACKNOWLEDGE)])
        # incident.io creates escalations asynchronously: a young incident may get one yet
        assert res[0].outcome is Outcome.RETRY and "yet" in res[0].message
        sim.clock.advance(ESCALATION_GRACE.total_seconds() + 1)
        res = await learning.push(Action.ACKNOWLEDGE, [push(plain, Action.ACKNOWLEDGE)])
        assert res[0].outcome is Outcome.REFUSED and "capability gap" in res[0].message
        sim.act(paged, "resolve")  # closed
        res = await learning.push(Action.ACKNOWLEDGE, [push(paged, Action.ACKNOWLEDGE)])
        assert res[0].outcome is Outcome.ALREADY  # a late ack never reopens
        res = await learning.push(Action.RESOLVE, [push(paged, Action.RESOLVE)])
        assert res[0].outcome is Outcome.ALREADY  # closed -> learning refused, still resolved
        assert sim.canonical_incidents()[1]["state"] == "resolved"
        res = await learning.push(Action.RESOLVE, [push("01HNOPE0000000000000000000",
                                                        Action.RESOLVE)])
        assert res[0].outcome is Outcome.REFUSED
        with pytest.raises(Exception, match="cannot"):
            await learning.push(Action.REOPEN, [push(plain, Action.REOPEN)])
    finally:
        await learning.aclose()


async def test_create_is_idempotent_and_found_after_a_crash(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    new = NewIncident(marker="grp:pd:P123", title="Mirrored", severity=Severity.SEV2,
                      details="from PagerDuty")
    assert await client.find_created(new.marker) is None
    first = await client.create(new)
    assert first.severity is Severity.SEV2 and first.keys["marker"] == new.marker
    # A crash after the vendor acted but before we stored the answer: a new process.
    fresh = make_client(sim)
    try:
        found = await fresh.find_created(new.marker)
        assert found is not None and found.external_id == first.external_id
        again = await fresh.create(new)
        assert again.external_id == first.external_id
    finally:
        await fresh.aclose()
    assert len(sim.incidents) == 1 and len(sim.attachments) == 1
    resolved = await client.create(NewIncident(marker="m2", title="t", state=State.RESOLVED))
    assert resolved.state is State.RESOLVED


async def test_oncall_and_override(sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    now = sim.clock.now().replace(microsecond=0)
    until = now + timedelta(days=9)  # longer than one entries page
    entries = await client.oncall(now, until)
    primary = next(iter(sim.schedules.values()))
    mine = [e for e in entries if e.schedule_id == primary.id]
    assert mine[0].start == now and mine[-1].end == until
    assert all(e.user_email and e.level == 1 for e in mine)
    assert len(mine) >= 9  # daily handovers across both pages
    oid = await client.create_override(primary.id, "erin@example.com", now,
                                       now + timedelta(hours=2))
    assert oid in sim.overrides
    entries = await client.oncall(now, now + timedelta(hours=1))
    first = next(e for e in entries if e.schedule_id == primary.id)
    assert first.user_email == "erin@example.com"


async def test_override_replaces_every_rotation_paging_someone_else(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """"Platform (New York)" pages its weekly rotation and, in business hours, its
    business-hours rotation side by side. An override for syncd-bot in business hours must
    leave syncd-bot the only one paged, not add them next to the business-hours person."""
    from zoneinfo import ZoneInfo

    platform = next(s for s in sim.schedules.values() if s.name == "Platform (New York)")
    ny = ZoneInfo("America/New_York")
    day = (sim.clock.now() + timedelta(days=5)).astimezone(ny)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    start = day.replace(hour=13, minute=0, second=0, microsecond=0).astimezone(UTC)
    end, mid = start + timedelta(hours=2), start + timedelta(hours=1)
    assert len(sim.on_call_users(platform, mid)) == 2
    ids = await client.create_override(platform.id, "syncd-bot@example.com", start, end)
    assert len(ids.split(",")) == 2 and all(i in sim.overrides for i in ids.split(","))
    [bot] = [u for u in sim.users if sim.users[u].email == "syncd-bot@example.com"]
    assert sim.on_call_users(platform, mid) == [bot, bot]
    entries = await client.oncall(start, end)
    assert {e.user_email for e in entries if e.schedule_id == platform.id} == {
        "syncd-bot@example.com"}


async def test_override_targets_only_layers_of_versions_live_in_its_window(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """A rotation with two versions: alice on layer A until ``change``, then bob on a layer B
    of its own. An override lands only on the layers of the versions live in its window: the
    vendor may answer 422 for a layer of a version not live then (undocumented; the simulator
    accepts it), which after another layer's write landed would leave the repair unknown.
    Where nobody else is paged, the one layer overridden is the first of the version live at
    the start, not of the rotation's first version."""
    now = sim.clock.now().replace(microsecond=0)
    change = now + timedelta(days=2)
    made = await client.http.json("POST", "/v2/schedules", json={"schedule": {
        "name": "Versions", "timezone": "UTC", "config": {"rotations": [
            {"id": "ROT", "name": "Rota", "handover_start_at": "2024-01-01T09:00:00Z",
             "handovers": [{"interval_type": "daily", "interval": 1}],
             "users": [{"email": "alice@example.com"}], "layers": [{"id": "LA"}]},
            {"id": "ROT", "name": "Rota", "handover_start_at": "2024-01-01T09:00:00Z",
             "handovers": [{"interval_type": "daily", "interval": 1}],
             "effective_from": change.isoformat(),
             "users": [{"email": "bob@example.com"}], "layers": [{"id": "LB"}]}]}}})
    sid = made["schedule"]["id"]

    def layers_of(ids: str) -> list[str]:
        return [sim.overrides[i].layer_id for i in ids.split(",")]

    hour = timedelta(hours=1)
    assert layers_of(await client.create_override(
        sid, "erin@example.com", now + hour, now + 3 * hour)) == ["LA"]
    assert layers_of(await client.create_override(
        sid, "erin@example.com", change - hour, change + hour)) == ["LA", "LB"]
    assert layers_of(await client.create_override(  # bob is already the one paged: fallback
        sid, "bob@example.com", change + 2 * hour, change + 3 * hour)) == ["LB"]


class NoWaitBudget(Budget):
    """Records pauses instead of sleeping them in real time (the client waits in sim time)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.paused: list[float] = []

    def pause(self, endpoint: str, seconds: float) -> None:
        self.paused.append(seconds)


async def test_rate_limited_answers_are_waited_out(sim: IncidentIOSimulator) -> None:
    sim.rate_scale = 1 / 1200  # the documented bucket shrunk to 1 token refilling 1/min

    async def sim_sleep(seconds: float) -> None:
        sim.clock.advance(seconds)

    budget = NoWaitBudget(IncidentIOClient.limits)
    c = IncidentIOClient("ii", settings(), transport=sim.transport(), budget=budget,
                         sleep=sim_sleep, backoff_base=0.001, clock=sim.clock.now)
    try:
        await c.statuses()
        assert len(await c.severities()) == 3  # 429, wait Retry-After, retried
    finally:
        await c.aclose()
    assert budget.paused and budget.paused[0] >= 59
    assert sim.call_count(route="/v1/severities", status=429) == 1
    assert sim.call_count(route="/v1/severities", status=200) == 1


async def test_rate_limit_surfaces_when_retries_run_out(sim: IncidentIOSimulator) -> None:
    sim.faults.rate_limit_rate = 1.0
    c = make_client(sim, max_retries=0)
    try:
        with pytest.raises(RateLimited) as info:
            await c.severities()
    finally:
        await c.aclose()
    assert info.value.retry_after == pytest.approx(5.0)
    assert info.value.endpoint == "GET /v1/severities"


async def test_faults_transient_and_auth(sim: IncidentIOSimulator,
                                         client: IncidentIOClient) -> None:
    sim.faults.error_rate = 1.0
    with pytest.raises(TransientError):
        await client.severities()
    sim.faults.error_rate = 0.0
    sim.faults.drop_rate = 1.0
    with pytest.raises(TransientError):
        await client.statuses()
    sim.faults.drop_rate = 0.0
    bad = make_client(sim, api_key="wrong")
    try:
        with pytest.raises(AuthError) as info:
            await bad.severities()
        assert "wrong" not in str(info.value)
    finally:
        await bad.aclose()


# --------------------------------------------------------------------------- malformed answers


class Corrupt:
    """An ASGI wrapper that rewrites one route's response body: a test double for the network."""

    def __init__(self, app: ASGIApp, path: str, rewrite: Callable[[bytes], bytes],
                 content_type: bytes = b"application/json", status: int | None = None) -> None:
        self.app, self.path, self.rewrite = app, path, rewrite
        self.content_type, self.status = content_type, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = self.rewrite(b"".join(chunks))
        headers = [(k, v) for k, v in start["headers"]
                   if k not in (b"content-length", b"content-type")]
        headers += [(b"content-type", self.content_type),
                    (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": self.status or start["status"],
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})


def edit_incidents(change: Callable[[list[dict]], None]) -> Callable[[bytes], bytes]:
    def rewrite(raw: bytes) -> bytes:
        data = json.loads(raw)
        change(data["incidents"])
        return json.dumps(data).encode()
    return rewrite


def corrupt_client(sim: IncidentIOSimulator, path: str, rewrite: Callable[[bytes], bytes],
                   **kw: Any) -> IncidentIOClient:
    return make_client(sim, httpx.ASGITransport(app=Corrupt(sim.app, path, rewrite, **kw)))


@pytest.mark.parametrize("change, reason", [
    (lambda rows: rows[0].pop("incident_status"), "category"),
    (lambda rows: rows[0].update(name=None), "name"),
    (lambda rows: rows[0]["incident_status"].update(category="exploded"), "exploded"),
    (lambda rows: rows[0].update(updated_at=None), "timestamp"),
    (lambda rows: rows[0].update(id=None), "id"),
])
async def test_bad_records_are_skipped_not_fatal(sim: IncidentIOSimulator, change: Any,
                                                 reason: str) -> None:
    sim.seed_incidents(3)
    c = corrupt_client(sim, "/v2/incidents", edit_incidents(change))
    try:
        found, cursor, skipped = await drain(c)
    finally:
        await c.aclose()
    assert len(found) == 2 and cursor
    assert len(skipped) == 1 and reason in skipped[0].reason


@pytest.mark.parametrize("rewrite, kw, match", [
    (lambda raw: b"<html><body>502 Bad Gateway</body></html>",
     {"content_type": b"text/html"}, "HTML"),
    (lambda raw: raw[: len(raw) // 2], {}, "invalid JSON"),
    (lambda raw: b'{"pagination_meta": {"page_size": 25}}', {}, "incidents"),
    (lambda raw: b'{"incidents": null}', {}, "incidents"),
    (lambda raw: json.dumps({"type": "api_error", "status": 500, "request_id": "r",
                             "errors": [{"code": "x", "message": "boom"}]}).encode(), {},
     "carrying an error"),
])
async def test_unusable_responses_raise_malformed(sim: IncidentIOSimulator, rewrite: Any,
                                                  kw: dict, match: str) -> None:
    sim.seed_incidents(1)
    c = corrupt_client(sim, "/v2/incidents", rewrite, **kw)
    try:
        with pytest.raises(MalformedResponse, match=match) as info:
            await drain(c)
    finally:
        await c.aclose()
    assert info.value.endpoint == "GET /v2/incidents"


async def test_unknown_severity_name_maps_by_rank(sim: IncidentIOSimulator) -> None:
    sim.severities[2].name = "SEV0 - Everything is on fire"
    sim.alert(dedup="x", title="x", severity="sev1")
    c = make_client(sim)
    try:
        found, _, _ = await drain(c)
    finally:
        await c.aclose()
    assert next(iter(found.values())).severity is Severity.SEV1


async def test_user_directory_lists_every_user(sim: IncidentIOSimulator) -> None:
    client = make_client(sim)
    try:
        emails = await client.user_emails()
        assert "alice@example.com" in emails.values()
        assert "syncd-bot@example.com" in emails.values()
        calls = sim.call_count(route="/v2/users")
        assert await client.user_emails() == emails
        assert sim.call_count(route="/v2/users") == calls  # cached
    finally:
        await client.aclose()



@pytest.mark.parametrize(("value", "low", "high"), [
    ("120", 120, 120),  # seconds, as documented
    ("in30", 25, 31),  # an HTTP-date 30 s ahead (incident.io's own clients read one)
    ("0", 1, 1), ("-3", 1, 1), ("ago30", 1, 1),  # no wait at all: the floor, not at once
    ("99999999999", 600, 600),  # absurd: the cap
])
async def test_retry_after_as_seconds_or_http_date_is_bounded(sim: IncidentIOSimulator,
                                                              value: str, low: float,
                                                              high: float) -> None:
    from email.utils import formatdate
    from time import time

    if value.startswith(("in", "ago")):
        shift = float(value.lstrip("inago")) * (1 if value.startswith("in") else -1)
        value = formatdate(time() + shift, usegmt=True)
    sim.faults.rate_limit_rate = 1.0
    app = rate_limit_header(sim, "Retry-After", value)
    c = IncidentIOClient("ii", settings(max_retries=0), backoff_base=0.001,
                         transport=httpx.ASGITransport(app=app))
    try:
        with pytest.raises(RateLimited) as info:
            await c.severities()
    finally:
        await c.aclose()
    assert low <= info.value.retry_after <= high
