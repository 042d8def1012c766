"""Fixtures for the PagerDuty simulator and client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from syncd.simulators.pagerduty import FROM_EMAIL, TOKEN, PagerDutySimulator

PD_HEADERS = {"Authorization": f"Token token={TOKEN}",
              "Accept": "application/vnd.pagerduty+json;version=2"}


@pytest.fixture
def sim() -> PagerDutySimulator:
    return PagerDutySimulator(seed=1)


@pytest.fixture
async def api(sim: PagerDutySimulator) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client holding the simulator's default key, as a script would use it."""
    async with sim.client(base_url="http://pd.localhost", headers=PD_HEADERS) as client:
        yield client


@pytest.fixture
def from_header() -> dict[str, str]:
    return {"From": FROM_EMAIL}
