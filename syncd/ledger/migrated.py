"""The ledger's memory of ``syncd migrate apply``: source object -> the target object it made.

Create-once, update-in-place: the intent (with the marker the created object will carry) is
committed before the vendor call and completed with the target id after it, the discipline of
mirror creates. A re-run finds the mapping and updates; a crash in between finds the object by
its marker. Nothing here ever deletes an object or a mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select

from syncd.ledger.store import Tx
from syncd.ledger.tables import Migrated


@dataclass(frozen=True, slots=True)
class Mapping:
    kind: str
    source_id: str
    target_id: str | None  # None: an intent whose create has not been confirmed
    marker: str
    fingerprint: str | None


def mappings(tx: Tx, source: str, target: str) -> list[Mapping]:
    rows = tx.session.exec(select(Migrated).where(
        Migrated.source_account == source, Migrated.target_account == target,
    ).order_by(Migrated.kind, Migrated.source_id))
    return [Mapping(r.kind, r.source_id, r.target_id, r.marker, r.fingerprint) for r in rows]


def _row(tx: Tx, source: str, target: str, kind: str, source_id: str) -> Migrated | None:
    return tx.session.exec(select(Migrated).where(
        Migrated.source_account == source, Migrated.target_account == target,
        Migrated.kind == kind, Migrated.source_id == source_id,
    )).first()


def intend(tx: Tx, source: str, target: str, kind: str, source_id: str, marker: str,
           now: datetime) -> Mapping:
    """Record that ``source_id`` is about to be created in ``target`` (idempotent)."""
    row = _row(tx, source, target, kind, source_id)
    if row is None:
        row = Migrated(source_account=source, target_account=target, kind=kind,
                       source_id=source_id, marker=marker, created_at=now, updated_at=now)
        tx.session.add(row)
        tx.session.flush()
    return Mapping(row.kind, row.source_id, row.target_id, row.marker, row.fingerprint)


def written(tx: Tx, source: str, target: str, kind: str, source_id: str, target_id: str,
            fingerprint: str, now: datetime) -> None:
    """The target confirmed the object as ``target_id`` with this converted definition."""
    row = _row(tx, source, target, kind, source_id)
    if row is None:
        raise LookupError(f"no migration intent for {kind} {source_id}")
    if row.target_id is not None and row.target_id != target_id:
        raise ValueError(f"{kind} {source_id} was migrated as {row.target_id}, not {target_id}")
    row.target_id = target_id
    row.fingerprint = fingerprint
    row.updated_at = now
