"""The ledger queries behind on-call drift and repair (the rest of the ledger is in store.py).

Kept in their own module so the on-call feature reads as one unit. Overrides syncd owes or
pushed are outbox rows (``Action.OVERRIDE``; statuses in :mod:`syncd.ledger.outbox`), committed
before the vendor call, so "never the same override twice" survives a crash between the call and
its answer. Each step is also written to the audit log (kind ``oncall``) for people to read.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, func, select

from syncd.ledger import outbox
from syncd.ledger.outbox import Status
from syncd.ledger.store import Tx
from syncd.ledger.tables import OnCallSnapshot, Outbox
from syncd.model import Action

OVERRIDE_FIELD = "override"


@dataclass(frozen=True, slots=True)
class PushedOverride:
    """The latest word on one override syncd pushed (or tried to)."""

    key: str
    mapping: str | None
    account: str
    schedule_id: str
    level: int
    user_email: str
    start: datetime
    end: datetime
    outcome: str  # pending | done | refused | unknown | deferred
    vendor_id: str | None
    at: datetime


def last_polled(tx: Tx, account: str) -> datetime | None:
    """When the account's newest on-call poll was stored (every entry of one poll shares it)."""
    return tx.session.exec(
        select(func.max(OnCallSnapshot.last_seen)).where(OnCallSnapshot.account == account)
    ).first()


def first_polled(tx: Tx, account: str) -> datetime | None:
    """When the account's oldest on-call snapshot still kept was first stored: history knows
    nothing of the account's schedules before that."""
    return tx.session.exec(
        select(func.min(OnCallSnapshot.first_seen)).where(OnCallSnapshot.account == account)
    ).first()


def polled_entries(tx: Tx, account: str, schedule_id: str, level: int, polled: datetime,
                   start: datetime, end: datetime) -> list[OnCallSnapshot]:
    """Entries of the poll stored at ``polled`` that overlap [start, end). A schedule the poll
    did not mention has none: it was empty then, not unchanged."""
    return list(tx.session.exec(
        select(OnCallSnapshot).where(
            OnCallSnapshot.account == account,
            OnCallSnapshot.schedule_id == schedule_id,
            OnCallSnapshot.level == level,
            OnCallSnapshot.last_seen == polled,
            (col(OnCallSnapshot.start).is_(None)) | (OnCallSnapshot.start < end),
            (col(OnCallSnapshot.end).is_(None)) | (OnCallSnapshot.end > start),
        ).order_by(col(OnCallSnapshot.start))
    ))


def people(tx: Tx, account: str, since: datetime | None = None) -> list[tuple[str, str | None]]:
    """Every (user id, email) the account ever had on call (since ``since``): the directory
    users are matched against, since vendors expose no common user list."""
    query = select(OnCallSnapshot.user_id, OnCallSnapshot.user_email).where(
        OnCallSnapshot.account == account).distinct()
    if since is not None:
        query = query.where(OnCallSnapshot.last_seen >= since)
    return [(uid, email) for uid, email in tx.session.exec(query)]


def push_key(account: str, schedule_id: str, level: int, user_email: str, start: datetime,
             end: datetime) -> str:
    return "|".join((account, schedule_id, str(level), user_email.lower(),
                     start.isoformat(), end.isoformat()))


def record_push(tx: Tx, *, mapping: str, account: str, schedule_id: str, level: int,
                user_email: str, start: datetime, end: datetime, outcome: str,
                replaces: str = "", vendor_id: str | None = None, error: str | None = None,
                at: datetime) -> None:
    """Append one step of an override push to the audit log."""
    tx.audit(
        "oncall", at=at, group_name=mapping, account=account, external_id=vendor_id,
        field=OVERRIDE_FIELD, old=replaces or None, new=user_email,
        cause=push_key(account, schedule_id, level, user_email, start, end), outcome=outcome,
        detail=json.dumps({"schedule": schedule_id, "level": level, "start": start.isoformat(),
                           "end": end.isoformat(), **({"error": error[:300]} if error else {})}),
    )


