"""The ledger queries behind on-call drift and repair (the rest of the ledger is in store.py).

Kept in their own module so the on-call feature reads as one unit. Overrides syncd pushed are
remembered as ``audit`` entries of kind ``oncall`` (append-only: a ``pending`` entry before the
vendor call, the outcome after it), so "never the same override twice" survives a crash between
the call and its answer without a schema change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, func, select

from syncd.ledger.store import Tx
from syncd.ledger.tables import Audit, OnCallSnapshot

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


def pushed_overrides(tx: Tx, since: datetime) -> list[PushedOverride]:
    """The latest outcome of every override push recorded since ``since`` (uses the audit
    time index; pushes older than the longest horizon cannot cover a window ahead)."""
    rows = tx.session.exec(
        select(Audit).where(Audit.kind == "oncall", Audit.field == OVERRIDE_FIELD,
                            Audit.at >= since).order_by(col(Audit.id))
    )
    latest: dict[str, PushedOverride] = {}
    for row in rows:
        try:
            detail: dict[str, Any] = json.loads(row.detail or "{}")
            start = datetime.fromisoformat(detail["start"])
            end = datetime.fromisoformat(detail["end"])
            level = int(detail["level"])
            schedule = str(detail["schedule"])
        except (KeyError, TypeError, ValueError):
            continue
        key = row.cause or ""
        previous = latest.get(key)
        latest[key] = PushedOverride(
            key=key, mapping=row.group_name, account=row.account or "", schedule_id=schedule,
            level=level, user_email=row.new or "", start=start, end=end,
            outcome=row.outcome or "", at=row.at,
            vendor_id=row.external_id or (previous.vendor_id if previous else None),
        )
    return list(latest.values())


def horizon_start(now: datetime, days: float = 31) -> datetime:
    return now - timedelta(days=days)
