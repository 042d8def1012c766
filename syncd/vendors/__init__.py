"""Vendor clients, one module per vendor, registered by the name used in ``vendor = "..."``."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.vendors.base import VendorClient

VENDORS = {
    "pagerduty": "syncd.vendors.pagerduty:PagerDutyClient",
    "victorops": "syncd.vendors.victorops:VictorOpsClient",
    "incidentio": "syncd.vendors.incidentio:IncidentIOClient",
    "spike": "syncd.vendors.spike:SpikeClient",
}


def available() -> list[str]:
    """Vendors whose client module is present in this build."""
    names = []
    for name, target in VENDORS.items():
        try:
            import_module(target.split(":")[0])
        except ModuleNotFoundError:
            continue
        names.append(name)
    return names


def load(vendor: str) -> type[VendorClient]:
    """The client class for ``vendor``; ValueError naming the choices when unknown."""
    try:
        target = VENDORS[vendor]
    except KeyError:
        raise ValueError(
            f"unknown vendor {vendor!r}: expected one of {', '.join(VENDORS)}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)
