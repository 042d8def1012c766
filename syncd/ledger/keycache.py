"""The ledger's memory of per-record lookups a vendor client need not repeat (table
``known_key``, migration 5): incident.io incidents' alert dedup keys, and "no alert" for those
without one. Vendor-neutral: an account, an external id, a kind, a value or NULL.

:class:`LedgerKeyCache` is the :class:`~syncd.vendors.base.KeyCache` the engine hands a client:
read whole into memory at start (one query per account), written through on every new fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import text

from syncd.ledger.store import Ledger, Tx
from syncd.model import KnownKey

_LOAD = text("SELECT external_id, value, checked_at FROM known_key "
             "WHERE account = :account AND kind = :kind")
_UPSERT = text(
    "INSERT INTO known_key (account, kind, external_id, value, checked_at) "
    "VALUES (:account, :kind, :external_id, :value, :checked_at) "
    "ON CONFLICT (account, kind, external_id) DO UPDATE SET value = excluded.value, "
    "checked_at = excluded.checked_at")


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite hands TIMESTAMP columns back as text through text()
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def load(tx: Tx, account: str, kind: str) -> dict[str, KnownKey]:
    rows = tx.session.execute(_LOAD, {"account": account, "kind": kind})
    return {eid: KnownKey(value, _aware(at)) for eid, value, at in rows}


def store(tx: Tx, account: str, kind: str, entries: Mapping[str, KnownKey]) -> None:
    if entries:
        tx.session.execute(_UPSERT, [
            {"account": account, "kind": kind, "external_id": eid, "value": k.value,
             "checked_at": k.checked_at.astimezone(UTC).replace(tzinfo=None)}
            for eid, k in entries.items()])


class LedgerKeyCache:
    """One account's known keys of one kind, warmed from the ledger when built."""

    def __init__(self, ledger: Ledger, account: str, kind: str = "dedup") -> None:
        self.ledger = ledger
        self.account = account
        self.kind = kind
        self.entries: dict[str, KnownKey] = ledger.call(load, account, kind)

    def known(self, external_id: str) -> KnownKey | None:
        return self.entries.get(external_id)

    async def remember(self, entries: Mapping[str, KnownKey]) -> None:
        fresh = {k: v for k, v in entries.items() if self.entries.get(k) != v}
        if fresh:
            await self.ledger.run(store, self.account, self.kind, fresh)
            self.entries.update(fresh)