def owe_override(tx: Tx, *, mapping: str, account: str, schedule_id: str, level: int,
                 user_email: str, start: datetime, end: datetime, replaces: str, cause: str | None,
                 now: datetime) -> Outbox:
    """An outbox row for one override, committed before the vendor is called."""
    value = json.dumps({"schedule": schedule_id, "level": level, "user_email": user_email,
                        "start": start.isoformat(), "end": end.isoformat(),
                        "replaces": replaces})
    key = f"{push_key(account, schedule_id, level, user_email, start, end)}|{uuid.uuid4().hex}"
    row = outbox.enqueue(tx, group=mapping, link_id=None, record_id=None, account=account,
                         action=Action.OVERRIDE, value=value, key=key, cause=cause,
                         caused_at=now, now=now)
    tx.session.flush()  # the caller needs its id
    record_push(tx, mapping=mapping, account=account, schedule_id=schedule_id, level=level,
                user_email=user_email, start=start, end=end, outcome="pending",
                replaces=replaces, at=now)
    return row


@dataclass(frozen=True, slots=True)
class OwedOverride:
    """What an override row asks the vendor for."""

    schedule_id: str
    level: int
    user_email: str
    start: datetime
    end: datetime
    replaces: str


def override_of(row: Outbox) -> OwedOverride:
    d = json.loads(row.value or "{}")
    return OwedOverride(str(d["schedule"]), int(d["level"]), str(d["user_email"]),
                        datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"]),
                        str(d.get("replaces", "")))


def settle_override(tx: Tx, row_id: int, outcome: str, vendor_id: str | None, reason: str,
                    now: datetime) -> None:
    """Store a push's outcome (done | no-op | deferred | refused | unknown) and audit it."""
    [row] = tx.outbox_rows([row_id])
    if row.status != Status.PENDING:
        return  # declared unknown by expire_overrides meanwhile: that word stands
    if outcome in ("done", "no-op"):
        outbox.confirm(row, now, result=vendor_id, note=reason or None)
    elif outcome == "deferred":
        outbox.defer(row, reason, now)
    elif outcome == "refused":
        outbox.park(row, reason, now)
    else:
        outbox.unknown(row, reason, now)
    o = override_of(row)
    record_push(tx, mapping=row.group_name, account=row.account, schedule_id=o.schedule_id,
                level=o.level, user_email=o.user_email, start=o.start, end=o.end,
                outcome=outcome, replaces=o.replaces, vendor_id=vendor_id,
                error=reason or None, at=now)


def expire_overrides(tx: Tx, before: datetime) -> int:
    """Overrides still pending since before ``before`` were sent by a process that died before
    the answer: unknown (they may exist), never sent again."""
    stuck = [r for r in pending_overrides(tx) if r.updated_at < before]
    for row in stuck:
        outbox.unknown(row, "no answer recorded (the process stopped mid-call); not retried: "
                       "the override may exist", before)
    return len(stuck)


def pending_overrides(tx: Tx) -> list[Outbox]:
    return list(tx.session.exec(select(Outbox).where(
        Outbox.action == Action.OVERRIDE.value, Outbox.status == Status.PENDING)))


_OUTCOME = {Status.PENDING: "pending", Status.PARKED: "refused", Status.UNKNOWN: "unknown",
            Status.SUPERSEDED: "deferred"}


def pushed_overrides(tx: Tx, since: datetime) -> list[PushedOverride]:
    """Every override owed or pushed since ``since``, with its outcome (uses the outbox's
    action index; pushes older than the longest horizon cannot cover a window ahead)."""
    rows = tx.session.exec(
        select(Outbox).where(Outbox.action == Action.OVERRIDE.value, Outbox.created_at >= since)
        .order_by(col(Outbox.id))
    )
    out = []
    for row in rows:
        try:
            detail: dict[str, Any] = json.loads(row.value or "{}")
            start = datetime.fromisoformat(detail["start"])
            end = datetime.fromisoformat(detail["end"])
            level = int(detail["level"])
            schedule = str(detail["schedule"])
            email = str(detail["user_email"])
        except (KeyError, TypeError, ValueError):
            continue
        status = Status(row.status)
        outcome = ("done" if row.result else "no-op") if status == Status.DONE \
            else _OUTCOME[status]
        out.append(PushedOverride(
            key=row.idempotency_key, mapping=row.group_name, account=row.account,
            schedule_id=schedule, level=level, user_email=email, start=start, end=end,
            outcome=outcome, vendor_id=row.result, at=row.updated_at))
    return out


def horizon_start(now: datetime, days: float = 31) -> datetime:
    return now - timedelta(days=days)
