"""The outbox state machine: the only code that moves an outbox row between statuses.

A row is a write owed to one vendor record (or a create owed to one account)::

    pending ──confirm──────────> done
       │  ├──park / refused───> parked      (a person must look; retried only when
       │  │                                  the record changes at the vendor: retry_on_change)
       │  ├──supersede────────> superseded  (a newer action for the same field, the member
       │  │                                  already has the value, or it left the link)
       │  ├──unknown──────────> unknown     (sent, answer lost: never sent again)
       │  └──back_off / reschedule: stays pending, later ``next_attempt_at``
       └──back_off past MAX_ATTEMPTS ──> parked

On-call overrides use the same rows (``Action.OVERRIDE``, no link, no record): ``done``,
``parked`` (refused), ``unknown`` (a transient failure after sending, or a crash mid-call: the
override may exist, and pushing it again could stack a second one) or ``superseded`` (deferred:
nothing was sent, the next run plans afresh).

Every verb runs inside the caller's transaction (a :class:`~syncd.ledger.Tx`), so the row's new
status commits together with whatever caused it (the observation, the vendor's confirmation).
The engine decides *which* verb applies; only this module writes the columns.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy import select as core_select
from sqlmodel import select

from syncd.ledger.prepared import InSelect, Many
from syncd.ledger.tables import Outbox
from syncd.model import FIELDS, Action

if TYPE_CHECKING:
    from syncd.ledger.store import Tx

MAX_BACKOFF = 300.0
"""Longest pause between two attempts of one row, seconds (full jitter below it)."""
MAX_ATTEMPTS = 50
"""Attempts after which a row that keeps failing transiently is parked."""
RETRY_ON_CHANGE_LIMIT = 20
"""Attempts after which a parked row is no longer revived by changes of its record."""


class Status(enum.StrEnum):
    """An outbox row's status, as stored in ``outbox.status``."""

    PENDING = "pending"
    DONE = "done"
    PARKED = "parked"
    SUPERSEDED = "superseded"
    UNKNOWN = "unknown"


# --------------------------------------------------------------------------- creating rows


def enqueue(tx: Tx, *, group: str, link_id: int | None, record_id: int | None, account: str,
            action: Action, value: str | None, key: str, cause: str | None,
            caused_at: datetime, now: datetime) -> Outbox:
    """Owe ``action`` to a record (``record_id`` None: a create owed to ``account``).

    Pending actions for the same record and field are superseded: an ack followed by a resolve
    before either was pushed becomes one resolve. ``key`` is the idempotency key the vendor sees
    on every attempt.
    """
    tx.fence()
    if record_id is not None and action.field is not None:
        supersede(tx, record_id, action.field, f"superseded by {action.value}", now)
    row = Outbox(group_name=group, link_id=link_id, record_id=record_id, account=account,
                 action=action.value, value=value, idempotency_key=key,
                 status=Status.PENDING, next_attempt_at=now, cause_account=cause,
                 caused_at=caused_at, created_at=now, updated_at=now)
    tx.session.add(row)  # no flush: nothing needs its id before the transaction commits
    return row


# --------------------------------------------------------------------------- a page at a time

_TABLE = Outbox.__table__  # type: ignore[attr-defined]
_PENDING = InSelect(core_select(_TABLE.c.id, _TABLE.c.record_id, _TABLE.c.action).where(
    _TABLE.c.status == Status.PENDING.value,
    _TABLE.c.record_id.in_(bindparam("ids", expanding=True))))
_SUPERSEDE = Many(update(_TABLE).where(_TABLE.c.id == bindparam("b_id"))
                  .values(status=Status.SUPERSEDED.value, last_error=bindparam("b_reason"),
                          updated_at=bindparam("b_now")))
_INSERT = Many(insert(_TABLE))
_HISTORY = InSelect(core_select(_TABLE.c.id, _TABLE.c.record_id, _TABLE.c.action,
                                 _TABLE.c.status, _TABLE.c.next_attempt_at, _TABLE.c.attempts)
                     .where(_TABLE.c.record_id.in_(bindparam("ids", expanding=True)))
                     .order_by(_TABLE.c.id.desc()))

Pending = Mapping[int, Sequence[tuple[int, str]]]
"""Per record id, its pending rows as (outbox id, action)."""


