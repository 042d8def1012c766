"""The ledger: SQLModel tables, schema migrations, the queries the engine needs, and the state
machines of its rows (:mod:`.outbox` for outbox actions, :mod:`.records` for records)."""

from syncd.ledger import outbox, pages, records
from syncd.ledger.errors import (
    LedgerBusy,
    LedgerDamaged,
    LedgerError,
    LedgerMissing,
    LedgerWriteError,
    ledger_error_in,
)
from syncd.ledger.outbox import Status
from syncd.ledger.store import Ledger, Tx, utcnow
from syncd.ledger.tables import Agreed, Audit, Link, LinkMember, OnCallSnapshot, Outbox, Record

__all__ = [
    "Agreed", "Audit", "Ledger", "LedgerBusy", "LedgerDamaged", "LedgerError", "LedgerMissing",
    "LedgerWriteError", "Link", "LinkMember", "OnCallSnapshot", "Outbox", "Record", "Status",
    "Tx", "ledger_error_in", "outbox", "pages", "records", "utcnow",
]
