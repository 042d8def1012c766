"""Name -> class registries loaded lazily, so a missing or heavy module costs nothing until used.

Vendor clients and simulators are both registered this way (apprise registers its plugins by
name too): config and the CLI name a vendor, and only that vendor's module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any


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
