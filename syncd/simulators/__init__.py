"""Faithful stand-ins for the vendors' APIs, shipped for ``syncd demo``, tests and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.registry import Registry

if TYPE_CHECKING:
    from syncd.simulators.base import Simulator

SIMULATORS = {
    "pagerduty": "syncd.simulators.pagerduty:PagerDutySimulator",
    "victorops": "syncd.simulators.victorops:VictorOpsSimulator",
    "incidentio": "syncd.simulators.incidentio:IncidentIOSimulator",
    "spike": "syncd.simulators.spike:SpikeSimulator",
}
_registry = Registry("simulator", SIMULATORS)
available = _registry.available


def load(vendor: str) -> type[Simulator]:
    return _registry.load(vendor)  # type: ignore[no-any-return]
