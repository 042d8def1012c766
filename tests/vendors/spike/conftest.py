"""Fixtures for the Spike.sh simulator and client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from spike_helpers import HEADERS, make_client

from syncd.simulators.spike import (
    SpikeSimulator,
)
from syncd.vendors.spike import SpikeClient


@pytest.fixture
def sim() -> SpikeSimulator:
    return SpikeSimulator(seed=1)


@pytest.fixture
async def http(sim: SpikeSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with sim.client(headers=HEADERS) as client:
        yield client


@pytest.fixture
async def client(sim: SpikeSimulator) -> AsyncIterator[SpikeClient]:
    c = make_client(sim)
    yield c
    await c.aclose()
