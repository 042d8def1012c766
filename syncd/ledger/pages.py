"""Links, their members and agreed values, a poll page at a time.

A page of observations touches up to a hundred links. Each read here answers for the whole page
with one IN query, and each write stores the whole page with one statement (SQLAlchemy Core over
the sqlmodel tables: no ORM object, no per-row flush). The statements are built once, with
expanding IN parameters, so SQLAlchemy compiles each of them once per process; all are plain
Core and work on any dialect the ledger speaks.

Core statements do not see ORM changes that were not flushed: callers flush first
(:meth:`syncd.ledger.Tx.flush`) when their transaction mixed both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, exists, func, insert, select, update

from syncd.ledger.prepared import InSelect, Many
from syncd.ledger.tables import Agreed, Link, LinkMember, Record

if TYPE_CHECKING:
    from syncd.ledger.store import Tx

_LINK = Link.__table__  # type: ignore[attr-defined]
_MEMBER = LinkMember.__table__  # type: ignore[attr-defined]
_AGREED = Agreed.__table__  # type: ignore[attr-defined]
_RECORD = Record.__table__  # type: ignore[attr-defined]


def _in(column: Any) -> Any:
    return column.in_(bindparam("ids", expanding=True))


_LINKS_OF = InSelect(select(_MEMBER.c.record_id, _MEMBER.c.link_id).where(
    _MEMBER.c.group_name == bindparam("group"), _in(_MEMBER.c.record_id)))
_NEWEST = InSelect(select(_LINK.c.key, func.max(_LINK.c.id))
                   .where(_LINK.c.group_name == bindparam("group"), _in(_LINK.c.key))
                   .group_by(_LINK.c.key))
_KEYED = InSelect(select(_LINK.c.key, _LINK.c.id)
                  .where(_LINK.c.group_name == bindparam("group"), _in(_LINK.c.key))
                  .order_by(_LINK.c.id))
_ACCOUNTS = InSelect(select(_MEMBER.c.link_id, _MEMBER.c.account).where(
    _in(_MEMBER.c.link_id)))
_MEMBERS = InSelect(select(_MEMBER.c.link_id, _RECORD.c.id, _RECORD.c.account,
                           _RECORD.c.state, _RECORD.c.severity)
                    .join_from(_MEMBER, _RECORD, _RECORD.c.id == _MEMBER.c.record_id)
                    .where(_in(_MEMBER.c.link_id))
                    .order_by(_MEMBER.c.link_id, _MEMBER.c.account))
_AGREED_OF = InSelect(select(_AGREED.c.link_id, _AGREED.c.field, _AGREED.c.value,
                             _AGREED.c.source_account, _AGREED.c.changed_at).where(
                                 _in(_AGREED.c.link_id)))
_MEMBER_IN = (select(_RECORD.c.external_id)
              .join_from(_MEMBER, _RECORD, _RECORD.c.id == _MEMBER.c.record_id)
              .where(_MEMBER.c.link_id == bindparam("link"),
                     _MEMBER.c.account == bindparam("account")))
_COPIES = InSelect(select(_RECORD.c.id, _RECORD.c.account, _RECORD.c.external_id,
                          _RECORD.c.state, _RECORD.c.severity, _RECORD.c.marker,
                          _RECORD.c.tag, _RECORD.c.vendor_updated_at)
                   .where(_in(_RECORD.c.tag), ~exists().where(
                       _MEMBER.c.record_id == _RECORD.c.id,
                       _MEMBER.c.group_name == bindparam("group")))
                   .order_by(_RECORD.c.id))
# Matched back by (key, origin) rather than by parameter order (which SQLite can only promise
# by inserting row by row): links opened together with the same key and origin are identical
# rows, so which of them gets which id makes no difference.
_NEW_LINKS = insert(_LINK).returning(_LINK.c.id, _LINK.c.key, _LINK.c.origin)
_NEW_MEMBERS = Many(insert(_MEMBER))
_NEW_AGREED = Many(insert(_AGREED))
_SET_AGREED = Many(update(_AGREED)
                   .where(and_(_AGREED.c.link_id == bindparam("b_link_id"),
                               _AGREED.c.field == bindparam("b_field")))
                   .values(value=bindparam("b_value"), source_account=bindparam("b_source"),
                           changed_at=bindparam("b_changed_at")))


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A link member's last known values, as a page's reconcile reads them."""

    record_id: int
    account: str
    state: str
    severity: str | None


@dataclass(frozen=True, slots=True)
class CopyRow:
    """A record whose creation marker ends in an origin tag, in no link of the group asked
    about: a mirror copy waiting for the link of the incident it mirrors."""

    id: int
    account: str
    external_id: str
    state: str
    severity: str | None
    marker: str
    tag: str
    updated_at: datetime | None


AgreedRow = tuple[str | None, str | None, datetime]
"""An agreed value as stored: (value, source account, changed at)."""


