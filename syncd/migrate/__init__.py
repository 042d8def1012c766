"""``syncd migrate``: moving schedules and escalation policies between vendors, verified by
rendering who each side would page (see docs/migration.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.migrate.convert import TargetModel


class ModelOf:
    """A vendor client's ``schedule_model`` (a :class:`~syncd.migrate.convert.TargetModel`
    constant named ``name``), imported when first read: the clients' schedule mixins import
    this package's modules only inside the methods that use them, so ``syncd run``, which never
    migrates, does not load them (issue 16 target 6; ``tests/scenario/test_lean_daemon.py``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> TargetModel:
        from syncd.migrate import convert

        model: TargetModel = getattr(convert, self.name)
        return model
