"""The ledger: SQLModel tables, schema migrations and the queries the engine needs."""

from syncd.ledger.store import (
    DONE,
    PARKED,
    PENDING,
    SUPERSEDED,
    Ledger,
    LedgerError,
    Tx,
    utcnow,
)
from syncd.ledger.tables import Agreed, Audit, Link, LinkMember, OnCallSnapshot, Outbox, Record

__all__ = [
    "DONE", "PARKED", "PENDING", "SUPERSEDED", "Agreed", "Audit", "Ledger", "LedgerError",
    "Link", "LinkMember", "OnCallSnapshot", "Outbox", "Record", "Tx", "utcnow",
]
