"""A record's columns: what a vendor showed (observations) and what it confirmed (pushes).

The only code that writes ``record`` rows. A record holds the member's *last known* values: an
observation moves them when the vendor shows something new, a confirmed push moves them to the
pushed value, so the next poll sees an echo rather than a change.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from syncd.ledger.tables import Record
from syncd.model import SEVERITY, STATE, Action, Incident

if TYPE_CHECKING:
    from syncd.ledger.store import Tx

FieldChange = tuple[str, str | None, str | None]
"""(field, last known value, observed value)."""


def add(tx: Tx, account: str, inc: Incident, now: datetime, *, marker: str | None = None,
        pushed: bool = False) -> Record:
    """Store an incident seen (or, with ``pushed``, created by us) for the first time.

    ``marker``: the creation marker we gave it. A created record counts as a confirmed push,
    so list lag right after the create is not taken for a change.
    """
    rec = Record(
        account=account,
        external_id=inc.external_id,
        title=inc.title,
        state=inc.state.value,
        severity=inc.severity.value if inc.severity else None,
        dedup=inc.keys.get("dedup"),
        marker=marker or inc.keys.get("marker"),
        keys_json="{}" if pushed else _keys_json(inc),
        number=inc.number,
        url=inc.url,
        vendor_created_at=inc.created_at,
        vendor_updated_at=inc.updated_at,
        first_seen_at=now,
        observed_at=now,
        pushed_at=now if pushed else None,
        pushed_vendor_at=inc.updated_at if pushed else None,
    )
    return tx.add(rec)


def observe(rec: Record, inc: Incident, now: datetime) -> list[FieldChange] | None:
    """Take in a new observation of a known record. Returns the synced fields that changed
    (an empty list when only descriptive fields did), or None when nothing changed at all."""
    changes = _diff(rec, inc)
    if not _refresh(rec, inc) and not changes:
        return None
    rec.observed_at = now
    if changes:
        rec.state = inc.state.value
        rec.severity = inc.severity.value if inc.severity else None
    return changes


def confirm_push(rec: Record, action: Action, value: str | None, incident: Incident | None,
                 now: datetime) -> None:
    """The vendor confirmed a push: the member's last known value becomes the pushed value.

    Only the pushed value: if the vendor's answer shows something else (a person resolved it
    meanwhile), the last known value stays old so the next poll sees that as a change instead of
    the ledger silently absorbing it.
    """
    if action.field == SEVERITY:
        if incident is None or incident.severity is None or incident.severity.value == value:
            rec.severity = value
    else:
        target = action.state.value if action.state is not None else value
        if target and (incident is None or incident.state.value == target):
            rec.state = target
    rec.pushed_at = now
    rec.pushed_vendor_at = incident.updated_at if incident is not None else None


def set_marker(rec: Record, marker: str) -> None:
    """Remember the creation marker that tied this record to its mirror link."""
    rec.marker = marker


def _keys_json(inc: Incident) -> str:
    return json.dumps(dict(inc.keys), sort_keys=True)


def _diff(rec: Record, inc: Incident) -> list[FieldChange]:
    out: list[FieldChange] = []
    if rec.state != inc.state.value:
        out.append((STATE, rec.state, inc.state.value))
    severity = inc.severity.value if inc.severity else None
    # A vendor that reports no severity for a record does not clear the last known one.
    if severity is not None and rec.severity != severity:
        out.append((SEVERITY, rec.severity, severity))
    return out


def _refresh(rec: Record, inc: Incident) -> bool:
    """Copy descriptive fields; True when any changed (worth a write, not a reconcile)."""
    new = (inc.title, _keys_json(inc), inc.updated_at, inc.url, inc.number)
    old = (rec.title, rec.keys_json, rec.vendor_updated_at, rec.url, rec.number)
    if new == old:
        return False
    rec.title, rec.keys_json, rec.vendor_updated_at, rec.url, rec.number = new
    rec.dedup = inc.keys.get("dedup", rec.dedup)
    rec.marker = inc.keys.get("marker", rec.marker)
    return True
