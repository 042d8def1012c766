"""A record's columns: what a vendor showed (observations) and what it confirmed (pushes).

The only code that writes ``record`` rows. A record holds the member's *last known* values: an
observation moves them when the vendor shows something new, a confirmed push moves them to the
pushed value, so the next poll sees an echo rather than a change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update

from syncd.ledger.prepared import InSelect, Many
from syncd.ledger.tables import Record
from syncd.model import SEVERITY, STATE, Action, Incident, tag_of

if TYPE_CHECKING:
    from syncd.ledger.store import Tx

FieldChange = tuple[str, str | None, str | None]
"""(field, last known value, observed value)."""


@dataclass(slots=True, eq=False)
class RecordRow:
    """A record as a poll page knows it: read with one query per page and written back with
    one statement per page, without an ORM object (the poll path's hot loop)."""

    id: int
    account: str
    external_id: str
    state: str
    severity: str | None
    title: str  # title .. number: the descriptive fields, in _described's order
    keys_json: str
    vendor_updated_at: datetime | None
    url: str | None
    number: str | None
    dedup: str | None
    marker: str | None
    pushed_at: datetime | None
    pushed_vendor_at: datetime | None
    vendor_own_updated_at: datetime | None
    # Not read by load(): written, or (born) read only for the few records seeking a link.
    observed_at: datetime | None = None
    vendor_created_at: datetime | None = None
    first_seen_at: datetime | None = None


AnyRecord = Record | RecordRow
"""What the engine reads a record's last known values from: a page's row or an ORM object."""

Known = Any
"""A record as :func:`load` read it (a named tuple of RecordRow's first 15 fields, read-only)."""

_TABLE = Record.__table__  # type: ignore[attr-defined]
_COLUMNS = [_TABLE.c[name] for name in RecordRow.__slots__[:15]]  # type: ignore[attr-defined]
_DESCRIBED = slice(5, 10)
_SEEN_AT = 7  # vendor_updated_at, by position in a load()ed row
_OWN_AT = 14  # vendor_own_updated_at
_LOAD = InSelect(select(*_COLUMNS).where(
    _TABLE.c.account == bindparam("account"),
    _TABLE.c.external_id.in_(bindparam("ids", expanding=True))))
_BORN = InSelect(select(_TABLE.c.id, _TABLE.c.vendor_created_at, _TABLE.c.first_seen_at).where(
    _TABLE.c.id.in_(bindparam("ids", expanding=True))))
# Matched back by external id rather than by parameter order, which SQLite can only promise
# by inserting row by row.
_INSERT = insert(_TABLE).returning(_TABLE.c.id, _TABLE.c.external_id)
_OBSERVED = ("title", "keys_json", "vendor_updated_at", "url", "number", "dedup", "marker",
             "observed_at", "state", "severity", "vendor_own_updated_at")
_SAVE = Many(update(_TABLE).where(_TABLE.c.id == bindparam("b_id"))
              .values({name: bindparam(f"b_{name}") for name in (*_OBSERVED, "tag")}))


def load(tx: Tx, account: str, external_ids: Iterable[str]) -> dict[str, Known]:
    """A page's known records by external id, in one query. Rows stay read-only result rows
    (most of a page is unchanged); :func:`observe` makes a :class:`RecordRow` of the others."""
    ids = list(external_ids)
    if not ids:
        return {}
    return {row.external_id: row for row in _LOAD(tx.core, ids, account=account)}


def born(tx: Tx, rows: Sequence[RecordRow]) -> None:
    """Fill in when loaded records were born (the vendor's creation time, or when first seen),
    in one query: what correlating them with a resolved link needs."""
    missing = {r.id: r for r in rows if r.first_seen_at is None}
    if missing:
        for rid, created, first in _BORN(tx.core, list(missing)):
            missing[rid].vendor_created_at, missing[rid].first_seen_at = created, first


def add_page(tx: Tx, account: str, incidents: Sequence[Incident], now: datetime
             ) -> list[RecordRow]:
    """Store a page's new incidents in one statement; returns their rows, ids included."""
    if not incidents:
        return []
    values = [_values(account, inc, now) for inc in incidents]
    ids = {external_id: i for i, external_id in tx.core.execute(_INSERT, values).all()}
    # A row holds no tag: save() derives it from the marker.
    return [RecordRow(id=ids[v["external_id"]], **{k: x for k, x in v.items() if k != "tag"})
            for v in values]


def save(tx: Tx, rows: Sequence[RecordRow]) -> None:
    """Write back what :func:`observe` (or :func:`set_marker`) moved, one statement for all."""
    if not rows:
        return
    values = [{name: getattr(r, name) for name in _OBSERVED} for r in rows]
    for row in values:
        row["tag"] = tag_of(row["marker"])  # follows the marker, so never out of step
    _SAVE(tx.core, [{"b_id": r.id} | {f"b_{k}": v for k, v in row.items()}
                     for r, row in zip(rows, values, strict=True)])
    for r, row in zip(rows, values, strict=True):
        tx.keep_loaded(Record, r.id, row)


def add(tx: Tx, account: str, inc: Incident, now: datetime, *, marker: str | None = None,
        pushed: bool = False) -> Record:
    """Store an incident seen (or, with ``pushed``, created by us) for the first time.

    ``marker``: the creation marker we gave it. A created record counts as a confirmed push,
    so list lag right after the create is not taken for a change.
    """
    return tx.add(Record(**_values(account, inc, now, marker=marker, pushed=pushed)))


def _values(account: str, inc: Incident, now: datetime, *, marker: str | None = None,
            pushed: bool = False) -> dict[str, Any]:
    marker = marker or inc.keys.get("marker")
    return dict(
        account=account,
        external_id=inc.external_id,
        title=inc.title,
        state=inc.state.value,
        severity=inc.severity.value if inc.severity else None,
        dedup=inc.keys.get("dedup"),
        marker=marker,
        tag=tag_of(marker),
        keys_json="{}" if pushed else _keys_json(inc),
        number=inc.number,
        url=inc.url,
        vendor_created_at=inc.created_at,
        vendor_updated_at=inc.updated_at,
        vendor_own_updated_at=inc.own_updated_at,
        first_seen_at=now,
        observed_at=now,
        pushed_at=now if pushed else None,
        pushed_vendor_at=inc.updated_at if pushed else None,
    )


def observe(known: Known, inc: Incident, now: datetime
            ) -> tuple[RecordRow, list[FieldChange]] | None:
    """Take in a new observation of a record :func:`load` read. None when nothing changed at
    all; else the record with its new values (for :func:`save`) and the synced fields that
    changed (an empty list when only descriptive fields did).

    ``vendor_updated_at`` and ``vendor_own_updated_at`` keep the newest vendor times seen, not
    the last ones: an observation taken in can be older than the one before it (a move forward
    is taken whatever its time, and incident.io's open listing can carry an escalation's time,
    newer than the incident's own, see ``syncd.engine.observe._stale``), and the step-back
    check compares against the own time: set back, it would take a lagging listing stamped in
    between for a reopen. A new own time alone is a change to store, so the check never
    compares against an own time older than one already taken in."""
    changes = _diff(known, inc)
    described = (inc.title, _keys_json(inc), _newest(inc.updated_at, known[_SEEN_AT]),
                 inc.url, inc.number)
    own = _newest(inc.own_updated_at, known[_OWN_AT])
    if not changes and described == known[_DESCRIBED] and own == known[_OWN_AT]:
        return None
    rec = RecordRow(*known)
    rec.title, rec.keys_json, rec.vendor_updated_at, rec.url, rec.number = described
    rec.vendor_own_updated_at = own
    rec.dedup = inc.keys.get("dedup", rec.dedup)
    rec.marker = inc.keys.get("marker", rec.marker)
    rec.observed_at = now
    if changes:
        rec.state = inc.state.value
        rec.severity = inc.severity.value if inc.severity else None
    return rec, changes


def confirm_push(rec: AnyRecord, action: Action, value: str | None, incident: Incident | None,
                 now: datetime) -> None:
    """The vendor confirmed a push: the member's last known value becomes the pushed value.

    Only the pushed value: if the vendor's answer shows something else (a person resolved it
    meanwhile), the last known value stays old so the next poll sees that as a change instead of
    the ledger silently absorbing it. The answer's own vendor time is taken in like an
    observation's (``vendor_own_updated_at``), so a lagging listing from before the push keeps
    the pushed severity (``syncd.engine.observe._behind``) as it keeps a person's.
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
    if incident is not None:
        rec.vendor_own_updated_at = _newest(incident.own_updated_at, rec.vendor_own_updated_at)


def set_marker(rec: AnyRecord, marker: str) -> None:
    """Remember the creation marker that tied this record to its mirror link (a page's row
    gets its tag when :func:`save` writes it)."""
    rec.marker = marker
    if isinstance(rec, Record):
        rec.tag = tag_of(marker)


def _newest(seen: datetime | None, recorded: datetime | None) -> datetime | None:
    if recorded is None or (seen is not None and seen > recorded):
        return seen
    return recorded


def _keys_json(inc: Incident) -> str:
    return json.dumps(dict(inc.keys), sort_keys=True)


def _diff(rec: Known, inc: Incident) -> list[FieldChange]:
    out: list[FieldChange] = []
    state, severity = rec[3], rec[4]  # a load()ed row's state and severity, by position
    if state != inc.state.value:
        out.append((STATE, state, inc.state.value))
    seen = inc.severity.value if inc.severity else None
    # A vendor that reports no severity for a record does not clear the last known one.
    if seen is not None and severity != seen:
        out.append((SEVERITY, severity, seen))
    return out
