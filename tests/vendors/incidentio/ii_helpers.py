"""Helpers shared by the incident.io test modules (a vendor-unique name: every test directory
has its own conftest, so ``from conftest import`` would pick whichever was imported first)."""

from __future__ import annotations

from typing import Any

import httpx

from syncd.simulators.incidentio import DEFAULT_API_KEY, IncidentIOSimulator
from syncd.vendors.incidentio import IncidentIOClient, IncidentIOSettings

HEADERS = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}


def settings(**over: Any) -> IncidentIOSettings:
    values: dict[str, Any] = {
        "vendor": "incidentio",
        "base_url": "http://sim.localhost",
        "api_key": DEFAULT_API_KEY,
        "budget_fraction": 1.0,
        "max_retries": 3,
        "change_overlap": 0,
    }
    values.update(over)
    return IncidentIOSettings.model_validate(values)


async def _no_sleep(_seconds: float) -> None:
    return None


def make_client(sim: IncidentIOSimulator, transport: httpx.AsyncBaseTransport | None = None,
                **over: Any) -> IncidentIOClient:
    return IncidentIOClient("ii-test", settings(**over), transport=transport or sim.transport(),
                            backoff_base=0.001, sleep=_no_sleep, clock=sim.clock.now)


async def drain(client: IncidentIOClient, cursor: str | None = None, *, full: bool = False
                ) -> tuple[dict[str, Any], str | None, list]:
    """Every page of one poll: the incidents by id, the last cursor, the skipped records."""
    found, last, skipped = {}, None, []
    async for page in client.poll(cursor, full=full):
        for inc in page.incidents:
            found[inc.external_id] = inc
        skipped += page.skipped
        last = page.cursor or last
    return found, last, skipped
