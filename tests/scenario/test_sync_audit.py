"""Sync-core audit scenarios: echoes of our own pushes, lossy severity mappings, concurrent
opposite changes and refused resolves never loop, drift or drop a page."""

from __future__ import annotations

from pathlib import Path

import pytest
from world import World


def pair(tmp_path: Path, a: str, b: str, **kw: object) -> World:
    return World(tmp_path, {"a": a, "b": b},
                 [{"name": "g", "accounts": ["a", "b"], "mode": "correlate"}], **kw)


def sev(w: World, account: str, dedup: str) -> str | None:
    inc = w.incident(account, dedup)
    if w.account_extra.get(account, {}).get("severity_field") == "urgency":
        return {"high": "sev2", "low": "sev4"}[inc["urgency"]]  # the client's default map
    return inc["severity"]


URGENCY = {"b": {"severity_field": "urgency"}}


@pytest.mark.parametrize(("va", "vb", "start", "human", "lands", "extra"), [
    ("pagerduty", "spike", "sev1", "sev5", "sev3", {}),  # Spike severity stops at sev3
    ("pagerduty", "spike", "sev1", "sev4", "sev3", {}),
    ("pagerduty", "incidentio", "sev1", "sev5", "sev3", {}),  # three org severities
    ("spike", "pagerduty", "sev3", "sev1", "sev2", URGENCY),  # high = sev2
    ("incidentio", "pagerduty", "sev3", "sev1", "sev2", URGENCY),
])
async def test_lossy_severity_push_does_not_drift_the_human_value(
        tmp_path: Path, va: str, vb: str, start: str, human: str, lands: str,
        extra: dict[str, dict[str, object]]) -> None:
    """A severity b's scale cannot hold lands on b's closest value; reading that back is our
    own echo, not a person's change: a's value must stay what the person chose."""
    w = pair(tmp_path, va, vb, account_extra=extra)
    try:
        w.alert("db", severity=start)
        await w.settle()
        w.act("a", "db", "severity", severity=human)
        await w.settle()
        assert sev(w, "b", "db") == lands
        before = w.writes()
        await w.cycle(4)
        assert sev(w, "a", "db") == human, "the person's choice drifted"
        assert w.writes() == before, "converged links must cause no further writes"
    finally:
        await w.close()
