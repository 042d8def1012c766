"""Two accounts correlated by alert dedup key: acks, resolves and severity cross over, and
nothing loops."""

from __future__ import annotations

from pathlib import Path

import pytest
from world import LANDED, World

pytestmark = pytest.mark.usefixtures("any_ledger")

PAIRS = [("victorops", "spike")]
if "pagerduty" in LANDED:
    PAIRS.insert(0, ("pagerduty", "victorops"))
if "incidentio" in LANDED:
    PAIRS.append(("incidentio", "spike"))


def world_for(tmp_path: Path, a: str, b: str, **kw: object) -> World:
    return World(tmp_path, {"a": a, "b": b},
                 [{"name": "main", "accounts": ["a", "b"], "mode": "correlate"}], **kw)


@pytest.mark.parametrize(("va", "vb"), PAIRS)
async def test_ack_then_resolve_cross_over_and_no_loops(tmp_path: Path, va: str, vb: str
                                                        ) -> None:
    w = world_for(tmp_path, va, vb)
    try:
        w.alert("disk-full", "Disk full on db-1")
        await w.cycle()
        links = w.ledger.call(lambda tx: tx.links())
        assert len(links) == 1
        assert len(w.ledger.call(lambda tx: tx.members(links[0].id))) == 2

        w.act("a", "disk-full", "acknowledge")
        await w.settle()
        assert w.incident("b", "disk-full")["state"] == "acknowledged"

        w.act("b", "disk-full", "resolve")
        await w.settle()
        assert w.incident("a", "disk-full")["state"] == "resolved"

        before = w.writes()
        await w.cycle(10)
        assert w.writes() == before, "converged links must cause no further writes"
    finally:
        await w.close()
