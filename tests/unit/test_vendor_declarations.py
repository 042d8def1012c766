"""Clients are declared from their settings: ``limits_for`` / ``capabilities_for`` answer what a
built client uses."""

from __future__ import annotations

from typing import Any

import pytest

from syncd import vendors
from syncd.ratelimit import ACCOUNT
from syncd.vendors.base import AccountSettings, Action, Capability
from syncd.vendors.incidentio import IncidentIOClient
from syncd.vendors.victorops import VictorOpsClient

# Settings per vendor, each with variants whose declared limits or capabilities differ.
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "pagerduty": [
        {"token": "pd-token", "from_email": "bot@example.com"},
        {"token": "pd-token", "from_email": "bot@example.com", "budget_fraction": 0.25},
    ],
    "victorops": [
        {"api_id": "vo-id", "api_key": "vo-key"},
        {"api_id": "vo-id", "api_key": "vo-key", "rate_limit_table": "2020"},
    ],
    "spike": [
        {"api_key": "spike-key", "team_id": "team"},
        {"api_key": "spike-key", "team_id": "team", "rate_limit_per_minute": 120},
    ],
    "incidentio": [
        {"api_key": "ii-key"},
        {"api_key": "ii-key", "rate_limit_per_minute": 600, "model": "alert",
         "alert_source_config_id": "01SRC", "alert_source_token": "src-secret"},
    ],
}
CASES = [(vendor, values) for vendor, variants in SETTINGS.items() for values in variants]


def settings_of(vendor: str, values: dict[str, Any]) -> AccountSettings:
    cls = vendors.load(vendor)
    return cls.Settings.model_validate(
        {"vendor": vendor, "base_url": "http://sim.test", **values})


@pytest.mark.parametrize(("vendor", "values"), CASES)
async def test_declared_answers_are_what_a_built_client_uses(vendor: str,
                                                             values: dict[str, Any]) -> None:
    cls = vendors.load(vendor)
    settings = settings_of(vendor, values)
    client = cls("acct", settings)
    try:
        assert cls.limits_for(settings) == client.limits == client.budget.limits
        assert cls.capabilities_for(settings) == client.capabilities
        assert client.budget.fraction == settings.budget_fraction
    finally:
        await client.aclose()


def test_settings_change_the_declared_answers() -> None:
    """The cases above are not all the class defaults: settings matter where documented."""
    vo_2018, vo_2020 = (settings_of("victorops", v) for v in SETTINGS["victorops"])
    assert VictorOpsClient.limits_for(vo_2018) == VictorOpsClient.limits
    assert VictorOpsClient.limits_for(vo_2020) != VictorOpsClient.limits_for(vo_2018)
    spike = settings_of("spike", SETTINGS["spike"][1])
    assert vendors.load("spike").limits_for(spike)[ACCOUNT].requests == 120
    incidents, alerts = (settings_of("incidentio", v) for v in SETTINGS["incidentio"])
    assert IncidentIOClient.capabilities_for(incidents) == IncidentIOClient.capabilities
    assert not IncidentIOClient.capabilities_for(alerts) & Capability.SEVERITY_WRITE
    assert Action.SET_SEVERITY not in IncidentIOClient.batch_size_for(alerts)
    assert IncidentIOClient.limits_for(alerts)[ACCOUNT].requests == 600
