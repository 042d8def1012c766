"""Turning a page of observations into ledger state: last known values, then the links they
touch (:mod:`.links` decides and writes the agreed values and outbox actions).

These functions run inside one ledger transaction (see :meth:`syncd.ledger.Ledger.run`), so an
observation, the agreed values it moves and the outbox actions it causes commit together or not
at all: a crash can lose neither the change nor the push it owes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncd.engine.links import GroupContext, joined_changes, link_for, reconcile_link
from syncd.engine.reconciler import Change
from syncd.ledger import Record, Tx, outbox, records
from syncd.model import Incident, State

__all__ = ["GroupContext", "ObserveResult", "observe"]


@dataclass
class ObserveResult:
    changed: int = 0
    stale: int = 0
    actions: int = 0
    linked: int = 0


def observe(
    tx: Tx,
    account: str,
    incidents: Sequence[Incident],
    groups: Sequence[GroupContext],
    now: datetime,
    *,
    grace: timedelta,
) -> ObserveResult:
    """Record one page of observations of ``account`` and reconcile every link they touch."""
    result = ObserveResult()
    known = tx.records(account, [inc.external_id for inc in incidents])  # one query per page
    for inc in incidents:
        rec = known.get(inc.external_id)
        changes: list[records.FieldChange] = []
        if rec is None:
            rec = known[inc.external_id] = records.add(tx, account, inc, now)
            fresh = True
        else:
            fresh = False
            if _stale(rec, inc, now, grace):
                result.stale += 1
                continue
            found = records.observe(rec, inc, now)
            if found is None:
                continue
            changes = found
            # What the vendor refused or postponed may work now (issue 20.5: an escalation
            # that appeared late makes a parked incident.io ack possible).
            outbox.retry_on_change(tx, rec.id or 0, now)
            for name, old, new in changes:
                tx.audit("observed", account=account, external_id=rec.external_id,
                         field=name, old=old, new=new, cause=account, at=now)
        result.changed += 1
        at = inc.updated_at or now
        for ctx in groups:
            joined = link_for(tx, ctx, rec, inc, now, fresh=fresh)
            if joined is None:
                continue
            if joined.joined:
                result.linked += 1
                these = joined_changes(rec, at)
            elif fresh:
                continue
            else:
                these = [Change(account, rec.id or 0, n, o, v, at) for n, o, v in changes]
                if not these:
                    continue
            result.actions += reconcile_link(tx, ctx, joined.link, these, now,
                                             only=rec if joined.created else None,
                                             missing=joined.missing)
    return result


def _stale(rec: Record, inc: Incident, now: datetime, grace: timedelta) -> bool:
    """An observation older than our last confirmed push to this record says nothing new.

    With vendor timestamps on both sides: older than the vendor's timestamp on the
    confirmation. Without them, only a step *back* from the state we confirmed, within ``grace``
    of the confirmation, is taken for list lag; anything else (a resolve right after our ack) is
    news. A real change dropped here is not lost for good: the next full resync reports it.
    """
    if rec.pushed_at is None:
        return False
    if inc.updated_at is not None and rec.pushed_vendor_at is not None:
        return inc.updated_at < rec.pushed_vendor_at
    if now - rec.pushed_at >= grace:
        return False
    return inc.state < State(rec.state)
