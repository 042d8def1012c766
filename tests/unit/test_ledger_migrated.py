"""The ledger's memory of migrated objects: intent before the call, target id after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.ledger import Ledger, utcnow
from syncd.ledger import migrated as store


def test_intent_then_written_then_remembered(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    now = utcnow()
    first = ledger.call(store.intend, "pd", "ii", "schedule", "PS1", "syncd-migrate-a", now)
    again = ledger.call(store.intend, "pd", "ii", "schedule", "PS1", "syncd-migrate-b", now)
    assert first.target_id is None and again.marker == "syncd-migrate-a"  # idempotent intent
    ledger.call(store.written, "pd", "ii", "schedule", "PS1", "T1", "fp1", now)
    ledger.call(store.written, "pd", "ii", "schedule", "PS1", "T1", "fp2", now)  # update
    (row,) = ledger.call(store.mappings, "pd", "ii")
    assert (row.target_id, row.fingerprint) == ("T1", "fp2")
    assert ledger.call(store.mappings, "ii", "pd") == []
    with pytest.raises(ValueError):  # a mapping never silently points somewhere else
        ledger.call(store.written, "pd", "ii", "schedule", "PS1", "T2", "fp3", now)
    with pytest.raises(LookupError):
        ledger.call(store.written, "pd", "ii", "schedule", "NOPE", "T3", "fp", now)
    ledger.dispose()