def pending_of(tx: Tx, record_ids: Iterable[int]) -> dict[int, list[tuple[int, str]]]:
    """The pending rows of several records (a page's link members), in one query."""
    ids = list(record_ids)
    out: dict[int, list[tuple[int, str]]] = {}
    if ids:
        for oid, record_id, action in _PENDING(tx.core, ids):
            out.setdefault(record_id, []).append((oid, action))
    return out


class Batch:
    """The outbox writes of a page of decisions, one statement each: rows owed, and pending
    rows superseded.

    :meth:`owe` follows :func:`enqueue`'s rule (a new action supersedes the record's pending
    actions for the same field) against the pending rows the page loaded once (``pending``) and
    against the rows owed earlier in the batch, so nothing is read twice.
    """

    def __init__(self, pending: Pending) -> None:
        self.pending = pending
        self.cancelled: dict[int, str] = {}
        self.rows: list[dict[str, Any]] = []
        self._owed: dict[tuple[int, str], dict[str, Any]] = {}

    def supersede(self, record_id: int, field: str, reason: str) -> None:
        for oid, action in self.pending.get(record_id, ()):
            if oid not in self.cancelled and Action(action).field == field:
                self.cancelled[oid] = reason
        row = self._owed.pop((record_id, field), None)
        if row is not None:
            row["status"], row["last_error"] = Status.SUPERSEDED.value, reason

    def fields(self, record_id: int) -> frozenset[str]:
        """The fields a record has a pending action for, counting this batch's writes."""
        names = {name for oid, action in self.pending.get(record_id, ())
                 if oid not in self.cancelled and (name := Action(action).field)}
        return frozenset(names | {f for f in FIELDS if (record_id, f) in self._owed})

    def owe(self, *, group: str, link_id: int | None, record_id: int | None, account: str,
            action: Action, value: str | None, key: str, cause: str | None,
            caused_at: datetime, now: datetime) -> None:
        """As :func:`enqueue`, written by :meth:`write`."""
        if record_id is not None and action.field is not None:
            self.supersede(record_id, action.field, f"superseded by {action.value}")
        row = dict(group_name=group, link_id=link_id, record_id=record_id, account=account,
                   action=action.value, value=value, idempotency_key=key,
                   status=Status.PENDING.value, attempts=0, next_attempt_at=now,
                   last_error=None, result=None, cause_account=cause, caused_at=caused_at,
                   created_at=now, updated_at=now)
        self.rows.append(row)
        if record_id is not None and action.field is not None:
            self._owed[(record_id, action.field)] = row

    def write(self, tx: Tx, now: datetime) -> None:
        if self.cancelled:
            _SUPERSEDE(tx.core, [{"b_id": oid, "b_reason": reason, "b_now": now}
                                 for oid, reason in self.cancelled.items()])
            for oid, reason in self.cancelled.items():
                tx.keep_loaded(Outbox, oid, {"status": Status.SUPERSEDED.value,
                                             "last_error": reason, "updated_at": now})
        if self.rows:
            _INSERT(tx.core, self.rows)


# --------------------------------------------------------------------------- pending rows


def pending_for(tx: Tx, record_id: int) -> list[Outbox]:
    return list(tx.session.exec(
        select(Outbox).where(Outbox.record_id == record_id, Outbox.status == Status.PENDING)
    ))


def supersede(tx: Tx, record_id: int, field: str, reason: str, now: datetime) -> int:
    """Cancel the record's pending actions for ``field``; returns how many."""
    count = 0
    for row in pending_for(tx, record_id):
        if Action(row.action).field == field:
            _supersede(row, reason, now)
            count += 1
    return count


def withdraw(tx: Tx, link_id: int, record_id: int, reason: str, now: datetime) -> None:
    """Cancel everything still owed to a record on behalf of a link it is leaving."""
    for row in tx.session.exec(select(Outbox).where(
            Outbox.link_id == link_id, Outbox.record_id == record_id,
            Outbox.status == Status.PENDING)):
        _supersede(row, reason, now)


def withdraw_create(tx: Tx, link_id: int, account: str, reason: str, now: datetime) -> int:
    """Cancel a mirror link's pending create in ``account`` (a copy joined the link there
    first); returns how many rows."""
    count = 0
    for row in tx.session.exec(select(Outbox).where(
            Outbox.account == account, Outbox.status == Status.PENDING,
            Outbox.link_id == link_id, Outbox.action == Action.CREATE.value)):
        _supersede(row, reason, now)
        count += 1
    return count


def _supersede(row: Outbox, reason: str, now: datetime) -> None:
    row.status = Status.SUPERSEDED
    row.last_error = reason
    row.updated_at = now


