"""Idle polls cost O(1) vendor calls, whatever the number of open incidents (issue 16, target 2).

Each vendor's simulator holds a backlog of open incidents that nothing changes; after the first
full read, a delta poll through the engine (real ledger, real cursor) is counted with the
simulator's call counters. incident.io is also checked across a restart: its alert dedup keys,
including "this incident has no alert", come back from the ledger instead of the vendor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from syncd.simulators.incidentio import IncidentIOSimulator
from tests.scenario.world import World

OPEN = 300  # more than one page on every vendor (PagerDuty 100, incident.io 250, Spike 100)
VENDORS = {"pd": "pagerduty", "vo": "victorops", "ii": "incidentio", "sp": "spike"}


def idle_world(tmp_path: Path, accounts: dict[str, str], *, age_days: float = 0.0) -> World:
    """Every account holds OPEN incidents; ``age_days`` > 0 seeds them that far in the past
    (a backlog nobody touched today, as bench/idle.py seeds it)."""
    w = World(tmp_path, accounts, [{"name": "g", "accounts": list(accounts),
                                    "mode": "correlate"}])
    for sim in w.sims.values():
        sim.seed_incidents(OPEN, age_days=age_days)
    return w


async def delta_calls(w: World, account: str) -> int:
    sim = w.sims[account]
    sim.calls.clear()
    result = await w.engine.poll(account, full=False)
    assert result.ok and not result.changed, result
    return sim.call_count()


async def test_idle_delta_poll_is_o1_for_every_vendor(tmp_path: Path) -> None:
    w = idle_world(tmp_path, VENDORS, age_days=2)
    try:
        for account in VENDORS:
            first = await w.engine.poll(account, full=True)
            assert first.ok and first.observed >= OPEN
            await w.engine.poll(account, full=False)
        for account in ("pd", "vo", "ii"):
            assert await delta_calls(w, account) <= 2, w.sims[account].calls
        # incident.io: one page of incidents and one of escalations updated since the day
        # before the cursor, both empty for a backlog not touched today.
        assert w.sims["ii"].call_count() == 2, w.sims["ii"].calls
        # Spike has no updated-since filter: its two open lists, 100 a page (the empty
        # acknowledged list still costs its one page), and no resolve page while nothing it
        # saw open leaves the lists (docs/vendors/spike.md), never a per-incident read.
        sp = w.sims["sp"]
        calls = await delta_calls(w, "sp")
        assert calls == math.ceil(OPEN / 100) + 1, sp.calls
        assert sp.call_count(route="/incidents/all-occurrences") == 0, sp.calls
        per_incident = [r for (_m, r, _s) in sp.calls if "{" in r]
        assert not per_incident, sp.calls
    finally:
        await w.close()


async def test_incidentio_cursor_advances_and_dedup_cache_survives_restart(
        tmp_path: Path) -> None:
    """Incidents changed today stay in the day-granular feed, but each is delivered (and looked
    up) once: the cursor advances and remembers what it delivered. Dedup keys, "no alert"
    included, are read once and then come from the ledger, across a restart too."""
    w = idle_world(tmp_path, {"ii": "incidentio", "pd": "pagerduty"})
    sim = w.sims["ii"]
    assert isinstance(sim, IncidentIOSimulator)
    sim.alert(dedup="disk", title="Disk full", severity="sev1")
    try:
        await w.engine.poll("ii", full=True)
        lookups = sim.call_count(route="/v2/incident_alerts")
        assert lookups == OPEN + 1  # each incident once, those without an alert too
        cursor = lambda: json.loads(w.ledger.call(lambda tx: tx.cursor("ii").cursor))  # noqa: E731
        await w.engine.poll("ii", full=False)  # reads the alert's escalation once
        before = cursor()["since"]
        sim.clock.advance(2)
        calls = await delta_calls(w, "ii")
        # The day filter lists today's incidents, pages of 250, plus the escalation feed;
        # no per-incident lookup, nothing delivered again.
        assert calls == math.ceil((OPEN + 1) / 250) + 1, sim.calls
        assert cursor()["since"] > before
        await w.restart()
        sim.calls.clear()
        full = await w.engine.poll("ii", full=True)
        assert full.ok and full.observed == OPEN + 1
        assert sim.call_count(route="/v2/incident_alerts") == 0, sim.calls
        records = w.ledger.call(lambda tx: tx.records("ii", list(sim.incidents)))
        assert sum(1 for r in records.values() if r.dedup == "disk") == 1
    finally:
        await w.close()


@pytest.mark.parametrize("touched", [True, False])
async def test_incidentio_no_alert_is_looked_up_again_once_the_incident_changes(
        tmp_path: Path, touched: bool) -> None:
    w = idle_world(tmp_path, {"ii": "incidentio", "pd": "pagerduty"})
    sim = w.sims["ii"]
    assert isinstance(sim, IncidentIOSimulator)
    try:
        await w.engine.poll("ii", full=True)
        first = next(iter(sim.incidents.values()))
        sim.clock.advance(5)
        if touched:
            first.updated = sim.clock.now()
        sim.calls.clear()
        await w.engine.poll("ii", full=True)
        assert sim.call_count(route="/v2/incident_alerts") == (1 if touched else 0)
        # incident.io's clock runs 5 s ahead of ours here: the answer is dated by the
        # incident's own updated_at, so the skew does not make every later read look again
        sim.calls.clear()
        await w.engine.poll("ii", full=True)
        assert sim.call_count(route="/v2/incident_alerts") == 0
    finally:
        await w.close()


async def test_spike_skipping_the_resolve_page_loses_no_known_resolve(tmp_path: Path) -> None:
    """Through the engine: once Spike polls skip the resolve page, an incident resolved by a
    person in Spike still reaches the other tool at the next poll, because it leaves an open
    list the client remembered (docs/vendors/spike.md, "Idle cost")."""
    w = World(tmp_path, {"pd": "pagerduty", "sp": "spike"},
              [{"name": "g", "accounts": ["pd", "sp"], "mode": "correlate"}])
    sp = w.sims["sp"]
    try:
        w.alert("disk")
        await w.settle()
        sp.calls.clear()
        await w.cycle()  # quiet: the open lists only
        assert sp.call_count(route="/incidents/all-occurrences") == 0, sp.calls
        w.act("sp", "disk", "resolve")
        await w.cycle(2)  # Spike's poll sees it, then the dispatch to PagerDuty
        assert sp.call_count(route="/incidents/all-occurrences") == 1, sp.calls
        assert w.incident("pd", "disk")["state"] == "resolved"
    finally:
        await w.close()
