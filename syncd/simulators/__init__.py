"""Faithful stand-ins for the vendors' APIs, shipped for ``syncd demo``, tests and benchmarks."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.simulators.base import Simulator

SIMULATORS = {
    "pagerduty": "syncd.simulators.pagerduty:PagerDutySimulator",
    "victorops": "syncd.simulators.victorops:VictorOpsSimulator",
    "incidentio": "syncd.simulators.incidentio:IncidentIOSimulator",
    "spike": "syncd.simulators.spike:SpikeSimulator",
}


def available() -> list[str]:
    """Vendors whose simulator module is present in this build."""
    names = []
    for name, target in SIMULATORS.items():
        try:
            import_module(target.split(":")[0])
        except ModuleNotFoundError:
            continue
        names.append(name)
    return names


def load(vendor: str) -> type[Simulator]:
    try:
        target = SIMULATORS[vendor]
    except KeyError:
        raise ValueError(
            f"unknown vendor {vendor!r}: expected one of {', '.join(SIMULATORS)}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)