def retry_on_change(tx: Tx, record_ids: Iterable[int], now: datetime) -> int:
    """The records changed at their vendor: the latest action per field goes again now if it
    was parked or is backing off. Only the latest: an older parked value must never overwrite a
    newer one that was pushed or replaced it since.

    A refusal can depend on the record's state at the vendor (incident.io had created no
    escalation to acknowledge yet), so a change there earns a parked action one more try: once
    per change, never a loop, and not after RETRY_ON_CHANGE_LIMIT attempts. One query for a
    page's changed records; only the rows to retry (rare) are loaded as objects."""
    ids = list(record_ids)
    if not ids:
        return 0
    latest: dict[tuple[int, str], Any] = {}
    for row in _HISTORY(tx.core, ids):
        name = Action(row.action).field
        if name is not None:
            latest.setdefault((row.record_id, name), row)
    due = [r.id for r in latest.values() if _retries(r, now)]
    retried = 0
    for row in tx.outbox_rows(due):
        if row.status == Status.PENDING and row.next_attempt_at > now:
            row.next_attempt_at = now
            retried += 1
        if row.status != Status.PARKED or row.attempts >= RETRY_ON_CHANGE_LIMIT:
            continue
        row.status = Status.PENDING
        row.next_attempt_at = row.updated_at = now
        row.attempts += 1
        row.last_error = f"retrying: the record changed at the vendor ({row.last_error})"[:500]
        tx.audit("unpark", group_name=row.group_name, link_id=row.link_id, account=row.account,
                 field=row.action, new=row.value, outcome="pending",
                 detail="the record changed at the vendor", at=now)
        retried += 1
    return retried


def _retries(row: Any, now: datetime) -> bool:
    if row.status == Status.PENDING:
        return bool(row.next_attempt_at > now)
    return row.status == Status.PARKED and row.attempts < RETRY_ON_CHANGE_LIMIT


# --------------------------------------------------------------------------- outcomes


def confirm(row: Outbox, now: datetime, *, result: str | None = None,
            note: str | None = None) -> bool:
    """The vendor confirmed the write (``result``: what it answered worth keeping, ``note``:
    what a person should know). False when the row was superseded while in flight (it stays
    superseded: the newer action still goes out)."""
    if row.status != Status.PENDING:
        return False
    row.status = Status.DONE
    row.updated_at = now
    row.attempts += 1
    row.result = result
    if note is not None:
        row.last_error = note[:500]
    return True


def defer(row: Outbox, reason: str, now: datetime) -> None:
    """Nothing was sent (rate limit, credentials): drop the row; the next run plans afresh."""
    row.attempts += 1
    _supersede(row, reason[:500], now)


def unknown(row: Outbox, reason: str, now: datetime) -> None:
    """Sent, but whether it took effect is unknown: never sent again, a person must look."""
    row.status = Status.UNKNOWN
    row.last_error = reason[:500]
    row.updated_at = now


def park(row: Outbox, reason: str, now: datetime) -> None:
    """The vendor refused for good: keep the row, with the reason, for a person to look at."""
    row.status = Status.PARKED
    row.last_error = reason[:500]
    row.updated_at = now


def back_off(row: Outbox, error: str, now: datetime) -> None:
    """A transient failure: try again after an exponential delay with full jitter, or park
    once :data:`MAX_ATTEMPTS` is reached."""
    row.attempts += 1
    if row.attempts >= MAX_ATTEMPTS:
        park(row, f"gave up after {row.attempts} attempts: {error}", now)
        return
    delay = random.uniform(0, min(MAX_BACKOFF, 1.0 * 2 ** min(row.attempts, 10)))
    row.next_attempt_at = now + timedelta(seconds=max(0.5, delay))
    row.last_error = error[:500]
    row.updated_at = now


def reschedule(row: Outbox, error: str, now: datetime, *, after: float | None,
               count: bool) -> None:
    """Try a still-pending row again: after ``after`` seconds (a vendor's rate-limit reset),
    or with :func:`back_off` when the vendor gave no time. ``count``: the attempt counts."""
    if row.status != Status.PENDING:
        return
    if after is None:
        back_off(row, error, now)
        return
    row.next_attempt_at = now + timedelta(seconds=after)
    row.last_error = error[:500]
    row.updated_at = now
    if count:
        row.attempts += 1


def note_error(row: Outbox, error: str) -> None:
    """Say why a row is still pending (credentials rejected) without rescheduling it."""
    row.last_error = error[:500]