@dataclass(frozen=True, slots=True)
class AgreedWrite:
    """One agreed value to store; ``exists``: the link already has a row for the field."""

    link_id: int
    field: str
    value: str | None
    source: str | None
    changed_at: datetime
    exists: bool


def link_ids_of(tx: Tx, group: str, record_ids: Iterable[int]) -> dict[int, int]:
    """Per record id, the id of its link in ``group`` (records in none are left out)."""
    ids = list(record_ids)
    if not ids:
        return {}
    return dict(_LINKS_OF(tx.core, ids, group=group))


def newest_for_keys(tx: Tx, group: str, keys: Iterable[str]) -> dict[str, int]:
    """Per correlation key, the newest link's id (an alert that fired again has several). A
    mirror link's key is the origin tag of the incident it mirrors (``model.origin_tag``)."""
    ids = list(keys)
    if not ids:
        return {}
    return dict(_NEWEST(tx.core, ids, group=group))


def links_for_keys(tx: Tx, group: str, keys: Iterable[str]) -> dict[str, list[int]]:
    """Per key, every link of ``group`` holding it, oldest first: a copy joins a mirror link
    by its origin tag only when one link claims that tag."""
    ids = sorted(set(keys))
    out: dict[str, list[int]] = {}
    if ids:
        for key, link_id in _KEYED(tx.core, ids, group=group):
            out.setdefault(key, []).append(link_id)
    return out


def unlinked_copies(tx: Tx, group: str, tags: Iterable[str]) -> list[CopyRow]:
    """Records whose marker ends in one of ``tags`` and that are in no link of ``group``,
    oldest first, in one query (the partial index on ``record.tag`` holds copies only). Their
    marker may be another group's: the caller checks."""
    ids = sorted(set(tags))
    if not ids:
        return []
    return [CopyRow(*row) for row in _COPIES(tx.core, ids, group=group)]


def member_accounts(tx: Tx, link_ids: Iterable[int]) -> dict[int, set[str]]:
    ids = list(link_ids)
    out: dict[int, set[str]] = {i: set() for i in ids}
    if ids:
        for link, account in _ACCOUNTS(tx.core, ids):
            out[link].add(account)
    return out


def members_of(tx: Tx, link_ids: Iterable[int]) -> dict[int, list[MemberRow]]:
    """Per link, its members with their records' last known values (ordered by account)."""
    ids = list(link_ids)
    out: dict[int, list[MemberRow]] = {i: [] for i in ids}
    if ids:
        for link, record_id, account, state, severity in _MEMBERS(tx.core, ids):
            out[link].append(MemberRow(record_id, account, state, severity))
    return out


def member_in(tx: Tx, link_id: int, account: str) -> str | None:
    """The external id of ``link_id``'s member in ``account``, if it has one (a mirror link's
    member in the source account is the incident its copies mirror)."""
    return tx.core.execute(_MEMBER_IN, {"link": link_id, "account": account}).scalar()


def agreed_of(tx: Tx, link_ids: Iterable[int]) -> dict[int, dict[str, AgreedRow]]:
    ids = list(link_ids)
    out: dict[int, dict[str, AgreedRow]] = {i: {} for i in ids}
    if ids:
        for link, name, value, source, changed_at in _AGREED_OF(tx.core, ids):
            out[link][name] = (value, source, changed_at)
    return out


def new_links(tx: Tx, group: str, rows: Sequence[tuple[str | None, str]], now: datetime
              ) -> list[int]:
    """Open links, one per (key, origin), in one statement; returns their ids in order."""
    if not rows:
        return []
    ids: dict[tuple[str | None, str], list[int]] = {}
    for link_id, key, origin in tx.core.execute(_NEW_LINKS, [
            {"group_name": group, "key": key, "origin": origin, "created_at": now}
            for key, origin in rows]).all():
        ids.setdefault((key, origin), []).append(link_id)
    return [ids[row].pop() for row in rows]


def add_members(tx: Tx, group: str, rows: Sequence[tuple[int, int, str]]) -> None:
    """Put records into links: (link id, record id, account) each."""
    if rows:
        _NEW_MEMBERS(tx.core, [
            {"link_id": link, "record_id": record, "group_name": group, "account": account}
            for link, record, account in rows])


def put_agreed(tx: Tx, rows: Sequence[AgreedWrite]) -> None:
    """Store agreed values: one statement for the new ones, one for the changed ones."""
    new = [{"link_id": r.link_id, "field": r.field, "value": r.value,
            "source_account": r.source, "changed_at": r.changed_at}
           for r in rows if not r.exists]
    changed = [r for r in rows if r.exists]
    if new:
        _NEW_AGREED(tx.core, new)
    if changed:
        _SET_AGREED(tx.core, [
            {"b_link_id": r.link_id, "b_field": r.field, "b_value": r.value,
             "b_source": r.source, "b_changed_at": r.changed_at} for r in changed])
        for r in changed:
            tx.keep_loaded(Agreed, (r.link_id, r.field), {
                "value": r.value, "source_account": r.source, "changed_at": r.changed_at})
