"""Vendor clients, one module per vendor, registered by the name used in ``vendor = "..."``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.registry import Registry

if TYPE_CHECKING:
    from syncd.vendors.base import VendorClient

VENDORS = {
    "pagerduty": "syncd.vendors.pagerduty:PagerDutyClient",
    "victorops": "syncd.vendors.victorops:VictorOpsClient",
    "incidentio": "syncd.vendors.incidentio:IncidentIOClient",
    "spike": "syncd.vendors.spike:SpikeClient",
}
_registry = Registry("vendor client", VENDORS)
available = _registry.available


def load(vendor: str) -> type[VendorClient]:
    """The client class for ``vendor``; ValueError naming the choices when unknown."""
    return _registry.load(vendor)  # type: ignore[no-any-return]
