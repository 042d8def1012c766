"""Helpers shared by the Spike.sh tests (a module of its own: several test folders have a
conftest, so ``from conftest import`` would pick whichever was imported first)."""

from __future__ import annotations

from typing import Any

import httpx

from syncd.simulators.spike import (
    DEFAULT_API_KEY,
    ESCALATION_ID,
    TEAM_ID,
    WEBHOOK_TOKEN,
    SpikeSimulator,
)
from syncd.vendors.spike import SpikeClient, SpikeSettings

HEADERS = {"x-api-key": DEFAULT_API_KEY, "x-team-id": TEAM_ID}


def settings(**over: Any) -> SpikeSettings:
    values: dict[str, Any] = {
        "vendor": "spike",
        "base_url": "http://sim.localhost",
        "api_key": DEFAULT_API_KEY,
        "team_id": TEAM_ID,
        "escalation_id": ESCALATION_ID,
        "integration_token": WEBHOOK_TOKEN,
        "webhook_token": WEBHOOK_TOKEN,
        "rate_limit_per_minute": 6000,
        "budget_fraction": 1.0,
        "max_retries": 3,
    }
    values.update(over)
    return SpikeSettings.model_validate(values)


async def _no_sleep(_seconds: float) -> None:
    return None


def make_client(sim: SpikeSimulator, transport: httpx.AsyncBaseTransport | None = None,
                **over: Any) -> SpikeClient:
    """A client on the simulator's clock, so advancing the sim also ages its resolve sweep."""
    return SpikeClient("spike-test", settings(**over), transport=transport or sim.transport(),
                       backoff_base=0.001, sleep=_no_sleep, clock=sim.clock.now)
