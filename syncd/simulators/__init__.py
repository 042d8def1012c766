"""Faithful stand-ins for the vendors' APIs, shipped for ``syncd demo``, tests and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.registry import Registry, targets

if TYPE_CHECKING:
    from syncd.simulators.base import Simulator

SIMULATORS = targets("syncd.simulators", 1)
_registry = Registry("simulator", SIMULATORS)
available = _registry.available


def load(vendor: str) -> type[Simulator]:
    return _registry.load(vendor)  # type: ignore[no-any-return]
