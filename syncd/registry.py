"""Name -> class registries loaded lazily, so a missing or heavy module costs nothing until used.

Vendor clients and simulators are both registered this way (apprise registers its plugins by
name too): config and the CLI name a vendor, and only that vendor's module is imported.
:data:`VENDORS` is the one place a vendor is named: its client lives in
``syncd/vendors/<name>.py`` and its simulator in ``syncd/simulators/<name>.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

# vendor name (``vendor = "..."`` in config) -> (client class, simulator class)
VENDORS: dict[str, tuple[str, str]] = {
    "pagerduty": ("PagerDutyClient", "PagerDutySimulator"),
    "victorops": ("VictorOpsClient", "VictorOpsSimulator"),
    "incidentio": ("IncidentIOClient", "IncidentIOSimulator"),
    "spike": ("SpikeClient", "SpikeSimulator"),
}


def targets(package: str, which: int) -> dict[str, str]:
    """``name -> "package.name:Class"`` for the clients (0) or the simulators (1)."""
    return {name: f"{package}.{name}:{classes[which]}" for name, classes in VENDORS.items()}


class Registry:
    def __init__(self, kind: str, targets: Mapping[str, str]) -> None:
        self.kind = kind
        self.targets = dict(targets)

    def available(self) -> list[str]:
        """Names whose module is present in this build."""
        names = []
        for name, target in self.targets.items():
            try:
                import_module(target.split(":")[0])
            except ModuleNotFoundError:
                continue
            names.append(name)
        return names

    def load(self, name: str) -> Any:
        """The registered class; ValueError naming the choices when ``name`` is unknown."""
        try:
            target = self.targets[name]
        except KeyError:
            raise ValueError(
                f"unknown vendor {name!r}: expected one of {', '.join(self.targets)}"
            ) from None
        module, _, attr = target.partition(":")
        return getattr(import_module(module), attr)
