"""Clients are declared from their settings: ``limits_for`` / ``capabilities_for`` answer what a
built client uses, the engine builds each client once around a scaled budget, and the operator
views read capabilities without building a client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd import config, registry, simulators, vendors, views
from syncd.engine import Engine
from syncd.ledger import Ledger
from syncd.ratelimit import ACCOUNT
from syncd.vendors.base import AccountSettings, Action, Capability
from syncd.vendors.incidentio import IncidentIOClient
from syncd.vendors.pagerduty import EVENTS_LIMITS, PagerDutyClient
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
        {"vendor": vendor, "base_url": "http://sim.localhost", **values})


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


# --------------------------------------------------------------------------- engine and views

CONFIG = """
[ledger]
path = "{ledger}"

[accounts.pd]
vendor = "pagerduty"
base_url = "http://pd.sim.localhost"
token = "env:T_DECL_PD"
from_email = "bot@example.com"
budget_fraction = 0.5

[accounts.vo]
vendor = "victorops"
base_url = "http://vo.sim.localhost"
api_id = "env:T_DECL_VO_ID"
api_key = "env:T_DECL_VO_KEY"
rate_limit_table = "2020"

[accounts.io]
vendor = "incidentio"
base_url = "http://io.sim.localhost"
api_key = "env:T_DECL_II"
model = "alert"
alert_source_config_id = "01SRC"
alert_source_token = "env:T_DECL_II_SRC"

[[sync]]
name = "main"
accounts = ["pd", "vo", "io"]
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    for var in ("T_DECL_PD", "T_DECL_VO_ID", "T_DECL_VO_KEY", "T_DECL_II", "T_DECL_II_SRC"):
        monkeypatch.setenv(var, f"secret-{var}")
    path = tmp_path / "syncd.toml"
    path.write_text(CONFIG.format(ledger=tmp_path / "ledger.db"))
    return config.load(path)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Route every vendor name in the registry to a subclass that records each construction
    (the real client otherwise): the accounts built, in order."""
    made: list[str] = []
    targets = {}
    for name in vendors.VENDORS:
        real = vendors.load(name)

        def __init__(self: Any, account: str, *args: Any, _real: Any = real, **kw: Any) -> None:
            made.append(account)
            _real.__init__(self, account, *args, **kw)

        targets[name] = type(f"Counted{real.__name__}", (real,), {"__init__": __init__})
    monkeypatch.setattr(vendors, "load", lambda vendor: targets[vendor])
    yield made


async def test_engine_builds_each_client_once_around_a_scaled_budget(
        cfg: config.Config, built: list[str]) -> None:
    ledger = Ledger.open(cfg.ledger_url)
    engine = Engine.from_config(cfg, ledger, budget_scale=100.0)
    try:
        assert sorted(built) == ["io", "pd", "vo"]
        for name, client in engine.clients.items():
            settings = cfg.accounts[name]
            assert client.budget.limits == type(client).limits_for(settings)
            assert client.budget.scale == 100.0
            bucket = client.budget.buckets_for(ACCOUNT)[0]
            documented = type(client).limits_for(settings)[ACCOUNT]
            assert bucket.rate == pytest.approx(documented.rate * settings.budget_fraction * 100)
        pd = engine.clients["pd"]
        assert isinstance(pd, PagerDutyClient)
        events = pd.events.budget.buckets_for(ACCOUNT)[0]
        assert events.rate == pytest.approx(EVENTS_LIMITS[ACCOUNT].rate * 0.5 * 100)
        assert engine.clients["io"].capabilities == IncidentIOClient.capabilities_for(
            cfg.accounts["io"])
    finally:
        await engine.aclose()
        ledger.dispose()


def test_views_read_capabilities_without_building_clients(cfg: config.Config,
                                                          built: list[str]) -> None:
    caps = views.capabilities(cfg)
    assert built == []
    assert not caps["io"] & Capability.SEVERITY_WRITE  # the alert model, from its settings
    assert caps["pd"] & Capability.SEVERITY_WRITE
    assert any("io (incidentio) cannot set severity" in gap for gap in views.gaps(cfg))
    assert built == []


def test_one_registry_line_names_a_vendor_client_and_simulator() -> None:
    assert list(vendors.VENDORS) == list(simulators.SIMULATORS) == list(registry.VENDORS)
    for name in registry.VENDORS:
        assert vendors.load(name).vendor == name
        assert vendors.load(name).Settings.model_fields["vendor"].annotation.__args__ == (name,)
        assert simulators.load(name).__module__ == f"syncd.simulators.{name}"
