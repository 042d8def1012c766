"""Spike.sh request checking (issue 19): the override add's documented rules [SP-D
on-call-overrides, SP-KB override-an-on-call] with valid and invalid cases, fields the simulator
does not model, and the query values it checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from syncd.simulators.spike import ESCALATION_ID, WEBHOOK_TOKEN, SpikeSimulator

DAVE = "660000000000000000000004"


@pytest.mark.parametrize(("change", "status"), [
    ({}, 200),
    ({"desc": "swap", "timezone": "Europe/Berlin"}, 200),  # the times carry their offsets
    ({"end": "START"}, 400),  # end must be after start
    ({"user": "nobody"}, 400),  # one user, a member of the organisation
    ({"user": None}, 400),
    ({"start": "tomorrow"}, 400),
    ({"timezone": "Mars/Olympus"}, 400),
    ({"users": [DAVE]}, 400),  # each override covers one user
])
async def test_override_add_rules(sim: SpikeSimulator, http: httpx.AsyncClient,
                                  change: dict[str, Any], status: int) -> None:
    primary = next(iter(sim.schedules))
    now = sim.clock.now()
    body = {"user": DAVE, "start": now.isoformat(),
            "end": (now + timedelta(hours=2)).isoformat(), **change}
    if body["end"] == "START":
        body["end"] = body["start"]
    r = await http.post(f"/on-calls/{primary}/overrides/add", json=body)
    assert r.status_code == status, r.text
    assert len(sim.schedules[primary].overrides) == (status == 200)
    if status == 400:
        assert set(r.json()) == {"message", "error"}


async def test_create_with_an_unknown_field_is_refused(sim: SpikeSimulator,
                                                       http: httpx.AsyncClient) -> None:
    r = await http.post("/incidents/create", json={
        "title": "t", "escalation": ESCALATION_ID, "integration": WEBHOOK_TOKEN,
        "assignees": ["x"]})
    assert r.status_code == 400 and r.json()["message"] == "not simulated: assignees"
    assert sim.canonical_incidents() == []


@pytest.mark.parametrize("query", ["page=first", "perPage=lots"])
async def test_paging_query_is_checked(http: httpx.AsyncClient, query: str) -> None:
    r = await http.get(f"/incidents?{query}")
    assert r.status_code == 400 and set(r.json()) == {"message", "error"}
