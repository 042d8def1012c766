"""Fixtures for the incident.io simulator and client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from ii_helpers import HEADERS, make_client

from syncd.simulators.incidentio import IncidentIOSimulator
from syncd.vendors.incidentio import IncidentIOClient


@pytest.fixture
def sim() -> IncidentIOSimulator:
    return IncidentIOSimulator(seed=1)


@pytest.fixture
async def http(sim: IncidentIOSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with sim.client(headers=HEADERS) as client:
        yield client


@pytest.fixture
async def client(sim: IncidentIOSimulator) -> AsyncIterator[IncidentIOClient]:
    c = make_client(sim)
    yield c
    await c.aclose()
