"""What can go wrong with a ledger, typed so callers can act on each without parsing messages.

Every message is one line that says what happened and what the operator can do; none carries a
traceback or a password.
"""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger cannot be opened or used; the message says what to do."""


class LedgerBusy(LedgerError):
    """Another process holds the ledger's lock (see :mod:`syncd.ledger.lock`); names its pid."""


class LedgerMissing(LedgerError):
    """A command that only reads found no ledger file: nothing was recorded yet."""


class LedgerDamaged(LedgerError):
    """The file is not a syncd ledger, or is one that SQLite or the schema check finds broken.
    syncd never repairs, overwrites or deletes it: the operator restores or starts fresh."""


class LedgerWriteError(LedgerError):
    """A transaction failed for a reason outside syncd (disk full, another process holding the
    SQLite write lock, an I/O error). Nothing of it was committed; retrying later is safe.

    ``reason`` is short and stable (``"disk full"``, ``"locked"``, ``"I/O error"``,
    ``"read-only"``): it goes into the log event, ``/readyz`` and a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"ledger write failed ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


def ledger_error_in(exc: BaseException) -> LedgerError | None:
    """The :class:`LedgerError` that ended some work, also when it arrives wrapped in a task
    group's exception group (every member a ledger error), else None: anything else is a bug
    whose traceback is wanted."""
    if isinstance(exc, LedgerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [ledger_error_in(e) for e in exc.exceptions]
        if found and all(found):
            return found[0]
    return None
