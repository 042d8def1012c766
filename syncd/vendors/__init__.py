"""Vendor clients, one module per vendor, registered by the name used in ``vendor = "..."``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.registry import Registry, targets

if TYPE_CHECKING:
    from syncd.vendors.base import VendorClient

VENDORS = targets("syncd.vendors", 0)
_registry = Registry("vendor client", VENDORS)
available = _registry.available


def load(vendor: str) -> type[VendorClient]:
    """The client class for ``vendor``; ValueError naming the choices when unknown."""
    return _registry.load(vendor)  # type: ignore[no-any-return]
