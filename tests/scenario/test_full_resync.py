"""A full resync lists open incidents only: the resolves since the last poll must not fall
through it (a downtime longer than ``full_resync_interval``, or every poll a full one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from world import LANDED, World

pytestmark = pytest.mark.usefixtures("any_ledger")


def pair(tmp_path: Path, vendor: str) -> World:
    other = "victorops" if vendor != "victorops" else "pagerduty"
    return World(tmp_path, {"src": vendor, "dst": other},
                 [{"name": "main", "accounts": ["src", "dst"], "mode": "correlate"}])


async def full_cycles(w: World, times: int = 3) -> None:
    for _ in range(times):
        await w.engine.cycle(full=True)


@pytest.mark.parametrize("vendor", LANDED)
async def test_a_resolve_reaches_the_others_through_full_reads(tmp_path: Path, vendor: str
                                                               ) -> None:
    w = pair(tmp_path, vendor)
    try:
        w.alert("cpu")
        await w.settle()
        w.act("src", "cpu", "resolve")
        await full_cycles(w)
        assert w.incident("dst", "cpu")["state"] == "resolved"
    finally:
        await w.close()


@pytest.mark.parametrize("vendor", LANDED)
async def test_a_resolve_made_while_syncd_was_down_survives_the_full_read_at_restart(
        tmp_path: Path, vendor: str) -> None:
    """Down longer than ``full_resync_interval``, the restarted daemon's first poll is a full
    one; the incident resolved meanwhile is in no open list, and its copy must still close."""
    w = pair(tmp_path, vendor)
    try:
        w.alert("cpu")
        w.alert("disk")
        await w.settle()
        await w.close()
        w.act("src", "cpu", "resolve")
        w.open()
        await full_cycles(w)
        assert w.incident("dst", "cpu")["state"] == "resolved"
        assert w.incident("dst", "disk")["state"] == "triggered"
    finally:
        await w.close()



@pytest.mark.parametrize(("vendor", "route"), [("spike", "/incidents/triggered"),
                                               ("victorops", "/api-public/v1/incidents")])
async def test_a_full_read_that_takes_the_cursor_lists_open_incidents_once(
        tmp_path: Path, vendor: str, route: str) -> None:
    """Spike and Splunk On-Call list every open incident on every poll: their resync is one
    read given the cursor, not the open lists twice."""
    w = pair(tmp_path, vendor)
    try:
        w.alert("cpu")
        await w.settle()
        w.sims["src"].calls.clear()
        await w.engine.poll("src", full=True)
        assert w.sims["src"].call_count(method="GET", route=route) == 1
    finally:
        await w.close()
